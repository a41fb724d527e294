"""Reads: ReadStream of 1,000 events and catch-up Subscribe over a long history, against the
bare server streaming the same number of events in the same batches."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import asyncpg
import grpc

from bench.harness import Bench, ratio, timed_rate
from bench.scenarios.append import PAYLOAD
from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc


async def _fill(address: str, stream: str, total: int, per_append: int = 1000) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        for start in range(0, total, per_append):
            n = min(per_append, total - start)
            events = [
                pb.EventData(id=str(uuid.uuid4()), type="Benchmarked", data=PAYLOAD)
                for _ in range(n)
            ]
            await stub.Append(pb.AppendRequest(stream=stream, events=events))


async def _settle(database_url: str) -> None:
    """Let PostgreSQL finish what a fill leaves behind (dirty pages to write, a table to vacuum
    and analyze) before measuring: otherwise our reads, measured first, share the machine with
    that work and the bare server's, measured after, do not."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("VACUUM ANALYZE es_events")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")  # superuser or pg_checkpoint only
    finally:
        await conn.close()


async def read_stream_rate(
    address: str, stream: str, count: int, callers: int, duration: float
) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        stub = pb_grpc.EventStoreStub(channel)

        async def work(_: int) -> int:
            got = 0
            async for response in stub.ReadStream(
                pb.ReadStreamRequest(stream=stream, max_count=count)
            ):
                got += len(response.events)
            return got

        return await timed_rate(duration, callers, work)


async def catch_up_rate(address: str, request: pb.SubscribeRequest, expected: int) -> float:
    """Events per second from subscribing until caught_up."""
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 16 << 20)]
    ) as channel:
        await channel.channel_ready()
        stub = pb_grpc.EventStoreStub(channel)
        got = 0
        start = time.monotonic()
        call = stub.Subscribe(request)
        async for response in call:
            got += len(response.events)
            if response.caught_up:
                break
        elapsed = time.monotonic() - start
        call.cancel()
        if got != expected:
            raise AssertionError(f"catch-up delivered {got} events, expected {expected}")
        return got / elapsed


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    db = bench.database()
    store = bench.store(db)
    bare = bench.bare_server()
    ratios = []

    stream = "readbench-1"
    await _fill(store.address, stream, 1000)
    ours, base = await bench.compare(
        "ReadStream 1000 events",
        "events/s",
        ("ours", lambda: read_stream_rate(store.address, stream, 1000, 4, cfg.duration)),
        ("bare gRPC", lambda: read_stream_rate(bare.address, stream, 1000, 4, cfg.duration)),
        callers=4,
    )
    ratios.append(ratio(ours, base))

    history = 2_000 if cfg.smoke else 100_000
    for i in range(10):
        await _fill(store.address, f"catchup-{i}", history // 10)
    await _settle(db)
    ours, base = await bench.compare(
        "catch-up Subscribe",
        "events/s",
        (
            "ours",
            lambda: catch_up_rate(store.address, pb.SubscribeRequest(category="catchup"), history),
        ),
        (
            "bare gRPC",
            lambda: catch_up_rate(
                bare.address, pb.SubscribeRequest(after_position=history), history
            ),
        ),
        events=history,
    )
    ratios.append(ratio(ours, base, target=0.5))
    return ratios

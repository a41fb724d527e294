"""The KurrentDB port through KurrentDB's own Python client, against our own API in the same
run; and the eventsourcing library on our store through its KurrentDB adapter, against the
library on its own PostgreSQL recorder."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import grpc
from eventsourcing.domain import Aggregate, event
from kurrentdbclient import AsyncKurrentDBClient, NewEvent, StreamState
from kurrentdbclient.protos.v1 import shared_pb2, streams_pb2

from bench.harness import Bench, ratio, timed_rate
from bench.scenarios.append import PAYLOAD, eventsourcing_rate, grpc_append_rate
from bench.scenarios.read import _fill, read_stream_rate
from localpg import free_port


class KurrentAccount(Aggregate):
    """The library's aggregate as its KurrentDB adapter wants it: KurrentDB numbers a stream's
    first event 0."""

    INITIAL_VERSION = 0

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner


async def kurrent_append_rate(uri: str, callers: int, duration: float) -> float:
    """Single-event appends (KurrentDB's Append call), each caller on a stream of its own."""
    client = AsyncKurrentDBClient(uri)
    await client.connect()
    streams = [f"kurrentbench-{uuid.uuid4()}" for _ in range(callers)]
    try:

        async def work(n: int) -> int:
            await client.append_to_stream(
                streams[n],
                events=NewEvent(type="Benchmarked", data=PAYLOAD),
                current_version=StreamState.ANY,
            )
            return 1

        return await timed_rate(duration, callers, work)
    finally:
        await client.close()


async def kurrent_raw_append_rate(address: str, callers: int, duration: float) -> float:
    """Single-event Appends on a raw channel, with KurrentDB's messages as its client bundles
    them: the server's cost without the client library's per-call work."""
    streams = [f"kurrentraw-{uuid.uuid4()}" for _ in range(callers)]
    async with grpc.aio.insecure_channel(address) as channel:
        append = channel.stream_unary(
            "/event_store.client.streams.Streams/Append",
            request_serializer=streams_pb2.AppendReq.SerializeToString,
            response_deserializer=streams_pb2.AppendResp.FromString,
        )

        async def work(n: int) -> int:
            options = streams_pb2.AppendReq.Options(
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=streams[n].encode()),
                any=shared_pb2.Empty(),
            )
            message = streams_pb2.AppendReq.ProposedMessage(
                id=shared_pb2.UUID(string=str(uuid.uuid4())),
                metadata={"type": "Benchmarked", "content-type": "application/json"},
                data=PAYLOAD,
            )
            requests = [
                streams_pb2.AppendReq(options=options),
                streams_pb2.AppendReq(proposed_message=message),
            ]
            await append(iter(requests))
            return 1

        return await timed_rate(duration, callers, work)


async def kurrent_read_rate(uri: str, stream: str, callers: int, duration: float) -> float:
    client = AsyncKurrentDBClient(uri)
    await client.connect()
    try:

        async def work(_: int) -> int:
            return len(await client.get_stream(stream))

        return await timed_rate(duration, callers, work)
    finally:
        await client.close()


async def kurrent_raw_read_rate(address: str, stream: str, callers: int, duration: float) -> float:
    """Reads of 1000 events on a raw channel, with KurrentDB's messages as its client bundles
    them: the server's cost without the client library's per-event work."""
    options = streams_pb2.ReadReq.Options
    request = streams_pb2.ReadReq(
        options=options(
            stream=options.StreamOptions(
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode()),
                start=shared_pb2.Empty(),
            ),
            count=1000,
            no_filter=shared_pb2.Empty(),
            uuid_option=options.UUIDOption(string=shared_pb2.Empty()),
        )
    )
    async with grpc.aio.insecure_channel(address) as channel:
        read = channel.unary_stream(
            "/event_store.client.streams.Streams/Read",
            request_serializer=streams_pb2.ReadReq.SerializeToString,
            response_deserializer=streams_pb2.ReadResp.FromString,
        )

        async def work(_: int) -> int:
            return sum([1 async for response in read(request) if response.HasField("event")])

        return await timed_rate(duration, callers, work)


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    db = bench.database()
    listen = f"127.0.0.1:{free_port()}"
    store = bench.store(db, "--kurrentdb-listen", listen)
    uri = f"kurrentdb://{listen}?Tls=false"
    ratios = []
    callers = 8
    ours, base = await bench.compare(
        "append 1 event, KurrentDB client",
        "events/s",
        (
            "kurrentdbclient (Append)",
            functools.partial(kurrent_append_rate, uri, callers, cfg.duration),
        ),
        (
            "our API (unary Append)",
            functools.partial(grpc_append_rate, store.address, callers, 1, cfg.duration),
        ),
        callers=callers,
    )
    ratios.append(ratio(ours, base))
    ours, base = await bench.compare(
        "append 1 event, KurrentDB protocol",
        "events/s",
        ("raw Append", functools.partial(kurrent_raw_append_rate, listen, callers, cfg.duration)),
        (
            "our API (unary Append)",
            functools.partial(grpc_append_rate, store.address, callers, 1, cfg.duration),
        ),
        callers=callers,
    )
    ratios.append(ratio(ours, base))
    stream = "kurrentread-1"
    await _fill(store.address, stream, 1000)
    ours, base = await bench.compare(
        "read 1000 events, KurrentDB client",
        "events/s",
        ("kurrentdbclient (Read)", lambda: kurrent_read_rate(uri, stream, 4, cfg.duration)),
        (
            "our API (ReadStream)",
            lambda: read_stream_rate(store.address, stream, 1000, 4, cfg.duration),
        ),
        callers=4,
    )
    ratios.append(ratio(ours, base))
    # KurrentDB's Read sends one event a message: Python gRPC's cost per message, not the
    # store's, sets the pace. The floor: the bare server streaming one event a message.
    bare = bench.bare_server(page=1)
    ours, base = await bench.compare(
        "read 1000 events, one a message",
        "events/s",
        (
            "KurrentDB port (raw Read)",
            lambda: kurrent_raw_read_rate(listen, stream, 4, cfg.duration),
        ),
        (
            "bare gRPC, one a message",
            lambda: read_stream_rate(bare.address, stream, 1000, 4, cfg.duration),
        ),
        callers=4,
    )
    ratios.append(ratio(ours, base))
    library_db = bench.database()
    adapter = {"PERSISTENCE_MODULE": "eventsourcing_kurrentdb", "KURRENTDB_URI": uri}
    ours, base = await bench.compare(
        "eventsourcing library save",
        "events/s",
        (
            "on our store (KurrentDB adapter)",
            lambda: asyncio.to_thread(
                eventsourcing_rate, db, 8, cfg.duration, adapter, KurrentAccount
            ),
        ),
        (
            "on its PostgreSQL recorder",
            lambda: asyncio.to_thread(eventsourcing_rate, library_db, 8, cfg.duration),
        ),
        threads=8,
    )
    ratios.append(ratio(ours, base))
    return ratios

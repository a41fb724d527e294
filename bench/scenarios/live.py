"""Live latency: events appended at a steady rate, timed from the Append call to their arrival
at a subscriber (one machine, one clock). The same load against the bare server, which echoes
each Append to its live subscribers with no database, measures what gRPC and this machine cost
on their own: the floor under our numbers.

Each server gets a warm-up run first (the store's first appends compile its SQL function and
create streams: tens of milliseconds that belong to no steady state). The load generator's own
garbage collector is off while it measures: its pauses would be counted as delivery latency,
for both servers alike."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from typing import Any

import grpc

from bench.harness import Bench, Result, absolute, ratio
from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latencies(address: str, rate: int, duration: float) -> list[float]:
    """Milliseconds from Append to delivery, for events sent at `rate` per second."""
    gc.collect()
    gc.disable()
    try:
        return await _measure(address, rate, duration)
    finally:
        gc.enable()


async def _measure(address: str, rate: int, duration: float) -> list[float]:
    per_append = max(1, rate // 1000)  # above 1,000/s, several events per append
    appends = int(rate * duration) // per_append
    interval = per_append / rate
    category = f"live{uuid.uuid4().hex[:8]}"
    sent: dict[str, float] = {}
    received: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        stub = pb_grpc.EventStoreStub(channel)
        call = stub.Subscribe(pb.SubscribeRequest(category=category))
        caught_up = asyncio.Event()
        done = asyncio.Event()

        async def consume() -> None:
            async for response in call:
                now = time.perf_counter()
                for event in response.events:
                    received.append((now - sent[event.id]) * 1000)
                if response.caught_up:
                    caught_up.set()
                if len(received) >= appends * per_append:
                    done.set()
                    return

        consumer = asyncio.create_task(consume())
        await caught_up.wait()
        start = time.perf_counter()
        pending = []
        for i in range(appends):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            events = [pb.EventData(id=str(uuid.uuid4()), type="Live") for _ in range(per_append)]
            now = time.perf_counter()
            for e in events:
                sent[e.id] = now
            pending.append(
                asyncio.ensure_future(
                    stub.Append(pb.AppendRequest(stream=f"{category}-{i % 16}", events=events))
                )
            )
        await asyncio.gather(*pending)
        await asyncio.wait_for(done.wait(), 60)
        call.cancel()
        consumer.cancel()
    return received


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    servers = {"ours": bench.store(bench.database()), "bare gRPC": bench.bare_server()}
    for server in servers.values():
        await latencies(server.address, 1000, cfg.duration if cfg.smoke else 1.0)
    ratios = []
    for rate in (100,) if cfg.smoke else (100, 1000, 5000):
        duration = cfg.duration if cfg.smoke else 3.0
        p99: dict[str, Result] = {}
        for variant, server in servers.items():
            samples = await latencies(server.address, rate, duration)
            for label, value in (
                ("p50", _percentile(samples, 0.5)),
                ("p99", _percentile(samples, 0.99)),
                ("max", max(samples)),
            ):
                result = Result(
                    "live latency", variant, f"{label} ms", value, {"events/s": rate}, [value]
                )
                bench.results.append(result)
                if label == "p99":
                    p99[variant] = result
                print(
                    f"  live latency {variant:<9} {label:<4} at {rate:>5} events/s: "
                    f"{value:8.2f} ms",
                    flush=True,
                )
        if rate == 1000:
            ratios.append(absolute(p99["ours"], 10.0))
            ratios.append(ratio(p99["ours"], p99["bare gRPC"], higher_is_better=False))
    return ratios

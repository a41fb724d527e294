"""Live latency: events appended at a steady rate, timed from the Append call to their arrival
at a subscriber (one machine, one clock)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc

from bench.harness import Bench, Result, absolute
from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latencies(address: str, rate: int, duration: float) -> list[float]:
    """Milliseconds from Append to delivery, for events sent at `rate` per second."""
    per_append = max(1, rate // 1000)  # above 1,000/s, several events per append
    appends = int(rate * duration) // per_append
    interval = per_append / rate
    category = f"live{uuid.uuid4().hex[:8]}"
    sent: dict[str, float] = {}
    received: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
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
    store = bench.store(bench.database())
    ratios = []
    for rate in (100,) if cfg.smoke else (100, 1000, 5000):
        duration = cfg.duration if cfg.smoke else 3.0
        samples = await latencies(store.address, rate, duration)
        for label, value in (
            ("p50", _percentile(samples, 0.5)),
            ("p99", _percentile(samples, 0.99)),
            ("max", max(samples)),
        ):
            result = Result(
                "live latency", "ours", f"{label} ms", value, {"events/s": rate}, [value]
            )
            bench.results.append(result)
            print(f"  live latency {label:<4} at {rate:>5} events/s: {value:8.2f} ms", flush=True)
            if label == "p99" and rate == 1000:
                ratios.append(absolute(result, 10.0))
    return ratios

"""Live fan-out: many category subscribers, each in its own process, while one writer appends
at a steady rate. Each event carries the wall-clock time of its Append; each subscriber
measures the delay to its arrival. Reported: the p50/p99 over every delivery, and how many
deliveries never arrived (none may be dropped)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.harness import Bench, Result, absolute
from eventstore_client import EventStoreClient, NewEvent
from tools.processes import ROOT, ServerProcess

STREAMS = 16  # the writer's appends go round these streams of the category


async def _start_subscribers(
    address: str, category: str, count: int, subscribers: int
) -> list[asyncio.subprocess.Process]:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.fanout_subscriber",
            address,
            category,
            str(count),
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        for _ in range(subscribers)
    ]
    for process in processes:  # each says when it is caught up and live
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"a fan-out subscriber failed to start: {line!r}")
    return processes


@dataclass
class FanOut:
    delays: list[float] = field(default_factory=list)  # ms, every delivery's
    missing: int = 0  # deliveries that never arrived
    messages: int = 0  # messages that carried the deliveries, over every subscriber
    subscriber_cpu_s: float = 0.0  # CPU the subscriber processes spent, together


async def fan_out(address: str, subscribers: int, rate: int, duration: float) -> FanOut:
    count = int(rate * duration)
    category = f"fan{uuid.uuid4().hex[:8]}"
    processes = await _start_subscribers(address, category, count, subscribers)
    try:
        # The writer is the client library's default path (appends over one session).
        async with EventStoreClient(address) as client:
            start = time.perf_counter()
            pending = []
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = NewEvent("FannedOut", repr(time.time()).encode())
                pending.append(
                    asyncio.ensure_future(client.append(f"{category}-{i % STREAMS}", [event]))
                )
            await asyncio.gather(*pending)
        outcome = FanOut()
        for process in processes:
            assert process.stdout is not None
            try:
                line = await asyncio.wait_for(process.stdout.readline(), 60)
                report = json.loads(line) if line else {}
            except TimeoutError:
                report = {}
            outcome.delays += report.get("delays", [])
            outcome.missing += count - len(report.get("delays", []))
            outcome.messages += report.get("messages", 0)
            outcome.subscriber_cpu_s += report.get("cpu_s", 0.0)
        return outcome
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await process.wait()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("inf")


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    store: ServerProcess = bench.store(bench.database())
    subscribers, rate = (3, 50) if cfg.smoke else (100, 500)
    duration = 1.0 if cfg.smoke else 6.0
    await fan_out(store.address, min(subscribers, 3), rate, 0.5)  # warm the store's paths
    outcome = await fan_out(store.address, subscribers, rate, duration)
    delivered = max(1, len(outcome.delays))
    params = {"subscribers": subscribers, "appends/s": rate}
    results = []
    for metric, value in (
        ("p50 ms", _p(outcome.delays, 0.5)),
        ("p99 ms", _p(outcome.delays, 0.99)),
        ("missing", float(outcome.missing)),
        ("events/message", delivered / max(1, outcome.messages)),
        ("subscriber CPU µs/event", outcome.subscriber_cpu_s * 1e6 / delivered),
    ):
        result = Result("live fan-out", "ours", metric, value, params, [value])
        bench.results.append(result)
        print(f"  live fan-out {params}: {metric:<8} {value:8.1f}", flush=True)
        if metric == "p99 ms":
            results.append(absolute(result, 50.0))
        if metric == "missing":
            results.append(absolute(result, 0.0))
    return results

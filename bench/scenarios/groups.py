"""Consumer groups: a handler that waits 10 ms on I/O per event, over 500 streams of 4 events,
with today's sequential SubscriptionRunner against GroupConsumers (one at concurrency 32; one,
two and four members at concurrency 8); and the delivery latency from Append to a member.

Every variant reads the same events: each run creates a group of its own that starts after the
position the fill began at, so runs do not share state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.harness import Bench, Result, absolute, ratio
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.consumer import GroupConsumer
from eventstore_client.subscription import SubscriptionRunner

HANDLER_S = 0.010  # what the handler awaits per event (I/O)


async def _fill(client: EventStoreClient, category: str, streams: int, per_stream: int) -> int:
    """The events (interleaved across streams), and the position before them."""
    start: int | None = None
    for version in range(per_stream):
        for s in range(0, streams, 50):  # concurrently, 50 streams at a time
            results = await asyncio.gather(
                *(
                    client.append(f"{category}-{n}", [NewEvent.json("Work", {"v": version})])
                    for n in range(s, min(s + 50, streams))
                )
            )
            if start is None:
                start = min(r.position for r in results) - 1
    assert start is not None
    return start


async def _handler(event: RecordedEvent) -> None:
    await asyncio.sleep(HANDLER_S)


async def _group_rate(
    client: EventStoreClient, category: str, after: int, total: int, members: int, each: int
) -> float:
    """Events per second for `members` GroupConsumers at concurrency `each` to handle all."""
    group = f"bench.{uuid.uuid4().hex[:12]}"
    await client.create_group(group, category=category, start_after_position=after)
    handled = 0
    done = asyncio.Event()

    async def handle(event: RecordedEvent) -> None:
        nonlocal handled
        await _handler(event)
        handled += 1
        if handled >= total:
            done.set()

    consumers = [
        GroupConsumer(client, group, handle, member=f"m{n}", concurrency=each)
        for n in range(members)
    ]
    start = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await asyncio.wait_for(done.wait(), 300)
        return total / (time.perf_counter() - start)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await client.delete_group(group)


async def _sequential_rate(client: EventStoreClient, category: str, duration: float) -> float:
    """Events per second of a SubscriptionRunner (one event at a time) over `duration`."""
    handled = 0

    async def handle(event: RecordedEvent) -> None:
        nonlocal handled
        await _handler(event)
        handled += 1

    runner = SubscriptionRunner(client, f"bench.{uuid.uuid4().hex[:12]}", handle, category=category)
    start = time.perf_counter()
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(duration)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return handled / (time.perf_counter() - start)


async def handler_throughput(bench: Bench, address: str) -> list[dict[str, Any]]:
    cfg = bench.config
    streams, per_stream = (50, 2) if cfg.smoke else (500, 4)
    total = streams * per_stream
    category = f"work{uuid.uuid4().hex[:8]}"
    async with EventStoreClient(address) as client:
        after = await _fill(client, category, streams, per_stream)

        def group(members: int, each: int) -> Callable[[], Awaitable[float]]:
            return lambda: _group_rate(client, category, after, total, members, each)

        params = {"streams": streams, "events": total, "handler ms": HANDLER_S * 1000}
        concurrent, sequential = await bench.compare(
            "group consumer 10 ms handler",
            "events/s",
            ("1 member, concurrency 32", group(1, 32)),
            ("SubscriptionRunner", lambda: _sequential_rate(client, category, cfg.duration)),
            **params,
        )
        four, one = await bench.compare(
            "group consumer 10 ms handler",
            "events/s",
            ("4 members, concurrency 8", group(4, 8)),
            ("1 member, concurrency 8", group(1, 8)),
            **params,
        )
        two = await bench.measure(
            "group consumer 10 ms handler",
            "2 members, concurrency 8",
            "events/s",
            group(2, 8),
            **params,
        )
    return [
        ratio(concurrent, sequential, target=15.0),
        ratio(four, one, target=3.0),
        ratio(two, one),
    ]


async def delivery_latency(address: str, rate: int, duration: float) -> list[float]:
    """Milliseconds from Append to a group member's receipt, for single-event appends at
    `rate`/s over 100 streams (the load generator's collector off while it measures)."""
    category = f"lat{uuid.uuid4().hex[:8]}"
    gc.collect()
    gc.disable()
    try:
        async with EventStoreClient(address) as client:
            head = (await client.stats()).head_position
            group = f"bench.{uuid.uuid4().hex[:12]}"
            await client.create_group(group, category=category, start_after_position=head)
            sent: dict[str, float] = {}
            received: list[float] = []
            count = int(rate * duration)
            async with client.consume(group, "latency", 1000) as session:

                async def receive() -> None:
                    async for delivery in session.deliveries():
                        received.append((time.perf_counter() - sent[delivery.event.id]) * 1000)
                        session.ack(delivery.event.position)
                        if len(received) == count:
                            return

                receiver = asyncio.create_task(receive())
                start = time.perf_counter()
                appends = []
                for i in range(count):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    event = NewEvent("Live")
                    sent[event.id] = time.perf_counter()
                    appends.append(
                        asyncio.ensure_future(client.append(f"{category}-{i % 100}", [event]))
                    )
                await asyncio.gather(*appends)
                await asyncio.wait_for(receiver, 60)
            await client.delete_group(group)
            return received
    finally:
        gc.enable()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    store = bench.store(bench.database())
    ratios = await handler_throughput(bench, store.address)
    rate = 100 if cfg.smoke else 1000
    duration = cfg.duration if cfg.smoke else 3.0
    await delivery_latency(store.address, rate, min(duration, 1.0))  # warm-up
    samples = await delivery_latency(store.address, rate, duration)
    p99 = None
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        value = _percentile(samples, q)
        result = Result(
            "group delivery latency", "ours", f"{label} ms", value, {"events/s": rate}, [value]
        )
        bench.results.append(result)
        print(f"  group delivery latency {label} at {rate}/s: {value:8.2f} ms", flush=True)
        p99 = result if label == "p99" else p99
    assert p99 is not None
    ratios.append(absolute(p99, 15.0))
    return ratios

"""The scavenger: how fast it removes deleted events, and what it costs appends meanwhile
(appends while a large delete is being scavenged, against appends with none, same store, runs
alternating)."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

from bench.harness import Bench, ratio
from bench.scenarios.append import PAYLOAD, client_append_rate
from eventstore_client import EventStoreClient, NewEvent

BATCH = 100  # events per append when filling


async def fill(client: EventStoreClient, streams: int, per_stream: int) -> list[str]:
    """`streams` new streams of `per_stream` events each; their names."""
    prefix = uuid.uuid4().hex[:8]
    names = [f"scav{prefix}-{i}" for i in range(streams)]

    async def one(name: str) -> None:
        for _ in range(per_stream // BATCH):
            await client.append(name, [NewEvent("Benchmarked", PAYLOAD) for _ in range(BATCH)])

    for start in range(0, streams, 16):
        await asyncio.gather(*(one(n) for n in names[start : start + 16]))
    return names


async def delete_all(client: EventStoreClient, names: list[str]) -> None:
    for start in range(0, len(names), 32):
        await asyncio.gather(
            *(client.delete_stream(n, tombstone=True) for n in names[start : start + 32])
        )


async def removal_rate(address: str, streams: int, per_stream: int) -> float:
    """Events removed per second, from the deletes of `streams` full streams until the
    scavenger has removed them all."""
    async with EventStoreClient(address) as client:
        names = await fill(client, streams, per_stream)
        before = (await client.stats()).events_scavenged
        started = time.perf_counter()
        await delete_all(client, names)
        target = before + streams * per_stream
        while True:
            if (await client.stats()).events_scavenged >= target:
                break
            await asyncio.sleep(0.01)
        return streams * per_stream / (time.perf_counter() - started)


async def appends_while(
    address: str,
    scavenging: bool,
    streams: int,
    per_stream: int,
    callers: int,
    duration: float,
    smoke: bool = False,
) -> float:
    """Single-event appends/s for `duration`, right after deleting a filled set of streams
    (`scavenging`) or not (the same filling, so both sides append to an equally big table)."""
    async with EventStoreClient(address) as client:
        names = await fill(client, streams, per_stream)
        before = (await client.stats()).events_scavenged
        if scavenging:
            await delete_all(client, names)
        rate = await client_append_rate(address, callers, duration)
        removed = (await client.stats()).events_scavenged - before
        if scavenging and not smoke:
            # The comparison means something only if the scavenger worked all along.
            assert removed < streams * per_stream, "the scavenge ended before the appends did"
        return rate


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    store = bench.store(bench.database(), "--scavenge-interval", "0.05")
    streams, per_stream = (10, 100) if cfg.smoke else (100, 1000)
    await bench.measure(
        "scavenge",
        "ours",
        "events removed/s",
        functools.partial(removal_rate, store.address, streams, per_stream),
        events=streams * per_stream,
    )
    callers = 8 if cfg.smoke else 32
    backlog = (10, 200) if cfg.smoke else (200, 1000)  # more than `duration` of scavenging
    during, quiet = await bench.compare(
        "appends during a scavenge",
        "events/s",
        (
            "ours, scavenging",
            functools.partial(
                appends_while, store.address, True, *backlog, callers, cfg.duration, cfg.smoke
            ),
        ),
        (
            "ours, no scavenge",
            functools.partial(appends_while, store.address, False, *backlog, callers, cfg.duration),
        ),
        callers=callers,
        backlog=backlog[0] * backlog[1],
    )
    return [ratio(during, quiet, target=0.8)]

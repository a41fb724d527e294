"""Append throughput: ours against a bare gRPC server, naive asyncpg, the eventsourcing
library, and COPY for multi-event appends."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.harness import Bench, ratio, timed_rate
from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client import EventStoreClient, NewEvent

PAYLOAD = b'{"amount":1250,"currency":"EUR","note":"benchmark"}'


def _request(stream: str, count: int) -> pb.AppendRequest:
    return pb.AppendRequest(
        stream=stream,
        events=[
            pb.EventData(
                id=str(uuid.uuid4()),
                type="Benchmarked",
                data=PAYLOAD,
                content_type="application/json",
            )
            for _ in range(count)
        ],
    )


async def grpc_append_rate(address: str, callers: int, events: int, duration: float) -> float:
    """Events per second appended by `callers` concurrent loops over one channel."""
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        stub = pb_grpc.EventStoreStub(channel)
        prefix = uuid.uuid4().hex[:8]

        async def work(n: int) -> int:
            await stub.Append(_request(f"bench{prefix}-{n}", events))
            return events

        return await timed_rate(duration, callers, work)


async def client_append_rate(
    address: str, callers: int, duration: float, pack: bool = True
) -> float:
    """Single-event appends through the client library's default path (one AppendSession
    shared by every caller in the process; `pack=False`: one append per message)."""
    async with EventStoreClient(address, pack_appends=pack) as client:
        prefix = uuid.uuid4().hex[:8]
        await client.append(f"bench{prefix}-warm", [NewEvent("Benchmarked", PAYLOAD)])

        async def work(n: int) -> int:
            event = NewEvent("Benchmarked", PAYLOAD, content_type="application/json")
            await client.append(f"bench{prefix}-{n}", [event])
            return 1

        return await timed_rate(duration, callers, work)


async def naive_asyncpg_rate(database_url: str, connections: int, duration: float) -> float:
    """One INSERT per transaction (autocommit), `connections` connections in parallel."""
    conns = [await asyncpg.connect(database_url) for _ in range(connections)]
    await conns[0].execute(
        """CREATE TABLE IF NOT EXISTS naive_events (
               position bigserial PRIMARY KEY, stream text NOT NULL, event_id uuid NOT NULL UNIQUE,
               type text NOT NULL, data bytea NOT NULL, metadata jsonb NOT NULL DEFAULT '{}',
               recorded_at timestamptz NOT NULL DEFAULT now())"""
    )

    async def work(n: int) -> int:
        await conns[n].execute(
            "INSERT INTO naive_events (stream, event_id, type, data) VALUES ($1, $2, $3, $4)",
            f"naive-{n}",
            uuid.uuid4(),
            "Benchmarked",
            PAYLOAD,
        )
        return 1

    try:
        return await timed_rate(duration, connections, work)
    finally:
        for c in conns:
            await c.close()


async def copy_rate(database_url: str, connections: int, rows: int, duration: float) -> float:
    """The same rows as an N-event append, written with COPY: the floor of what PostgreSQL costs."""
    conns = [await asyncpg.connect(database_url) for _ in range(connections)]
    await conns[0].execute(
        """CREATE TABLE IF NOT EXISTS copy_events (LIKE es_events INCLUDING ALL);
           CREATE SEQUENCE IF NOT EXISTS copy_positions;
           ALTER TABLE copy_events ALTER COLUMN position SET DEFAULT nextval('copy_positions')"""
    )
    columns = [
        "stream_id",
        "version",
        "stream",
        "category",
        "event_id",
        "type",
        "metadata",
        "record",
    ]
    # A record of the same size as the store's: the encoded event, framed.
    record = (
        b"\x0a\x7f"
        + pb.RecordedEvent(
            id=str(uuid.uuid4()),
            stream="copy-1",
            type="Benchmarked",
            data=PAYLOAD,
            content_type="application/json",
            version=1,
            position=1,
        ).SerializeToString()
    )

    async def work(n: int) -> int:
        stream_id = uuid.uuid4().int >> 66  # a new stream per call, as an append to a new stream
        records = [
            (
                stream_id,
                i + 1,
                f"copy-{stream_id}",
                "copy",
                uuid.uuid4(),
                "Benchmarked",
                "{}",
                record,
            )
            for i in range(rows)
        ]
        await conns[n].copy_records_to_table("copy_events", records=records, columns=columns)
        return rows

    try:
        return await timed_rate(duration, connections, work)
    finally:
        for c in conns:
            await c.close()


class Account(Aggregate):
    """The eventsourcing library's aggregate for its baseline: one event per new account."""

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner


def postgres_env(database_url: str, pool_size: int) -> dict[str, str]:
    """The eventsourcing library's settings for its own PostgreSQL recorder."""
    rest, dbname = database_url.rsplit("/", 1)
    hostport = rest.rsplit("@", 1)[1]
    host, port = hostport.split(":")
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": port,
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "unused-with-trust",
        "POSTGRES_POOL_SIZE": str(pool_size),
        "CREATE_TABLE": "y",
    }


def eventsourcing_rate(
    database_url: str,
    threads: int,
    duration: float,
    env: dict[str, str] | None = None,
    account: Callable[[str], Aggregate] = Account,
) -> float:
    """The eventsourcing library, on its PostgreSQL recorder unless `env` says otherwise: each
    save records a new aggregate's first event."""
    env = env or postgres_env(database_url, threads)
    app: Any = Application(env=env)
    app.save(account("warm-up"))  # resolves the library's topic cache before threads race on it
    count = [0] * threads
    deadline = time.monotonic() + duration

    def worker(n: int) -> None:
        while time.monotonic() < deadline:
            app.save(account("bench"))
            count[n] += 1

    start = time.monotonic()
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    app.close()
    return sum(count) / elapsed


async def run(bench: Bench) -> list[dict[str, Any]]:
    cfg = bench.config
    db = bench.database()
    store = bench.store(db)
    bare = bench.bare_server()
    ratios = []
    by_callers = {}
    for callers in (1, 8) if cfg.smoke else (1, 8, 32, 128):
        ours, base = await bench.compare(
            "append 1 event",
            "events/s",
            ("ours", functools.partial(grpc_append_rate, store.address, callers, 1, cfg.duration)),
            (
                "bare gRPC",
                functools.partial(grpc_append_rate, bare.address, callers, 1, cfg.duration),
            ),
            callers=callers,
        )
        by_callers[callers] = ours
        ratios.append(ratio(ours, base, target=0.8 if callers == 32 else None))
    callers = 8 if cfg.smoke else 32
    session = functools.partial(client_append_rate, store.address, callers, cfg.duration)
    ours, unary = await bench.compare(
        "append 1 event, client library",
        "events/s",
        ("ours (AppendSession)", session),
        (
            "bare unary echo",
            functools.partial(grpc_append_rate, bare.address, callers, 1, cfg.duration),
        ),
        callers=callers,
    )
    ratios.append(ratio(ours, unary, target=1.5))
    ours, echo = await bench.compare(
        "append 1 event, client library",
        "events/s",
        ("ours (AppendSession)", session),
        (
            "bare bidi echo",
            functools.partial(client_append_rate, bare.address, callers, cfg.duration, False),
        ),
        callers=callers,
    )
    # The baseline is the echo of one append per message (what a session costs at
    # best without packing); the echo that packs as we do is reported beside it.
    ratios.append(ratio(ours, echo, target=0.8))
    ours, packed_echo = await bench.compare(
        "append 1 event, client library",
        "events/s",
        ("ours (AppendSession)", session),
        (
            "bare bidi echo, packed",
            functools.partial(client_append_rate, bare.address, callers, cfg.duration),
        ),
        callers=callers,
    )
    ratios.append(ratio(ours, packed_echo))
    reference = by_callers[8 if cfg.smoke else 32]
    naive = await bench.measure(
        "append 1 event",
        "naive asyncpg",
        "events/s",
        lambda: naive_asyncpg_rate(db, 8, cfg.duration),
        connections=8,
    )
    ratios.append(ratio(reference, naive))
    # Ours again, in alternation with the library: its rate drifts with the machine as much as
    # ours does (353-562/s across runs of one day).
    callers = 8 if cfg.smoke else 32
    ours, library = await bench.compare(
        "append 1 event vs library",
        "events/s",
        ("ours", functools.partial(grpc_append_rate, store.address, callers, 1, cfg.duration)),
        (
            "eventsourcing library (8 threads)",
            lambda: asyncio.to_thread(eventsourcing_rate, db, 8, cfg.duration),
        ),
        callers=callers,
    )
    ratios.append(ratio(ours, library, target=4.0))
    for size in (10, 100):
        ours, floor = await bench.compare(
            f"append {size} events",
            "events/s",
            ("ours", functools.partial(grpc_append_rate, store.address, 8, size, cfg.duration)),
            ("COPY", functools.partial(copy_rate, db, 8, size, cfg.duration)),
            callers=8,
        )
        ratios.append(ratio(ours, floor, target=0.5 if size == 100 else None))
    return ratios

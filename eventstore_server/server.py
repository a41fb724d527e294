"""Wiring: PostgreSQL pool, migrations, writer, tail, gRPC server, health, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from datetime import UTC, datetime

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import metrics, schema
from eventstore_server.access import Access
from eventstore_server.config import Settings
from eventstore_server.console import Console
from eventstore_server.console import serve as console_serve
from eventstore_server.groups import GroupManager
from eventstore_server.reader import Reader
from eventstore_server.scavenger import Scavenger
from eventstore_server.service import EventStoreService, add_to_server
from eventstore_server.session_bounds import bounded_url
from eventstore_server.tail import LiveTail
from eventstore_server.writer import GroupCommitWriter
from hosting.database import connect_pool
from hosting.grpc_server import (
    add_health_and_reflection,
    health_only_server,
    until_signalled,
)
from hosting.ports import busy_message, in_use
from hosting.security import NO_PORT_SHARING, CannotListen, add_port, server_tls

log = logging.getLogger("eventstore_server")
# While the database is down, asyncpg's pool logs a warning with a full traceback on every
# attempt to refill itself. The outage is reported once by the health check (and the writer);
# asyncpg's errors still show.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EventStore"].full_name


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Long-lived subscriptions survive idle periods and dead peers are noticed.
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_pings_without_data", 0),
        NO_PORT_SHARING,
    ]


# Every read is an index range scan in index order with a LIMIT (one page). Right after a burst
# of appends the table's statistics are stale (autovacuum analyzes about once a minute), and the
# planner, believing few rows match, picks a bitmap scan plus a sort of the *whole* remaining
# range for every page: catch-up becomes quadratic. These settings rule that plan out.
READ_SESSION_SETTINGS = {"enable_bitmapscan": "off", "enable_sort": "off"}


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool connections only run autocommit queries and closed transactions; they never change
    session state, so the default reset (a round trip on every release) has nothing to undo."""


async def connect(settings: Settings) -> asyncpg.Pool:
    """A pool on a migrated database. While PostgreSQL is not up yet (a cold start of a whole
    deployment) it waits, as every process does (`hosting.database.connect_pool`): never an
    exit for what only needs time; what waiting cannot fix ends the process with one line."""

    async def migrate(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            applied = await schema.migrate(conn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))

    return await connect_pool(
        "eventstore",
        settings.database_url,
        migrate,
        min_size=2,
        max_size=settings.pool_size,
        reset=_no_reset,
        server_settings=READ_SESSION_SETTINGS,
    )


def _export(stats: pb.GetStatsResponse) -> None:
    metrics.HEAD.set(stats.head_position)
    for s in stats.subscribers:
        metrics.SUBSCRIBER_POSITION.labels(s.name).set(s.position)
        metrics.SUBSCRIBER_LAG.labels(s.name).set(s.lag)


async def _watch_health(
    reader: Reader,
    servicer: health.aio.HealthServicer,
    interval: float,
    replica: tuple[str, str, datetime],
) -> None:
    """SERVING only while the database answers. The same query feeds the gauges; `replica`
    (id, address, start) is recorded as seen with each good check, for the console."""
    last = None
    while True:
        try:
            stats = reader.stats(count_streams=False)  # every interval: no table scan
            _export(await asyncio.wait_for(stats, timeout=max(interval, 1.0)))
            await asyncio.wait_for(reader.seen(*replica), timeout=max(interval, 1.0))
            status = health_pb2.HealthCheckResponse.SERVING
        except Exception as exc:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
            if last != status:
                log.warning("database check failed: %s", exc)
        if status != last:
            for name in ("", SERVICE_NAME):
                await servicer.set(name, status)
            last = status
        await asyncio.sleep(interval)


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain and close."""
    listen_host, _, listen_port = settings.listen.rpartition(":")
    if listen_port.isdigit() and in_use(listen_host.strip("[]") or "0.0.0.0", int(listen_port)):
        raise CannotListen(busy_message(settings.listen))  # before touching the database
    access = Access.from_files(settings.tokens_file, settings.tls_client_ca, settings.policy_file)
    tls = server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    metrics.start(settings.metrics_listen)
    # Every connection below gets the session bounds through the URL (session_bounds.py).
    bounded = bounded_url(settings.database_url, settings.db_idle_transaction_timeout)
    settings = dataclasses.replace(settings, database_url=bounded)
    pool = await connect(settings)
    reader = Reader(pool, settings.limits.read_page_size, settings.limits.read_page_bytes)
    tail = LiveTail(reader, settings.database_url, settings.tail_events)
    await tail.start()
    writer = GroupCommitWriter(
        settings.database_url,
        max_batch_events=settings.max_batch_events,
        pipeline=settings.writer_pipeline,
        commit_delay=settings.commit_delay_ms / 1000,
        commit_siblings=settings.commit_siblings,
        on_commit=tail.advance,
    )
    writer.start()
    groups = GroupManager(pool, tail, settings.database_url)
    groups.start()
    scavenger = None
    scavenging = None
    if settings.scavenge_interval > 0:
        scavenger = Scavenger(pool, settings.scavenge_interval, settings.scavenge_batch)
        scavenging = asyncio.create_task(scavenger.run(), name="scavenger")

    server = grpc.aio.server(options=grpc_options(settings))
    service = EventStoreService(writer, reader, tail, settings.limits, access, groups, scavenger)
    add_to_server(service, server)
    health_servicer = add_health_and_reflection(server, [SERVICE_NAME])
    port = add_port(server, settings.listen, tls)
    await server.start()
    health_server = None
    if settings.health_listen:
        health_server = await health_only_server(settings.health_listen, health_servicer)
    health_task = asyncio.create_task(
        _watch_health(
            reader,
            health_servicer,
            settings.health_interval,
            (groups.replica, settings.listen, datetime.now(UTC)),
        )
    )
    console_runner = None
    if settings.console_listen:
        console = Console(
            reader, tail, access, groups, settings.console_trace_link, settings.health_interval
        )
        console_runner = await console_serve(console, settings.console_listen, tls)
        scheme = "https" if tls else "http"
        print(f"console at {scheme}://{settings.console_listen}/", flush=True)
    kurrentdb_server = None
    if settings.kurrentdb_listen:
        # Imported only here: KurrentDB's messages must not be loaded into a process that
        # does not serve them (a client library bundling its own copy could share it).
        from eventstore_server.kurrentdb import serve as kurrentdb

        kurrentdb_server, kurrentdb_port = await kurrentdb.start(
            service,
            settings.kurrentdb_listen,
            tls,
            grpc_options(settings),
            settings.kurrentdb_advertise_host,
        )
        kurrentdb_host = settings.kurrentdb_listen.rsplit(":", 1)[0]
        print(f"KurrentDB protocol on {kurrentdb_host}:{kurrentdb_port}", flush=True)
    host = settings.listen.rsplit(":", 1)[0]
    security = "TLS" if tls else "plaintext"
    if tls and tls.client_ca_file:
        security = "mutual TLS"
    print(f"eventstore listening on {host}:{port} ({security})", flush=True)

    await until_signalled(ready)

    log.info("shutting down: draining calls for up to %.1fs", settings.shutdown_grace)
    health_task.cancel()
    await health_servicer.enter_graceful_shutdown()
    # Subscriptions end first (UNAVAILABLE: clients resubscribe elsewhere); in-flight appends
    # finish, because the writer keeps running until the server has stopped taking calls.
    service.close_sessions()
    if scavenging is not None:
        scavenging.cancel()
    await groups.close()
    await tail.close()  # live subscriptions end, the console's too
    if console_runner is not None:
        await console_runner.cleanup()
    if kurrentdb_server is not None:
        await kurrentdb_server.stop(settings.shutdown_grace)
    await server.stop(settings.shutdown_grace)
    if health_server is not None:
        await health_server.stop(0)
    await writer.close()
    for task in (health_task, scavenging):
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await pool.close()
    log.info("stopped")

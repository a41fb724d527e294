"""What a service waits for before it serves: its own PostgreSQL (a cold start of a whole
deployment brings everything up at once) and the event store. Waiting never ends in an exit
for something that is merely not up yet; what waiting cannot fix (a database that does not
exist, a wrong password) stops the service with one clear line."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

FATAL = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
FATAL_PATIENCE_S = 15.0  # how long a missing database or a refused login is waited for
WAITABLE = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError)


async def connect_pool(name: str, url: str, **options: Any) -> asyncpg.Pool:
    """`asyncpg.create_pool(url, **options)`, retried with capped back-off while PostgreSQL
    cannot be reached (said once per 10 s); SystemExit naming the problem when it is fatal."""
    delay, said, gave_up = 0.1, 0.0, 0.0
    while True:
        try:
            return await asyncpg.create_pool(url, **options)
        except FATAL as error:
            # Mostly a wrong URL or password; on a cold start the database may be created just
            # after PostgreSQL comes up: a bounded wait first.
            gave_up = gave_up or time.monotonic() + FATAL_PATIENCE_S
            if time.monotonic() > gave_up:
                raise SystemExit(f"{name}: {error} (check --database-url / DATABASE_URL)") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        except WAITABLE as error:
            if time.monotonic() - said > 10:  # once per interval, not per attempt
                log.warning("PostgreSQL not reachable yet (%s); waiting", error)
                said = time.monotonic()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def store_ready(name: str, channel: grpc.aio.Channel, period: float = 10.0) -> None:
    """Return once the event store behind `channel` says SERVING (its database is up too);
    until then wait with capped back-off, saying why once per `period`."""
    stub = health_pb2_grpc.HealthStub(channel)
    delay, said = 0.1, 0.0
    while True:
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
            why = "it is not serving yet"
        except grpc.aio.AioRpcError as error:
            why = f"{error.code().name}: {error.details()}"
        if time.monotonic() - said > period:
            log.warning("%s: waiting for the event store (%s)", name, why)
            said = time.monotonic()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)

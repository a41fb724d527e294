"""What a service waits for before it serves: its own PostgreSQL (a cold start of a whole
deployment brings everything up at once) and the event store. Waiting never ends in an exit
for something that is merely not up yet; what waiting cannot fix (a database that does not
exist, a wrong password) stops the service with one clear line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
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
WAITABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


async def connect_pool(
    name: str,
    url: str,
    prepare: Callable[[asyncpg.Pool], Awaitable[object]] | None = None,
    **options: Any,
) -> asyncpg.Pool:
    """`asyncpg.create_pool(url, **options)`, then `prepare(pool)` (migrations, say), retried
    together with capped back-off while PostgreSQL cannot be reached (said once per 10 s);
    SystemExit naming the problem when it is fatal."""
    delay, said, gave_up = 0.1, 0.0, 0.0
    while True:
        pool: asyncpg.Pool | None = None
        try:
            pool = await asyncpg.create_pool(url, **options)
            if prepare is not None:
                await prepare(pool)
            return pool
        except FATAL as error:
            # Mostly a wrong URL or password; on a cold start the database may be created just
            # after PostgreSQL comes up: a bounded wait first, then one line (no traceback).
            gave_up = gave_up or time.monotonic() + FATAL_PATIENCE_S
            if time.monotonic() > gave_up:
                raise SystemExit(f"{name}: {error} (check --database-url / DATABASE_URL)") from None
            why = f"{error}; waiting up to {FATAL_PATIENCE_S:.0f} s"
        except WAITABLE as error:
            why = f"PostgreSQL not reachable yet ({error}); waiting"
        if pool is not None:
            pool.terminate()
        if time.monotonic() - said > 10:  # once per interval, not per attempt
            log.warning("%s", why)
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


class AttachedPool:
    """Base of a service's own store in PostgreSQL (a read model, a key table): it gets its
    pool once PostgreSQL answers, since a service serves health before that (`attach`, which
    runs `setup`), and closes it on the way out."""

    what = "the database"  # for the error when used too early

    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        self._pool_or_none = pool

    @property
    def _pool(self) -> asyncpg.Pool:
        if self._pool_or_none is None:
            raise RuntimeError(f"{self.what} is not connected yet")
        return self._pool_or_none

    async def attach(self, pool: asyncpg.Pool) -> None:
        """Use `pool`, creating what the store needs in it (`setup`)."""
        self._pool_or_none = pool
        await self.setup()

    async def setup(self) -> None:
        """Create the store's schema and tables if needed (idempotent)."""

    async def close(self) -> None:
        if self._pool_or_none is not None:
            await self._pool_or_none.close()

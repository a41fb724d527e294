"""A service's connection pool to its own PostgreSQL: waits while the database is not up yet
(a cold start of a whole deployment), and stops with one clear line for what waiting cannot fix
(a database that does not exist, a wrong password)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

FATAL = (
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)
WAITABLE = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError)


async def connect_pool(
    name: str, url: str, patience: float = 300.0, **options: Any
) -> asyncpg.Pool:
    """`asyncpg.create_pool(url, **options)`, retried with capped back-off for `patience`
    seconds while PostgreSQL cannot be reached; SystemExit naming the problem otherwise."""
    deadline = time.monotonic() + patience
    delay, said = 0.1, 0.0
    while True:
        try:
            return await asyncpg.create_pool(url, **options)
        except FATAL as error:
            raise SystemExit(f"{name}: {error} (check --database-url / DATABASE_URL)") from None
        except WAITABLE as error:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: PostgreSQL still unreachable: {error}") from None
            if time.monotonic() - said > 10:  # once per interval, not per attempt
                log.warning("PostgreSQL not reachable yet (%s); waiting", error)
                said = time.monotonic()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

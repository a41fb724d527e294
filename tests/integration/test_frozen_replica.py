"""A store replica frozen (SIGSTOP: a long pause, a frozen VM, a node cut off without a reset)
stalls nothing for longer than the session bound: PostgreSQL ends its idle transaction, which
frees the locks it held (a group round's, the writer's). Two replicas, appends through one, a
consumer group with a member on each; the frozen one is stopped for longer than the bound
several times, each time while it has a transaction open, and the member on the other one keeps
receiving."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.consumer import GroupConsumer
from tests.support import until
from tools.processes import ServerProcess, store_process, unique

pytestmark = pytest.mark.timeout(300)

BOUND_S = 2.0  # --db-idle-transaction-timeout
FREEZE_S = 10.0  # each freeze: long enough that a stall of its length could not pass
FREEZES = 3
# The longest pause the live member may see: the bound, a round, and room for a busy machine;
# well under the freeze, which is what a stall behind the frozen replica's lock would last.
LONGEST_GAP_S = BOUND_S + 5.0
FROZEN_NAME = "frozen-replica"  # the frozen replica's sessions, in pg_stat_activity


def freeze(process: ServerProcess) -> None:
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGSTOP)


async def freeze_mid_transaction(process: ServerProcess, database_url: str) -> None:
    """Freeze `process` at a moment when it has a transaction open (a group round, mostly:
    appends go through the other replica), as a pause at any moment sometimes does; the
    freezes that miss are thawed at once and tried again."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(2000):
            freeze(process)
            caught = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE application_name = $1 AND state = 'idle in transaction'""",
                FROZEN_NAME,
            )
            if caught:
                return
            thaw(process)
            await asyncio.sleep(random.uniform(0.0, 0.02))
        raise AssertionError("never caught the replica inside a transaction")
    finally:
        await conn.close()


def thaw(process: ServerProcess) -> None:
    assert process.process is not None
    os.kill(process.process.pid, signal.SIGCONT)


async def test_a_frozen_replica_stalls_no_group_longer_than_the_bound(
    new_database: Callable[[], str],
) -> None:
    database_url = new_database()
    bound = ["--db-idle-transaction-timeout", str(BOUND_S)]
    named = f"{database_url}?application_name={FROZEN_NAME}"
    frozen = store_process(named, *bound).start()
    live = store_process(database_url, *bound).start()
    group, category = unique("g"), unique("c")
    received: list[float] = []  # when the live replica's member got each delivery
    handled: dict[str, list[int]] = {}  # stream -> versions handled, by either member

    def recorder(on_live: bool) -> Callable[[RecordedEvent], Awaitable[None]]:
        async def handle(event: RecordedEvent) -> None:
            if on_live:
                received.append(time.monotonic())
            handled.setdefault(event.stream, []).append(event.version)

        return handle

    try:
        async with (
            EventStoreClient(live.address) as via_live,
            EventStoreClient(frozen.address) as via_frozen,
        ):
            await via_live.create_group(group, category=category)
            members = [
                asyncio.create_task(GroupConsumer(via_live, group, recorder(True)).run()),
                asyncio.create_task(GroupConsumer(via_frozen, group, recorder(False)).run()),
            ]
            appended = 0

            async def append_for_ever() -> None:
                nonlocal appended
                while True:
                    await via_live.append(f"{category}-{appended % 20}", [NewEvent("Happened")])
                    appended += 1
                    await asyncio.sleep(0.02)

            appending = asyncio.create_task(append_for_ever())
            try:
                gaps = []
                for _ in range(FREEZES):
                    await until(lambda: len(received) > 20, 60, "deliveries on the live member")
                    received.clear()
                    start = time.monotonic()
                    await freeze_mid_transaction(frozen, database_url)
                    try:
                        await asyncio.sleep(FREEZE_S)  # the freeze itself, not a wait for a state
                    finally:
                        thaw(frozen)
                    times = [start, *received, time.monotonic()]
                    gaps.append(max(b - a for a, b in itertools.pairwise(times)))
                assert max(gaps) < LONGEST_GAP_S, gaps
            finally:
                appending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await appending
            total = appended

            def all_handled() -> bool:
                return sum(len(set(v)) for v in handled.values()) == total

            await until(all_handled, 60, "every event handled after the thaw")
            for versions in handled.values():  # each stream in order: nothing stale written
                firsts = list(dict.fromkeys(versions))
                assert firsts == sorted(firsts)
            for member in members:
                member.cancel()
            await asyncio.gather(*members, return_exceptions=True)
    finally:
        for process in (frozen, live):
            thaw(process)
            process.stop()

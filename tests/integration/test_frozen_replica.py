"""A store replica frozen (SIGSTOP: a long pause, a frozen VM) or cut off from PostgreSQL
without a reset (its packets stop arriving) stalls nothing for longer than the session bound:
PostgreSQL ends its idle transaction, which frees the locks it held (a group round's, the
writer's). Two replicas, appends through one, a consumer group with a member on each; the
faulty one is frozen or cut off for longer than the bound several times, each time while it has
a transaction open, and the member on the other one keeps receiving."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import pytest

from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.consumer import GroupConsumer
from tests.support import TcpProxy, until
from tools.processes import ServerProcess, store_process, unique

pytestmark = pytest.mark.timeout(300)

BOUND_S = 2.0  # --db-idle-transaction-timeout
FREEZE_S = 10.0  # each freeze: long enough that a stall of its length could not pass
FREEZES = 2
# The longest pause the live member may see: the bound, a round, and room for a busy machine;
# well under the freeze, which is what a stall behind the frozen replica's lock would last.
LONGEST_GAP_S = BOUND_S + 5.0
FAULTY_NAME = "faulty-replica"  # the faulty replica's sessions, in pg_stat_activity


@dataclass
class Fault:
    """How the faulty replica's fault begins and ends."""

    begin: Callable[[], None]
    end: Callable[[], None]


def signal_to(process: ServerProcess, sig: signal.Signals) -> Callable[[], None]:
    def send() -> None:
        assert process.process is not None
        os.kill(process.process.pid, sig)

    return send


async def fault_mid_transaction(fault: Fault, database_url: str) -> None:
    """Begin `fault` at a moment when the faulty replica has a transaction open (a group
    round, mostly: appends go through the other replica), as a pause or a cut at any moment
    sometimes does; the tries that miss are ended at once and made again."""
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(2000):
            fault.begin()
            caught = await conn.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE application_name = $1 AND state = 'idle in transaction'""",
                FAULTY_NAME,
            )
            if caught:
                return
            fault.end()
            await asyncio.sleep(random.uniform(0.0, 0.02))
        raise AssertionError("never caught the replica inside a transaction")
    finally:
        await conn.close()


async def sessions(database_url: str) -> list[tuple[str, ...]]:
    """Every store session's name, state, wait and last statement (its start)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT application_name, state, coalesce(wait_event_type || ':' || wait_event, ''),
                      left(query, 60)
                 FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid()"""
        )
        return [tuple(str(v) for v in r) for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", ["frozen", "cut off"])
async def test_a_faulty_replica_stalls_no_group_longer_than_the_bound(
    new_database: Callable[[], str], kind: str
) -> None:
    database_url = new_database()
    bound = ["--db-idle-transaction-timeout", str(BOUND_S)]
    postgres = urlsplit(database_url).netloc.rpartition("@")[2]  # HOST:PORT
    proxy = TcpProxy(postgres).start()
    via = database_url if kind == "frozen" else database_url.replace(postgres, proxy.address)
    frozen = store_process(f"{via}?application_name={FAULTY_NAME}", *bound).start()
    live = store_process(database_url, *bound).start()
    if kind == "frozen":
        fault = Fault(signal_to(frozen, signal.SIGSTOP), signal_to(frozen, signal.SIGCONT))
    else:
        fault = Fault(proxy.stall, proxy.heal)
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
                gaps, seen = [], []
                for _ in range(FREEZES):
                    await until(lambda: len(received) > 20, 60, "deliveries on the live member")
                    received.clear()
                    start = time.monotonic()
                    await fault_mid_transaction(fault, database_url)
                    try:
                        # The fault itself, not a wait for a state; halfway, what the sessions
                        # are doing, for the message should the live member have stalled.
                        await asyncio.sleep(FREEZE_S / 2)
                        seen.append(await sessions(database_url))
                        await asyncio.sleep(FREEZE_S / 2)
                    finally:
                        fault.end()
                    times = [start, *received, time.monotonic()]
                    gaps.append(max(b - a for a, b in itertools.pairwise(times)))
                worst = gaps.index(max(gaps))
                assert gaps[worst] < LONGEST_GAP_S, (gaps, seen[worst])
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
        fault.end()
        for process in (frozen, live):
            process.stop()
        proxy.close()

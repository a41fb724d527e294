"""PostgreSQL failover under load: a primary with a synchronous hot standby (the embedded
wheel's own pg_basebackup and pg_ctl promote), the store given both hosts with
`target_session_attrs=read-write`. Sixteen writers, a live subscriber and a consumer group run
while the primary is killed with SIGKILL and the standby promoted. Every acknowledged append is
on the new primary at the position it was acknowledged with, the subscriber and the group see
every event (the subscriber once each, in order), and the outage is answered UNAVAILABLE only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import asyncpg
import grpc
import pytest

from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.consumer import GroupConsumer
from eventstore_client.errors import EventStoreError
from localpg import LocalPostgres
from tests.support import until
from tools.processes import ServerProcess, create_database, store_process, unique

pytestmark = pytest.mark.timeout(300)

WRITERS = 16
SYNCHRONOUS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "synchronous_standby_names": "standby",
    "synchronous_commit": "on",
}


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[LocalPostgres, LocalPostgres]]:
    primary = LocalPostgres(settings=SYNCHRONOUS)
    primary.start()
    standby = primary.standby("standby")
    try:
        standby.start()
        yield primary, standby
    finally:
        for server in (standby, primary):
            server.close()


async def test_a_failover_loses_nothing_acknowledged(
    primary_and_standby: tuple[LocalPostgres, LocalPostgres],
) -> None:
    primary, standby = primary_and_standby
    database = unique("db")
    create_database(primary.dsn, database)
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/{database}"
        "?target_session_attrs=read-write"
    )
    store: ServerProcess = store_process(url).start()
    category, group = unique("c"), unique("g")
    acknowledged: dict[int, tuple[str, int]] = {}  # position -> (stream, version)
    failures: list[grpc.StatusCode] = []
    followed: list[int] = []
    grouped: set[int] = set()
    killed_at = 0.0
    resumed_after: list[float] = []

    async def handle(event: RecordedEvent) -> None:
        grouped.add(event.position)

    try:
        async with EventStoreClient(store.address, retries=0) as client:
            await client.create_group(group, category=category)
            consumer = asyncio.create_task(GroupConsumer(client, group, handle).run())

            async def follow() -> None:
                while True:  # resubscribe after an outage, from the last position seen
                    after = followed[-1] if followed else 0
                    try:
                        async for response in client.subscribe(
                            category=category, after_position=after
                        ):
                            followed.extend(e.position for e in response.events)
                    except EventStoreError:
                        await asyncio.sleep(0.1)

            following = asyncio.create_task(follow())

            async def write(n: int) -> None:
                version = 0
                while True:
                    try:
                        result = await client.append(
                            f"{category}-{n}", [NewEvent("Written")], expected_version=version
                        )
                    except EventStoreError as error:
                        failures.append(error.code)
                        if error.code != grpc.StatusCode.UNAVAILABLE:
                            raise
                        await asyncio.sleep(0.05)
                        # An append answered UNAVAILABLE may have committed: ask the stream.
                        version = len(await client.read_stream_list(f"{category}-{n}"))
                        continue
                    if killed_at and not resumed_after:
                        resumed_after.append(time.monotonic() - killed_at)
                    version = result.version
                    acknowledged[result.position] = (f"{category}-{n}", result.version)

            writers = [asyncio.create_task(write(n)) for n in range(WRITERS)]
            await until(lambda: len(acknowledged) > 300, 60, "appends before the failover")
            primary.kill()
            killed_at = time.monotonic()
            standby.promote()
            await until(lambda: bool(resumed_after), 60, "an append accepted after the failover")
            count = len(acknowledged)
            await until(lambda: len(acknowledged) > count + 300, 60, "appends after it")
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
            for task in writers:
                assert task.cancelled(), task.exception()
            await until(lambda: set(acknowledged) <= set(followed), 60, "the subscriber")
            await until(lambda: set(acknowledged) <= grouped, 60, "the group")
            following.cancel()
            consumer.cancel()
            await asyncio.gather(following, consumer, return_exceptions=True)
        print(
            f"failover: {len(acknowledged)} appends acknowledged, {len(failures)} answered "
            f"UNAVAILABLE, the first accepted again {resumed_after[0]:.2f} s after the kill"
        )
        assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, failures
        assert followed == sorted(set(followed)), (
            "the subscriber saw an event twice or out of order"
        )
        conn = await asyncpg.connect(standby.url(database))
        try:
            rows = await conn.fetch(
                "SELECT position, stream, version FROM es_events WHERE category = $1", category
            )
        finally:
            await conn.close()
        stored = {r["position"]: (r["stream"], r["version"]) for r in rows}
        lost = {p: v for p, v in acknowledged.items() if stored.get(p) != v}
        assert not lost, f"acknowledged but not on the new primary as acknowledged: {lost}"
    finally:
        with contextlib.suppress(Exception):
            store.stop()

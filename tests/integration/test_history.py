"""Deleting streams, retention, the scavenger and as-of reads, against a real store and
PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC

import asyncpg
import grpc
import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import (
    EventStoreClient,
    Expected,
    NewEvent,
    NotFoundError,
    StreamDeletedError,
    WrongExpectedVersionError,
)
from eventstore_client.errors import InvalidArgumentError
from tests.support import until
from tools.processes import ServerProcess, store_process, unique


def events(*types: str) -> list[NewEvent]:
    return [NewEvent(t) for t in types]


async def types_of(client: EventStoreClient, stream: str) -> list[tuple[int, str]]:
    return [(e.version, e.type) for e in await client.read_stream_list(stream)]


async def test_a_soft_delete_hides_the_events_and_the_numbering_goes_on(
    client: EventStoreClient,
) -> None:
    stream = unique("soft")
    await client.append(stream, events("A", "B", "C"))
    await client.delete_stream(stream, expected_version=3)
    assert await types_of(client, stream) == []  # empty, not an error
    assert await client.read_stream_list(stream, backwards=True) == []
    # Nothing since the delete: "no stream" again, but the version is not reset.
    with pytest.raises(WrongExpectedVersionError) as raised:
        await client.append(stream, events("X"), expected_version=0)
    assert raised.value.actual == 3
    result = await client.append(stream, events("D"), Expected.NO_STREAM)
    assert result.version == 4
    assert await types_of(client, stream) == [(4, "D")]
    assert [e.version for e in await client.read_stream_list(stream, backwards=True)] == [4]
    await client.append(stream, events("E"), expected_version=4)
    assert await types_of(client, stream) == [(4, "D"), (5, "E")]


async def test_a_delete_with_the_wrong_expectation_changes_nothing(
    client: EventStoreClient,
) -> None:
    stream = unique("guarded")
    await client.append(stream, events("A", "B"))
    with pytest.raises(WrongExpectedVersionError) as raised:
        await client.delete_stream(stream, expected_version=1)
    assert raised.value.actual == 2
    with pytest.raises(WrongExpectedVersionError):
        await client.delete_stream(stream, Expected.NO_STREAM)
    with pytest.raises(NotFoundError):
        await client.delete_stream(unique("never"))
    assert await types_of(client, stream) == [(1, "A"), (2, "B")]


async def test_a_tombstone_refuses_reads_and_appends_for_ever(client: EventStoreClient) -> None:
    stream = unique("tomb")
    await client.append(stream, events("A"))
    await client.delete_stream(stream, Expected.STREAM_EXISTS, tombstone=True)
    with pytest.raises(StreamDeletedError) as read:
        await client.read_stream_list(stream)
    assert read.value.code == grpc.StatusCode.NOT_FOUND and read.value.stream == stream
    with pytest.raises(StreamDeletedError) as appended:
        await client.append(stream, events("B"))
    assert appended.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(StreamDeletedError):
        await client.delete_stream(stream)
    # A name never written can be reserved.
    reserved = unique("reserved")
    await client.delete_stream(reserved, Expected.NO_STREAM, tombstone=True)
    with pytest.raises(StreamDeletedError):
        await client.append(reserved, events("A"), Expected.NO_STREAM)


async def test_snapshots_go_with_the_deleted_events(client: EventStoreClient) -> None:
    stream = unique("snapped")
    await client.append(stream, events("A", "B"))
    await client.save_snapshot(stream, 2, "State", b"{}")
    await client.delete_stream(stream)
    assert await client.read_snapshot(stream) is None
    assert [i async for i in client.load_stream(stream)] == []


async def test_metadata_is_versioned_and_guarded(client: EventStoreClient) -> None:
    stream = unique("meta")
    assert await client.get_stream_metadata(stream) is None
    first = await client.set_stream_metadata(
        stream, max_count=5, custom={"owner": "billing"}, expected_metadata_version=0
    )
    assert first == 1
    with pytest.raises(WrongExpectedVersionError) as raised:
        await client.set_stream_metadata(stream, max_count=1, expected_metadata_version=0)
    assert raised.value.actual == 1
    assert await client.set_stream_metadata(stream, max_age_seconds=60) == 2  # any version
    found = await client.get_stream_metadata(stream)
    assert found is not None
    metadata, version = found
    assert version == 2 and metadata.max_age_seconds == 60 and metadata.max_count == 0
    assert dict(metadata.custom) == {}  # replaced, not merged


async def test_bad_metadata_is_refused_and_changes_nothing(client: EventStoreClient) -> None:
    stream = unique("badmeta")
    with pytest.raises(InvalidArgumentError):
        await client.set_stream_metadata(stream, max_count=2**63)
    with pytest.raises(InvalidArgumentError):
        await client.set_stream_metadata(stream, custom={"": "empty key"})
    assert await client.get_stream_metadata(stream) is None


async def test_retention_is_honoured_on_reads_at_once(client: EventStoreClient) -> None:
    counted, truncated, aged = unique("count"), unique("trunc"), unique("aged")
    for stream in (counted, truncated, aged):
        await client.append(stream, events("A", "B", "C", "D"))
    await client.set_stream_metadata(counted, max_count=2)
    assert await types_of(client, counted) == [(3, "C"), (4, "D")]
    assert [e.version for e in await client.read_stream_list(counted, backwards=True)] == [4, 3]
    await client.append(counted, events("E"))
    assert await types_of(client, counted) == [(4, "D"), (5, "E")]
    await client.set_stream_metadata(truncated, truncate_before=3)
    assert await types_of(client, truncated) == [(3, "C"), (4, "D")]
    await client.set_stream_metadata(aged, max_age_seconds=1)
    [newest] = await client.read_stream_list(aged, backwards=True, max_count=1)
    recorded = newest.recorded_at.ToDatetime().timestamp()
    await until(lambda: time.time() > recorded + 1.5, 5, "the events are older than a second")
    assert await types_of(client, aged) == []
    await client.append(aged, events("F"))
    assert await types_of(client, aged) == [(5, "F")]


async def test_as_of_reads_the_stream_as_it_was(client: EventStoreClient) -> None:
    stream = unique("asof")
    await client.append(stream, events("A", "B"))
    [_, second] = await client.read_stream_list(stream)
    await until(lambda: time.time() > second.recorded_at.ToDatetime().timestamp() + 0.01, 5)
    await client.append(stream, events("C"))
    then = second.recorded_at.ToDatetime(tzinfo=UTC)
    assert [e.type for e in await client.read_stream_list(stream, as_of=then)] == ["A", "B"]
    assert len(await client.read_stream_list(stream)) == 3
    await client.save_snapshot(stream, 3, "State", b"{}")
    loaded = [i async for i in client.load_stream(stream, as_of=then)]
    assert [type(i).__name__ for i in loaded] == ["RecordedEvent", "RecordedEvent"]  # no snapshot


# The scavenger, on a store of its own that scavenges every 0.1 s.


@pytest.fixture
async def scavenging(new_database: Callable[[], str]) -> AsyncIterator[tuple[ServerProcess, str]]:
    url = new_database()
    server = store_process(url, "--scavenge-interval", "0.1", "--scavenge-batch", "50").start()
    yield server, url
    server.stop()


async def rows_of(url: str, stream: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM es_events WHERE stream = $1", stream)
        return count
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_the_scavenger_removes_the_rows_in_bounded_rounds(
    scavenging: tuple[ServerProcess, str],
) -> None:
    server, url = scavenging
    gone, kept, counted = unique("gone"), unique("kept"), unique("counted")
    async with EventStoreClient(server.address) as client:
        await client.append(gone, [NewEvent("A") for _ in range(120)])  # > 2 rounds' budget
        await client.append(kept, events("A", "B"))
        await client.append(counted, events("A", "B", "C"))
        await client.delete_stream(gone, tombstone=True)
        await client.set_stream_metadata(counted, max_count=1)

        async def scavenged() -> bool:
            return await rows_of(url, gone) == 0 and await rows_of(url, counted) == 1

        await eventually(scavenged)
        stats = await client.stats()
        assert stats.events_scavenged == 122 and stats.head_position == 125
        assert await rows_of(url, kept) == 2
        await client.append(counted, events("D"))  # max_count keeps the stream watched

        async def expired_again() -> bool:
            return await rows_of(url, counted) == 1

        await eventually(expired_again)
        assert await types_of(client, counted) == [(4, "D")]
        everything = [e async for e in client.read_all()]
        assert [e.position for e in everything] == sorted(e.position for e in everything)
        assert {e.stream for e in everything} == {kept, counted}


async def test_a_subscriber_runs_through_a_scavenge_without_missing_a_kept_event(
    scavenging: tuple[ServerProcess, str],
) -> None:
    server, _ = scavenging
    category = unique("sub")
    async with EventStoreClient(server.address) as client:
        expected: list[tuple[str, int]] = []
        for i in range(30):
            stream = f"{category}-{i}"
            await client.append(stream, events("A", "B"))
            if i % 3:
                expected += [(stream, 1), (stream, 2)]
        received: list[pb.RecordedEvent] = []

        async def follow() -> None:
            async for response in client.subscribe(category=category):
                received.extend(response.events)
                await asyncio.sleep(0.01)  # slow enough for rounds to run meanwhile

        task = asyncio.create_task(follow())
        for i in range(0, 30, 3):
            await client.delete_stream(f"{category}-{i}", tombstone=True)
        for i in range(1, 4):  # live, after the deletes
            await client.append(f"{category}-live{i}", events("L"))
            expected.append((f"{category}-live{i}", 1))
        kept = set(expected)
        await until(lambda: kept <= {(e.stream, e.version) for e in received}, 30, "all kept")
        task.cancel()
        positions = [e.position for e in received]
        assert positions == sorted(set(positions))  # in order, none twice


async def test_a_group_steps_over_scavenged_events(
    scavenging: tuple[ServerProcess, str],
) -> None:
    """An event in flight when its stream is scavenged stops counting as in flight at once (not
    after its ack timeout), the rest of its stream never comes, and the group's other streams go
    on to a lag of zero."""
    server, _ = scavenging
    category, group = unique("grp"), unique("g")
    gone, kept = f"{category}-gone", f"{category}-kept"
    async with EventStoreClient(server.address) as client:
        await client.create_group(group, category=category, ack_timeout_ms=600_000)
        await client.append(gone, events("A", "B", "C"))
        await client.append(kept, events("A", "B"))
        got: list[pb.Delivery] = []
        async with client.consume(group, "m") as session:

            async def receive() -> None:
                async for delivery in session.deliveries():
                    got.append(delivery)
                    if delivery.event.stream == kept:
                        session.ack(delivery.event.position)

            receiving = asyncio.create_task(receive())
            await until(lambda: any(d.event.stream == gone for d in got), 30, "gone's first")
            await client.delete_stream(gone, tombstone=True)

            async def scavenged() -> bool:
                return (await client.stats()).events_scavenged == 3

            await eventually(scavenged)  # the held delivery is never answered

            async def caught_up() -> bool:
                [info] = [g for g in await client.list_groups() if g.group == group]
                return info.lag == 0 and info.in_flight == 0

            await eventually(caught_up)
            receiving.cancel()
        delivered = [(d.event.stream, d.event.version) for d in got]
        assert sorted(delivered) == [(gone, 1), (kept, 1), (kept, 2)]


async def test_two_replicas_scavenge_in_turns_and_count_each_event_once(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    flags = ("--scavenge-interval", "0.05", "--scavenge-batch", "40")
    replicas = [store_process(url, *flags).start(), store_process(url, *flags).start()]
    try:
        async with (
            EventStoreClient(replicas[0].address) as one,
            EventStoreClient(replicas[1].address) as two,
        ):
            names = [unique("turns") for _ in range(3)]
            for name in names:
                await one.append(name, [NewEvent("A") for _ in range(100)])
            for name in names:
                await two.delete_stream(name, tombstone=True)
            kept = unique("kept")
            for i in range(20):  # appends go on meanwhile, through either replica
                await (one if i % 2 else two).append(kept, events("K"))

            async def gone() -> bool:
                return all([await rows_of(url, name) == 0 for name in names])

            await eventually(gone)
            assert (await one.stats()).events_scavenged == 300
            assert len(await two.read_stream_list(kept)) == 20
    finally:
        for replica in replicas:
            replica.stop()

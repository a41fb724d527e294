"""What code written against the store may rely on, whichever store it runs on. The server is
shared by the session's tests, so each test works in a category of its own."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import (
    DuplicateEventIdError,
    Expected,
    InvalidArgumentError,
    NewEvent,
    NotFoundError,
    WrongExpectedVersionError,
)
from eventstore_client.errors import EventStoreError
from eventstore_client.store import EventStore
from tools.processes import unique


def events(*types: str) -> list[NewEvent]:
    return [NewEvent.json(t, {"n": i}) for i, t in enumerate(types)]


async def test_versions_count_from_one_and_positions_increase(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    first = await any_store.append(stream, events("A", "B"))
    second = await any_store.append(stream, events("C"))
    assert (first.version, second.version) == (2, 3)
    assert second.position == first.position + 1
    read = await any_store.read_stream_list(stream)
    assert [(e.version, e.type, e.stream) for e in read] == [
        (1, "A", stream),
        (2, "B", stream),
        (3, "C", stream),
    ]
    assert [e.position for e in read] == [first.position - 1, first.position, second.position]
    assert json.loads(read[2].data) == {"n": 0}
    assert read[0].recorded_at.seconds > 0


async def test_expected_version_conflict_names_the_actual_version(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    await any_store.append(stream, events("A"), expected_version=0)
    with pytest.raises(WrongExpectedVersionError) as caught:
        await any_store.append(stream, events("B"), expected_version=0)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (caught.value.stream, caught.value.actual) == (stream, 1)
    assert len(await any_store.read_stream_list(stream)) == 1


async def test_expected_states(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    with pytest.raises(WrongExpectedVersionError):
        await any_store.append(stream, events("A"), Expected.STREAM_EXISTS)
    await any_store.append(stream, events("A"), Expected.NO_STREAM)
    with pytest.raises(WrongExpectedVersionError) as caught:
        await any_store.append(stream, events("B"), Expected.NO_STREAM)
    assert caught.value.actual == 1
    assert (await any_store.append(stream, events("B"), Expected.STREAM_EXISTS)).version == 2
    assert (await any_store.append(stream, events("C"), Expected.ANY)).version == 3


async def test_a_retry_with_the_same_ids_returns_the_first_result(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    batch = events("A", "B")
    first = await any_store.append(stream, batch)
    await any_store.append(stream, events("C"))
    again = await any_store.append(stream, batch, expected_version=0)
    assert (again.version, again.position) == (first.version, first.position)
    assert len(await any_store.read_stream_list(stream)) == 3
    with pytest.raises(DuplicateEventIdError) as caught:
        await any_store.append(f"{unique()}-2", batch)
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS


async def test_bad_appends_are_refused_and_change_nothing(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    with pytest.raises(InvalidArgumentError):
        await any_store.append(stream, [])
    with pytest.raises(InvalidArgumentError):
        await any_store.append("has space", events("A"))
    with pytest.raises(InvalidArgumentError):
        await any_store.append(stream, [NewEvent("A", id="not-a-uuid")])
    assert await any_store.read_stream_list(stream) == []


async def test_reading_a_stream_forwards_backwards_and_in_part(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    await any_store.append(stream, events("A", "B", "C", "D"))

    async def versions(**kwargs: int | bool) -> list[int]:
        return [e.version for e in await any_store.read_stream_list(stream, **kwargs)]  # type: ignore[arg-type]

    assert await versions(from_version=2, max_count=2) == [2, 3]
    assert await versions(backwards=True) == [4, 3, 2, 1]
    assert await versions(from_version=2, backwards=True) == [2, 1]
    assert await versions(from_version=9) == []
    assert await any_store.read_stream_list(f"{unique()}-none") == []


async def test_read_all_by_category_and_type(any_store: EventStore) -> None:
    category = unique()
    first = await any_store.append(f"{category}-1", events("A", "B"))
    await any_store.append(f"{unique()}-1", events("A"))
    await any_store.append(f"{category}-2", events("A"))
    found = [
        (e.stream, e.type) async for e in any_store.read_all(first.position - 2, category=category)
    ]
    assert found == [(f"{category}-1", "A"), (f"{category}-1", "B"), (f"{category}-2", "A")]
    only_a = [e.stream async for e in any_store.read_all(category=category, event_types=["A"])]
    assert only_a == [f"{category}-1", f"{category}-2"]
    limited = [e async for e in any_store.read_all(first.position - 2, 1, category=category)]
    assert [e.type for e in limited] == ["A"]


async def test_a_subscription_catches_up_then_goes_live(any_store: EventStore) -> None:
    category = unique()
    await any_store.append(f"{category}-1", events("A", "B"))
    await any_store.append(f"{category}-2", events("Skip"))
    seen: list[str] = []
    caught_up = asyncio.Event()

    async def follow() -> None:
        async for response in any_store.subscribe(category=category, event_types=["A", "B"]):
            seen.extend(e.type for e in response.events)
            if response.caught_up:
                assert seen == ["A", "B"]
                caught_up.set()
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.wait_for(caught_up.wait(), 10)
    await any_store.append(f"{category}-3", events("Skip", "B"))
    await asyncio.wait_for(task, 10)
    assert seen == ["A", "B", "B"]


async def test_a_stream_subscription_starts_after_a_version(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    await any_store.append(stream, events("A", "B", "C"))
    history = []
    async for response in any_store.subscribe(stream=stream, after_version=1):
        history += [e.version for e in response.events]
        if response.caught_up:
            break
    assert history == [2, 3]


async def test_durable_subscribers_resume_from_their_checkpoint(any_store: EventStore) -> None:
    category, name = unique(), unique("sub")
    await any_store.append(f"{category}-1", events("A"))
    second = await any_store.append(f"{category}-1", events("B"))
    assert await any_store.get_checkpoint(name) is None
    assert await any_store.commit_checkpoint(name, second.position - 1) == second.position - 1
    assert await any_store.commit_checkpoint(name, 1) == second.position - 1  # only forward
    history = []
    async for response in any_store.subscribe(category=category, subscriber=name):
        history += [e.type for e in response.events]
        if response.caught_up:
            break
    assert history == ["B"]
    assert await any_store.commit_checkpoint(name, 1, reset=True) == 1
    assert await any_store.get_checkpoint(name) == 1


async def test_snapshots(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    with pytest.raises(NotFoundError):
        await any_store.save_snapshot(stream, 1, "Snap", b"{}")
    await any_store.append(stream, events("A", "B", "C"))
    with pytest.raises(EventStoreError) as caught:
        await any_store.save_snapshot(stream, 4, "Snap", b"{}")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert await any_store.read_snapshot(stream) is None
    await any_store.save_snapshot(stream, 1, "Snap", b"one", {"schema": "1"})
    await any_store.save_snapshot(stream, 3, "Snap", b"three")
    latest = await any_store.read_snapshot(stream)
    assert latest is not None and (latest.version, latest.data) == (3, b"three")
    older = await any_store.read_snapshot(stream, max_version=2)
    assert older is not None and (older.version, dict(older.metadata)) == (1, {"schema": "1"})


async def test_load_stream_is_the_snapshot_then_the_events_after_it(any_store: EventStore) -> None:
    stream = f"{unique()}-1"
    await any_store.append(stream, events(*"ABCDE"))
    await any_store.save_snapshot(stream, 2, "Snap", b"two", {"schema": "1"})
    await any_store.save_snapshot(stream, 4, "Snap", b"four", {"schema": "2"})

    async def load(**kwargs: object) -> list[tuple[str, int]]:
        return [
            ("snapshot" if isinstance(item, pb.Snapshot) else item.type, item.version)
            async for item in any_store.load_stream(stream, **kwargs)  # type: ignore[arg-type]
        ]

    assert await load() == [("snapshot", 4), ("E", 5)]
    assert await load(snapshot_metadata={"schema": "1"}) == [
        ("snapshot", 2),
        ("C", 3),
        ("D", 4),
        ("E", 5),
    ]
    assert await load(max_version=3) == [("snapshot", 2), ("C", 3)]
    assert await load(snapshot_metadata={"schema": "9"}, max_version=2) == [("A", 1), ("B", 2)]
    assert await load(max_version=4) == [("snapshot", 4)]
    assert [x async for x in any_store.load_stream(f"{unique()}-none")] == []


async def test_many_concurrent_appends_each_get_their_own_answer(any_store: EventStore) -> None:
    """What a session multiplexes: one conflict among many successes fails only itself."""
    streams = [f"{unique()}-{n}" for n in range(50)]
    results = await asyncio.gather(
        *(any_store.append(s, events("A")) for s in streams),
        any_store.append(streams[0], events("B"), expected_version=5),
        return_exceptions=True,
    )
    *written, conflict = results
    assert all(not isinstance(r, BaseException) and r.version == 1 for r in written), written
    assert isinstance(conflict, WrongExpectedVersionError) and conflict.actual in (0, 1)

"""Consumer groups as code written against the store sees them, on either store."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator

import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import NewEvent, Ordering
from eventstore_client.consumer import ensure_group
from eventstore_client.errors import AlreadyExistsError
from eventstore_client.store import EventStore, GroupMembership
from tools.processes import unique

_streams: weakref.WeakKeyDictionary[GroupMembership, AsyncIterator[pb.Delivery]] = (
    weakref.WeakKeyDictionary()
)


async def next_delivery(session: GroupMembership, timeout: float = 10) -> pb.Delivery:
    """The session's next delivery: one iterator per session (a message may hold several)."""
    stream = _streams.setdefault(session, aiter(session.deliveries()))
    return await asyncio.wait_for(anext(stream), timeout)


async def info(store: EventStore, group: str) -> pb.GroupInfo:
    [found] = [g for g in await store.list_groups() if g.group == group]
    return found


async def test_a_stream_waits_for_its_event_to_be_answered(any_store: EventStore) -> None:
    group, category = unique("g"), unique()
    await any_store.create_group(group, category=category)
    await any_store.append(f"{category}-1", [NewEvent("Poison"), NewEvent("After")])
    await any_store.append(f"{category}-2", [NewEvent("Other")])
    async with any_store.consume(group, "m", 10) as session:
        first = [await next_delivery(session), await next_delivery(session)]
        assert sorted(d.event.type for d in first) == ["Other", "Poison"]  # not "After" yet
        poison = next(d for d in first if d.event.type == "Poison")
        other = next(d for d in first if d.event.type == "Other")
        session.ack(other.event.position)
        session.nack(poison.event.position, park=True, reason="bad field 'x'")
        after = await next_delivery(session)
        assert (after.event.type, after.attempt) == ("After", 1)  # parked: the stream goes on
        session.ack(after.event.position)
        for _ in range(200):
            state = await info(any_store, group)
            if state.lag == 0 and state.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert (state.lag, state.parked) == (0, 1)
        [parked] = await any_store.read_parked(group)
        assert (parked.event.type, parked.reason) == ("Poison", "bad field 'x'")
        assert await any_store.replay_parked(group) == 1
        again = await next_delivery(session)
        assert (again.event.type, again.attempt) == ("Poison", 1)
        session.ack(again.event.position)


async def test_retries_then_parks_and_a_leaving_member_gives_back(any_store: EventStore) -> None:
    group, category = unique("g"), unique()
    await any_store.create_group(group, category=category, max_attempts=3)
    await any_store.append(f"{category}-1", [NewEvent("Flaky")])
    async with any_store.consume(group, "first") as session:
        delivery = await next_delivery(session)
        session.nack(delivery.event.position, reason="try again")
        assert (await next_delivery(session)).attempt == 2
    async with any_store.consume(group, "second") as session:
        delivery = await next_delivery(session)
        assert delivery.attempt == 3  # the first member's delivery came back as an attempt
        session.nack(delivery.event.position, reason="still failing")
        for _ in range(200):
            if (await info(any_store, group)).parked == 1:
                break
            await asyncio.sleep(0.05)
    [parked] = await any_store.read_parked(group)
    assert (parked.attempts, parked.reason) == (3, "still failing")


async def test_a_group_ordered_by_correlation_holds_each_correlation_id(
    any_store: EventStore,
) -> None:
    group, category = unique("g"), unique()
    created = await any_store.create_group(group, category=category, ordering=Ordering.CORRELATION)
    assert created and (await info(any_store, group)).ordering == Ordering.CORRELATION
    with pytest.raises(AlreadyExistsError) as other_settings:
        await any_store.create_group(group, category=category)  # ordered by stream
    assert other_settings.value.metadata["ordering"] == "GROUP_ORDERING_CORRELATION"

    def saga(type: str, correlation: str = "") -> NewEvent:
        return NewEvent(type, metadata={"correlation_id": correlation} if correlation else {})

    # One stream (one busy customer, say) holding the events of two sagas and one of none.
    await any_store.append(
        f"{category}-1", [saga("X1", "x"), saga("Y1", "y"), saga("X2", "x"), saga("Plain")]
    )
    async with any_store.consume(group, "m", 10) as session:
        first = {d.event.type: d for d in [await next_delivery(session) for _ in range(3)]}
        assert set(first) == {"X1", "Y1", "Plain"}  # X2 waits for X1; the others go at once
        session.ack(first["Y1"].event.position)
        session.ack(first["Plain"].event.position)
        session.ack(first["X1"].event.position)
        then = await next_delivery(session)
        assert (then.event.type, then.attempt) == ("X2", 1)
        session.ack(then.event.position)


async def test_ensure_group_keeps_a_stricter_group_and_refuses_a_looser_one(
    any_store: EventStore,
) -> None:
    by_stream, by_correlation, category = unique("g"), unique("g"), unique()
    await any_store.create_group(by_stream, category=category)
    # A service that now asks for correlation order finds the group its older version made:
    # ordered by stream is stricter, so it is used as it is.
    assert not await ensure_group(
        any_store, by_stream, category=category, ordering=Ordering.CORRELATION
    )
    await any_store.create_group(by_correlation, category=category, ordering=Ordering.CORRELATION)
    with pytest.raises(AlreadyExistsError):
        await ensure_group(any_store, by_correlation, category=category)
    with pytest.raises(AlreadyExistsError):
        await ensure_group(any_store, by_stream, category=unique())

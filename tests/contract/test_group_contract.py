"""Consumer groups as code written against the store sees them, on either store."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import NewEvent
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

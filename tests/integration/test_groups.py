"""Consumer groups against real store processes: each guarantee of the README's section, with
members in this process (the kill -9 of member processes is in test_group_members.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from eventstore_client.group_session import GroupSession
from localpg import free_port
from tests.support import until
from tools.processes import store_process, unique


class OrderChecker:
    """What every member saw, checked as it happens: a delivery of version v of a stream comes
    only after every earlier version of that stream was acked (by any member)."""

    def __init__(self) -> None:
        self.acked: dict[str, set[int]] = defaultdict(set)
        self.deliveries: dict[str, int] = defaultdict(int)  # per member
        self.in_flight: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.violations: list[str] = []

    def delivered(self, member: str, event: pb.RecordedEvent) -> None:
        earlier = set(range(1, event.version)) - self.acked[event.stream]
        if earlier:
            self.violations.append(f"{event.stream} v{event.version} before v{sorted(earlier)}")
        self.deliveries[member] += 1
        self.in_flight[member].add((event.stream, event.version))

    def ack(self, member: str, event: pb.RecordedEvent) -> None:
        self.in_flight[member].discard((event.stream, event.version))
        self.acked[event.stream].add(event.version)


async def run_member(
    session: GroupSession,
    name: str,
    checker: OrderChecker,
    handle_seconds: float = 0.002,
) -> None:
    async for delivery in session.deliveries():
        checker.delivered(name, delivery.event)
        await asyncio.sleep(handle_seconds)
        checker.ack(name, delivery.event)
        session.ack(delivery.event.position)


@contextlib.asynccontextmanager
async def member(
    client: EventStoreClient, group: str, name: str, checker: OrderChecker, in_flight: int = 8
) -> AsyncIterator[asyncio.Task[None]]:
    async with client.consume(group, name, in_flight) as session:
        task = asyncio.create_task(run_member(session, name, checker))
        try:
            yield task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def fill(client: EventStoreClient, category: str, streams: int, per_stream: int) -> int:
    """Appends interleaved across streams (so a stream's events are far apart in the log)."""
    last = 0
    for version in range(per_stream):
        for s in range(streams):
            last = (await client.append(f"{category}-{s}", [NewEvent(f"V{version}")])).position
    return last


async def group_info(client: EventStoreClient, group: str) -> pb.GroupInfo:
    [info] = [g for g in await client.list_groups() if g.group == group]
    return info


async def until_info(
    client: EventStoreClient,
    group: str,
    reached: Callable[[pb.GroupInfo], bool],
    what: str,
    timeout: float = 20,
) -> pb.GroupInfo:
    """The group's ListGroups entry once `reached` holds; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while not reached(info := await group_info(client, group)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{group}: {what} not reached: {info}")
        await asyncio.sleep(0.05)
    return info


async def until_lag_zero(client: EventStoreClient, group: str) -> pb.GroupInfo:
    return await until_info(
        client, group, lambda i: i.lag == 0 and i.in_flight == 0, "no lag, nothing in flight"
    )


async def until_parked(client: EventStoreClient, group: str, count: int) -> None:
    await until_info(client, group, lambda i: i.parked == count, f"{count} parked", 10)


async def until_acked(client: EventStoreClient, group: str, count: int) -> None:
    """Until the store has applied `count` acks of the group's 10 events."""
    await until_info(client, group, lambda i: i.lag <= 10 - count, f"{count} acked", 10)


async def until_members(client: EventStoreClient, group: str, count: int) -> None:
    await until_info(client, group, lambda i: i.members == count, f"{count} members", 10)


async def test_create_is_idempotent_and_other_settings_are_refused(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    assert await client.create_group(group, category=category, event_types=["A", "B"])
    assert not await client.create_group(group, category=category, event_types=["B", "A"])
    with pytest.raises(AlreadyExistsError) as caught:
        await client.create_group(group, category=category, max_attempts=9)
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    await client.delete_group(group)
    with pytest.raises(NotFoundError):
        await client.delete_group(group)


async def test_unknown_groups_and_bad_input_are_refused(client: EventStoreClient) -> None:
    missing = unique("g")
    for call in (client.read_parked(missing), client.replay_parked(missing)):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(NotFoundError):
        async with client.consume(missing) as session:
            async for _ in session.deliveries():
                pass
    bad = [
        client.create_group("has space", category="x"),
        client.create_group(unique("g"), category="with-dash"),
        client.create_group(unique("g"), category="x", ack_timeout_ms=5),
        client.create_group(unique("g"), category="x", max_attempts=10**6),
    ]
    for call in bad:
        with pytest.raises(InvalidArgumentError):
            await call
    no_target = pb.CreateGroupRequest(group=unique("g"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.CreateGroup(no_target)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    names = {g.group for g in await client.list_groups()}
    assert no_target.group not in names and "has space" not in names


async def test_members_share_the_streams_and_each_stream_stays_in_order(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category)
    await fill(client, category, streams=40, per_stream=5)
    checker = OrderChecker()
    async with (
        member(client, group, "a", checker),
        member(client, group, "b", checker),
        member(client, group, "c", checker),
    ):
        await until(lambda: sum(len(v) for v in checker.acked.values()) == 200, 30, "all acked")
    assert not checker.violations, checker.violations[:5]
    shares = sorted(checker.deliveries.values())
    assert len(shares) == 3 and shares[0] >= 200 / 3 * 0.5, shares  # each about a third
    await until_lag_zero(client, group)


async def test_members_joining_and_leaving_keep_order_and_lose_nothing(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category)
    checker = OrderChecker()
    writer = asyncio.create_task(fill(client, category, streams=30, per_stream=10))
    async with member(client, group, "steady", checker, in_flight=4):
        for n in range(6):  # members come, take streams, and go with deliveries in flight
            async with member(client, group, f"brief{n}", checker, in_flight=16):
                await asyncio.sleep(0.15)
        await writer
        await until(lambda: sum(len(v) for v in checker.acked.values()) == 300, 30, "all acked")
    assert not checker.violations, checker.violations[:5]
    assert all(checker.acked[f"{category}-{s}"] == set(range(1, 11)) for s in range(30))
    info = await until_lag_zero(client, group)
    assert info.parked == 0


async def test_in_flight_is_bounded_per_member(client: EventStoreClient) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category)
    await fill(client, category, streams=20, per_stream=1)
    async with client.consume(group, "slow", max_in_flight=3) as session:
        got: list[pb.Delivery] = []

        async def collect() -> None:
            async for delivery in session.deliveries():
                got.append(delivery)

        task = asyncio.create_task(collect())
        await until(lambda: len(got) == 3, 10, "three deliveries")
        await asyncio.sleep(0.3)  # more would have come by now if the bound did not hold
        assert len(got) == 3
        session.ack(got[0].event.position)
        await until(lambda: len(got) == 4, 10, "one more after one ack")
        task.cancel()


async def test_a_nacked_event_is_retried_with_back_off_then_parked_without_blocking_its_stream(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category, max_attempts=3)
    stream = f"{category}-1"
    await client.append(stream, [NewEvent("Poison"), NewEvent("Fine"), NewEvent("Fine")])
    attempts: list[tuple[int, float]] = []
    fine: list[int] = []
    async with client.consume(group, "m") as session:
        async for delivery in session.deliveries():
            if delivery.event.type == "Poison":
                attempts.append((delivery.attempt, time.monotonic()))
                session.nack(delivery.event.position, reason="cannot handle this")
            else:
                fine.append(delivery.event.version)
                session.ack(delivery.event.position)
                if len(fine) == 2:
                    break
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.15 and gaps[1] >= gaps[0] * 1.5, gaps  # 0.2 s, then 0.4 s
    assert fine == [2, 3]  # the stream went on once its first event was parked
    [parked] = await client.read_parked(group)
    assert (parked.event.version, parked.event.stream, parked.attempts) == (1, stream, 3)
    assert parked.reason == "cannot handle this"
    info = await until_lag_zero(client, group)
    assert info.parked == 1 and info.checkpoint >= parked.event.position + 2


async def test_park_now_and_replay(client: EventStoreClient) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category)
    await client.append(f"{category}-1", [NewEvent("Bad")])
    async with client.consume(group, "m") as session:
        async for delivery in session.deliveries():
            assert delivery.attempt == 1
            session.nack(delivery.event.position, park=True, reason="malformed: field 'x'")
            break
        await until_parked(client, group, 1)
        assert await client.replay_parked(group) == 1
        async for delivery in session.deliveries():
            assert (delivery.event.type, delivery.attempt) == ("Bad", 1)  # attempts start over
            session.ack(delivery.event.position)
            break
    await until_parked(client, group, 0)
    assert await client.read_parked(group) == []
    assert await client.replay_parked(group) == 0


async def test_an_unacked_delivery_times_out_and_a_late_ack_is_ignored(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category, ack_timeout_ms=1000)
    await client.append(f"{category}-1", [NewEvent("E"), NewEvent("E")])
    async with client.consume(group, "forgetful", 1) as first:
        stale = await anext(aiter(first.deliveries()))
        async with client.consume(group, "second", 1) as second:
            again = await anext(aiter(second.deliveries()))
            assert (again.event.position, again.attempt) == (stale.event.position, 2)
            first.ack(stale.event.position)  # too late: it is the second member's now
            await asyncio.sleep(0.2)  # for the ack to arrive (and be ignored)
            info = await group_info(client, group)
            assert info.in_flight == 1 and info.checkpoint < stale.event.position
            second.ack(again.event.position)
            follow = await anext(aiter(second.deliveries()))
            assert follow.event.version == 2
            second.ack(follow.event.position)
    await until_lag_zero(client, group)


async def test_deliveries_of_a_member_that_leaves_go_to_another_and_count_as_attempts(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    await client.create_group(group, category=category, max_attempts=2)
    await client.append(f"{category}-1", [NewEvent("KillsItsConsumer"), NewEvent("Next")])
    for attempt in (1, 2):  # a consumer that dies on the event, twice
        async with client.consume(group, f"dies{attempt}") as session:
            delivery = await anext(aiter(session.deliveries()))
            assert (delivery.event.version, delivery.attempt) == (1, attempt)
    async with client.consume(group, "survivor") as session:
        delivery = await anext(aiter(session.deliveries()))
        assert delivery.event.type == "Next"  # the first was parked after its two attempts
        session.ack(delivery.event.position)
    [parked] = await client.read_parked(group)
    assert parked.attempts == 2 and "member left" in parked.reason


async def test_filters_and_lag_count_only_matching_unfinished_events(
    client: EventStoreClient,
) -> None:
    group, category = unique("g"), unique()
    head = (await client.append(f"{unique()}-0", [NewEvent("Before")])).position
    await client.create_group(
        group, category=category, event_types=["Wanted"], start_after_position=head
    )
    await client.append(f"{category}-1", [NewEvent("Wanted"), NewEvent("Other")])
    await client.append(f"{unique()}-1", [NewEvent("Wanted")])
    await client.append(f"{category}-2", [NewEvent("Wanted")])
    info = await group_info(client, group)
    assert (info.lag, info.checkpoint, list(info.event_types)) == (2, head, ["Wanted"])
    async with client.consume(group, "m") as session:
        seen = []
        async for delivery in session.deliveries():
            seen.append(delivery.event.stream)
            if delivery.event.stream.endswith("-1"):
                session.nack(delivery.event.position, park=True, reason="no")
            else:
                session.ack(delivery.event.position)
            if len(seen) == 2:
                break
    assert sorted(seen) == [f"{category}-1", f"{category}-2"]
    info = await until_lag_zero(client, group)
    assert info.parked == 1  # parked events are not lag


async def test_a_group_survives_a_restart_of_its_store(new_database: Callable[[], str]) -> None:
    url = new_database()
    server = store_process(url).start()
    group = unique("g")
    try:
        async with EventStoreClient(server.address) as client:
            await client.create_group(group, category="acct")
            await fill(client, "acct", streams=5, per_stream=2)
            async with client.consume(group, "m", 4) as session:
                acked = []
                async for delivery in session.deliveries():
                    session.ack(delivery.event.position)
                    acked.append(delivery.event.position)
                    if len(acked) == 6:
                        break
                await until_acked(client, group, 6)  # the store has them (4 stay in flight)
        server.stop()
        server = store_process(url, port=server.port).start()
        async with EventStoreClient(server.address) as client, client.consume(group, "m") as s:
            rest = []
            async for delivery in s.deliveries():
                rest.append(delivery.event.position)
                s.ack(delivery.event.position)
                if len(rest) == 4:
                    break
            assert not set(rest) & set(acked)  # nothing acked comes again
            assert sorted(rest + acked) == sorted(set(rest + acked)) and len(rest + acked) == 10
            await until_lag_zero(client, group)
    finally:
        server.stop()


async def test_members_on_two_replicas_share_one_order(new_database: Callable[[], str]) -> None:
    url = new_database()
    replicas = [store_process(url).start(), store_process(url).start()]
    group, category = unique("g"), unique()
    try:
        async with (
            EventStoreClient(replicas[0].address) as one,
            EventStoreClient(replicas[1].address) as two,
        ):
            await one.create_group(group, category=category)
            checker = OrderChecker()
            writer = asyncio.create_task(fill(two, category, streams=25, per_stream=8))
            async with (
                member(one, group, "on-one", checker),
                member(two, group, "on-two", checker),
            ):
                await writer
                await until(
                    lambda: sum(len(v) for v in checker.acked.values()) == 200, 30, "all acked"
                )
            assert not checker.violations, checker.violations[:5]
            assert min(checker.deliveries.values()) >= 40, dict(checker.deliveries)
            await until_lag_zero(one, group)
    finally:
        for replica in replicas:
            replica.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


async def test_parking_and_replay_show_in_metrics(new_database: Callable[[], str]) -> None:
    port = free_port()
    server = store_process(new_database(), "--metrics-listen", f"127.0.0.1:{port}").start()
    group = unique("g")
    try:
        async with EventStoreClient(server.address) as client:
            await client.create_group(group, category="acct")
            await client.append("acct-1", [NewEvent("Bad")])
            async with client.consume(group, "m") as session:
                delivery = await anext(aiter(session.deliveries()))
                session.nack(delivery.event.position, park=True, reason="bad")
                await until_parked(client, group, 1)
                session.ack(10**9)  # not in flight: ignored, and counted
                await client.replay_parked(group)
                again = await anext(aiter(session.deliveries()))
                session.ack(again.event.position)
                await until_parked(client, group, 0)
        await until(
            lambda: f'eventstore_group_acks_total{{group="{group}"}} 1.0' in scrape(port),
            10,
            "ack counted",
        )
        text = scrape(port)
        for line in [
            f'eventstore_group_parked_events_total{{group="{group}"}} 1.0',
            f'eventstore_group_replayed_total{{group="{group}"}} 1.0',
            f'eventstore_group_deliveries_total{{group="{group}"}} 2.0',
            f'eventstore_group_answers_ignored_total{{group="{group}"}} 1.0',
        ]:
            assert line in text, line
    finally:
        server.stop()


async def test_deleting_a_group_ends_its_members_calls(client: EventStoreClient) -> None:
    group = unique("g")
    await client.create_group(group, category=unique())
    async with client.consume(group, "m") as session:
        ended = asyncio.create_task(anext(aiter(session.deliveries()), None))
        await until_members(client, group, 1)
        await client.delete_group(group)
        with pytest.raises(NotFoundError):
            await asyncio.wait_for(ended, 10)


async def test_acks_given_just_before_leaving_are_applied(client: EventStoreClient) -> None:
    """A member's reader is cancelled right after its last acks (as a consumer stopping does):
    leaving still sends them before the call ends, so nothing acked comes back. (grpc.aio
    cancels a call whose read is cancelled; the session shields its reads.)"""
    group, category = unique("g"), unique()
    await client.create_group(group, category=category)
    await fill(client, category, streams=5, per_stream=1)
    async with client.consume(group, "quick", 16) as session:
        got: list[pb.Delivery] = []

        async def read() -> None:
            async for delivery in session.deliveries():
                got.append(delivery)

        reader = asyncio.create_task(read())
        await until(lambda: len(got) == 5, 10, "five deliveries")
        session.ack(*(d.event.position for d in got))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    await until_lag_zero(client, group)

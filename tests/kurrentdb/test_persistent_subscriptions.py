"""KurrentDB's persistent subscriptions through `kurrentdbclient`, served by our consumer groups:
to $all and to a category ($ce-<category>), acks, a nack that parks and a replay, listing and
deleting; and what does not map is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kurrentdbclient import KurrentDBClient, NewEvent, RecordedEvent, StreamState
from kurrentdbclient.exceptions import KurrentDBClientError, NotFoundError

from eventstore_client import EventStoreClient
from tests.kurrentdb.conftest import KurrentStore
from tools.processes import wait_until


@pytest.fixture
def kurrent(kurrent_store: KurrentStore) -> Iterator[KurrentDBClient]:
    client = KurrentDBClient(kurrent_store.uri)
    yield client
    client.close()


def append(client: KurrentDBClient, stream: str, *types: str) -> None:
    events = [NewEvent(type=t, data=b"{}") for t in types]
    client.append_to_stream(stream, events=events, current_version=StreamState.ANY)


def received(subscription: Iterator[RecordedEvent], count: int) -> list[RecordedEvent]:
    got = []
    for event in subscription:
        got.append(event)
        if len(got) == count:
            return got
    raise AssertionError("the subscription ended")


def test_a_category_subscription_delivers_in_order_and_parks_what_fails(
    kurrent: KurrentDBClient,
) -> None:
    category = f"ps{uuid.uuid4().hex[:10]}"
    group = f"{category}-workers"
    kurrent.create_subscription_to_stream(group, f"$ce-{category}", max_retry_count=2)
    one, two = f"{category}-1", f"{category}-2"
    append(kurrent, one, "A1", "A2")
    append(kurrent, two, "B1")
    subscription = kurrent.read_subscription_to_stream(group, f"$ce-{category}", timeout=30)
    try:
        first = received(subscription, 2)  # A2 waits for A1's ack: one stream at a time
        assert sorted(e.type for e in first) == ["A1", "B1"]
        for event in first:
            if event.type == "A1":
                subscription.ack(event)
            else:
                subscription.nack(event, action="park")
        (second,) = received(subscription, 1)
        assert (second.type, second.stream_name, second.retry_count) == ("A2", one, 0)
        subscription.ack(second)
        info = kurrent.get_subscription_info(group, f"$ce-{category}")
        assert (info.event_source, info.group_name) == (f"$ce-{category}", group)

        def parked() -> bool:  # the nack is batched by the client, then applied by a round
            return kurrent.get_subscription_info(group, f"$ce-{category}").parked_message_count == 1

        wait_until(parked, timeout=10)
        kurrent.replay_parked_events(group, f"$ce-{category}")
        (replayed,) = received(subscription, 1)
        assert replayed.type == "B1"
        subscription.ack(replayed)
    finally:
        subscription.stop()
    kurrent.delete_subscription(group, f"$ce-{category}")
    with pytest.raises(NotFoundError):
        kurrent.get_subscription_info(group, f"$ce-{category}")


async def test_a_subscription_to_all_is_a_group_over_all_streams(
    kurrent_store: KurrentStore, kurrent: KurrentDBClient
) -> None:
    group = f"everything-{uuid.uuid4().hex[:8]}"
    kurrent.create_subscription_to_all(group, from_end=True)  # the clients' default filter
    stream = f"psall-{uuid.uuid4()}"
    append(kurrent, stream, "One", "Two")
    subscription = kurrent.read_subscription_to_all(group, timeout=30)
    try:
        for expected in ("One", "Two"):
            (event,) = received(subscription, 1)
            assert (event.type, event.stream_name) == (expected, stream)
            subscription.ack(event)
    finally:
        subscription.stop()
    names = [(s.event_source, s.group_name) for s in kurrent.list_subscriptions()]
    assert ("$all", group) in names
    async with EventStoreClient(kurrent_store.process.address) as ours:
        groups = {g.group: g for g in await ours.list_groups()}
        assert groups[group].category == ""  # the same group, seen through our API
    kurrent.delete_subscription(group)
    assert group not in [s.group_name for s in kurrent.list_subscriptions()]


def test_what_does_not_map_is_refused(kurrent: KurrentDBClient) -> None:
    with pytest.raises(KurrentDBClientError, match="not the stream"):
        kurrent.create_subscription_to_stream("one-stream", f"order-{uuid.uuid4()}")
    with pytest.raises(KurrentDBClientError, match="filtered"):
        kurrent.create_subscription_to_all("some-types", filter_include=["OrderCreated"])
    with pytest.raises(KurrentDBClientError, match="consumer_strategy"):
        kurrent.create_subscription_to_all("odd", consumer_strategy="Sideways")  # type: ignore[call-overload]
    with pytest.raises(NotFoundError):
        kurrent.get_subscription_info("never-made")

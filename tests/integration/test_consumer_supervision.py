"""A group consumer under a real store: failures that are the store's are retried without
counting against the event, and a consumer that cannot go on turns its service's health
NOT_SERVING instead of dying silently."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.consumer import ConsumerStopped, GroupConsumer
from eventstore_client.errors import UnavailableError
from eventstore_client.store import GroupMembership
from hosting.service import serve
from hosting.settings import ServiceSettings
from localpg import free_port
from tests.support import until
from tools.processes import unique


async def one_event_group(client: EventStoreClient, max_attempts: int) -> str:
    category, group = unique("cat"), unique("g")
    await client.create_group(group, category=category, max_attempts=max_attempts)
    await client.append(f"{category}-1", [NewEvent.json("Happened", {"n": 1})])
    return group


async def test_a_store_failure_in_the_handler_is_retried_without_counting(
    client: EventStoreClient,
) -> None:
    """With max_attempts=1 one nack would park the event: the handler's UNAVAILABLE (its store
    restarting, say) must instead call it again for the same event until it succeeds."""
    group = await one_event_group(client, max_attempts=1)
    calls: list[int] = []

    async def handler(event: RecordedEvent) -> None:
        calls.append(event.position)
        if len(calls) <= 3:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "the store is restarting")

    consumer = GroupConsumer(client, group, handler, max_backoff=0.2)
    running = asyncio.create_task(consumer.run())
    try:
        await until(lambda: consumer.handled == 1, what="the event handled")
    finally:
        running.cancel()
    assert len(set(calls)) == 1 and len(calls) == 4
    assert consumer.failed == 0 and consumer.parked == 0
    (info,) = [g for g in await client.list_groups() if g.group == group]
    assert info.parked == 0


class BrokenConsumer(GroupConsumer):
    """A consumer with a bug in its own machinery (not in the handler): every delivery breaks
    the session."""

    async def _handle(self, session: GroupMembership, event: RecordedEvent) -> None:
        raise RuntimeError("a bug in the consumer")


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(response.status)


async def test_a_consumer_that_cannot_go_on_turns_health_not_serving(
    client: EventStoreClient,
) -> None:
    group = await one_event_group(client, max_attempts=5)

    async def handler(event: RecordedEvent) -> None:
        raise AssertionError("never called: the machinery breaks first")

    consumer = BrokenConsumer(client, group, handler, max_backoff=0.2, max_failures=3)
    stopped: list[BaseException] = []

    async def consume() -> None:
        try:
            await consumer.run()
        except ConsumerStopped as error:
            stopped.append(error)
            raise

    address = f"127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    serving = asyncio.create_task(
        serve(
            "broken_svc", ServiceSettings(listen=address), lambda server: [], [consume], stop=stop
        )
    )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while await health(address) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert not serving.done(), serving
            assert asyncio.get_running_loop().time() < deadline, "still SERVING"
            await asyncio.sleep(0.05)
        assert stopped and stopped[0].group == group  # type: ignore[attr-defined]
        assert consumer.joins == 3  # it joined again after each failure, then gave up
    finally:
        stop.set()
        await serving

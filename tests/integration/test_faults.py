"""Faults over real processes: PostgreSQL restarted under load, and a subscriber that stops
reading. Nothing acknowledged is lost; subscriptions resume without a gap or a duplicate; the
server's memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.errors import EventStoreError
from localpg import LocalPostgres, free_port
from tests.integration.test_metrics import scrape, value
from tests.support import until
from tools.processes import ServerProcess, create_database, health_status, store_process

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL of this test's own: it gets stopped and started."""
    with LocalPostgres() as pg:
        yield pg


class Load:
    """Writers appending one event at a time to streams of their own, recording what the store
    acknowledged, and a subscriber to all streams that resubscribes after any error from the
    position it last saw."""

    def __init__(self, address: str, writers: int = 8) -> None:
        self.address = address
        self.writers = writers
        self.acknowledged: dict[str, int] = {}  # event id -> position
        self.refused = 0
        self.received: list[pb.RecordedEvent] = []
        self.resubscriptions = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write(n)) for n in range(self.writers)]
        self._tasks.append(asyncio.create_task(self._follow()))

    async def stop_writing(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks[:-1])

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _write(self, n: int) -> None:
        async with EventStoreClient(self.address, retries=2, timeout=5) as store:
            stream = f"load{n}-{uuid.uuid4().hex[:8]}"
            while not self._stop.is_set():
                event = NewEvent("Loaded", str(len(self.acknowledged)).encode())
                try:
                    result = await store.append(stream, [event])
                except EventStoreError:
                    self.refused += 1  # its outcome is unknown: it may or may not be stored
                    await asyncio.sleep(0.05)
                    continue
                self.acknowledged[event.id] = result.position

    async def _follow(self) -> None:
        after = 0
        async with EventStoreClient(self.address, timeout=5) as store:
            while True:
                try:
                    async for response in store.subscribe(after_position=after):
                        for event in response.events:
                            self.received.append(event)
                            after = event.position
                except EventStoreError:
                    self.resubscriptions += 1
                    await asyncio.sleep(0.1)


async def test_postgres_restarted_under_load(own_postgres: LocalPostgres) -> None:
    store = store_process(create_database(own_postgres.dsn), "--health-interval", "0.2").start()
    load = Load(store.address)
    try:
        load.start()
        await until(lambda: len(load.acknowledged) >= 200, what="load before the restart")

        own_postgres.stop("fast")
        await until(
            lambda: health_status(store.address) == NOT_SERVING, what="NOT_SERVING while down"
        )
        acknowledged_while_down = len(load.acknowledged)
        await asyncio.sleep(1.0)  # appends keep arriving and are refused
        own_postgres.start()
        await until(lambda: health_status(store.address) == SERVING, what="recovery by itself")
        await until(
            lambda: len(load.acknowledged) >= acknowledged_while_down + 200,
            what="appends acknowledged again",
        )
        await load.stop_writing()

        async with EventStoreClient(store.address) as client:
            stored = [e async for e in client.read_all()]
        positions = [e.position for e in stored]
        assert positions == list(range(1, len(stored) + 1))  # gap-free, in order
        stored_ids = {e.id for e in stored}
        assert set(load.acknowledged) <= stored_ids, "an acknowledged append was lost"
        by_id = {e.id: e.position for e in stored}
        assert all(by_id[i] == p for i, p in load.acknowledged.items())

        await until(
            lambda: len(load.received) >= len(stored) and bool(load.received),
            what=f"the subscriber catching up ({len(stored)} stored, "
            f"{len(load.received)} received when the writers stopped, "
            f"{load.resubscriptions} resubscriptions)",
        )
        received = [e.position for e in load.received]
        assert received == positions, "the subscription has a gap or a duplicate"
        assert load.refused > 0  # the outage was real: appends were refused during it
    finally:
        await load.close()
        store.stop()
    assert "Traceback" not in store.log(), store.log()


def _rss_kib(process: ServerProcess) -> int:
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    [line] = [x for x in status.splitlines() if x.startswith("VmRSS:")]
    return int(line.split()[1])


async def test_a_subscriber_that_stops_reading_does_not_grow_the_server(
    new_database: Callable[[], str],
) -> None:
    """A subscription whose client reads nothing while 200 MB are appended: the server holds
    at most its bounded tail and gRPC's flow-control window, not the backlog. The subscriber
    then reads again and receives every event."""
    store = store_process(new_database(), "--tail-events", "2000").start()
    payload = b"x" * 4000
    batches, per_batch = 500, 100  # 50,000 events of 4 kB
    try:
        async with (
            EventStoreClient(store.address) as writer,
            grpc.aio.insecure_channel(store.address) as channel,
        ):
            stub = pb_grpc.EventStoreStub(channel)
            call = stub.Subscribe(pb.SubscribeRequest(category="slow"))
            first = await call.read()  # caught up (empty history); then we stop reading
            assert isinstance(first, pb.SubscribeResponse) and first.caught_up
            await writer.append("warm-1", [NewEvent("Warm", payload)])
            baseline = _rss_kib(store)
            stream = f"slow-{uuid.uuid4().hex}"
            for _ in range(batches):
                await writer.append(stream, [NewEvent("Big", payload) for _ in range(per_batch)])
            grown_mib = (_rss_kib(store) - baseline) / 1024
            appended_mib = batches * per_batch * len(payload) / 2**20
            print(f"server RSS grew {grown_mib:.0f} MiB while {appended_mib:.0f} MiB were appended")
            assert grown_mib < appended_mib / 4

            received = 0
            while received < batches * per_batch:
                response = await call.read()
                assert isinstance(response, pb.SubscribeResponse)
                received += len(response.events)
            assert received == batches * per_batch
            call.cancel()
    finally:
        store.stop()


async def test_work_stops_when_the_caller_gives_up(new_database: Callable[[], str]) -> None:
    """Subscriptions whose deadline passes are ended on the server too: nothing keeps running
    for a caller who has left."""
    metrics_port = free_port()
    store = store_process(new_database(), "--metrics-listen", f"127.0.0.1:{metrics_port}").start()
    try:
        async with EventStoreClient(store.address) as client:
            for n in range(20):
                await client.append(f"deadline-{n}", [NewEvent("E") for _ in range(50)])
        async with grpc.aio.insecure_channel(store.address) as channel:
            stub = pb_grpc.EventStoreStub(channel)
            calls = [
                stub.Subscribe(pb.SubscribeRequest(category="deadline"), timeout=0.5)
                for _ in range(5)
            ]
            for call in calls:
                assert isinstance(await call.read(), pb.SubscribeResponse)  # open on the server
            assert value(scrape(metrics_port), "eventstore_subscriptions_active") == 5
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    while True:
                        await call.read()
                assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await until(
            lambda: value(scrape(metrics_port), "eventstore_subscriptions_active") == 0,
            what="the server ending the expired subscriptions",
        )
    finally:
        store.stop()
    assert "Traceback" not in store.log(), store.log()

"""Subscribe, ReadAll, durable checkpoints and snapshots against real processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import EventStoreClient, EventStoreError, NewEvent
from eventstore_client.errors import InvalidArgumentError, NotFoundError
from tools.processes import ServerProcess, store_process, unique


class Collector:
    """Runs a subscription in the background and records what it delivers."""

    def __init__(self, responses: AsyncIterator[pb.SubscribeResponse], delay: float = 0.0) -> None:
        self.events: list[pb.RecordedEvent] = []
        self.caught_up_after: int | None = None  # events received when caught_up came
        self.caught_up_count = 0
        self._delay = delay
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(responses))

    async def _run(self, responses: AsyncIterator[pb.SubscribeResponse]) -> None:
        async for response in responses:
            if self._delay:
                await asyncio.sleep(self._delay)  # a slow consumer, on purpose
            async with self._changed:
                self.events.extend(response.events)
                if response.caught_up:
                    self.caught_up_count += 1
                    if self.caught_up_after is None:
                        self.caught_up_after = len(self.events)
                self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[pb.RecordedEvent]:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.events) >= count or self._task.done())

        await asyncio.wait_for(reached(), timeout)
        if self._task.done() and self._task.exception():
            raise self._task.exception()  # type: ignore[misc]
        return self.events

    async def wait_caught_up(self, timeout: float = 30.0) -> None:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.caught_up_after is not None)

        await asyncio.wait_for(reached(), timeout)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, EventStoreError):
            await self._task


def _ids(events: list[pb.RecordedEvent]) -> list[str]:
    return [e.id for e in events]


async def test_subscriber_after_a_known_position_gets_exactly_the_later_events(
    client: EventStoreClient,
) -> None:
    category = unique("cat")
    written = [NewEvent("E", str(i).encode()) for i in range(5)]
    results = [await client.append(f"{category}-{i % 2}", [e]) for i, e in enumerate(written)]
    collector = Collector(client.subscribe(category=category, after_position=results[2].position))
    await collector.wait_caught_up()
    assert _ids(collector.events) == [written[3].id, written[4].id]
    assert collector.caught_up_after == 2
    live = [NewEvent("L") for _ in range(3)]
    for e in live:
        await client.append(f"{category}-9", [e])
    events = await collector.wait_for(5)
    assert _ids(events) == [written[3].id, written[4].id] + [e.id for e in live]
    assert collector.caught_up_count == 1
    await collector.stop()


async def test_no_gap_and_no_duplicate_at_the_seam_between_catch_up_and_live(
    client: EventStoreClient,
) -> None:
    category = unique("seam")
    written: list[str] = []
    history = asyncio.Event()

    async def write() -> None:
        for i in range(150):
            events = [NewEvent("E") for _ in range(1 + i % 3)]
            await client.append(f"{category}-{i % 7}", events)
            written.extend(e.id for e in events)
            if len(written) >= 50:
                history.set()

    writer = asyncio.create_task(write())
    await history.wait()  # subscribe while the writer goes on: the seam is crossed under load
    collector = Collector(client.subscribe(category=category))
    await writer
    events = await collector.wait_for(len(written))
    assert _ids(events) == written  # exactly once, in commit order
    positions = [e.position for e in events]
    assert positions == sorted(set(positions))
    assert collector.caught_up_count == 1
    await collector.stop()


async def test_filters_by_category_and_event_type(client: EventStoreClient) -> None:
    a, b = unique("fa"), unique("fb")
    await client.append(f"{a}-1", [NewEvent("Keep"), NewEvent("Drop"), NewEvent("Keep")])
    await client.append(f"{b}-1", [NewEvent("Keep")])
    await client.append(f"{a}-2", [NewEvent("Other"), NewEvent("Keep")])
    by_type = Collector(client.subscribe(category=a, event_types=["Keep"]))
    both = Collector(client.subscribe(category=a, event_types=["Keep", "Other"]))
    await by_type.wait_caught_up()
    await both.wait_caught_up()
    assert [(e.stream, e.type) for e in by_type.events] == [
        (f"{a}-1", "Keep"),
        (f"{a}-1", "Keep"),
        (f"{a}-2", "Keep"),
    ]
    assert [e.type for e in both.events] == ["Keep", "Keep", "Other", "Keep"]
    await client.append(f"{b}-2", [NewEvent("Keep")])
    await client.append(f"{a}-3", [NewEvent("Drop"), NewEvent("Keep")])
    assert [e.stream for e in (await by_type.wait_for(4))[3:]] == [f"{a}-3"]
    await by_type.stop()
    await both.stop()


async def test_stream_subscription_after_a_version(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    await client.append(stream, [NewEvent("E") for _ in range(4)])
    await client.append(f"{unique()}-noise", [NewEvent("E")])
    collector = Collector(client.subscribe(stream=stream, after_version=2))
    await collector.wait_caught_up()
    assert [e.version for e in collector.events] == [3, 4]
    await client.append(stream, [NewEvent("E")])
    assert [e.version for e in await collector.wait_for(3)] == [3, 4, 5]
    await collector.stop()
    ahead = Collector(client.subscribe(stream=stream, after_version=7))  # beyond the stream's end
    await ahead.wait_caught_up()
    await client.append(stream, [NewEvent("E") for _ in range(3)])  # versions 6, 7, 8
    assert [e.version for e in await ahead.wait_for(1)] == [8]
    await ahead.stop()


async def test_durable_subscriber_resumes_after_its_checkpoint(client: EventStoreClient) -> None:
    category, name = unique("dur"), unique("sub")
    first = [NewEvent("E") for _ in range(5)]
    for e in first:
        await client.append(f"{category}-1", [e])
    collector = Collector(client.subscribe(category=category, subscriber=name))
    events = await collector.wait_for(5)
    await collector.stop()
    assert await client.get_checkpoint(name) is None
    assert await client.commit_checkpoint(name, events[2].position) == events[2].position
    assert (
        await client.commit_checkpoint(name, events[0].position) == events[2].position
    )  # never back
    later = [NewEvent("E") for _ in range(2)]
    await client.append(f"{category}-2", later)
    stats = await client.stats()
    [info] = [s for s in stats.subscribers if s.name == name]
    assert info.position == events[2].position
    assert info.lag == stats.head_position - events[2].position >= 2
    resumed = Collector(client.subscribe(category=category, subscriber=name))
    await resumed.wait_caught_up()
    assert _ids(resumed.events) == [first[3].id, first[4].id, later[0].id, later[1].id]
    await resumed.stop()
    assert (
        await client.commit_checkpoint(name, events[0].position, reset=True) == events[0].position
    )
    assert await client.get_checkpoint(name) == events[0].position


async def test_read_all_in_global_order_with_filters_and_limits(client: EventStoreClient) -> None:
    category = unique("ra")
    start = (await client.append(f"{unique()}-before", [NewEvent("X")])).position
    await client.append(f"{category}-1", [NewEvent("A") for _ in range(600)])
    await client.append(f"{category}-2", [NewEvent("B"), NewEvent("A")])
    everything = [e async for e in client.read_all(after_position=start)]
    assert [e.position for e in everything] == list(range(start + 1, start + 1 + len(everything)))
    ours = [e async for e in client.read_all(after_position=start, category=category)]
    assert len(ours) == 602
    only_b = [
        e async for e in client.read_all(after_position=start, category=category, event_types=["B"])
    ]
    assert [(e.stream, e.version) for e in only_b] == [(f"{category}-2", 1)]
    assert (
        len(
            [
                e
                async for e in client.read_all(
                    after_position=start, category=category, max_count=550
                )
            ]
        )
        == 550
    )


async def test_snapshots_latest_at_or_below_a_version(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    await client.append(stream, [NewEvent("E") for _ in range(10)])
    assert await client.read_snapshot(stream) is None
    await client.save_snapshot(stream, 3, "State.v1", b"three", {"schema": "1"})
    await client.save_snapshot(stream, 8, "State.v1", b"eight")
    latest = await client.read_snapshot(stream)
    assert latest is not None and (latest.version, latest.data) == (8, b"eight")
    at_five = await client.read_snapshot(stream, max_version=5)
    assert at_five is not None and (at_five.version, at_five.data, dict(at_five.metadata)) == (
        3,
        b"three",
        {"schema": "1"},
    )
    assert await client.read_snapshot(stream, max_version=2) is None
    with pytest.raises(EventStoreError) as raised:
        await client.save_snapshot(stream, 11, "State.v1", b"future")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(NotFoundError):
        await client.save_snapshot(f"{unique()}-none", 1, "State.v1", b"")


@pytest.mark.parametrize(
    "request_",
    [
        pb.SubscribeRequest(),
        pb.SubscribeRequest(stream="s-1", subscriber="x"),
        pb.SubscribeRequest(category="a-b"),
        pb.SubscribeRequest(stream="bad stream"),
        pb.SubscribeRequest(all=pb.AllStreams(), event_types=[""]),
        pb.SubscribeRequest(all=pb.AllStreams(), after_position=2**63),
    ],
    ids=[
        "no target",
        "durable stream",
        "category with dash",
        "bad stream",
        "empty type",
        "huge position",
    ],
)
async def test_bad_subscribe_is_invalid_argument(
    client: EventStoreClient, request_: pb.SubscribeRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in client.stub.Subscribe(request_):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_checkpoint_name_is_invalid_argument(client: EventStoreClient) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.commit_checkpoint("", 1)


async def test_slow_subscriber_still_receives_everything(new_database: Callable[[], str]) -> None:
    """With a tiny in-memory tail, a slow consumer falls out of it and is served from PostgreSQL."""
    server = store_process(new_database(), "--tail-events", "50", "--read-page-size", "20").start()
    try:
        async with EventStoreClient(server.address) as client:
            category = unique("slow")
            slow = Collector(client.subscribe(category=category), delay=0.01)
            fast = Collector(client.subscribe(category=category))
            await slow.wait_caught_up()
            written: list[str] = []
            for i in range(200):
                batch = [NewEvent("E") for _ in range(5)]
                await client.append(f"{category}-{i % 10}", batch)
                written.extend(e.id for e in batch)
            assert _ids(await fast.wait_for(1000)) == written
            assert _ids(await slow.wait_for(1000, timeout=120)) == written
            await slow.stop()
            await fast.stop()
    finally:
        server.stop()


async def _write_load(
    address: str, prefix: str, writers: int, appends: int, acknowledged: dict[str, list[str]]
) -> None:
    async with EventStoreClient(address) as client:

        async def one(n: int) -> None:
            for i in range(appends):
                events = [NewEvent("E", f"{n}:{i}:{k}".encode()) for k in range(1 + i % 3)]
                await client.append(f"{prefix}-{n}", events)
                acknowledged[f"{prefix}-{n}"] = acknowledged.get(f"{prefix}-{n}", []) + [
                    e.id for e in events
                ]

        await asyncio.gather(*(one(n) for n in range(writers)))


async def test_sixteen_writers_two_replicas_subscribers_on_both(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    a, b = store_process(url).start(), store_process(url).start()
    try:
        async with EventStoreClient(a.address) as ca, EventStoreClient(b.address) as cb:
            subscribers = [
                Collector(ca.subscribe()),
                Collector(cb.subscribe()),
                Collector(cb.subscribe(category="w")),
            ]
            for s in subscribers:
                await s.wait_caught_up()
            acknowledged: dict[str, list[str]] = {}
            await asyncio.gather(
                _write_load(a.address, "w", 8, 25, acknowledged),
                _write_load(b.address, "v", 8, 25, acknowledged),
            )
            total = sum(len(v) for v in acknowledged.values())
            w_total = sum(len(v) for k, v in acknowledged.items() if k.startswith("w-"))
            for s, expected in zip(subscribers, (total, total, w_total), strict=True):
                events = await s.wait_for(expected)
                assert len(events) == expected
                assert len({e.id for e in events}) == expected  # no duplicates
                positions = [e.position for e in events]
                assert positions == sorted(positions)
                per_stream: dict[str, list[int]] = {}
                for e in events:
                    per_stream.setdefault(e.stream, []).append(e.version)
                for stream, versions in per_stream.items():
                    assert versions == list(range(1, len(versions) + 1)), stream
                    assert [e.id for e in events if e.stream == stream] == acknowledged[stream]
                await s.stop()
    finally:
        a.stop()
        b.stop()


async def test_kill_9_of_one_replica_under_load_loses_no_acknowledged_append(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    a, b = store_process(url).start(), store_process(url).start()
    acknowledged: dict[str, list[pb.EventData]] = {}
    enough = asyncio.Event()

    async def load(server: ServerProcess, prefix: str) -> None:
        async with EventStoreClient(server.address, retries=0) as client:
            for i in range(10_000):
                events = [NewEvent("E", f"{prefix}{i}:{k}".encode()) for k in range(3)]
                try:
                    await client.append(f"{prefix}-{i % 20}", events)
                except EventStoreError:
                    return  # the replica is gone
                acknowledged.setdefault(f"{prefix}-{i % 20}", []).extend(
                    e.to_proto() for e in events
                )
                if sum(map(len, acknowledged.values())) > 600:
                    enough.set()

    killed = asyncio.create_task(load(a, "ka"))
    survivor = asyncio.create_task(load(b, "kb"))
    await enough.wait()
    a.kill()
    await killed
    survivor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await survivor
    try:
        async with EventStoreClient(b.address) as client:
            for stream, expected in acknowledged.items():
                stored = await client.read_stream_list(stream)
                stored_ids = [e.id for e in stored]
                # Every acknowledged append is there, whole; an unacknowledged one may be too.
                assert stored_ids[: len(expected)] == [e.id for e in expected], stream
                assert [e.data for e in stored[: len(expected)]] == [e.data for e in expected]
                assert len(stored_ids) % 3 == 0  # appends are atomic: 3 events or none
    finally:
        b.stop()


async def test_a_filtered_subscriber_learns_how_far_it_has_scanned(
    client: EventStoreClient,
) -> None:
    """Events it never receives still move its scanned position, so a durable checkpoint (and
    the lag the store reports) keeps up."""
    category = unique("scan")
    await client.append(f"{category}-1", [NewEvent("Wanted")])
    ignored = await client.append(f"{category}-1", [NewEvent("Ignored") for _ in range(5)])
    seen: list[pb.SubscribeResponse] = []

    async def until_scanned_past(position: int) -> None:
        async for response in client.subscribe(category=category, event_types=["Wanted"]):
            seen.append(response)
            if response.scanned_position >= position:
                return

    await asyncio.wait_for(until_scanned_past(ignored.position), 30)
    assert [e.type for r in seen for e in r.events] == ["Wanted"]
    assert seen[0].scanned_position >= ignored.position  # the page says how far it looked

    live = Collector(
        client.subscribe(category=category, event_types=["Wanted"], after_position=ignored.position)
    )
    await live.wait_caught_up()
    later = await client.append(f"{category}-2", [NewEvent("Ignored")])

    async def quiet_report() -> int:
        async for response in client.subscribe(
            category=category, event_types=["Wanted"], after_position=ignored.position
        ):
            if response.scanned_position >= later.position:
                return response.scanned_position
        raise AssertionError("subscription ended")

    # After a quiet second the subscription reports the position it has scanned to.
    assert await asyncio.wait_for(quiet_report(), 30) >= later.position
    await live.stop()

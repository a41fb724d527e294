"""Append and ReadStream against a real store process and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client import (
    DuplicateEventIdError,
    EventStoreClient,
    Expected,
    NewEvent,
    WrongExpectedVersionError,
)
from eventstore_client.errors import error_info
from tools.processes import unique


async def test_append_then_read_back_everything_written(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    events = [
        NewEvent.json("Opened", {"n": 1}, metadata={"k": "v"}),
        NewEvent("Raw", b"\x00\x01binary", content_type="application/x-bin"),
        NewEvent("Empty"),
    ]
    result = await client.append(stream, events)
    assert result.version == 3

    read = await client.read_stream_list(stream)
    assert [e.version for e in read] == [1, 2, 3]
    assert [e.id for e in read] == [e.id for e in events]
    assert [e.type for e in read] == ["Opened", "Raw", "Empty"]
    assert read[0].data == b'{"n":1}' and read[0].content_type == "application/json"
    assert dict(read[0].metadata) == {"k": "v"}
    assert read[1].data == b"\x00\x01binary"
    assert all(e.stream == stream for e in read)
    assert [e.position for e in read] == list(range(read[0].position, read[0].position + 3))
    assert read[-1].position == result.position
    assert all(e.recorded_at.seconds > 0 for e in read)


async def test_positions_increase_across_streams(client: EventStoreClient) -> None:
    # Other tests share this store, so only what these appends themselves decide is checked:
    # later appends get higher positions, and one append's events consecutive ones.
    first = await client.append(f"{unique()}-a", [NewEvent("A")])
    b = f"{unique()}-b"
    second = await client.append(b, [NewEvent("B"), NewEvent("B")])
    assert second.position > first.position
    assert [e.position for e in await client.read_stream_list(b)] == [
        second.position - 1,
        second.position,
    ]


async def test_server_assigns_an_id_when_empty(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    await client.stub.Append(pb.AppendRequest(stream=stream, events=[pb.EventData(type="T")]))
    [event] = await client.read_stream_list(stream)
    assert uuid.UUID(event.id).version == 4 and str(uuid.UUID(event.id)) == event.id


async def test_expected_version_exact(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    assert (await client.append(stream, [NewEvent("A")], expected_version=0)).version == 1
    assert (await client.append(stream, [NewEvent("A")], expected_version=1)).version == 2
    with pytest.raises(WrongExpectedVersionError) as raised:
        await client.append(stream, [NewEvent("A")], expected_version=1)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.actual == 2
    assert raised.value.metadata == {"stream": stream, "expected": "1", "actual": "2"}
    assert len(await client.read_stream_list(stream)) == 2


async def test_wrong_expected_version_carries_error_info_detail(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    await client.append(stream, [NewEvent("A")])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.stub.Append(
            pb.AppendRequest(stream=stream, expected_version=5, events=[pb.EventData(type="A")])
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(raised.value)
    assert info is not None
    assert info.reason == "WRONG_EXPECTED_VERSION"
    assert dict(info.metadata) == {"stream": stream, "expected": "5", "actual": "1"}


async def test_expected_states(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    with pytest.raises(WrongExpectedVersionError) as raised:
        await client.append(stream, [NewEvent("A")], Expected.STREAM_EXISTS)
    assert raised.value.actual == 0
    await client.append(stream, [NewEvent("A")], Expected.NO_STREAM)
    with pytest.raises(WrongExpectedVersionError) as raised:
        await client.append(stream, [NewEvent("A")], Expected.NO_STREAM)
    assert raised.value.actual == 1
    assert (await client.append(stream, [NewEvent("A")], Expected.STREAM_EXISTS)).version == 2
    assert (await client.append(stream, [NewEvent("A")], Expected.ANY)).version == 3
    assert (await client.append(stream, [NewEvent("A")])).version == 4


async def test_retried_append_is_idempotent_whatever_its_expectation(
    client: EventStoreClient,
) -> None:
    stream = f"{unique()}-1"
    events = [NewEvent("A"), NewEvent("B")]
    first = await client.append(stream, events, expected_version=0)
    await client.append(stream, [NewEvent("C")])
    again = await client.append(stream, events, expected_version=0)
    assert (again.version, again.position) == (first.version, first.position)
    assert [e.type for e in await client.read_stream_list(stream)] == ["A", "B", "C"]


async def test_reused_event_id_elsewhere_is_already_exists(client: EventStoreClient) -> None:
    stream, other = f"{unique()}-1", f"{unique()}-2"
    event = NewEvent("A")
    await client.append(stream, [event])
    with pytest.raises(DuplicateEventIdError) as raised:
        await client.append(other, [event])
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(DuplicateEventIdError):
        await client.append(stream, [event, NewEvent("B")])  # only some of the ids were written
    assert await client.read_stream_list(other) == []
    assert len(await client.read_stream_list(stream)) == 1


async def test_concurrent_writers_on_one_stream_one_winner_per_version(
    client: EventStoreClient,
) -> None:
    stream = f"{unique()}-1"
    writers, appends_each = 32, 5
    won: list[int] = []
    conflicts = 0

    async def writer() -> None:
        nonlocal conflicts
        version = 0
        for _ in range(appends_each):
            while True:
                try:
                    result = await client.append(stream, [NewEvent("W")], expected_version=version)
                    won.append(result.version)
                    version = result.version
                    break
                except WrongExpectedVersionError as error:
                    conflicts += 1
                    version = error.actual

    await asyncio.gather(*(writer() for _ in range(writers)))
    total = writers * appends_each
    assert sorted(won) == list(range(1, total + 1))  # each version won exactly once
    read = await client.read_stream_list(stream)
    assert [e.version for e in read] == list(range(1, total + 1))
    positions = [e.position for e in read]
    assert positions == sorted(positions) and len(set(positions)) == total
    assert conflicts > 0  # the test did exercise contention


async def test_concurrent_appends_to_many_streams_all_land(client: EventStoreClient) -> None:
    prefix = unique()
    results = await asyncio.gather(
        *(client.append(f"{prefix}-{i}", [NewEvent("E"), NewEvent("E")]) for i in range(200))
    )
    positions = sorted(p for r in results for p in (r.position - 1, r.position))
    assert len(set(positions)) == 400
    for i in (0, 99, 199):
        assert [e.version for e in await client.read_stream_list(f"{prefix}-{i}")] == [1, 2]


async def test_read_stream_paging_direction_and_bounds(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    for _ in range(3):
        await client.append(stream, [NewEvent("E") for _ in range(500)])  # 1500 > one page
    all_events = await client.read_stream_list(stream)
    assert [e.version for e in all_events] == list(range(1, 1501))
    assert [e.version for e in await client.read_stream_list(stream, from_version=1)] == list(
        range(1, 1501)
    )
    assert [
        e.version for e in await client.read_stream_list(stream, from_version=1200, max_count=10)
    ] == list(range(1200, 1210))
    assert [e.version for e in await client.read_stream_list(stream, from_version=1499)] == [
        1499,
        1500,
    ]
    assert await client.read_stream_list(stream, from_version=1501) == []
    backwards = await client.read_stream_list(stream, backwards=True)
    assert [e.version for e in backwards] == list(range(1500, 0, -1))
    assert [
        e.version for e in await client.read_stream_list(stream, from_version=3, backwards=True)
    ] == [3, 2, 1]
    assert [
        e.version for e in await client.read_stream_list(stream, max_count=2, backwards=True)
    ] == [1500, 1499]
    assert [e.version for e in await client.read_stream_list(stream, max_count=700)] == list(
        range(1, 701)
    )


async def test_read_stream_pages_are_several_messages(client: EventStoreClient) -> None:
    stream = f"{unique()}-1"
    for _ in range(3):
        await client.append(stream, [NewEvent("E") for _ in range(1000)])
    messages = [m async for m in client.stub.ReadStream(pb.ReadStreamRequest(stream=stream))]
    assert len(messages) >= 3  # at most read_page_size (1000) events per message
    assert [e.version for m in messages for e in m.events] == list(range(1, 3001))


async def test_large_events_are_paged_by_bytes(client: EventStoreClient) -> None:
    """Messages stay near read_page_bytes (1 MiB) however large the events: none is lost."""
    stream = f"{unique()}-1"
    for i in range(3):
        await client.append(stream, [NewEvent("Big", bytes([i]) * 400_000) for _ in range(3)])
    messages = [m async for m in client.stub.ReadStream(pb.ReadStreamRequest(stream=stream))]
    assert len(messages) >= 3
    assert all(len(m.events) <= 3 for m in messages)
    events = [e for m in messages for e in m.events]
    assert [e.version for e in events] == list(range(1, 10))
    assert [e.data[:1] for e in events] == [bytes([i // 3]) for i in range(9)]
    backwards = await client.read_stream_list(stream, backwards=True)
    assert [e.version for e in backwards] == list(range(9, 0, -1))
    everything = [e async for e in client.read_all(after_position=events[0].position - 1)]
    assert [e.id for e in everything][:9] == [e.id for e in events]


async def test_missing_stream_reads_empty(client: EventStoreClient) -> None:
    assert await client.read_stream_list(f"{unique()}-nothing") == []
    assert await client.read_stream_list(f"{unique()}-nothing", backwards=True) == []


def _event(**fields: object) -> pb.EventData:
    return pb.EventData(**{"type": "T", **fields})  # type: ignore[arg-type]


BAD_APPENDS = {
    "empty stream": pb.AppendRequest(stream="", events=[_event()]),
    "stream with space": pb.AppendRequest(stream="a b", events=[_event()]),
    "stream with NUL": pb.AppendRequest(stream="a\x00b", events=[_event()]),
    "stream with newline": pb.AppendRequest(stream="a\nb", events=[_event()]),
    "stream starting with dash": pb.AppendRequest(stream="-a", events=[_event()]),
    "stream too long": pb.AppendRequest(stream="s" * 201, events=[_event()]),
    "no events": pb.AppendRequest(stream="bad-1"),
    "empty type": pb.AppendRequest(stream="bad-1", events=[_event(type="")]),
    "type with NUL": pb.AppendRequest(stream="bad-1", events=[_event(type="T\x00")]),
    "invalid uuid": pb.AppendRequest(stream="bad-1", events=[_event(id="not-a-uuid")]),
    "sql-looking uuid": pb.AppendRequest(
        stream="bad-1", events=[_event(id="'; DROP TABLE es_events; --")]
    ),
    "same id twice": pb.AppendRequest(
        stream="bad-1", events=[_event(id="6f1c8e8e-0f3b-4b43-9b6e-1f2d3c4b5a69")] * 2
    ),
    "metadata NUL": pb.AppendRequest(stream="bad-1", events=[_event(metadata={"k": "v\x00"})]),
    "metadata empty key": pb.AppendRequest(stream="bad-1", events=[_event(metadata={"": "v"})]),
    "too many metadata entries": pb.AppendRequest(
        stream="bad-1", events=[_event(metadata={str(i): "v" for i in range(65)})]
    ),
    "event too large": pb.AppendRequest(
        stream="bad-1", events=[_event(data=b"x" * (1024 * 1024 + 1))]
    ),
    "append too large": pb.AppendRequest(
        stream="bad-1", events=[_event(data=b"x" * (900 * 1024)) for _ in range(5)]
    ),
    "too many events": pb.AppendRequest(stream="bad-1", events=[_event() for _ in range(1001)]),
    "unknown expected state": pb.AppendRequest(
        stream="bad-1",
        expected_state=99,  # type: ignore[arg-type]
        events=[_event()],
    ),
    "expected version beyond int64": pb.AppendRequest(
        stream="bad-1", expected_version=2**63, events=[_event()]
    ),
}


async def _event_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM es_events")
        return count
    finally:
        await conn.close()


@pytest.mark.parametrize("request_", BAD_APPENDS.values(), ids=BAD_APPENDS.keys())
async def test_bad_append_is_invalid_argument_and_writes_nothing(
    client: EventStoreClient, store_database: str, request_: pb.AppendRequest
) -> None:
    before = await _event_count(store_database)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.stub.Append(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert raised.value.details()
    assert await _event_count(store_database) == before


async def test_message_over_grpc_limit_is_resource_exhausted(
    client: EventStoreClient, store_database: str
) -> None:
    before = await _event_count(store_database)
    request = pb.AppendRequest(stream="big-1", events=[_event(data=b"x" * (9 * 1024 * 1024))])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.stub.Append(request)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _event_count(store_database) == before


@pytest.mark.parametrize(
    "request_",
    [
        pb.ReadStreamRequest(stream=""),
        pb.ReadStreamRequest(stream="a b"),
        pb.ReadStreamRequest(stream="x-1", from_version=2**63),
    ],
    ids=["empty", "space", "huge from_version"],
)
async def test_bad_read_is_invalid_argument(
    client: EventStoreClient, request_: pb.ReadStreamRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in client.stub.ReadStream(request_):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_refused_append_does_not_fail_its_batch_neighbours(
    client: EventStoreClient,
) -> None:
    """Appends that share a group commit succeed or fail each on its own."""
    stream = f"{unique()}-1"
    await client.append(stream, [NewEvent("A")])
    outcomes = await asyncio.gather(
        *[client.append(stream, [NewEvent("Bad")], expected_version=99) for _ in range(20)],
        *[client.append(f"{unique()}-ok", [NewEvent("Good")]) for _ in range(20)],
        return_exceptions=True,
    )
    assert all(isinstance(o, WrongExpectedVersionError) for o in outcomes[:20])
    assert all(not isinstance(o, BaseException) for o in outcomes[20:])
    assert len(await client.read_stream_list(stream)) == 1

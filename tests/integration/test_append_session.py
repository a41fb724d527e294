"""AppendSession on the wire, as a client of another language would use it: each append on its
own, answered by correlation id with what a unary Append answers; the call goes on after a
refused append."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client import EventStoreClient
from tools.processes import ServerProcess, unique


def append(stream: str, *types: str, **expected: int) -> pb.AppendRequest:
    return pb.AppendRequest(
        stream=stream,
        events=[pb.EventData(id=str(uuid.uuid4()), type=t) for t in types],
        **expected,  # type: ignore[arg-type]
    )


def reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def test_each_append_is_answered_on_its_own(store: ServerProcess) -> None:
    stream, other = f"{unique()}-1", f"{unique()}-2"
    taken = append(other, "Taken")
    async with grpc.aio.insecure_channel(store.address) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        await stub.Append(taken)
        reused = pb.AppendRequest(stream=stream, events=[taken.events[0]])
        requests = [
            append(stream, "First", expected_version=0),
            pb.AppendRequest(stream=stream),  # no events
            append(stream, "Late", expected_version=0),  # the stream is at 1 by then
            reused,  # an id another stream has
            append("has space", "Bad"),
            append(stream, "Second", expected_version=1),
        ]
        call: Any = stub.AppendSession()
        for n, request in enumerate(requests, 1):
            await call.write(pb.AppendSessionRequest(correlation_id=n * 10, append=request))
            if n == 1:  # the rest only after the first is written, so the order is known
                first = await call.read()
        answers: dict[int, pb.AppendSessionResponse] = {first.correlation_id: first}
        while len(answers) < len(requests):
            response = await call.read()
            answers[response.correlation_id] = response
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF  # every answer sent: the call ends cleanly
    assert answers[10].success.version == 1
    assert answers[20].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    late = answers[30].error
    assert late.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert reason(late) == "WRONG_EXPECTED_VERSION"
    assert answers[40].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert answers[50].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[60].success.version == 2  # the call went on after the refusals
    async with EventStoreClient(store.address) as client:
        assert [e.type for e in await client.read_stream_list(stream)] == ["First", "Second"]


async def test_appends_packed_in_one_message_are_each_answered(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    async with grpc.aio.insecure_channel(store.address) as channel:
        call: Any = pb_grpc.EventStoreStub(channel).AppendSession()
        first = append(stream, "First", expected_version=0)
        await call.write(
            pb.AppendSessionRequest(
                correlation_id=1,
                append=first,
                more=[
                    pb.SessionAppend(correlation_id=2, append=append(stream, "Second")),
                    pb.SessionAppend(correlation_id=3, append=append("has space", "Bad")),
                ],
            )
        )
        await call.write(pb.AppendSessionRequest(correlation_id=4, append=append(stream, "Third")))
        await call.done_writing()
        answers: dict[int, pb.AppendSessionResponse | pb.SessionAnswer] = {}
        while (response := await call.read()) != grpc.aio.EOF:
            if response.WhichOneof("result") is not None:
                answers[response.correlation_id] = response
            answers.update((a.correlation_id, a) for a in response.more)
    assert sorted(answers) == [1, 2, 3, 4]
    assert answers[1].success.version == 1  # the message's own append goes first
    assert answers[2].success.version == 2  # then `more`, in order
    assert answers[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[4].success.version == 3
    async with EventStoreClient(store.address) as client:
        assert [e.type for e in await client.read_stream_list(stream)] == [
            "First",
            "Second",
            "Third",
        ]


async def test_a_retry_on_another_session_is_recognised(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    request = append(stream, "Once")
    results = []
    for _ in range(2):  # two clients: two sessions, the same event ids
        async with EventStoreClient(store.address) as client:
            results.append(await client._append(request))
    assert results[0] == results[1]
    async with EventStoreClient(store.address) as client:
        assert len(await client.read_stream_list(stream)) == 1


async def test_many_callers_share_one_session(store: ServerProcess) -> None:
    category = unique()
    async with EventStoreClient(store.address) as client:
        written = await asyncio.gather(
            *(client._append(append(f"{category}-{n % 20}", "E")) for n in range(400))
        )
        assert len({r.position for r in written}) == 400
        per_stream = [len(await client.read_stream_list(f"{category}-{s}")) for s in range(20)]
    assert per_stream == [20] * 20

"""Property-based: malformed and hostile requests at every RPC of a real store. Each is
answered with a clear status, the server stays up, and a refused request writes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.eventstore.v1 import eventstore_pb2 as pb
from tools.processes import ServerProcess, health_status, store_process

CLEAR = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # gRPC's own message size limit
}
COUNTS = """SELECT (SELECT count(*) FROM es_events), (SELECT count(*) FROM es_streams),
                   (SELECT count(*) FROM es_snapshots), (SELECT count(*) FROM es_checkpoints),
                   (SELECT coalesce(max(position), 0) FROM es_checkpoints)"""
HOSTILE = [
    "'; DROP TABLE es_events; --",
    "order-1' OR '1'='1",
    "$1",
    "\x00",
    "order-\x00",
    "\u202eevil",
    "order-" + "x" * 10_000,
    "../../etc/passwd",
    "-leading-dash",
    "%s%s%s",
    "",
]
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
names = st.one_of(text, st.from_regex(r"[a-z]{1,8}-[0-9a-f]{1,8}", fullmatch=True))
ids = st.one_of(st.just(""), st.uuids().map(str), text)
# The edges of int32, int64 and uint64 every time (ReadSnapshot once failed on 2**31).
big = st.one_of(
    st.integers(0, 3),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
metadata = st.dictionaries(text, text, max_size=80)
events = st.builds(
    pb.EventData,
    id=ids,
    type=text,
    data=st.binary(max_size=2048),
    metadata=metadata,
    content_type=text,
)


@st.composite
def append_requests(draw: st.DrawFn) -> pb.AppendRequest:
    request = pb.AppendRequest(stream=draw(names), events=draw(st.lists(events, max_size=4)))
    which = draw(st.sampled_from(["version", "state", "none"]))
    if which == "version":
        request.expected_version = draw(big)
    elif which == "state":
        request.expected_state = draw(st.integers(0, 7))  # type: ignore[assignment]  # unknown values too
    return request


@st.composite
def subscribe_requests(draw: st.DrawFn) -> pb.SubscribeRequest:
    request = pb.SubscribeRequest(
        after_position=draw(big),
        after_version=draw(big),
        event_types=draw(st.lists(text, max_size=3)),
        subscriber=draw(st.one_of(st.just(""), text)),
    )
    which = draw(st.sampled_from(["stream", "category", "all", "none"]))
    if which == "stream":
        request.stream = draw(names)
    elif which == "category":
        request.category = draw(text)
    elif which == "all":
        request.all.SetInParent()
    return request


REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "Append": append_requests(),
    "ReadStream": st.builds(
        pb.ReadStreamRequest, stream=names, from_version=big, max_count=big, backwards=st.booleans()
    ),
    "ReadAll": st.builds(
        pb.ReadAllRequest,
        after_position=big,
        max_count=big,
        category=text,
        event_types=st.lists(text, max_size=3),
    ),
    "Subscribe": subscribe_requests(),
    "CommitCheckpoint": st.builds(
        pb.CommitCheckpointRequest, subscriber=text, position=big, reset=st.booleans()
    ),
    "GetCheckpoint": st.builds(pb.GetCheckpointRequest, subscriber=text),
    "SaveSnapshot": st.builds(
        pb.SaveSnapshotRequest,
        stream=names,
        version=big,
        type=text,
        data=st.binary(max_size=2048),
        metadata=metadata,
    ),
    "ReadSnapshot": st.builds(pb.ReadSnapshotRequest, stream=names, max_version=big),
    "GetStats": st.just(pb.GetStatsRequest()),
}
STREAMING = {"ReadStream", "ReadAll", "Subscribe"}


@dataclass
class Target:
    process: ServerProcess
    channel: grpc.Channel
    counts: Callable[[], tuple[int, ...]]

    def call(self, method: str, payload: bytes) -> grpc.StatusCode:
        path = f"/eventstore.v1.EventStore/{method}"
        try:
            if method in STREAMING:
                streaming: Any = self.channel.unary_stream(path)
                responses = streaming(payload, timeout=10)
                try:
                    # A valid subscription never ends: its first message is enough.
                    for _ in responses:
                        if method == "Subscribe":
                            break
                finally:
                    responses.cancel()
            else:
                unary: Any = self.channel.unary_unary(path)
                unary(payload, timeout=10)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def target(new_database: Callable[[], str]) -> Iterator[Target]:
    database_url = new_database()
    process = store_process(database_url).start()
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(database_url))

    def counts() -> tuple[int, ...]:
        row = loop.run_until_complete(conn.fetchrow(COUNTS))
        assert row is not None
        return tuple(row)

    with grpc.insecure_channel(process.address) as channel:
        yield Target(process, channel, counts)
    loop.run_until_complete(conn.close())
    loop.close()
    process.stop()


def _check(target: Target, method: str, payload: bytes) -> None:
    before = target.counts()
    code = target.call(method, payload)
    assert code in CLEAR, (method, code)
    if code != grpc.StatusCode.OK:
        assert target.counts() == before, f"{method} refused ({code}) but wrote"


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_hostile_requests_get_a_clear_status_and_write_nothing_when_refused(
    target: Target, method: str
) -> None:
    @FUZZ
    @given(request=REQUESTS[method])
    def attack(request: Any) -> None:
        _check(target, method, request.SerializeToString())

    attack()
    assert health_status(target.process.address) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_random_bytes_are_invalid_arguments(target: Target, method: str) -> None:
    @FUZZ
    @given(payload=st.binary(min_size=1, max_size=512))
    def attack(payload: bytes) -> None:
        before = target.counts()
        code = target.call(method, payload)
        # Bytes can happen to decode as a valid request; those get the ordinary answers.
        assert code in CLEAR, (method, code)
        if code != grpc.StatusCode.OK:
            assert target.counts() == before

    attack()
    assert target.call(method, b"\xff\xff\xff\xff\x0f") == grpc.StatusCode.INVALID_ARGUMENT
    assert health_status(target.process.address) == health_pb2.HealthCheckResponse.SERVING


def test_a_valid_append_among_them_is_written_whole(target: Target) -> None:
    """The counts above do move when a request is accepted: the check can fail."""
    before = target.counts()
    request = pb.AppendRequest(
        stream=f"fuzz-{uuid.uuid4().hex}",
        events=[pb.EventData(type="Ok", data=b"{}") for _ in range(3)],
    )
    assert target.call("Append", request.SerializeToString()) == grpc.StatusCode.OK
    after = target.counts()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 1)

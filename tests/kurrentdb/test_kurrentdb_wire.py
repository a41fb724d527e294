"""Wire details a Python client does not use but others do, checked with KurrentDB's messages
as `kurrentdbclient` bundles them, on a raw gRPC channel: structured UUIDs (the .NET client's
form) both ways, and the trailing metadata KurrentDB's other clients map errors by."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from kurrentdbclient.protos.v1 import shared_pb2, streams_pb2, streams_pb2_grpc

from tests.kurrentdb.conftest import KurrentStore

Options = streams_pb2.ReadReq.Options


@pytest.fixture
def stub(kurrent_store: KurrentStore) -> Iterator[streams_pb2_grpc.StreamsStub]:
    with grpc.insecure_channel(kurrent_store.kurrentdb_address) as channel:
        yield streams_pb2_grpc.StreamsStub(channel)  # type: ignore[no-untyped-call]


def trailers(error: grpc.RpcError) -> dict[str, str]:
    pairs: Any = error.trailing_metadata()
    return {str(key): str(value) for key, value in pairs}


def structured(value: uuid.UUID) -> shared_pb2.UUID:
    def signed(n: int) -> int:
        return n - (1 << 64) if n >= 1 << 63 else n

    return shared_pb2.UUID(
        structured=shared_pb2.UUID.Structured(
            most_significant_bits=signed(value.int >> 64),
            least_significant_bits=signed(value.int & (1 << 64) - 1),
        )
    )


def append(stub: streams_pb2_grpc.StreamsStub, name: str, event_id: shared_pb2.UUID) -> None:
    options = streams_pb2.AppendReq.Options(
        stream_identifier=shared_pb2.StreamIdentifier(stream_name=name.encode()),
        no_stream=shared_pb2.Empty(),
    )
    message = streams_pb2.AppendReq.ProposedMessage(
        id=event_id,
        metadata={"type": "Made", "content-type": "application/json"},
        data=b"{}",
    )
    answer = stub.Append(
        iter(
            [
                streams_pb2.AppendReq(options=options),
                streams_pb2.AppendReq(proposed_message=message),
            ]
        )
    )
    assert answer.WhichOneof("result") == "success" and answer.success.current_revision == 0


def read_ids(
    stub: streams_pb2_grpc.StreamsStub, name: str, as_structured: bool
) -> list[shared_pb2.UUID]:
    uuid_option = Options.UUIDOption(
        structured=shared_pb2.Empty() if as_structured else None,
        string=None if as_structured else shared_pb2.Empty(),
    )
    request = streams_pb2.ReadReq(
        options=Options(
            stream=Options.StreamOptions(
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=name.encode()),
                start=shared_pb2.Empty(),
            ),
            count=10,
            no_filter=shared_pb2.Empty(),
            uuid_option=uuid_option,
        )
    )
    return [r.event.event.id for r in stub.Read(request) if r.WhichOneof("content") == "event"]


def test_structured_uuids_both_ways(stub: streams_pb2_grpc.StreamsStub) -> None:
    event_id = uuid.uuid4()
    name = f"wire-{uuid.uuid4()}"
    append(stub, name, structured(event_id))
    assert read_ids(stub, name, as_structured=True) == [structured(event_id)]
    assert read_ids(stub, name, as_structured=False) == [shared_pb2.UUID(string=str(event_id))]


def test_errors_carry_kurrentdbs_trailers(stub: streams_pb2_grpc.StreamsStub) -> None:
    name = f"wire-{uuid.uuid4()}"
    append(stub, name, shared_pb2.UUID(string=str(uuid.uuid4())))
    identifier = shared_pb2.StreamIdentifier(stream_name=name.encode())
    with pytest.raises(grpc.RpcError) as wrong:
        stub.Delete(
            streams_pb2.DeleteReq(
                options=streams_pb2.DeleteReq.Options(stream_identifier=identifier, revision=5)
            )
        )
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = trailers(wrong.value)
    assert found["exception"] == "wrong-expected-version"
    assert (found["expected-version"], found["actual-version"]) == ("5", "0")
    stub.Tombstone(
        streams_pb2.TombstoneReq(
            options=streams_pb2.TombstoneReq.Options(
                stream_identifier=identifier, any=shared_pb2.Empty()
            )
        )
    )
    with pytest.raises(grpc.RpcError) as deleted:
        list(
            stub.Read(
                streams_pb2.ReadReq(
                    options=Options(
                        stream=Options.StreamOptions(
                            stream_identifier=identifier, start=shared_pb2.Empty()
                        ),
                        count=1,
                        no_filter=shared_pb2.Empty(),
                    )
                )
            )
        )
    assert deleted.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert trailers(deleted.value)["exception"] == "stream-deleted"

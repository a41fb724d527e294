"""Where Python and the store's SQL must agree on numbers, and nothing but this test makes
them: outcome and expectation codes, the writer's advisory lock id, and the protobuf field
numbers that `es_append_batch` and the subscription code encode by hand."""

from __future__ import annotations

import re
import uuid
from importlib import resources

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.append_session import _answer_error, _answer_success, _packed
from eventstore_server.errors import InvalidArgument
from eventstore_server.group_store import Claim
from eventstore_server.groups import encode_deliveries
from eventstore_server.sql_codes import Expectation, Outcome
from eventstore_server.subscriptions import _scanned
from eventstore_server.writer import AppendResult
from hosting.advisory_locks import AdvisoryLock

VARINT, LENGTH_DELIMITED = 0, 2


def current_append_batch() -> str:
    """The body of the newest migration's definition of es_append_batch."""
    migrations = sorted(
        (entry for entry in resources.files("eventstore_server.migrations").iterdir()),
        key=lambda entry: entry.name,
    )
    definitions = [
        m.read_text()
        for m in migrations
        if m.name.endswith(".sql") and "FUNCTION es_append_batch" in m.read_text()
    ]
    sql = definitions[-1]
    return sql[sql.index("FUNCTION es_append_batch") :]


def tag(field: FieldDescriptor) -> str:
    """The field's key byte as the SQL writes it: '\\xNN'."""
    wire = VARINT if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE else LENGTH_DELIMITED
    key = field.number << 3 | wire
    assert key < 0x80, "a one-byte key"
    return f"'\\x{key:02x}'::bytea"


def test_outcome_codes_match_the_sql() -> None:
    body = current_append_batch()
    written = {int(n) for n in re.findall(r"outcomes \|\| (\d+)::smallint", body)}
    assert written == {int(o) for o in Outcome}


def test_expectation_codes_match_the_sql() -> None:
    body = current_append_batch()
    assert f"expected = {int(Expectation.NO_STREAM)} AND current <> gone" in body
    assert f"expected = {int(Expectation.STREAM_EXISTS)} AND current = gone" in body
    assert "expected >= 0 AND current <> expected" in body  # everything else is "any"
    assert int(Expectation.ANY) < 0 and Expectation.ANY.label == "any"


def test_the_writer_lock_id_matches_the_sql() -> None:
    assert f"pg_advisory_xact_lock({int(AdvisoryLock.STORE_WRITER)})" in current_append_batch()
    assert len(set(AdvisoryLock)) == len(AdvisoryLock.__members__), "every lock id is its own"


def test_hand_encoded_field_numbers_match_the_generated_descriptors() -> None:
    body = current_append_batch()
    recorded = pb.RecordedEvent.DESCRIPTOR.fields_by_name
    stamp = Timestamp.DESCRIPTOR.fields_by_name
    assert (
        getattr(recorded["recorded_at"].message_type, "full_name", "")
        == "google.protobuf.Timestamp"
    )
    page = pb.ReadAllResponse.DESCRIPTOR.fields_by_name["events"]
    for response in (pb.ReadStreamResponse, pb.SubscribeResponse):
        assert response.DESCRIPTOR.fields_by_name["events"].number == page.number
    expected = [
        f"{tag(page)} || es_varint(length(x.body))",
        f"{tag(recorded['version'])} || es_varint(y.version)",
        f"{tag(recorded['position'])} || es_varint(y.position)",
        f"{tag(recorded['recorded_at'])} || es_varint(length(t.ts))",
        f"{tag(stamp['seconds'])} || es_varint(u.seconds)",
        f"{tag(stamp['nanos'])} || es_varint(u.nanos)",
    ]
    missing = [snippet for snippet in expected if snippet not in body]
    assert not missing, f"es_append_batch no longer encodes these as the protos say: {missing}"


def test_the_scanned_position_suffix_is_the_field_the_proto_names() -> None:
    message = pb.SubscribeResponse.FromString(_scanned(300))
    assert message.scanned_position == 300 and not message.events
    field = pb.SubscribeResponse.DESCRIPTOR.fields_by_name["scanned_position"]
    assert _scanned(1)[0] == field.number << 3 | VARINT


def test_hand_encoded_deliveries_decode_as_the_proto_says() -> None:
    event = pb.RecordedEvent(id="x", stream="s-1", version=3, position=9, type="T", data=b"d")
    record = pb.ReadAllResponse(events=[event]).SerializeToString()  # as es_events stores it
    claims = [Claim(9, uuid.uuid4(), 2, record), Claim(9, uuid.uuid4(), 1, record)]
    response = pb.ConsumeResponse.FromString(encode_deliveries(claims))
    assert [(d.event, d.attempt) for d in response.deliveries] == [(event, 2), (event, 1)]


def test_hand_encoded_session_answers_decode_as_the_proto_says() -> None:
    written = AppendResult(version=300, position=70_000, written=True)
    single = pb.AppendSessionResponse.FromString(_answer_success(5, written))
    assert single.correlation_id == 5 and single.WhichOneof("result") == "success"
    assert (single.success.version, single.success.position) == (300, 70_000)
    error = _answer_error(6, InvalidArgument("bad stream"))
    packed = pb.AppendSessionResponse.FromString(_packed([_answer_success(5, written), error]))
    assert packed.correlation_id == 0 and packed.WhichOneof("result") is None
    assert [a.correlation_id for a in packed.more] == [5, 6]
    assert packed.more[0].success == single.success
    assert packed.more[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert packed.more[1].error.message == "bad stream"

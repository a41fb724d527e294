"""Between KurrentDB's messages and ours: pure functions, no I/O.

The numbers differ by one: a KurrentDB revision is 0-based, our version 1-based (revision r is
version r + 1), so "expected revision 4" is "expected version 5". A KurrentDB position has a
commit and a prepare part; both are our global position, which is never 0 for an event.

Events: KurrentDB's `type` and `content-type` travel in a metadata map, beside opaque
`custom_metadata` bytes; ours are fields, beside a map of strings. The bytes are kept verbatim
under one key of our map (`kurrentdb.custom_metadata`, or `.base64` when they are not text), so
a KurrentDB client reads back exactly what it wrote; an event written through our own API shows
its metadata map to KurrentDB clients as a JSON object (a trace context included).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping

from google.protobuf.message import Message

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.kurrentdb.protocols.v1 import shared_pb2, streams_pb2
from eventstore_server.errors import InvalidArgument
from eventstore_server.sql_codes import Expectation
from eventstore_server.validation import MAX_INT64

CUSTOM_METADATA = "kurrentdb.custom_metadata"
CUSTOM_METADATA_BASE64 = "kurrentdb.custom_metadata.base64"
OCTET_STREAM = "application/octet-stream"

# KurrentDB's own numbers for expectations, as its error messages print them.
_KURRENT_EXPECTED = {
    Expectation.ANY: -2,
    Expectation.NO_STREAM: -1,
    Expectation.STREAM_EXISTS: -4,
}

ReadEvent = streams_pb2.ReadResp.ReadEvent
Recorded = streams_pb2.ReadResp.ReadEvent.RecordedEvent


def stream_of(identifier: shared_pb2.StreamIdentifier) -> str:
    """The stream name a StreamIdentifier carries (UTF-8 bytes on the wire)."""
    try:
        return identifier.stream_name.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument("stream_name is not UTF-8", field="stream_name") from None


def identifier(stream: str) -> shared_pb2.StreamIdentifier:
    return shared_pb2.StreamIdentifier(stream_name=stream.encode("utf-8"))


def uuid_text(value: shared_pb2.UUID) -> str:
    """A UUID in either of its wire forms, as text ("" when absent)."""
    which = value.WhichOneof("value")
    if which == "string":
        return value.string
    if which == "structured":
        most = value.structured.most_significant_bits & 0xFFFFFFFFFFFFFFFF
        least = value.structured.least_significant_bits & 0xFFFFFFFFFFFFFFFF
        return str(uuid.UUID(int=(most << 64) | least))
    return ""


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def uuid_message(text: str, structured: bool) -> shared_pb2.UUID:
    """Our UUID text in the form the reader asked for (.NET clients ask for the structured)."""
    if not structured:
        return shared_pb2.UUID(string=text)
    number = uuid.UUID(text).int
    return shared_pb2.UUID(
        structured=shared_pb2.UUID.Structured(
            most_significant_bits=_signed(number >> 64),
            least_significant_bits=_signed(number & 0xFFFFFFFFFFFFFFFF),
        )
    )


def expected_version(options: Message, oneof: str) -> int:
    """An expected-revision oneof as our expectation: a version (revision + 1) or an
    Expectation; none given is "any", as in KurrentDB."""
    which = options.WhichOneof(oneof)
    if which in ("revision", "stream_position"):
        revision: int = getattr(options, which)
        if revision >= MAX_INT64:
            raise InvalidArgument(f"{which} is out of range", field=which)
        return revision + 1
    if which == "no_stream":
        return Expectation.NO_STREAM
    if which == "stream_exists":
        return Expectation.STREAM_EXISTS
    return Expectation.ANY


def with_expected(request: pb.AppendRequest, expected: int) -> pb.AppendRequest:
    """`request` with our expectation set in its `expected` oneof."""
    if expected >= 0:
        request.expected_version = expected
    else:
        request.expected_state = {
            Expectation.ANY: pb.EXPECTED_STATE_ANY,
            Expectation.NO_STREAM: pb.EXPECTED_STATE_NO_STREAM,
            Expectation.STREAM_EXISTS: pb.EXPECTED_STATE_STREAM_EXISTS,
        }[Expectation(expected)]
    return request


def kurrent_expected(expected: int) -> int:
    """Our expectation in KurrentDB's numbering (a revision, or -1 / -2 / -4)."""
    return expected - 1 if expected >= 0 else _KURRENT_EXPECTED[Expectation(expected)]


def revision(version: int) -> int:
    """A version's revision; -1 for "no stream" (version 0)."""
    return version - 1


def custom_metadata_entries(custom: bytes) -> dict[str, str]:
    """A KurrentDB event's custom metadata bytes as entries of our metadata map."""
    if not custom:
        return {}
    try:
        text = custom.decode("utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        return {CUSTOM_METADATA_BASE64: base64.b64encode(custom).decode("ascii")}
    return {CUSTOM_METADATA: text}


def custom_metadata(metadata: Mapping[str, str]) -> bytes:
    """What a KurrentDB client reads as an event's custom metadata."""
    if CUSTOM_METADATA in metadata:
        return metadata[CUSTOM_METADATA].encode("utf-8")
    if CUSTOM_METADATA_BASE64 in metadata:
        return base64.b64decode(metadata[CUSTOM_METADATA_BASE64])
    if not metadata:
        return b""
    return json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def event_data(
    id: shared_pb2.UUID, metadata: Mapping[str, str], custom: bytes, data: bytes
) -> pb.EventData:
    """A proposed KurrentDB message as our EventData (checked later, with every append)."""
    return pb.EventData(
        id=uuid_text(id),
        type=metadata.get("type", ""),
        content_type=metadata.get("content-type", ""),
        data=data,
        metadata=custom_metadata_entries(custom),
    )


def ticks(recorded: pb.RecordedEvent) -> int:
    """The recording time as KurrentDB's `created`: 100 ns ticks since the Unix epoch."""
    at = recorded.recorded_at
    return at.seconds * 10_000_000 + at.nanos // 100


def read_event(recorded: pb.RecordedEvent, structured_ids: bool) -> streams_pb2.ReadResp:
    """One of our recorded events as a KurrentDB ReadResp."""
    event = Recorded(
        id=uuid_message(recorded.id, structured_ids),
        stream_identifier=identifier(recorded.stream),
        stream_revision=recorded.version - 1,
        prepare_position=recorded.position,
        commit_position=recorded.position,
        metadata={
            "type": recorded.type,
            "content-type": recorded.content_type or OCTET_STREAM,
            "created": str(ticks(recorded)),
        },
        custom_metadata=custom_metadata(recorded.metadata),
        data=recorded.data,
    )
    return streams_pb2.ReadResp(event=ReadEvent(event=event, commit_position=recorded.position))

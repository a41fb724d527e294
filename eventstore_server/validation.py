"""Turns gRPC requests into checked commands, or refuses them with InvalidArgument.

Everything a request can carry is checked here, before it reaches the writer or the database:
a refused request writes nothing. PostgreSQL text cannot hold NUL, so names, types and
metadata are checked for control characters too.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.config import Limits
from eventstore_server.errors import InvalidArgument
from eventstore_server.sql_codes import Expectation

ANY, NO_STREAM, STREAM_EXISTS = Expectation.ANY, Expectation.NO_STREAM, Expectation.STREAM_EXISTS
MAX_INT64 = 2**63 - 1

# No whitespace or control characters; a stream's category is what stands before the first '-'.
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]+")
_TEXT = re.compile(r"[^\x00-\x1f\x7f]*")


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    type: str
    metadata: str  # a JSON object, for the metadata column
    head: bytes  # the RecordedEvent fields known before the write, protobuf-encoded


@dataclass(frozen=True, slots=True)
class AppendCommand:
    stream: str
    category: str
    expected: int  # >= 0: exact version; ANY, NO_STREAM, STREAM_EXISTS
    events: tuple[NewEvent, ...]


def category_of(stream: str) -> str:
    """The part of a stream name before its first '-' (the whole name when it has none)."""
    return stream.split("-", 1)[0]


def stream_name(name: str, limits: Limits, field: str = "stream") -> str:
    if not name:
        raise InvalidArgument(f"{field} is empty", field=field)
    if len(name) > limits.max_name_length:
        raise InvalidArgument(
            f"{field} is longer than {limits.max_name_length} characters", field=field
        )
    if not _NAME.fullmatch(name) or name.startswith("-"):
        raise InvalidArgument(
            f"{field} must have no whitespace or control characters and not start with '-'",
            field=field,
        )
    return name


def category_name(name: str, limits: Limits) -> str:
    stream_name(name, limits, "category")
    if "-" in name:
        raise InvalidArgument("category must not contain '-'", field="category")
    return name


def event_types(types: list[str], limits: Limits) -> tuple[str, ...]:
    for t in types:
        _event_type(t, limits, "event_types")
    return tuple(types)


def _event_type(value: str, limits: Limits, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field}: an event type is empty", field=field)
    if len(value) > limits.max_type_length or not _TEXT.fullmatch(value):
        raise InvalidArgument(
            f"{field}: an event type is longer than {limits.max_type_length} characters "
            "or has control characters",
            field=field,
        )
    return value


# A UUID in canonical form (what clients send): taken as it is, without parsing (a third of
# the cost of checking a 100-event append, measured).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _event_id(value: str, index: int) -> str:
    if not value:
        return str(uuid.uuid4())
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(f"events[{index}].id is not a UUID", field="id") from None


def metadata_json(metadata: Mapping[str, str], limits: Limits, field: str) -> tuple[str, int]:
    """The metadata map as a JSON object, and its size in bytes."""
    items = dict(metadata)
    if len(items) > limits.max_metadata_entries:
        raise InvalidArgument(
            f"{field} has more than {limits.max_metadata_entries} entries", field=field
        )
    size = 0
    for key, value in items.items():
        if not key or not _TEXT.fullmatch(key) or "\x00" in value:
            raise InvalidArgument(
                f"{field} keys must be non-empty without control characters; values without NUL",
                field=field,
            )
        if len(value) > limits.max_metadata_value_length:
            raise InvalidArgument(
                f"{field} values must be at most {limits.max_metadata_value_length} characters",
                field=field,
            )
        size += len(key) + len(value)
    if not items:
        return "{}", 0
    return json.dumps(items, ensure_ascii=False, separators=(",", ":")), size


def expectation(request: Message, version_field: str = "expected_version") -> int:
    """The request's `expected` oneof as one number: a version (>= 0) or an Expectation."""
    which = request.WhichOneof("expected")
    if which == version_field:
        version: int = getattr(request, version_field)
        if version > MAX_INT64:
            raise InvalidArgument(f"{version_field} is out of range", field=version_field)
        return version
    if which == "expected_state":
        expected = {
            pb.EXPECTED_STATE_UNSPECIFIED: ANY,
            pb.EXPECTED_STATE_ANY: ANY,
            pb.EXPECTED_STATE_NO_STREAM: NO_STREAM,
            pb.EXPECTED_STATE_STREAM_EXISTS: STREAM_EXISTS,
        }.get(request.expected_state, 0)  # type: ignore[attr-defined]
        if expected == 0:
            raise InvalidArgument("expected_state is not a known state", field="expected_state")
        return expected
    return ANY


def append_command(request: pb.AppendRequest, limits: Limits) -> AppendCommand:
    stream = stream_name(request.stream, limits)
    expected = expectation(request)
    if not request.events:
        raise InvalidArgument("an append needs at least one event", field="events")
    if len(request.events) > limits.max_events_per_append:
        raise InvalidArgument(
            f"an append may carry at most {limits.max_events_per_append} events", field="events"
        )
    events = []
    seen: set[str] = set()
    total = 0
    for i, e in enumerate(request.events):
        event_id = _event_id(e.id, i)
        if event_id in seen:
            raise InvalidArgument(f"events[{i}].id appears twice in the append", field="id")
        seen.add(event_id)
        _event_type(e.type, limits, f"events[{i}].type")
        if len(e.content_type) > limits.max_type_length or not _TEXT.fullmatch(e.content_type):
            raise InvalidArgument(f"events[{i}].content_type is malformed", field="content_type")
        metadata, metadata_size = metadata_json(e.metadata, limits, f"events[{i}].metadata")
        size = len(e.data) + metadata_size
        if size > limits.max_event_size:
            raise InvalidArgument(
                f"events[{i}] is {size} bytes, more than the limit of {limits.max_event_size}",
                field="events",
            )
        total += size
        head = pb.RecordedEvent(
            id=event_id,
            stream=stream,
            type=e.type,
            data=e.data,
            metadata=e.metadata,
            content_type=e.content_type,
        ).SerializeToString()
        events.append(NewEvent(event_id, e.type, metadata, head))
    if total > limits.max_append_size:
        raise InvalidArgument(
            f"the append is {total} bytes, more than the limit of {limits.max_append_size}",
            field="events",
        )
    return AppendCommand(stream, category_of(stream), expected, tuple(events))

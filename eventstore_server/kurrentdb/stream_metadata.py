"""KurrentDB's stream metadata, `$$<stream>`, over our stream metadata (es_stream_metadata).

KurrentDB keeps a stream's metadata as JSON events of type `$metadata` in the stream `$$<stream>`
and honours the latest. We keep one versioned row per stream, so `$$<stream>` is a view of it:
an append of a `$metadata` event sets the row (the expected revision guarding its version, as
ours does: revision r is metadata version r + 1), and a read returns one event, the current
metadata, at revision version - 1. Older metadata is not kept, as after a KurrentDB scavenge.

`$maxCount`, `$maxAge` (seconds) and `$tb` (a revision) are our max_count, max_age_seconds and
truncate_before (a version: $tb + 1); every other entry, `$acl` included, is kept as it was given
(any JSON value) and returned, but not enforced.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.errors import InvalidArgument
from eventstore_server.history import StreamRules
from eventstore_server.validation import MAX_INT64

PREFIX = "$$"
EVENT_TYPE = "$metadata"
_RULES = {"$maxCount": "max_count", "$maxAge": "max_age_seconds", "$tb": "truncate_before"}


def described_stream(name: str) -> str | None:
    """The stream a metadata stream's name describes; None for any other name."""
    if name.startswith(PREFIX) and len(name) > len(PREFIX):
        return name[len(PREFIX) :]
    return None


def rules_from_json(data: bytes) -> StreamRules:
    """A `$metadata` event's JSON as our rules; INVALID_ARGUMENT for what is not a JSON object
    or a rule that is not a non-negative whole number."""
    try:
        given = json.loads(data or b"{}")
    except ValueError:
        raise InvalidArgument("stream metadata is not JSON", field="data") from None
    if not isinstance(given, dict):
        raise InvalidArgument("stream metadata must be a JSON object", field="data")
    rules: dict[str, int] = {}
    custom: dict[str, Any] = {}
    for key, value in given.items():
        if key not in _RULES:
            custom[key] = value
            continue
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_INT64:
            raise InvalidArgument(f"{key} must be a non-negative whole number", field=key)
        rules[_RULES[key]] = value + 1 if key == "$tb" else value
    return StreamRules(**rules, custom=custom)


def json_from_rules(rules: StreamRules) -> bytes:
    """Our rules as the JSON a KurrentDB client reads back."""
    given: dict[str, Any] = dict(rules.custom)
    if rules.max_count:
        given["$maxCount"] = rules.max_count
    if rules.max_age_seconds:
        given["$maxAge"] = rules.max_age_seconds
    if rules.truncate_before:
        given["$tb"] = rules.truncate_before - 1
    return json.dumps(given, separators=(",", ":")).encode("utf-8")


def metadata_event(stream: str, rules: StreamRules, version: int, head: int) -> pb.RecordedEvent:
    """The current metadata as the one event of `$$<stream>`. It has no place in the global
    log: its position is the head's (the metadata was set at or before it), and its id is
    derived from the stream and version, so a reader sees the same id for the same metadata."""
    name = PREFIX + stream
    recorded = pb.RecordedEvent(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"eventstore:{name}@{version}")),
        stream=name,
        version=version,
        position=head,
        type=EVENT_TYPE,
        data=json_from_rules(rules),
        content_type="application/json",
    )
    recorded.recorded_at.FromNanoseconds(time.time_ns())
    return recorded

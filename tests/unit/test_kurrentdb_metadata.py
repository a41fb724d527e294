"""KurrentDB's `$$<stream>` metadata JSON and our stream rules (pure; this module loads none of
KurrentDB's messages)."""

from __future__ import annotations

import json

import pytest

from eventstore_server.errors import InvalidArgument
from eventstore_server.history import StreamRules
from eventstore_server.kurrentdb.stream_metadata import (
    described_stream,
    json_from_rules,
    metadata_event,
    rules_from_json,
)


def test_rules_map_to_ours_and_back() -> None:
    given = {"$maxCount": 3, "$maxAge": 60, "$tb": 4, "$acl": {"$r": "ops"}, "owner": "a"}
    rules = rules_from_json(json.dumps(given).encode())
    assert rules == StreamRules(
        max_count=3,
        max_age_seconds=60,
        truncate_before=5,  # $tb is a revision (0-based); ours is the first visible version
        custom={"$acl": {"$r": "ops"}, "owner": "a"},
    )
    assert json.loads(json_from_rules(rules)) == given


@pytest.mark.parametrize(
    "data",
    [
        b"[1]",
        b"not json",
        b'{"$maxCount": -1}',
        b'{"$maxAge": 1.5}',
        b'{"$tb": "4"}',
        b'{"$maxCount": true}',
    ],
)
def test_malformed_metadata_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        rules_from_json(data)


def test_empty_or_null_rules_mean_none() -> None:
    assert rules_from_json(b"") == StreamRules()
    assert rules_from_json(b'{"$maxCount": null}') == StreamRules()
    assert json_from_rules(StreamRules()) == b"{}"


def test_metadata_streams_are_named_for_their_stream() -> None:
    assert described_stream("$$order-1") == "order-1"
    assert described_stream("$$") is None
    assert described_stream("$order-1") is None
    assert described_stream("order-1") is None


def test_the_metadata_event_is_stable_for_one_version() -> None:
    rules = StreamRules(max_count=2)
    first = metadata_event("order-1", rules, 3, head=10)
    again = metadata_event("order-1", rules, 3, head=12)
    later = metadata_event("order-1", rules, 4, head=12)
    assert first.id == again.id != later.id
    assert (first.stream, first.version, first.type) == ("$$order-1", 3, "$metadata")
    assert json.loads(first.data) == {"$maxCount": 2}

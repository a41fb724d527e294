"""Request checks: pure functions, no server needed."""

from __future__ import annotations

import json
import uuid

import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.config import Limits
from eventstore_server.errors import InvalidArgument
from eventstore_server.validation import ANY, NO_STREAM, STREAM_EXISTS, append_command, category_of

LIMITS = Limits()


def test_category_is_the_part_before_the_first_dash() -> None:
    assert category_of("order-42") == "order"
    assert category_of("order-42-x") == "order"
    assert category_of("plain") == "plain"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ANY),
        ({"expected_state": pb.EXPECTED_STATE_ANY}, ANY),
        ({"expected_state": pb.EXPECTED_STATE_UNSPECIFIED}, ANY),
        ({"expected_state": pb.EXPECTED_STATE_NO_STREAM}, NO_STREAM),
        ({"expected_state": pb.EXPECTED_STATE_STREAM_EXISTS}, STREAM_EXISTS),
        ({"expected_version": 0}, 0),
        ({"expected_version": 7}, 7),
    ],
)
def test_expectations(fields: dict[str, int], expected: int) -> None:
    request = pb.AppendRequest(stream="s-1", events=[pb.EventData(type="T")], **fields)  # type: ignore[arg-type]
    assert append_command(request, LIMITS).expected == expected


def test_ids_are_normalised_and_assigned() -> None:
    given = uuid.uuid4()
    request = pb.AppendRequest(
        stream="s-1",
        events=[pb.EventData(type="T", id=given.hex.upper()), pb.EventData(type="T")],
    )
    command = append_command(request, LIMITS)
    assert command.events[0].id == str(given)
    assigned = uuid.UUID(command.events[1].id)
    assert assigned.version == 4 and assigned != given
    assert command.category == "s"


def test_metadata_becomes_a_json_object() -> None:
    request = pb.AppendRequest(stream="s-1", events=[pb.EventData(type="T", metadata={"a": "é"})])
    assert json.loads(append_command(request, LIMITS).events[0].metadata) == {"a": "é"}


def test_limits_are_configurable() -> None:
    small = Limits(max_events_per_append=2, max_event_size=10)
    with pytest.raises(InvalidArgument):
        append_command(pb.AppendRequest(stream="s-1", events=[pb.EventData(type="T")] * 3), small)
    with pytest.raises(InvalidArgument):
        append_command(
            pb.AppendRequest(stream="s-1", events=[pb.EventData(type="T", data=b"x" * 11)]), small
        )
    at_limit = append_command(
        pb.AppendRequest(stream="s-1", events=[pb.EventData(type="T", data=b"x" * 10)] * 2), small
    )
    assert [pb.RecordedEvent.FromString(e.head).data for e in at_limit.events] == [b"x" * 10] * 2


@pytest.mark.parametrize(
    "given",
    [
        "6F9619FF-8B86-D011-B42D-00CF4FC964FF",  # upper case
        "{6f9619ff-8b86-d011-b42d-00cf4fc964ff}",  # braces
        "6f9619ff8b86d011b42d00cf4fc964ff",  # no hyphens
    ],
)
def test_event_ids_are_stored_in_canonical_form(given: str) -> None:
    request = pb.AppendRequest(stream="s-1", events=[pb.EventData(id=given, type="T")])
    assert append_command(request, LIMITS).events[0].id == str(uuid.UUID(given))


@pytest.mark.parametrize("given", ["not-a-uuid", "6f9619ff-8b86-d011-b42d-00cf4fc964f"])
def test_malformed_event_ids_are_refused(given: str) -> None:
    request = pb.AppendRequest(stream="s-1", events=[pb.EventData(id=given, type="T")])
    with pytest.raises(InvalidArgument, match="not a UUID"):
        append_command(request, LIMITS)

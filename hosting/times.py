"""Time fields of requests, for the store and the services alike (no other dependency: the
store must not load the client library that hosting.errors brings)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message


def timestamp_field(request: Message, field: str) -> datetime | None:
    """A request's optional google.protobuf.Timestamp as an aware datetime (None when unset);
    ValueError for one that is no valid time."""
    if not request.HasField(field):
        return None
    try:
        moment: datetime = getattr(request, field).ToDatetime(tzinfo=UTC)
    except OverflowError as error:
        raise ValueError(str(error)) from None
    return moment

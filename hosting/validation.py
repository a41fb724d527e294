"""Checks of request fields shared by the example services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.message import Message

from hosting.errors import invalid


def is_uuid(value: str) -> bool:
    """Ids in the example services' APIs are UUIDs."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def require_uuid(*values: tuple[str, str]) -> None:
    """INVALID_ARGUMENT unless every (field, value) is a UUID."""
    wrong = [name for name, value in values if not is_uuid(value)]
    if wrong:
        invalid(f"{' and '.join(wrong)} must be {'UUIDs' if len(wrong) > 1 else 'a UUID'}")


def optional_time(request: Message, field: str) -> datetime | None:
    """A request's optional google.protobuf.Timestamp as an aware datetime (None when unset);
    INVALID_ARGUMENT for one that is no valid time."""
    if not request.HasField(field):
        return None
    try:
        moment: datetime = getattr(request, field).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        invalid(f"{field} is not a valid time")
    return moment

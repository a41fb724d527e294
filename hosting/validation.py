"""Checks of request fields shared by the example services."""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf.message import Message

from hosting.errors import invalid
from hosting.times import timestamp_field


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
    """`timestamp_field`, INVALID_ARGUMENT for one that is no valid time (the services)."""
    try:
        return timestamp_field(request, field)
    except ValueError:
        invalid(f"{field} is not a valid time")

"""Checks of request fields shared by the example services."""

from __future__ import annotations

import uuid

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

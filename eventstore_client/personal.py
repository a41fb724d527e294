"""Personal data in events that live for ever: crypto-shredding.

Fields named as personal (per event type, and in snapshots) are encrypted with a key of their
subject (a customer, say) before an event or snapshot leaves the service, and decrypted when it
is loaded. The keys live in the service's own database, never in the event store. Erasing a
subject's key makes every such field unreadable for ever, in every event and snapshot and in
every backup of the store, while the rest of each event (amounts, ids) reads as before: the
stream stays whole and every fold over it still works.

Sealed values are strings: `sealed:v1:` and the base64 of a 12-byte nonce and the AES-256-GCM
ciphertext with its tag (the `cryptography` package's AESGCM). The subject and the field name are
the associated data, so a value cannot be moved to another subject or field. A field whose key is
gone reads as FORGOTTEN (the empty string); a value without the prefix (written before its field
was personal) reads as it is.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "sealed:v1:"
FORGOTTEN = ""


class SubjectForgotten(Exception):
    """The subject's key was erased: nothing personal can be written for it again."""


class SubjectKeys(Protocol):
    """Where a service keeps its subjects' keys (its own database)."""

    async def get(self, subject: str) -> bytes | None:
        """The subject's key; None when it has none (never made, or erased)."""
        ...

    async def get_or_create(self, subject: str) -> bytes:
        """The subject's key, made on first use; SubjectForgotten once erased."""
        ...

    async def erase(self, subject: str) -> bool:
        """Erase the key for ever; whether there was one to erase."""
        ...


@dataclass(frozen=True)
class Sealing:
    """One subject's key, for sealing and opening its fields (`key` None: erased, or never
    made, and nothing sealed can be read)."""

    subject: str
    key: bytes | None

    def _aad(self, field: str) -> bytes:
        return f"{self.subject}\x00{field}".encode()

    def seal(self, field: str, value: str) -> str:
        if self.key is None:
            raise SubjectForgotten(self.subject)
        nonce = os.urandom(12)
        sealed = AESGCM(self.key).encrypt(nonce, value.encode(), self._aad(field))
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, field: str, value: str) -> str:
        if not value.startswith(PREFIX):
            return value
        if self.key is None:
            return FORGOTTEN
        raw = base64.b64decode(value[len(PREFIX) :])
        try:
            return AESGCM(self.key).decrypt(raw[:12], raw[12:], self._aad(field)).decode()
        except InvalidTag:  # another key (a subject forgotten and made anew): not ours to read
            return FORGOTTEN


class PersonalData:
    """Which fields are personal: per event type, and in the aggregate's snapshot."""

    def __init__(
        self,
        keys: SubjectKeys,
        events: Mapping[str, Sequence[str]],
        snapshot: Sequence[str] = (),
    ) -> None:
        self.keys = keys
        self._events = {t: tuple(f) for t, f in events.items()}
        self._snapshot = tuple(snapshot)

    def in_event(self, type_name: str) -> tuple[str, ...]:
        return self._events.get(type_name, ())

    @property
    def in_snapshot(self) -> tuple[str, ...]:
        return self._snapshot

    async def for_reading(self, subject: str) -> Sealing:
        return Sealing(subject, await self.keys.get(subject))

    async def for_writing(self, subject: str) -> Sealing:
        return Sealing(subject, await self.keys.get_or_create(subject))


def seal_fields(sealing: Sealing, fields: Sequence[str], values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the named string fields sealed (empty ones stay empty)."""
    return {
        k: sealing.seal(k, v) if k in fields and isinstance(v, str) and v else v
        for k, v in values.items()
    }


def open_fields(sealing: Sealing, fields: Sequence[str], values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: sealing.open(k, v) if k in fields and isinstance(v, str) else v
        for k, v in values.items()
    }


def seal_json(sealing: Sealing, fields: Sequence[str], data: bytes) -> bytes:
    if not fields:
        return data
    values = seal_fields(sealing, fields, json.loads(data))
    return json.dumps(values, separators=(",", ":")).encode()


def open_json(sealing: Sealing, fields: Sequence[str], data: bytes) -> bytes:
    if not fields or PREFIX.encode() not in data:
        return data
    values = open_fields(sealing, fields, json.loads(data))
    return json.dumps(values, separators=(",", ":")).encode()

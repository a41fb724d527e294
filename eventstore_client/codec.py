"""Event contracts: the protobuf message an event type is, its version, and how older stored
versions are read.

Events that cross services are messages in `protos/` (`order/v1/events.proto`, ...), stored as
JSON through protobuf's JSON mapping with the proto's field names (64-bit integers as numbers).
JSON, not binary: the store's own tools (the CLI, SQL on `data::jsonb`) show events as they
are, and every event already stored was JSON; the generated classes still decide what a field
is, on both sides.

Stored events live for ever, so a change of shape is a new version of the event type: the
version travels in the event's metadata (`event_version`; absent means 1), and a reader brings
an older event up to date with a chain of small functions, one per step (`upcasters[1]` turns
a version-1 dict into a version-2 dict, and so on), before the message is built. Unknown
fields are ignored on read, so a consumer built against an older contract reads a newer
producer's events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

VERSION_KEY = "event_version"

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
M = TypeVar("M", bound=Message)


class MalformedEvent(ValueError):
    """A stored event of a known type that does not read as its contract: which field, and why.
    Handlers park such events instead of failing on them for ever."""


@dataclass(frozen=True)
class EventContract(Generic[M]):
    """One event type as it crosses services."""

    message: type[M]
    version: int = 1
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)  # from version N to N + 1
    required: tuple[str, ...] = ()  # fields a consumer cannot do without (non-empty, non-zero)

    def __post_init__(self) -> None:
        missing = [n for n in range(1, self.version) if n not in self.upcasters]
        if missing:
            raise ValueError(f"{self.type}: no upcaster from version(s) {missing}")
        fields = set(self.message.DESCRIPTOR.fields_by_name)
        unknown = set(self.required) - fields
        if unknown:
            raise ValueError(f"{self.type}: required fields {sorted(unknown)} are not in it")

    @property
    def _int64_fields(self) -> list[str]:
        """64-bit integer fields: protobuf's JSON mapping writes them as strings; we write
        numbers, as every event stored before the contracts had them and as SQL over
        `data::jsonb` compares them. Reading accepts both."""
        wide = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
        return [
            f.name
            for f in self.message.DESCRIPTOR.fields
            if f.cpp_type in wide and not f.is_repeated
        ]

    @property
    def type(self) -> str:
        """The event type as stored: the message's name."""
        return str(self.message.DESCRIPTOR.name)

    def encode(self, message: M) -> tuple[bytes, dict[str, str]]:
        """The JSON to store and the metadata that names its version (none for version 1)."""
        fields = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for name in self._int64_fields:
            if isinstance(fields.get(name), str):
                fields[name] = int(fields[name])
        data = json.dumps(fields, separators=(",", ":")).encode()
        return data, ({VERSION_KEY: str(self.version)} if self.version > 1 else {})

    def decode(self, data: bytes, metadata: Mapping[str, str]) -> M:
        """The current version's message for a stored event of this type, of any version."""
        try:
            version = int(metadata.get(VERSION_KEY, "1"))
            fields = json.loads(data) if data else {}
        except ValueError as error:
            raise MalformedEvent(f"{self.type}: not JSON ({error})") from None
        if not isinstance(fields, dict):
            raise MalformedEvent(f"{self.type}: data is not a JSON object")
        if not 1 <= version <= self.version:
            raise MalformedEvent(f"{self.type}: version {version} is newer than {self.version}")
        for step in range(version, self.version):
            fields = self.upcasters[step](fields)
        try:
            message = json_format.ParseDict(fields, self.message(), ignore_unknown_fields=True)
        except json_format.ParseError as error:
            raise MalformedEvent(f"{self.type}: {error}") from None
        missing = [n for n in self.required if n not in fields or not getattr(message, n)]
        if missing:
            names = ", ".join(repr(n) for n in missing)
            raise MalformedEvent(f"{self.type}: missing or empty: {names}")
        return message


class Contracts:
    """The contracts a producer writes or a consumer reads, by event type."""

    def __init__(self, contracts: Iterable[EventContract[Any]]) -> None:
        self._by_type = {c.type: c for c in contracts}

    def __getitem__(self, type_name: str) -> EventContract[Any]:
        return self._by_type[type_name]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._by_type

    @property
    def types(self) -> list[str]:
        return sorted(self._by_type)

    def encode(self, message: Message) -> tuple[str, bytes, dict[str, str]]:
        """(type, JSON data, metadata) of an event to append."""
        contract = self._by_type[message.DESCRIPTOR.name]
        data, metadata = contract.encode(message)
        return contract.type, data, metadata

    def decode(self, type_name: str, data: bytes, metadata: Mapping[str, str]) -> Message | None:
        """The message of a stored event; None for a type not among these contracts (skip it);
        `MalformedEvent` for one that is, but does not read as it."""
        contract = self._by_type.get(type_name)
        return None if contract is None else contract.decode(data, metadata)

"""What the repository needs to know about an aggregate, and how its events are (de)serialized.

Domain code stays pure: an aggregate is an immutable state, `evolve(state, event)` returns the
next state, and commands are functions from a state to the events that record their outcome.
Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

State = TypeVar("State")
Event = TypeVar("Event")


class EventCodec(Generic[Event]):
    """Frozen-dataclass events <-> (type name, JSON bytes). The type name is the class name."""

    def __init__(self, classes: Iterable[type[Event]]) -> None:
        self._by_name = {cls.__name__: cls for cls in classes}

    def encode(self, event: Event) -> tuple[str, bytes]:
        fields = dataclasses.asdict(event)  # type: ignore[call-overload]
        return type(event).__name__, json.dumps(fields, separators=(",", ":")).encode()

    def decode(self, type_name: str, data: bytes) -> Event | None:
        """The event, or None for a type this codec does not know (newer producers)."""
        cls = self._by_name.get(type_name)
        return None if cls is None else cls(**json.loads(data))

    @property
    def types(self) -> list[str]:
        return sorted(self._by_name)


@dataclass(frozen=True)
class AggregateType(Generic[State, Event]):
    """An aggregate kind: its stream category, empty state, evolution and snapshot format.

    `snapshot_schema` versions the snapshot format: a snapshot written with another schema is
    ignored (the aggregate is rebuilt from its events instead), so changing the state's shape
    never needs a migration.
    """

    category: str
    initial: Callable[[str], State]  # aggregate id -> state before any event
    evolve: Callable[[State, Event], State]
    codec: EventCodec[Event]
    snapshot_schema: int
    to_snapshot: Callable[[State], Mapping[str, Any]]
    from_snapshot: Callable[[Mapping[str, Any]], State]

    def stream(self, aggregate_id: str) -> str:
        return f"{self.category}-{aggregate_id}"

    def fold(self, state: State, events: Iterable[Event]) -> State:
        for event in events:
            state = self.evolve(state, event)
        return state

"""What the repository needs to know about an aggregate, and how its events are (de)serialized.

Domain code stays pure: an aggregate is an immutable state, `evolve(state, event)` returns the
next state, and commands are functions from a state to the events that record their outcome.
Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from eventstore_client.codec import Contracts

State = TypeVar("State")
Event = TypeVar("Event")


class EventCodec(Generic[Event]):
    """Domain events (frozen dataclasses) <-> stored events, through their contracts.

    Each class pairs with the contract of the same name, field for field: a field renamed on
    one side and not the other fails here, when the codec is built, not later in a consumer.
    """

    def __init__(self, classes: Iterable[type[Event]], contracts: Contracts) -> None:
        self._by_name = {cls.__name__: cls for cls in classes}
        self._contracts = contracts
        for name, cls in self._by_name.items():
            if name not in contracts:
                raise ValueError(f"{name} has no event contract")
            ours = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            theirs = set(contracts[name].message.DESCRIPTOR.fields_by_name)
            if ours != theirs:
                raise ValueError(
                    f"{name}: fields {sorted(ours)} differ from its contract's {sorted(theirs)}"
                )

    def encode(self, event: Event) -> tuple[str, bytes, dict[str, str]]:
        """(type, data, metadata) to append."""
        contract = self._contracts[type(event).__name__]
        message = contract.message(**dataclasses.asdict(event))  # type: ignore[call-overload]
        data, metadata = contract.encode(message)
        return contract.type, data, metadata

    def decode(self, type_name: str, data: bytes, metadata: Mapping[str, str]) -> Event | None:
        """The event, or None for a type this codec does not know (newer producers)."""
        cls = self._by_name.get(type_name)
        if cls is None:
            return None
        message = self._contracts[type_name].decode(data, metadata)
        return cls(**{f.name: getattr(message, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]

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

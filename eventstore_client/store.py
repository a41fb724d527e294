"""What code written against the store needs of it: the calls `Repository` and
`SubscriptionRunner` make. `EventStoreClient` (over gRPC) and `testing.InMemoryEventStore` both
have them, and `tests/contract` holds the two to the same behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.client import AppendResult, NewEvent


class GroupMembership(Protocol):
    """A member's Consume call (`async with store.consume(group) as session:`)."""

    last_heard: float  # time.monotonic() of the store's last message on it (0.0: none yet)
    answered: asyncio.Event  # set once the store answered the join (its first message)

    async def __aenter__(self) -> GroupMembership: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def deliveries(self) -> AsyncIterator[pb.Delivery]: ...

    def ack(self, *positions: int) -> None: ...

    def nack(self, position: int, *, park: bool = False, reason: str = "") -> None: ...


class EventStore(Protocol):
    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected: int | pb.ExpectedState.ValueType | None = None,
        *,
        expected_version: int | None = None,
    ) -> AppendResult: ...

    def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        max_count: int = 0,
        *,
        backwards: bool = False,
        as_of: datetime | None = None,
    ) -> AsyncIterator[pb.RecordedEvent]: ...

    async def read_stream_list(
        self,
        stream: str,
        from_version: int = 0,
        max_count: int = 0,
        *,
        backwards: bool = False,
        as_of: datetime | None = None,
    ) -> list[pb.RecordedEvent]: ...

    def read_all(
        self,
        after_position: int = 0,
        max_count: int = 0,
        *,
        category: str = "",
        event_types: Sequence[str] = (),
    ) -> AsyncIterator[pb.RecordedEvent]: ...

    def subscribe(
        self,
        *,
        stream: str = "",
        category: str = "",
        after_position: int = 0,
        after_version: int = 0,
        event_types: Sequence[str] = (),
        subscriber: str = "",
    ) -> AsyncIterator[pb.SubscribeResponse]: ...

    async def commit_checkpoint(
        self, subscriber: str, position: int, *, reset: bool = False
    ) -> int: ...

    async def get_checkpoint(self, subscriber: str) -> int | None: ...

    async def save_snapshot(
        self,
        stream: str,
        version: int,
        type: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
    ) -> None: ...

    async def read_snapshot(self, stream: str, max_version: int = 0) -> pb.Snapshot | None: ...

    async def create_group(
        self,
        group: str,
        *,
        category: str = "",
        event_types: Sequence[str] = (),
        start_after_position: int = 0,
        max_attempts: int = 0,
        ack_timeout_ms: int = 0,
        ordering: pb.GroupOrdering.ValueType = pb.GROUP_ORDERING_STREAM,
    ) -> bool: ...

    async def delete_group(self, group: str) -> None: ...

    async def list_groups(self) -> list[pb.GroupInfo]: ...

    async def read_parked(self, group: str) -> list[pb.ParkedEvent]: ...

    async def replay_parked(self, group: str) -> int: ...

    def consume(self, group: str, member: str = "", max_in_flight: int = 0) -> GroupMembership: ...

    def load_stream(
        self,
        stream: str,
        max_version: int = 0,
        snapshot_metadata: Mapping[str, str] | None = None,
        as_of: datetime | None = None,
    ) -> AsyncIterator[pb.Snapshot | pb.RecordedEvent]: ...

"""An event store in memory, for tests of code written against the store (handlers,
repositories, subscription runners) that should run in milliseconds, not start processes.

`InMemoryEventStore` has the calls of `eventstore_client.store.EventStore` and answers them as
the server does: versions from 1, one global order, expected versions and states, idempotent
retries by event id, catch-up then live subscriptions, durable checkpoints, snapshots, and the
same typed errors. The contract suite in `tests/contract` runs against it and against a real
server, so the two cannot drift apart. It is not a store: nothing is persisted, nothing is
shared between processes, and limits (sizes, name lengths) are not enforced.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.client import AppendResult, Expected, NewEvent
from eventstore_client.errors import (
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    NotFoundError,
    WrongExpectedVersionError,
)
from eventstore_client.testing_groups import MemoryGroups, MemorySession

_STATE_NAMES = {
    Expected.ANY: "any",
    Expected.NO_STREAM: "no stream",
    Expected.STREAM_EXISTS: "stream exists",
}


def _invalid(message: str, field: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT, message, "INVALID_ARGUMENT", {"field": field}
    )


def _recorded_by(events: list[pb.RecordedEvent], as_of: datetime | None) -> list[pb.RecordedEvent]:
    """The events recorded at or before `as_of` (all of them without it)."""
    if as_of is None:
        return events
    return [e for e in events if e.recorded_at.ToDatetime(tzinfo=UTC) <= as_of]


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _check_name(name: str, field: str) -> None:
    if not name or name.startswith("-") or any(c.isspace() or not c.isprintable() for c in name):
        raise _invalid(f"{field} is empty or malformed", field)


@dataclass
class _Checkpoint:
    position: int


class InMemoryEventStore:
    """The store's behaviour in one process's memory. Use it as `EventStoreClient` is used
    (`async with InMemoryEventStore() as store:` works too)."""

    def __init__(self) -> None:
        self._log: list[pb.RecordedEvent] = []  # position p is self._log[p - 1]
        self._streams: dict[str, list[pb.RecordedEvent]] = {}
        self._ids: dict[str, pb.RecordedEvent] = {}
        self._snapshots: dict[str, dict[int, pb.Snapshot]] = {}
        self._checkpoints: dict[str, _Checkpoint] = {}
        self._appended = asyncio.Condition()
        self._groups = MemoryGroups(self._log)

    async def __aenter__(self) -> InMemoryEventStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        return None

    @property
    def head(self) -> int:
        """The last position written (0: empty)."""
        return len(self._log)

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected: int | pb.ExpectedState.ValueType | None = None,
        *,
        expected_version: int | None = None,
    ) -> AppendResult:
        await asyncio.sleep(0)  # a real store is a round trip away: let others run meanwhile
        _check_name(stream, "stream")
        if not events:
            raise _invalid("an append needs at least one event", "events")
        ids = [e.id or str(uuid.uuid4()) for e in events]
        if len(set(ids)) != len(ids):
            raise _invalid("an event id appears twice in the append", "id")
        for i, event in enumerate(events):
            if not event.type:
                raise _invalid(f"events[{i}].type: an event type is empty", "events")
            try:
                uuid.UUID(ids[i])
            except ValueError:
                raise _invalid(f"events[{i}].id is not a UUID", "id") from None
        taken = [self._ids[i] for i in ids if i in self._ids]
        if taken:
            if len(taken) == len(ids) and all(e.stream == stream for e in taken):
                last = max(taken, key=lambda e: e.version)
                return AppendResult(last.version, max(e.position for e in taken))
            raise DuplicateEventIdError(
                grpc.StatusCode.ALREADY_EXISTS,
                "an event id was already used by another append",
                "DUPLICATE_EVENT_ID",
                {"stream": stream},
            )
        current = len(self._streams.get(stream, ()))
        self._check_expected(stream, current, expected, expected_version)
        recorded_at = _now()
        written = self._streams.setdefault(stream, [])
        for event_id, event in zip(ids, events, strict=True):
            record = pb.RecordedEvent(
                id=event_id,
                stream=stream,
                version=len(written) + 1,
                position=len(self._log) + 1,
                type=event.type,
                data=event.data,
                metadata=dict(event.metadata),
                content_type=event.content_type,
                recorded_at=recorded_at,
            )
            written.append(record)
            self._log.append(record)
            self._ids[event_id] = record
        async with self._appended:
            self._appended.notify_all()
        self._groups.appended()
        return AppendResult(len(written), len(self._log))

    @staticmethod
    def _check_expected(
        stream: str,
        current: int,
        expected: int | pb.ExpectedState.ValueType | None,
        expected_version: int | None,
    ) -> None:
        if expected_version is not None:
            ok, wanted = current == expected_version, str(expected_version)
        elif expected in (None, Expected.ANY):
            return
        elif expected == Expected.NO_STREAM:
            ok, wanted = current == 0, _STATE_NAMES[Expected.NO_STREAM]
        elif expected == Expected.STREAM_EXISTS:
            ok, wanted = current > 0, _STATE_NAMES[Expected.STREAM_EXISTS]
        else:
            raise _invalid("expected_state is not a known state", "expected_state")
        if not ok:
            raise WrongExpectedVersionError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"stream {stream!r} is at version {current}, expected {wanted}",
                "WRONG_EXPECTED_VERSION",
                {"stream": stream, "expected": wanted, "actual": str(current)},
            )

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        max_count: int = 0,
        *,
        backwards: bool = False,
        as_of: datetime | None = None,
    ) -> AsyncIterator[pb.RecordedEvent]:
        await asyncio.sleep(0)
        _check_name(stream, "stream")
        events = _recorded_by(self._streams.get(stream, []), as_of)
        if backwards:
            end = len(events) if from_version == 0 else min(from_version, len(events))
            chosen = list(reversed(events[:end]))
        else:
            chosen = events[max(from_version, 1) - 1 :]
        for event in chosen[:max_count] if max_count else chosen:
            yield event

    async def read_stream_list(
        self,
        stream: str,
        from_version: int = 0,
        max_count: int = 0,
        *,
        backwards: bool = False,
        as_of: datetime | None = None,
    ) -> list[pb.RecordedEvent]:
        events = self.read_stream(stream, from_version, max_count, backwards=backwards, as_of=as_of)
        return [e async for e in events]

    async def read_all(
        self,
        after_position: int = 0,
        max_count: int = 0,
        *,
        category: str = "",
        event_types: Sequence[str] = (),
    ) -> AsyncIterator[pb.RecordedEvent]:
        if category:
            _check_name(category, "category")
        matching = [
            e
            for e in self._log[after_position:]
            if _matches(e, "", category, frozenset(event_types))
        ]
        for event in matching[:max_count] if max_count else matching:
            yield event

    async def subscribe(
        self,
        *,
        stream: str = "",
        category: str = "",
        after_position: int = 0,
        after_version: int = 0,
        event_types: Sequence[str] = (),
        subscriber: str = "",
    ) -> AsyncIterator[pb.SubscribeResponse]:
        """Catch-up, then live, as the server sends it: the history, one empty message marked
        `caught_up`, then a message per append that holds matching events. Never ends."""
        types = frozenset(event_types)
        if stream and subscriber:
            raise _invalid("durable subscribers follow a category or all streams", "subscriber")
        if subscriber:
            stored = self._checkpoints.get(subscriber)
            after_position = max(after_position, stored.position if stored else 0)
        cursor = after_position
        caught_up = False
        while True:
            head = len(self._log)
            events = [
                e
                for e in self._log[cursor:head]
                if _matches(e, stream, category, types)
                and (not stream or e.version > after_version)
            ]
            cursor = head
            if events:
                yield pb.SubscribeResponse(events=events, scanned_position=head)
            if not caught_up:  # the marker that ends the history part, a message of its own
                yield pb.SubscribeResponse(caught_up=True, scanned_position=head)
                caught_up = True
            async with self._appended:
                while len(self._log) <= cursor:
                    await self._appended.wait()

    async def commit_checkpoint(
        self, subscriber: str, position: int, *, reset: bool = False
    ) -> int:
        _check_name(subscriber, "subscriber")
        stored = self._checkpoints.setdefault(subscriber, _Checkpoint(0))
        stored.position = position if reset else max(stored.position, position)
        return stored.position

    async def get_checkpoint(self, subscriber: str) -> int | None:
        _check_name(subscriber, "subscriber")
        stored = self._checkpoints.get(subscriber)
        return None if stored is None else stored.position

    async def save_snapshot(
        self,
        stream: str,
        version: int,
        type: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        _check_name(stream, "stream")
        if version < 1:
            raise _invalid("a snapshot's version must be at least 1", "version")
        if not type:
            raise _invalid("a snapshot needs a type", "type")
        current = len(self._streams.get(stream, ()))
        if stream not in self._streams:
            raise NotFoundError(
                grpc.StatusCode.NOT_FOUND, f"stream {stream!r} does not exist", "NOT_FOUND"
            )
        if version > current:
            raise EventStoreError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"stream {stream!r} is at version {current}, below the snapshot's {version}",
                "FAILED_PRECONDITION",
                {"stream": stream, "actual": str(current)},
            )
        self._snapshots.setdefault(stream, {})[version] = pb.Snapshot(
            stream=stream,
            version=version,
            type=type,
            data=data,
            metadata=dict(metadata or {}),
            recorded_at=_now(),
        )

    async def load_stream(
        self,
        stream: str,
        max_version: int = 0,
        snapshot_metadata: Mapping[str, str] | None = None,
        as_of: datetime | None = None,
    ) -> AsyncIterator[pb.Snapshot | pb.RecordedEvent]:
        _check_name(stream, "stream")
        wanted = dict(snapshot_metadata or {}).items()
        reached = len(_recorded_by(self._streams.get(stream, []), as_of))
        fitting = [
            v
            for v, snap in self._snapshots.get(stream, {}).items()
            if (not max_version or v <= max_version)
            and v <= reached
            and wanted <= dict(snap.metadata).items()
        ]
        start = 1
        if fitting:
            snapshot = self._snapshots[stream][max(fitting)]
            start = snapshot.version + 1
            yield snapshot
        await asyncio.sleep(0)
        history = _recorded_by(self._streams.get(stream, []), as_of)
        for event in history[start - 1 : max_version or None]:
            yield event

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
    ) -> bool:
        _check_name(group, "group")
        if category:
            _check_name(category, "category")
        return self._groups.create(
            group,
            category,
            event_types,
            start_after_position,
            max_attempts,
            ack_timeout_ms,
            ordering,
        )

    async def delete_group(self, group: str) -> None:
        self._groups.delete(group)

    async def list_groups(self) -> list[pb.GroupInfo]:
        return self._groups.infos()

    async def read_parked(self, group: str) -> list[pb.ParkedEvent]:
        return self._groups.parked(group)

    async def replay_parked(self, group: str) -> int:
        return self._groups.replay(group)

    def consume(self, group: str, member: str = "", max_in_flight: int = 0) -> MemorySession:
        return MemorySession(self._groups, self._groups.get(group), max_in_flight)

    async def read_snapshot(self, stream: str, max_version: int = 0) -> pb.Snapshot | None:
        _check_name(stream, "stream")
        versions = [
            v for v in self._snapshots.get(stream, {}) if not max_version or v <= max_version
        ]
        return self._snapshots[stream][max(versions)] if versions else None


def _matches(event: pb.RecordedEvent, stream: str, category: str, types: frozenset[str]) -> bool:
    if stream and event.stream != stream:
        return False
    if category and event.stream.split("-", 1)[0] != category:
        return False
    return not types or event.type in types

"""Consumer groups for `InMemoryEventStore`: the server's rules, without the database.

As on the server: a stream's next event is delivered only when its previous one is acked or
parked; a member has at most `max_in_flight` deliveries; a nack retries until `max_attempts`,
then parks; `park=True` parks at once; a member that leaves gives its deliveries back (as an
attempt); parked events do not hold their stream; replays start their attempts over; answers
for deliveries a member does not hold are ignored. Unlike the server: no ack timeout (a test
decides when a member leaves) and no back-off before a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.errors import AlreadyExistsError, NotFoundError


@dataclass
class MemoryGroup:
    name: str
    category: str
    event_types: frozenset[str]
    start_after: int
    max_attempts: int
    ack_timeout_ms: int
    ordering: int = pb.GROUP_ORDERING_STREAM
    checkpoint: int = 0
    done: set[int] = field(default_factory=set)  # acked or parked, after the checkpoint
    attempts: dict[int, int] = field(default_factory=dict)
    in_flight: dict[int, MemorySession] = field(default_factory=dict)
    parked: dict[int, tuple[str, int]] = field(default_factory=dict)  # reason, attempts
    replays: set[int] = field(default_factory=set)  # at or below the checkpoint
    members: list[MemorySession] = field(default_factory=list)

    def key(self, event: pb.RecordedEvent) -> str:
        """What the group delivers in order: the stream, or the correlation id if so set."""
        if self.ordering == pb.GROUP_ORDERING_CORRELATION:
            return event.metadata.get("correlation_id") or event.stream
        return event.stream

    def matches(self, event: pb.RecordedEvent) -> bool:
        category = event.stream.split("-", 1)[0]
        return (not self.category or category == self.category) and (
            not self.event_types or event.type in self.event_types
        )


class MemorySession:
    """A member's Consume call, as `GroupSession` is for the server."""

    def __init__(self, groups: MemoryGroups, group: MemoryGroup, max_in_flight: int) -> None:
        self._groups = groups
        self.group = group
        self.max_in_flight = max_in_flight or 64
        self.outbox: asyncio.Queue[pb.Delivery | None] = asyncio.Queue()
        self.held: set[int] = set()
        self.last_heard = 0.0
        self.answered = asyncio.Event()

    async def __aenter__(self) -> MemorySession:
        self.last_heard = time.monotonic()  # joined at once: the store's heartbeat
        self.answered.set()
        self.group.members.append(self)
        self._groups.dispatch(self.group)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._groups.leave(self)

    async def deliveries(self) -> AsyncGenerator[pb.Delivery, None]:
        while (delivery := await self.outbox.get()) is not None:
            self.last_heard = time.monotonic()
            yield delivery
        raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"group {self.group.name!r} was deleted")

    def ack(self, *positions: int) -> None:
        for position in positions:
            if self.group.in_flight.get(position) is self:
                del self.group.in_flight[position]
                self.held.discard(position)
                self.group.done.add(position)
        self._groups.dispatch(self.group)

    def nack(self, position: int, *, park: bool = False, reason: str = "") -> None:
        group = self.group
        if group.in_flight.get(position) is not self:
            return
        del group.in_flight[position]
        self.held.discard(position)
        if park or group.attempts[position] >= group.max_attempts:
            self._groups.park(group, position, reason or "parked by its consumer")
        self._groups.dispatch(group)


class MemoryGroups:
    """The groups of one in-memory store; `log` is its global log (position p at p - 1)."""

    def __init__(self, log: list[pb.RecordedEvent]) -> None:
        self._log = log
        self._groups: dict[str, MemoryGroup] = {}

    def create(
        self,
        group: str,
        category: str,
        event_types: Sequence[str],
        start_after_position: int,
        max_attempts: int,
        ack_timeout_ms: int,
        ordering: int = pb.GROUP_ORDERING_STREAM,
    ) -> bool:
        wanted = MemoryGroup(
            group,
            category,
            frozenset(event_types),
            start_after_position,
            max_attempts or 5,
            ack_timeout_ms or 30_000,
            ordering,
            checkpoint=start_after_position,
        )
        existing = self._groups.get(group)
        if existing is None:
            self._groups[group] = wanted
            return True
        settings = (
            "category",
            "event_types",
            "start_after",
            "max_attempts",
            "ack_timeout_ms",
            "ordering",
        )
        if any(getattr(existing, s) != getattr(wanted, s) for s in settings):
            raise AlreadyExistsError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"group {group!r} exists with other settings",
                "ALREADY_EXISTS",
                {
                    "category": existing.category,
                    "event_types": ",".join(sorted(existing.event_types)),
                    "ordering": pb.GroupOrdering.Name(existing.ordering),  # type: ignore[arg-type]
                },
            )
        return False

    def get(self, group: str) -> MemoryGroup:
        found = self._groups.get(group)
        if found is None:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"no group {group!r}", "NOT_FOUND")
        return found

    def delete(self, group: str) -> None:
        for member in self.get(group).members:
            member.outbox.put_nowait(None)
        del self._groups[group]

    def infos(self) -> list[pb.GroupInfo]:
        return [
            pb.GroupInfo(
                group=g.name,
                category=g.category,
                event_types=sorted(g.event_types),
                checkpoint=g.checkpoint,
                lag=sum(
                    1
                    for e in self._log[g.checkpoint :]
                    if g.matches(e) and e.position not in g.done
                ),
                members=len(g.members),
                in_flight=len(g.in_flight),
                parked=len(g.parked),
                ordering=g.ordering,  # type: ignore[arg-type]
            )
            for g in sorted(self._groups.values(), key=lambda g: g.name)
        ]

    def parked(self, group: str) -> list[pb.ParkedEvent]:
        found = self.get(group)
        return [
            pb.ParkedEvent(event=self._log[p - 1], reason=reason, attempts=attempts)
            for p, (reason, attempts) in sorted(found.parked.items())
        ]

    def replay(self, group: str) -> int:
        found = self.get(group)
        positions = list(found.parked)
        for position in positions:
            del found.parked[position]
            found.done.discard(position)
            found.attempts[position] = 0
            if position <= found.checkpoint:
                found.replays.add(position)
        self.dispatch(found)
        return len(positions)

    def park(self, group: MemoryGroup, position: int, reason: str) -> None:
        group.parked[position] = (reason, group.attempts[position])
        group.done.add(position)

    def leave(self, member: MemorySession) -> None:
        group = member.group
        if member in group.members:
            group.members.remove(member)
        for position in list(member.held):  # given back, as an attempt
            del group.in_flight[position]
            if group.attempts[position] >= group.max_attempts:
                self.park(group, position, "taken back: its member left")
        member.held.clear()
        self.dispatch(group)

    def appended(self) -> None:
        for group in self._groups.values():
            self.dispatch(group)

    def dispatch(self, group: MemoryGroup) -> None:
        """The server's round: move the checkpoint over what is done, then give each stream's
        first unfinished event (when it is free) to the member with the most room."""
        if group.name not in self._groups:
            return
        after = [e for e in self._log[group.checkpoint :] if group.matches(e)]
        for event in after:
            if event.position not in group.done:
                break
            group.checkpoint = event.position
        else:
            group.checkpoint = len(self._log)
        group.done = {p for p in group.done if p > group.checkpoint}
        candidates = [self._log[p - 1] for p in sorted(group.replays)] + [
            e for e in self._log[group.checkpoint :] if group.matches(e)
        ]
        held: set[str] = set()
        for event in candidates:
            if event.position in group.done and event.position not in group.replays:
                continue
            key = group.key(event)
            if key in held:
                continue
            held.add(key)
            if event.position in group.in_flight:
                continue
            member = max(group.members, key=lambda m: m.max_in_flight - len(m.held), default=None)
            if member is None or len(member.held) >= member.max_in_flight:
                return
            group.replays.discard(event.position)
            group.attempts[event.position] = group.attempts.get(event.position, 0) + 1
            group.in_flight[event.position] = member
            member.held.add(event.position)
            member.outbox.put_nowait(
                pb.Delivery(event=event, attempt=group.attempts[event.position])
            )

"""Consumer groups in PostgreSQL: their settings, and one dispatch round as one transaction.

A round (`GroupStore.round`) is where every decision about a group's events is made, by
whichever replica runs it, under the group row's lock (`SELECT ... FOR UPDATE`), so rounds of
one group never interleave across replicas. In one transaction it applies the answers that
arrived since the last round (acks, nacks, members that left), takes back deliveries whose ack
timeout passed, moves the checkpoint over what is done, and claims the next deliveries:
walking the group's events in position order, the first not-done event of each stream is the
only one of that stream that may be in flight, so event v+1 of a stream is never delivered
before event v is acked or parked. (A group ordered by correlation reads "each correlation id"
for "each stream": the walk uses the key `order_key` gives, stored in es_group_events.stream.)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import asyncpg

from contracts.eventstore.v1 import eventstore_pb2 as pb

# Matching events after the checkpoint that one round looks at. Deliveries are chosen among
# them: a stream whose event is further on waits until the checkpoint moves.
WINDOW = 500
# Back-off before a nacked event is delivered again: 0.5 s, doubling per attempt, at most 30 s.
# With the default 5 attempts an event is parked no sooner than 7.5 s after its first failure:
# longer than a store or database restart takes, so a handler that failed because a dependency
# was briefly away gets it back before it is called poison.
RETRY_BASE_S, RETRY_MAX_S = 0.5, 30.0
# A member row not refreshed for this long belongs to a replica that died: rounds take its
# deliveries back. Replicas refresh their members' rows every MEMBER_TTL_S / 3.
MEMBER_TTL_S = 6


class State(IntEnum):
    """An event's state in a group (es_group_events.state)."""

    WAITING = 0  # to be delivered (again) once not_before has passed
    IN_FLIGHT = 1
    ACKED = 2
    PARKED = 3


@dataclass(frozen=True)
class GroupSettings:
    name: str
    category: str  # '': every category
    event_types: tuple[str, ...]
    start_after: int
    max_attempts: int
    ack_timeout_ms: int
    ordering: int = pb.GROUP_ORDERING_STREAM

    def same_as(self, other: GroupSettings) -> bool:
        return (
            self.category == other.category
            and sorted(self.event_types) == sorted(other.event_types)
            and self.start_after == other.start_after
            and self.max_attempts == other.max_attempts
            and self.ack_timeout_ms == other.ack_timeout_ms
            and self.ordering == other.ordering
        )


@dataclass
class Answers:
    """What members said (or did) since the last round of a group."""

    acks: list[tuple[int, uuid.UUID]] = field(default_factory=list)  # (position, session)
    nacks: list[tuple[int, uuid.UUID, bool, str]] = field(default_factory=list)  # + park, reason
    left: list[uuid.UUID] = field(default_factory=list)  # sessions whose deliveries go back
    # Sessions whose deliveries go back through no fault of the event (this replica shutting
    # down, claims its member never received): the attempt does not count toward parking.
    released: list[uuid.UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.acks or self.nacks or self.left or self.released)


@dataclass(frozen=True)
class Claim:
    position: int
    session: uuid.UUID
    attempt: int
    record: bytes  # the event as stored (framed RecordedEvent)


@dataclass
class RoundResult:
    exists: bool = True
    claims: list[Claim] = field(default_factory=list)
    acked: int = 0
    ignored: int = 0  # acks and nacks for deliveries not in flight for that member
    parked: int = 0
    taken_back: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    changed: bool = False  # anything another replica's members might now be able to receive
    next_due: float | None = None  # seconds until a deadline or retry time, if any


def matching(settings: GroupSettings, first: int, after: str = "$1", until: str = "$2") -> str:
    """SQL for the group's events with position > `after` and <= `until` (by default $1 and
    $2; the group's own parameters from `first` on)."""
    where = [f"position > {after}", f"position <= {until}"]
    if settings.category:
        where.append(f"category = ${first}")
    if settings.event_types:
        where.append(f"type = ANY(${first + 1}::text[])")
    return " AND ".join(where)


def order_key(settings: GroupSettings) -> str:
    """SQL for the key of an es_events row that the group delivers in order."""
    if settings.ordering == pb.GROUP_ORDERING_CORRELATION:
        return "coalesce(metadata ->> 'correlation_id', stream)"
    return "stream"


def matching_args(settings: GroupSettings) -> list[object]:
    args: list[object] = []
    if settings.category:
        args.append(settings.category)
    if settings.event_types:
        args.append(list(settings.event_types))
    return args


def _settings(row: asyncpg.Record) -> GroupSettings:
    return GroupSettings(
        row["name"],
        row["category"],
        tuple(row["event_types"]),
        row["start_after"],
        row["max_attempts"],
        row["ack_timeout_ms"],
        row["ordering"],
    )


_GROUP_COLUMNS = "name, category, event_types, start_after, max_attempts, ack_timeout_ms, ordering"


class GroupStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, settings: GroupSettings) -> tuple[bool, GroupSettings]:
        """(created, the group's settings): not created when a group of that name existed."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""INSERT INTO es_groups ({_GROUP_COLUMNS}, checkpoint)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $4) ON CONFLICT (name) DO NOTHING
                    RETURNING {_GROUP_COLUMNS}""",
                settings.name,
                settings.category,
                list(settings.event_types),
                settings.start_after,
                settings.max_attempts,
                settings.ack_timeout_ms,
                settings.ordering,
            )
            if row is not None:
                return True, _settings(row)
            existing = await conn.fetchrow(
                f"SELECT {_GROUP_COLUMNS} FROM es_groups WHERE name = $1", settings.name
            )
        assert existing is not None  # groups are only deleted by name, never renamed
        return False, _settings(existing)

    async def get(self, name: str) -> GroupSettings | None:
        row = await self._pool.fetchrow(
            f"SELECT {_GROUP_COLUMNS} FROM es_groups WHERE name = $1", name
        )
        return None if row is None else _settings(row)

    async def delete(self, name: str) -> bool:
        return bool(
            await self._pool.fetchval("DELETE FROM es_groups WHERE name = $1 RETURNING 1", name)
        )

    async def infos(self) -> list[pb.GroupInfo]:
        """Each group's numbers from one statement, so from one snapshot: the head, the
        checkpoint and the counts agree with each other (no transaction to open for that)."""
        infos = []
        for row in await self._pool.fetch(f"SELECT {_GROUP_COLUMNS} FROM es_groups ORDER BY name"):
            settings = _settings(row)
            counts = await self._pool.fetchrow(
                f"""WITH g AS (SELECT checkpoint FROM es_groups WHERE name = $1),
                         h AS (SELECT position AS head FROM es_head)
                    SELECT g.checkpoint,
                           (SELECT count(*) FROM es_events
                             WHERE {matching(settings, 2, "g.checkpoint", "h.head")}) AS total,
                           (SELECT count(*) FROM es_group_events
                             WHERE group_name = $1 AND state IN (2, 3)
                               AND position > g.checkpoint AND position <= h.head) AS done,
                           (SELECT count(*) FROM es_group_events
                             WHERE group_name = $1 AND state = 1) AS in_flight,
                           (SELECT count(*) FROM es_group_parked WHERE group_name = $1) AS parked,
                           (SELECT count(*) FROM es_group_members
                             WHERE group_name = $1 AND expires_at > now()) AS members
                      FROM g, h""",
                settings.name,
                *matching_args(settings),
            )
            if counts is None:  # deleted since the list was read
                continue
            infos.append(
                pb.GroupInfo(
                    group=settings.name,
                    category=settings.category,
                    event_types=settings.event_types,
                    checkpoint=counts["checkpoint"],
                    lag=max(0, counts["total"] - counts["done"]),
                    members=counts["members"],
                    in_flight=counts["in_flight"],
                    parked=counts["parked"],
                    ordering=settings.ordering,  # type: ignore[arg-type]
                )
            )
        return infos

    async def parked(self, name: str, after: int, limit: int) -> list[asyncpg.Record]:
        """Parked events after position `after`: position, reason, attempts, record."""
        return await self._pool.fetch(
            """SELECT p.position, p.reason, p.attempts, e.record
                 FROM es_group_parked p JOIN es_events e ON e.position = p.position
                WHERE p.group_name = $1 AND p.position > $2 ORDER BY p.position LIMIT $3""",
            name,
            after,
            limit,
        )

    async def replay(self, settings: GroupSettings) -> int:
        """Parked events become waiting again, with no attempts counted; how many."""
        name = settings.name
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM es_groups WHERE name = $1 FOR UPDATE", name)
            rows = await conn.fetch(
                "DELETE FROM es_group_parked WHERE group_name = $1 RETURNING position", name
            )
            positions = [r["position"] for r in rows]
            await conn.execute(
                f"""INSERT INTO es_group_events (group_name, position, stream, state, attempts)
                   SELECT $1, e.position, {order_key(settings)}, 0, 0 FROM es_events e
                    WHERE e.position = ANY($2::bigint[])
                   ON CONFLICT (group_name, position) DO UPDATE
                   SET state = 0, attempts = 0, member = NULL, deadline = NULL,
                       not_before = NULL""",
                name,
                positions,
            )
            if positions:  # every replica's dispatcher of the group (none is this one's)
                await conn.execute("SELECT pg_notify('es_groups', $1)", f"{name} replay")
        return len(positions)

    async def join(self, name: str, session: uuid.UUID, member: str) -> None:
        await self._pool.execute(
            f"""INSERT INTO es_group_members (session, group_name, member, expires_at)
                VALUES ($1, $2, $3, now() + interval '{MEMBER_TTL_S} seconds')""",
            session,
            name,
            member,
        )

    async def refresh(self, sessions: Sequence[uuid.UUID]) -> None:
        await self._pool.execute(
            f"""UPDATE es_group_members SET expires_at = now() + interval '{MEMBER_TTL_S} seconds'
                WHERE session = ANY($1::uuid[])""",
            list(sessions),
        )

    async def leave(self, session: uuid.UUID) -> None:
        await self._pool.execute("DELETE FROM es_group_members WHERE session = $1", session)

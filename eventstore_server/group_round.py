"""One dispatch round of a consumer group: a transaction that applies what members answered and
chooses what to deliver next (see group_store.py for the state it works on).

Why the walk below is enough for per-stream order: candidates are visited in position order,
and within a stream position order is version order. The first candidate of a stream that is
not acked or parked "holds" the stream: if it is in flight or waiting for its retry time, no
later event of that stream is delivered; if it is deliverable, it is the only one of its stream
claimed this round. So event v+1 is never in flight unless v is acked or parked, whichever
member or replica holds either, and however members come and go. Parked events do not hold
their stream (they are done for the group; see the README for why). In a group ordered by
correlation, "stream" reads "key" throughout: the rows carry the key (group_store.order_key).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from eventstore_server.group_store import (
    RETRY_BASE_S,
    RETRY_MAX_S,
    WINDOW,
    Answers,
    Claim,
    GroupSettings,
    RoundResult,
    State,
    matching,
    matching_args,
    order_key,
)

DONE = (State.ACKED, State.PARKED)
Connection = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True)
class Capacity:
    """A local member and how many more deliveries it may have in flight."""

    session: uuid.UUID
    free: int


def retry_delay(attempts: int) -> float:
    return float(min(RETRY_BASE_S * 2 ** max(0, attempts - 1), RETRY_MAX_S))


async def run_round(
    conn: Connection,
    settings: GroupSettings,
    answers: Answers,
    members: Sequence[Capacity],
    replica: str,
) -> RoundResult:
    """The round, inside the caller's transaction. `replica` names this store replica in the
    NOTIFY that tells the others (the sender ignores its own). A round is a handful of
    statements: it runs after every answer, so every round trip counts."""
    result = RoundResult()
    name = settings.name
    # The group's row locked (rounds of every replica take turns), and the acks applied in the
    # same statement: the lock comes first (the acks' subquery needs it), and an ack touches
    # only its member's in-flight row, which PostgreSQL re-checks if another round changed it.
    group = await conn.fetchrow(
        """WITH g AS (
               SELECT g.checkpoint, g.deliveries, h.position AS head
                 FROM es_groups g, es_head h WHERE g.name = $1 FOR UPDATE OF g
           ), acked AS (
               UPDATE es_group_events e SET state = 2, member = NULL, deadline = NULL
                 FROM unnest($2::bigint[], $3::uuid[]) AS a(position, member)
                WHERE EXISTS (SELECT 1 FROM g)
                  AND e.group_name = $1 AND e.position = a.position AND e.member = a.member
                  AND e.state = 1
               RETURNING e.position
           )
           SELECT g.checkpoint, g.deliveries, g.head, (SELECT count(*) FROM acked) AS acked
             FROM g""",
        name,
        [p for p, _ in answers.acks],
        [s for _, s in answers.acks],
    )
    if group is None:
        return RoundResult(exists=False)
    result.acked = group["acked"]
    result.ignored += len(answers.acks) - result.acked
    result.changed |= bool(result.acked)
    await _apply_answers(conn, settings, answers, result)
    head: int = group["head"]
    checkpoint: int = group["checkpoint"]
    rows, window = await _state(conn, settings, checkpoint, head)
    await _take_back(conn, settings, rows, result)
    capacity = sum(m.free for m in members)
    # Replayed events at or below the checkpoint come first: they are the oldest.
    replays = sorted(
        (p, r["stream"]) for p, r in rows.items() if p <= checkpoint and r["state"] not in DONE
    )
    candidates = replays + [(r["position"], r["stream"]) for r in window]
    chosen = _choose(candidates, rows, capacity)

    new_checkpoint = _checkpoint(window, rows, checkpoint, head)
    epoch = group["deliveries"]
    result.changed |= new_checkpoint != checkpoint
    # The checkpoint, the epoch, the rows it passed, and the NOTIFY (with the claims, if any):
    # one statement.
    move = (new_checkpoint, epoch + len(chosen), checkpoint, f"{name} {replica}", result.changed)
    if chosen:
        result.claims = await _claim(conn, settings, chosen, members, epoch, move)
    elif new_checkpoint != checkpoint:
        await conn.execute(f"WITH {_MOVE} SELECT 1", name, *move)
    elif result.changed:
        await _notify(conn, settings, replica)
    # Wake for the next ack deadline or retry time still to come (what is due now and was not
    # chosen waits for capacity, and an answer brings the next round).
    dues = [float(r["due_in"]) for r in rows.values() if (r["due_in"] or 0) > 0]
    dues += [settings.ack_timeout_ms / 1000] if chosen else []
    result.next_due = max(0.0, min(dues)) if dues else None
    return result


async def _state(
    conn: Connection, settings: GroupSettings, checkpoint: int, head: int
) -> tuple[dict[int, dict[str, Any]], list[asyncpg.Record]]:
    """In one round trip: every row the group has, by position, and the window of matching
    events after the checkpoint."""
    fetched = await conn.fetch(
        f"""SELECT true AS is_row, position, stream, state, attempts, member,
                   coalesce(not_before > now(), false) AS later,
                   extract(epoch FROM coalesce(deadline, not_before) - now()) AS due_in,
                   state = 1 AND deadline < now() AS late,
                   state = 1 AND (deadline < now() OR NOT EXISTS (
                       SELECT 1 FROM es_group_members m
                        WHERE m.session = g.member AND m.expires_at > now())) AS expired
              FROM es_group_events g WHERE group_name = $4
            UNION ALL
            (SELECT false, position, {order_key(settings)}, NULL, NULL, NULL, NULL, NULL, NULL,
                    NULL
               FROM es_events WHERE {matching(settings, 5)}
              ORDER BY position LIMIT $3)""",
        checkpoint,
        head,
        WINDOW,
        settings.name,
        *matching_args(settings),
    )
    rows = {r["position"]: dict(r) for r in fetched if r["is_row"]}
    return rows, [r for r in fetched if not r["is_row"]]


async def _take_back(
    conn: Connection, settings: GroupSettings, rows: dict[int, dict[str, Any]], result: RoundResult
) -> None:
    """In-flight deliveries past their deadline, or whose member's replica stopped refreshing
    it (it died: nobody else will answer for them), come back (as an attempt)."""
    for row in rows.values():
        if row["expired"]:
            reason = (
                f"not acked within {settings.ack_timeout_ms} ms"
                if row["late"]
                else "its member's store replica stopped"
            )
            reason += f", {row['attempts']} attempts"
            # A replica that stopped is the store's failure, not the event's: not an attempt.
            row["state"] = await _give_back(conn, settings, row, reason, result, bool(row["late"]))
            row["later"], row["due_in"] = False, None


def _checkpoint(
    window: list[asyncpg.Record], rows: dict[int, dict[str, Any]], checkpoint: int, head: int
) -> int:
    """The checkpoint moved over every window event that is done (to the head when the whole
    window was read and is done: nothing else matches up to there)."""
    moved = checkpoint
    for event in window:
        if rows.get(event["position"], {}).get("state") not in DONE:
            return moved
        moved = event["position"]
    return head if len(window) < WINDOW else moved


async def _notify(conn: Connection, settings: GroupSettings, replica: str) -> None:
    await conn.execute("SELECT pg_notify('es_groups', $1)", f"{settings.name} {replica}")


def _choose(
    candidates: list[tuple[int, str]], rows: dict[int, dict[str, Any]], capacity: int
) -> list[tuple[int, str]]:
    held: set[str] = set()
    chosen: list[tuple[int, str]] = []
    for position, stream in candidates:
        if len(chosen) >= capacity:
            break
        row = rows.get(position)
        if row is not None and row["state"] in DONE:
            continue
        if stream in held:
            continue
        held.add(stream)
        if row is not None and row["state"] == State.IN_FLIGHT:
            continue
        if row is not None and row["later"]:  # waiting for its retry time
            continue
        chosen.append((position, stream))
    return chosen


async def _apply_answers(
    conn: Connection, settings: GroupSettings, answers: Answers, result: RoundResult
) -> None:
    """Nacks and members that left (acks come with the round's first statement)."""
    name = settings.name
    for position, session, park, reason in answers.nacks:
        row = await conn.fetchrow(
            """SELECT attempts FROM es_group_events
                WHERE group_name = $1 AND position = $2 AND member = $3 AND state = 1""",
            name,
            position,
            session,
        )
        if row is None:
            result.ignored += 1
            continue
        await _retry_or_park(conn, settings, position, row["attempts"], park, reason, result)
    for sessions, counted in ((answers.left, True), (answers.released, False)):
        if not sessions:
            continue
        rows = await conn.fetch(
            """SELECT position, attempts, member FROM es_group_events
                WHERE group_name = $1 AND state = 1 AND member = ANY($2::uuid[])""",
            name,
            sessions,
        )
        for row in rows:
            reason = f"taken back after {row['attempts']} attempts: its member left"
            await _give_back(conn, settings, row, reason, result, counted)


async def _give_back(
    conn: Connection,
    settings: GroupSettings,
    row: Mapping[str, Any] | asyncpg.Record,
    reason: str,
    result: RoundResult,
    counted: bool,
) -> State:
    """An in-flight delivery taken from its member (timed out, or its member or replica
    gone): due again at once, or parked; its new state."""
    result.taken_back.append((row["position"], row["member"]))
    return await _retry_or_park(
        conn,
        settings,
        row["position"],
        row["attempts"],
        False,
        reason,
        result,
        delay=False,
        counted=counted,
    )


async def _retry_or_park(
    conn: Connection,
    settings: GroupSettings,
    position: int,
    attempts: int,
    park: bool,
    reason: str,
    result: RoundResult,
    *,
    delay: bool = True,
    counted: bool = True,
) -> State:
    """A delivery that came back: park it (asked to, or out of attempts), or let it wait for its
    next attempt (after a back-off when the member asked for a retry). Its new state.
    `counted=False`: the delivery failed through no fault of the event (its member's replica
    stopped or shut down), so the attempt its claim counted is given back and cannot park it."""
    result.changed = True
    if park or (counted and attempts >= settings.max_attempts):
        result.parked += 1
        await conn.execute(
            """UPDATE es_group_events SET state = 3, member = NULL, deadline = NULL
                WHERE group_name = $1 AND position = $2""",
            settings.name,
            position,
        )
        await conn.execute(
            """INSERT INTO es_group_parked (group_name, position, reason, attempts)
               VALUES ($1, $2, $3, $4) ON CONFLICT (group_name, position) DO UPDATE
               SET reason = EXCLUDED.reason, attempts = EXCLUDED.attempts, parked_at = now()""",
            settings.name,
            position,
            reason or "parked by its consumer",
            attempts,
        )
        return State.PARKED
    wait = retry_delay(attempts) if delay else 0.0
    await conn.execute(
        f"""UPDATE es_group_events SET state = 0, member = NULL, deadline = NULL,
                   not_before = now() + interval '{wait:.3f} seconds',
                   attempts = GREATEST(attempts - $3, 0)
             WHERE group_name = $1 AND position = $2""",
        settings.name,
        position,
        0 if counted else 1,
    )
    return State.WAITING


# CTEs that move the checkpoint to $2 (from $4), set the epoch to $3 and NOTIFY $5 if $6; the
# group's name is $1. Data-modifying CTEs run whether the statement reads them or not.
_MOVE = """done AS (
        DELETE FROM es_group_events
         WHERE group_name = $1 AND position <= $2 AND state IN (2, 3) AND $2 > $4
    ), moved AS (
        UPDATE es_groups SET checkpoint = $2, deliveries = $3 WHERE name = $1
        RETURNING CASE WHEN $6 THEN pg_notify('es_groups', $5) END
    )"""


async def _claim(
    conn: Connection,
    settings: GroupSettings,
    chosen: list[tuple[int, str]],
    members: Sequence[Capacity],
    epoch: int,
    move: tuple[int, int, int, str, bool],
) -> list[Claim]:
    """Give the chosen events to the local members, least loaded first, and record them, with
    the checkpoint's move (`_MOVE`'s parameters after the name)."""
    free = {m.session: m.free for m in members}
    sessions: list[uuid.UUID] = []
    for _ in chosen:
        session = max(free, key=lambda s: free[s])
        free[session] -= 1
        sessions.append(session)
    rows = await conn.fetch(
        f"""WITH {_MOVE}, claimed AS (
            INSERT INTO es_group_events AS g
                (group_name, position, stream, state, attempts, member, epoch, deadline)
            SELECT $1, c.position, c.stream, 1, 1, c.member, $10 + c.n,
                   now() + interval '{settings.ack_timeout_ms} milliseconds'
              FROM unnest($7::bigint[], $8::text[], $9::uuid[])
                   WITH ORDINALITY AS c(position, stream, member, n)
            ON CONFLICT (group_name, position) DO UPDATE
            SET state = 1, attempts = g.attempts + 1, member = EXCLUDED.member,
                epoch = EXCLUDED.epoch, deadline = EXCLUDED.deadline, not_before = NULL
            RETURNING position, attempts, member
        )
        SELECT c.position, c.attempts, c.member, e.record
          FROM claimed c JOIN es_events e ON e.position = c.position
         ORDER BY c.position""",
        settings.name,
        *move,
        [p for p, _ in chosen],
        [s for _, s in chosen],
        sessions,
        epoch,
    )
    return [Claim(r["position"], r["member"], r["attempts"], r["record"]) for r in rows]

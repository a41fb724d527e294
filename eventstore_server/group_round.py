"""One dispatch round of a consumer group: a transaction that applies what members answered and
chooses what to deliver next (see group_store.py for the state it works on).

Why the walk below is enough for per-stream order: candidates are visited in position order,
and within a stream position order is version order. The first candidate of a stream that is
not acked or parked "holds" the stream: if it is in flight or waiting for its retry time, no
later event of that stream is delivered; if it is deliverable, it is the only one of its stream
claimed this round. So event v+1 is never in flight unless v is acked or parked, whichever
member or replica holds either, and however members come and go. Parked events do not hold
their stream (they are done for the group; see the README for why).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

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
    _matching,
    _matching_args,
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
) -> RoundResult:
    """The round, inside the caller's transaction."""
    result = RoundResult()
    group = await conn.fetchrow(
        "SELECT checkpoint, deliveries FROM es_groups WHERE name = $1 FOR UPDATE", settings.name
    )
    if group is None:
        return RoundResult(exists=False)
    await _apply_answers(conn, settings, answers, result)
    await _take_back_expired(conn, settings, result)
    head: int = await conn.fetchval("SELECT position FROM es_head")
    checkpoint: int = group["checkpoint"]
    rows = {
        r["position"]: r
        for r in await conn.fetch(
            """SELECT position, stream, state, attempts,
                      coalesce(not_before > now(), false) AS later,
                      extract(epoch FROM coalesce(deadline, not_before) - now()) AS due_in
                 FROM es_group_events WHERE group_name = $1""",
            settings.name,
        )
    }
    window = await conn.fetch(
        f"""SELECT position, stream FROM es_events WHERE {_matching(settings, 4)}
            ORDER BY position LIMIT $3""",
        checkpoint,
        head,
        WINDOW,
        *_matching_args(settings),
    )
    # Replayed events at or below the checkpoint come first: they are the oldest.
    replays = sorted(
        (p, r["stream"]) for p, r in rows.items() if p <= checkpoint and r["state"] not in DONE
    )
    candidates = replays + [(r["position"], r["stream"]) for r in window]
    chosen = _choose(candidates, rows, sum(m.free for m in members))

    new_checkpoint = checkpoint
    for event in window:
        row = rows.get(event["position"])
        if row is None or row["state"] not in DONE:
            break
        new_checkpoint = event["position"]
    else:
        if len(window) < WINDOW:
            new_checkpoint = head
    if new_checkpoint != checkpoint:
        result.changed = True
        await conn.execute(
            "DELETE FROM es_group_events WHERE group_name = $1 AND position <= $2"
            " AND state IN (2, 3)",
            settings.name,
            new_checkpoint,
        )
    epoch = group["deliveries"]
    if chosen:
        result.claims = await _claim(conn, settings, chosen, members, epoch)
    if new_checkpoint != checkpoint or chosen:
        await conn.execute(
            "UPDATE es_groups SET checkpoint = $2, deliveries = $3 WHERE name = $1",
            settings.name,
            new_checkpoint,
            epoch + len(chosen),
        )
    # Wake for the next ack deadline or retry time still to come (what is due now and was not
    # chosen waits for capacity, and an answer brings the next round).
    dues = [float(r["due_in"]) for r in rows.values() if (r["due_in"] or 0) > 0]
    dues += [settings.ack_timeout_ms / 1000] if chosen else []
    result.next_due = max(0.0, min(dues)) if dues else None
    if result.changed:
        await conn.execute("SELECT pg_notify('es_groups', $1)", settings.name)
    return result


def _choose(
    candidates: list[tuple[int, str]], rows: dict[int, asyncpg.Record], capacity: int
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
    name = settings.name
    if answers.acks:
        acked = await conn.fetch(
            """UPDATE es_group_events g SET state = 2, member = NULL, deadline = NULL
                 FROM unnest($2::bigint[], $3::uuid[]) AS a(position, member)
                WHERE g.group_name = $1 AND g.position = a.position AND g.member = a.member
                  AND g.state = 1
            RETURNING g.position""",
            name,
            [p for p, _ in answers.acks],
            [s for _, s in answers.acks],
        )
        result.acked = len(acked)
        result.ignored += len(answers.acks) - len(acked)
        result.changed |= bool(acked)
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
    if answers.left:
        rows = await conn.fetch(
            """SELECT position, attempts, member FROM es_group_events
                WHERE group_name = $1 AND state = 1 AND member = ANY($2::uuid[])""",
            name,
            answers.left,
        )
        for row in rows:
            result.taken_back.append((row["position"], row["member"]))
            reason = f"taken back after {row['attempts']} attempts: its member left"
            await _retry_or_park(
                conn, settings, row["position"], row["attempts"], False, reason, result, delay=False
            )


async def _take_back_expired(
    conn: Connection, settings: GroupSettings, result: RoundResult
) -> None:
    """Deliveries past their ack deadline, and those of members whose replica stopped
    refreshing them (it died: nobody else will answer for them)."""
    rows = await conn.fetch(
        """SELECT position, attempts, member, deadline < now() AS late FROM es_group_events g
            WHERE group_name = $1 AND state = 1
              AND (deadline < now() OR NOT EXISTS (
                   SELECT 1 FROM es_group_members m
                    WHERE m.session = g.member AND m.expires_at > now()))""",
        settings.name,
    )
    for row in rows:
        result.taken_back.append((row["position"], row["member"]))
        reason = (
            f"not acked within {settings.ack_timeout_ms} ms"
            if row["late"]
            else "its member's store replica stopped"
        )
        reason += f", {row['attempts']} attempts"
        await _retry_or_park(
            conn, settings, row["position"], row["attempts"], False, reason, result, delay=False
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
) -> None:
    """A delivery that came back: park it (asked to, or out of attempts), or let it wait for its
    next attempt (after a back-off when the member asked for a retry)."""
    result.changed = True
    if park or attempts >= settings.max_attempts:
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
        return
    wait = retry_delay(attempts) if delay else 0.0
    await conn.execute(
        f"""UPDATE es_group_events SET state = 0, member = NULL, deadline = NULL,
                   not_before = now() + interval '{wait:.3f} seconds'
             WHERE group_name = $1 AND position = $2""",
        settings.name,
        position,
    )


async def _claim(
    conn: Connection,
    settings: GroupSettings,
    chosen: list[tuple[int, str]],
    members: Sequence[Capacity],
    epoch: int,
) -> list[Claim]:
    """Give the chosen events to the local members, least loaded first, and record them."""
    free = {m.session: m.free for m in members}
    sessions: list[uuid.UUID] = []
    for _ in chosen:
        session = max(free, key=lambda s: free[s])
        free[session] -= 1
        sessions.append(session)
    rows = await conn.fetch(
        f"""INSERT INTO es_group_events AS g
                (group_name, position, stream, state, attempts, member, epoch, deadline)
            SELECT $1, c.position, c.stream, 1, 1, c.member, $5 + c.n,
                   now() + interval '{settings.ack_timeout_ms} milliseconds'
              FROM unnest($2::bigint[], $3::text[], $4::uuid[])
                   WITH ORDINALITY AS c(position, stream, member, n)
            ON CONFLICT (group_name, position) DO UPDATE
            SET state = 1, attempts = g.attempts + 1, member = EXCLUDED.member,
                epoch = EXCLUDED.epoch, deadline = EXCLUDED.deadline, not_before = NULL
            RETURNING position, attempts, member""",
        settings.name,
        [p for p, _ in chosen],
        [s for _, s in chosen],
        sessions,
        epoch,
    )
    records = {
        r["position"]: r["record"]
        for r in await conn.fetch(
            "SELECT position, record FROM es_events WHERE position = ANY($1::bigint[])",
            [p for p, _ in chosen],
        )
    }
    return [
        Claim(r["position"], r["member"], r["attempts"], records[r["position"]])
        for r in sorted(rows, key=lambda r: r["position"])
    ]

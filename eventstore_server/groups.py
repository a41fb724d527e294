"""Consumer groups on one store replica: the members connected here, and a dispatcher per group
that runs rounds (group_round.py) when something changes.

A round runs when a member joins, answers or leaves, when new events are committed (the live
tail's head moves), when another replica changed the group (NOTIFY es_groups), and when an ack
deadline or retry time comes due. Answers that arrive during a round wait for the next one, so
under load one round (one transaction) applies many acks and claims many deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg

from eventstore_server import metrics
from eventstore_server.errors import NotFound, StoreError, Unavailable
from eventstore_server.group_round import Capacity, run_round
from eventstore_server.group_store import (
    MEMBER_TTL_S,
    Answers,
    Claim,
    GroupSettings,
    GroupStore,
    RoundResult,
)
from eventstore_server.tail import LiveTail, ShuttingDown, TailEvent
from eventstore_server.wire import field, varint

log = logging.getLogger(__name__)

CHANNEL = "es_groups"
IDLE_ROUND_S = 5.0  # a round at least this often while members are here (deadlines elsewhere)
REFRESH_S = MEMBER_TTL_S / 3  # member rows are refreshed this often
GAUGES_S = 10.0  # the group gauges are read from the database this often
# An empty ConsumeResponse is sent when a member has joined, then after this long without a
# delivery: the member knows it is in the group and its call alive, whatever the traffic.
HEARTBEAT_S = 5.0


def encode_deliveries(claims: list[Claim]) -> bytes:
    """A ConsumeResponse, encoded by hand like reads are: a stored record is a RecordedEvent
    framed as field 1, which is also Delivery.event; Delivery.attempt is field 2, and each
    Delivery is field 1 of the response (pinned by tests/unit/test_sql_seams.py)."""
    out = bytearray()
    for claim in claims:
        delivery = claim.record + b"\x10" + varint(claim.attempt)
        out += field(0x0A, delivery)
    return bytes(out)


class Member:
    """One Consume call: what it has in flight, and the messages waiting to be sent to it."""

    def __init__(self, settings: GroupSettings, name: str, max_in_flight: int) -> None:
        self.session = uuid.uuid4()
        self.settings = settings
        self.name = name
        self.max_in_flight = max_in_flight
        self.in_flight: set[int] = set()
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._error: StoreError | None = None
        self.closed = False

    @property
    def free(self) -> int:
        return max(0, self.max_in_flight - len(self.in_flight))

    def deliver(self, claims: list[Claim]) -> None:
        self.in_flight.update(c.position for c in claims)
        self._outbox.put_nowait(encode_deliveries(claims))

    def close(self, error: StoreError | None = None) -> None:
        if not self.closed:
            self.closed = True
            self._error = error
            self._outbox.put_nowait(None)

    async def messages(self) -> AsyncIterator[bytes]:
        """Encoded ConsumeResponses until the member is closed (raising its error, if any): an
        empty one (a heartbeat) first and whenever HEARTBEAT_S pass without a delivery."""
        yield b""
        getting: asyncio.Future[bytes | None] | None = None
        try:
            while True:
                # The same get() is awaited across heartbeats: cancelling one could lose a message.
                getting = getting or asyncio.ensure_future(self._outbox.get())
                done, _ = await asyncio.wait({getting}, timeout=HEARTBEAT_S)
                if not done:
                    yield b""
                    continue
                message, getting = getting.result(), None
                if message is None:
                    if self._error is not None:
                        raise self._error
                    return
                yield message
        finally:
            if getting is not None:
                getting.cancel()


class Dispatcher:
    """A group's rounds on this replica, for the members connected here."""

    def __init__(self, manager: GroupManager, settings: GroupSettings) -> None:
        self._manager = manager
        self.settings = settings
        self.members: dict[uuid.UUID, Member] = {}
        self._answers = Answers()
        self._wake = asyncio.Event()
        self._next_due: float | None = None
        self.task = asyncio.create_task(self._run(), name=f"group-{settings.name}")

    def wake(self) -> None:
        self._wake.set()

    def matches(self, event: TailEvent) -> bool:
        """Whether a new event is one of the group's (a round may have something to send)."""
        category, types = self.settings.category, self.settings.event_types
        return (not category or event.category == category) and (not types or event.type in types)

    def add(self, member: Member) -> None:
        self.members[member.session] = member
        self.wake()

    def ack(self, member: Member, positions: list[int]) -> None:
        member.in_flight.difference_update(positions)
        self._answers.acks += [(p, member.session) for p in positions]
        self.wake()

    def nack(self, member: Member, position: int, park: bool, reason: str) -> None:
        member.in_flight.discard(position)
        self._answers.nacks.append((position, member.session, park, reason))
        self.wake()

    def leave(self, member: Member, *, counted: bool = True) -> None:
        """The member's deliveries go back; `counted=False` when it is not the events' fault
        (this replica is shutting down): their attempts do not count toward parking."""
        if self.members.pop(member.session, None) is not None:
            (self._answers.left if counted else self._answers.released).append(member.session)
            self.wake()

    @property
    def idle(self) -> bool:
        return not self.members and not self._answers

    async def _run(self) -> None:
        delay = 0.05
        while not self.idle or self._wake.is_set():
            timeout = min(self._next_due or IDLE_ROUND_S, IDLE_ROUND_S)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that
            # arrives as the wait ends, and a dispatcher must stop when it is cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            answers, self._answers = self._answers, Answers()
            try:
                result = await self._round(answers)
                delay = 0.05
            except Exception as exc:  # the database is away: keep the answers for later
                self._answers = _merge(answers, self._answers)
                log.warning("group %s: round failed (%r); retrying", self.settings.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._wake.set()
                continue
            if not result.exists:
                for member in list(self.members.values()):
                    member.close(NotFound(f"group {self.settings.name!r} was deleted"))
                self.members.clear()
                break
            self._apply(result)
        self._manager.forget(self)

    async def _round(self, answers: Answers) -> RoundResult:
        capacities = [Capacity(m.session, m.free) for m in self.members.values() if m.free > 0]
        async with self._manager.pool.acquire() as conn, conn.transaction():
            return await run_round(conn, self.settings, answers, capacities, self._manager.replica)

    def _apply(self, result: RoundResult) -> None:
        name = self.settings.name
        by_member: dict[uuid.UUID, list[Claim]] = {}
        for claim in result.claims:
            by_member.setdefault(claim.session, []).append(claim)
        for session, claims in by_member.items():
            member = self.members.get(session)
            if member is None or member.closed:  # it left during the round: take them back
                self._answers.released.append(session)  # (never delivered: not an attempt)
                self.wake()
                continue
            member.deliver(claims)
        for position, session in result.taken_back:
            taken = self.members.get(session)
            if taken is not None:
                taken.in_flight.discard(position)
        self._next_due = result.next_due
        metrics.GROUP_DELIVERIES.labels(name).inc(len(result.claims))
        metrics.GROUP_REDELIVERIES.labels(name).inc(sum(c.attempt > 1 for c in result.claims))
        metrics.GROUP_ACKS.labels(name).inc(result.acked)
        metrics.GROUP_IGNORED.labels(name).inc(result.ignored)
        metrics.GROUP_PARKED_TOTAL.labels(name).inc(result.parked)


def _merge(first: Answers, then: Answers) -> Answers:
    return Answers(
        first.acks + then.acks,
        first.nacks + then.nacks,
        first.left + then.left,
        first.released + then.released,
    )


class GroupManager:
    """The groups' side of one replica: settings in PostgreSQL, members here."""

    def __init__(self, pool: asyncpg.Pool, tail: LiveTail, database_url: str) -> None:
        self.pool = pool
        self.store = GroupStore(pool)
        self._tail = tail
        self._url = database_url
        self._dispatchers: dict[str, Dispatcher] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._any = asyncio.Event()  # set while this replica has a dispatcher
        self.replica = uuid.uuid4().hex  # in NOTIFY payloads, to skip our own
        self.closed = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow_head(), name="groups-head"),
            asyncio.create_task(self._listen(), name="groups-listen"),
            asyncio.create_task(self._refresh(), name="groups-refresh"),
            asyncio.create_task(self._gauges(), name="groups-gauges"),
        ]

    async def join(self, settings: GroupSettings, name: str, max_in_flight: int) -> Member:
        if self.closed:  # a join while the server drains: no dispatcher may outlive close()
            raise Unavailable("the server is shutting down; join again")
        member = Member(settings, name, max_in_flight)
        await self.store.join(settings.name, member.session, name)
        dispatcher = self._dispatchers.get(settings.name)
        if dispatcher is None or dispatcher.task.done():
            dispatcher = self._dispatchers[settings.name] = Dispatcher(self, settings)
            self._any.set()
        dispatcher.add(member)
        return member

    def dispatcher(self, member: Member) -> Dispatcher | None:
        found = self._dispatchers.get(member.settings.name)
        return found if found is not None and member.session in found.members else None

    async def leave(self, member: Member) -> None:
        member.close()
        dispatcher = self._dispatchers.get(member.settings.name)
        if dispatcher is not None:
            dispatcher.leave(member)
        with contextlib.suppress(Exception):  # it expires by itself if the database is away
            await self.store.leave(member.session)

    async def replay_parked(self, settings: GroupSettings) -> int:
        """Parked events delivered again (ReplayParked, the console's button); how many."""
        replayed = await self.store.replay(settings)
        metrics.GROUP_REPLAYED.labels(settings.name).inc(replayed)
        self.wake(settings.name)  # its dispatcher here; NOTIFY wakes the others
        return replayed

    def wake(self, name: str) -> None:
        dispatcher = self._dispatchers.get(name)
        if dispatcher is not None:
            dispatcher.wake()  # a deleted group's next round ends its members' calls

    def forget(self, dispatcher: Dispatcher) -> None:
        if self._dispatchers.get(dispatcher.settings.name) is dispatcher:
            del self._dispatchers[dispatcher.settings.name]
            if not self._dispatchers:
                self._any.clear()

    async def close(self) -> None:
        """Members' calls end (UNAVAILABLE: join again, anywhere); their deliveries are given
        back in a last round so that other replicas' members get them at once."""
        self.closed = True
        for task in self._tasks:
            task.cancel()
        dispatchers = list(self._dispatchers.values())
        for dispatcher in dispatchers:
            for member in list(dispatcher.members.values()):
                member.close(Unavailable("the server is shutting down; join again"))
                dispatcher.leave(member, counted=False)
        if dispatchers:
            await asyncio.wait([d.task for d in dispatchers], timeout=5)
        for dispatcher in dispatchers:
            dispatcher.task.cancel()
        for task in [*self._tasks, *(d.task for d in dispatchers)]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow_head(self) -> None:
        """New events wake the dispatchers of the groups they belong to. The tail keeps recent
        events in memory while it is attached, which is how we know which those are; it is
        attached only while a group has members here (otherwise it would read every commit back
        for nobody: 9% of the store's CPU under appends, measured)."""
        tail = self._tail
        try:
            while True:
                await self._any.wait()
                tail.attach()
                try:
                    await self._wake_dispatchers(tail)
                finally:
                    tail.detach()
        except ShuttingDown:
            pass

    async def _wake_dispatchers(self, tail: LiveTail) -> None:
        seen = tail.head
        while self._dispatchers:
            await tail.wait_beyond(seen)
            if tail.covers(seen):
                events, seen = tail.after(seen, 1_000_000, lambda e: True)
                woken = [d for d in self._dispatchers.values() if any(map(d.matches, events))]
            else:  # too far behind to tell: wake them all
                seen = tail.head
                woken = list(self._dispatchers.values())
            for dispatcher in woken:
                dispatcher.wake()

    def _notified(self, payload: str) -> None:
        name, _, replica = payload.rpartition(" ")
        dispatcher = self._dispatchers.get(name)
        if dispatcher is not None and replica != self.replica:
            dispatcher.wake()

    async def _listen(self) -> None:
        """Rounds on other replicas (acks there can free a stream for a member here)."""
        while True:
            try:
                conn = await asyncpg.connect(self._url)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("groups: LISTEN connection failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(
                    CHANNEL, lambda _c, _pid, _ch, payload: self._notified(payload)
                )
                for dispatcher in list(self._dispatchers.values()):
                    dispatcher.wake()  # whatever was missed while disconnected
                await lost.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("groups: LISTEN connection lost (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _refresh(self) -> None:
        """Keep this replica's members alive for every replica's rounds (and ListGroups)."""
        while True:
            await asyncio.sleep(REFRESH_S)
            sessions = [s for d in self._dispatchers.values() for s in d.members]
            if sessions:
                try:
                    await self.store.refresh(sessions)
                except Exception as exc:
                    log.warning("groups: refreshing members failed: %r", exc)

    async def _gauges(self) -> None:
        while True:
            try:
                for info in await self.store.infos():
                    metrics.GROUP_LAG.labels(info.group).set(info.lag)
                    metrics.GROUP_IN_FLIGHT.labels(info.group).set(info.in_flight)
                    metrics.GROUP_PARKED.labels(info.group).set(info.parked)
                    metrics.GROUP_MEMBERS.labels(info.group).set(info.members)
            except Exception as exc:
                log.warning("groups: reading the gauges failed: %r", exc)
            await asyncio.sleep(GAUGES_S)

"""The aggregate repository: load from the latest snapshot plus later events, append with the
expected version, retry the command on a conflict, snapshot every N events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.aggregate import AggregateType, Event, State
from eventstore_client.client import AppendResult, NewEvent
from eventstore_client.errors import EventStoreError, WrongExpectedVersionError
from eventstore_client.personal import (
    PersonalData,
    Sealing,
    open_fields,
    open_json,
    seal_fields,
    seal_json,
)
from eventstore_client.store import EventStore

SNAPSHOT_TYPE = "Snapshot"


@dataclass(frozen=True)
class Loaded(Generic[State]):
    """An aggregate's state at `version`, and what it took to rebuild it."""

    state: State
    version: int  # 0: the stream has no events
    snapshot_version: int = 0  # the snapshot it started from (0: none)
    events_read: int = 0  # events folded on top of the snapshot


@dataclass(frozen=True)
class Executed(Generic[State, Event]):
    loaded: Loaded[State]  # the state after the command
    events: Sequence[Event]  # what the command recorded (empty: nothing to do)


@dataclass
class _Queued(Generic[State, Event]):
    """A command waiting for its aggregate, and where its outcome goes."""

    command: Callable[[State], Sequence[Event]]
    causation_id: str
    correlation_id: str
    outcome: asyncio.Future[Executed[State, Event]]


class ConcurrencyError(Exception):
    """A command kept losing the race for its aggregate; nothing was written."""


class Repository(Generic[State, Event]):
    """Loads and changes aggregates of one kind through the event store."""

    def __init__(
        self,
        client: EventStore,
        kind: AggregateType[State, Event],
        *,
        snapshot_every: int = 100,
        max_attempts: int = 20,
        cache_size: int = 10_000,
        metadata: Callable[[], Mapping[str, str]] | None = None,
        personal: PersonalData | None = None,
    ) -> None:
        """`personal`: the fields of this kind's events and snapshots that hold personal data,
        sealed with the aggregate's own key (see eventstore_client.personal)."""
        self._client = client
        self._kind = kind
        self._personal = personal
        self._snapshot_every = snapshot_every
        self._max_attempts = max_attempts
        self._metadata = metadata or dict
        # Recently used states by id. A cached state is never trusted blindly: a load reads the
        # events after its version (usually none) and an append still expects that version, so
        # other writers (other replicas) are seen. 0 turns the cache off.
        self._cache: OrderedDict[str, Loaded[State]] = OrderedDict()
        self._cache_size = cache_size
        # Commands on one aggregate in this process run one at a time: run together, all but
        # one would lose the expected-version race and retry. (Measured: a consumer group
        # handling 32 orders of one customer at once exhausted 20 attempts.) Other processes'
        # commands still race, and the retry handles that.
        self._running: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # Commands waiting for their aggregate's turn. Whoever gets the turn runs every command
        # waiting by then, in arrival order, as one load and one append: a hot aggregate (one
        # customer's credit under many orders) then costs one round trip per batch, not per
        # command (measured: the saga at saturation, see "Hot aggregates" in the README).
        self._queued: dict[str, list[_Queued[State, Event]]] = {}

    @contextlib.asynccontextmanager
    async def _exclusive(self, aggregate_id: str) -> AsyncIterator[None]:
        lock, users = self._running.setdefault(aggregate_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._running[aggregate_id]

    def _remember(self, aggregate_id: str, loaded: Loaded[State]) -> None:
        if self._cache_size <= 0:
            return
        self._cache[aggregate_id] = loaded
        self._cache.move_to_end(aggregate_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def load(
        self, aggregate_id: str, as_of_version: int = 0, as_of: datetime | None = None
    ) -> Loaded[State]:
        """The aggregate now, or as it was at `as_of_version` or at the time `as_of`
        (temporal queries; both given: whichever is earlier)."""
        now = not as_of_version and as_of is None
        cached = self._cache.get(aggregate_id) if now else None
        if cached is not None:
            loaded = await self._fold_from(aggregate_id, cached.state, cached.version, 0, cached)
        else:
            loaded = await self._load_from_snapshot(aggregate_id, as_of_version, as_of)
        if now:
            self._remember(aggregate_id, loaded)
        return loaded

    async def _load_from_snapshot(
        self, aggregate_id: str, as_of_version: int, as_of: datetime | None = None
    ) -> Loaded[State]:
        """One call: the latest snapshot of the current schema (at or below `as_of_version`,
        of a version reached by `as_of`) and the events after it; without such a snapshot,
        the events from the first."""
        kind = self._kind
        state = kind.initial(aggregate_id)
        start = version = read = 0
        items = [
            item
            async for item in self._client.load_stream(
                kind.stream(aggregate_id),
                as_of_version,
                {"schema": str(kind.snapshot_schema)},
                as_of,
            )
        ]
        opening = await self._opening(aggregate_id, items)
        for item in items:
            if isinstance(item, pb.Snapshot):
                values = json.loads(item.data)
                if opening is not None and self._personal is not None:
                    values = open_fields(opening, self._personal.in_snapshot, values)
                state = kind.from_snapshot(values)
                start = version = item.version
                continue
            event = kind.codec.decode(item.type, self._open(opening, item), item.metadata)
            if event is not None:
                state = kind.evolve(state, event)
            version, read = item.version, read + 1
        return Loaded(state, version, start, read)

    async def _fold_from(
        self,
        aggregate_id: str,
        state: State,
        start: int,
        count: int,
        cached: Loaded[State] | None = None,
    ) -> Loaded[State]:
        """`state` at version `start`, plus the stream's later events (`count` of them, 0: all)."""
        kind = self._kind
        version, read = start, 0
        later = await self._client.read_stream_list(
            kind.stream(aggregate_id), from_version=start + 1, max_count=count
        )
        opening = await self._opening(aggregate_id, later)
        for recorded in later:
            data = self._open(opening, recorded)
            event = kind.codec.decode(recorded.type, data, recorded.metadata)
            if event is not None:
                state = kind.evolve(state, event)
            version = recorded.version
            read += 1
        if cached is not None and read == 0:
            return cached
        snapshot_version = cached.snapshot_version if cached is not None else start
        events_read = (cached.events_read if cached is not None else 0) + read
        return Loaded(state, version, snapshot_version, events_read)

    async def create(
        self, aggregate_id: str, command: Callable[[State], Sequence[Event]]
    ) -> Executed[State, Event]:
        """Run a command that creates the aggregate, without loading it first: the append
        expects an empty stream. If the aggregate exists, fall back to `execute`."""
        async with self._exclusive(aggregate_id):
            return await self._create(aggregate_id, command)

    async def _create(
        self, aggregate_id: str, command: Callable[[State], Sequence[Event]]
    ) -> Executed[State, Event]:
        kind = self._kind
        initial = kind.initial(aggregate_id)
        decided = list(command(initial))
        if not decided:
            return await self._execute(aggregate_id, command, "")
        events = self._new_events(aggregate_id, decided, "")
        try:
            result = await self._append(aggregate_id, events, expected_version=0)
        except WrongExpectedVersionError:
            return await self._execute(aggregate_id, command, "")
        loaded = Loaded(kind.fold(initial, decided), result.version)
        self._remember(aggregate_id, loaded)
        return Executed(loaded, decided)

    async def _opening(
        self, aggregate_id: str, items: Sequence[pb.Snapshot | pb.RecordedEvent]
    ) -> Sealing | None:
        """The aggregate's key, when something loaded has personal fields (one lookup, only
        then: most events have none)."""
        personal = self._personal
        if personal is None:
            return None
        if any(
            personal.in_snapshot if isinstance(i, pb.Snapshot) else personal.in_event(i.type)
            for i in items
        ):
            return await personal.for_reading(aggregate_id)
        return None

    def _open(self, opening: Sealing | None, recorded: pb.RecordedEvent) -> bytes:
        if opening is None or self._personal is None:
            return recorded.data
        return open_json(opening, self._personal.in_event(recorded.type), recorded.data)

    async def _append(
        self, aggregate_id: str, events: list[NewEvent], expected_version: int
    ) -> AppendResult:
        """The one way events leave: their personal fields sealed with the aggregate's key
        (made on first use; SubjectForgotten once erased), then appended."""
        personal = self._personal
        if personal is not None and any(personal.in_event(e.type) for e in events):
            sealing = await personal.for_writing(aggregate_id)
            events = [
                dataclasses.replace(e, data=seal_json(sealing, personal.in_event(e.type), e.data))
                for e in events
            ]
        stream = self._kind.stream(aggregate_id)
        return await self._client.append(stream, events, expected_version=expected_version)

    def _new_events(
        self,
        aggregate_id: str,
        decided: Sequence[Event],
        causation_id: str,
        correlation_id: str = "",
    ) -> list[NewEvent]:
        stream = self._kind.stream(aggregate_id)
        metadata = dict(self._metadata())
        if causation_id:
            metadata["causation_id"] = causation_id
        if correlation_id:
            metadata["correlation_id"] = correlation_id
        events = []
        for i, event in enumerate(decided):
            type_name, data, versioned = self._kind.codec.encode(event)
            event_id = (
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"{causation_id}/{stream}/{i}"))
                if causation_id
                else str(uuid.uuid4())
            )
            events.append(
                NewEvent(type_name, data, {**metadata, **versioned}, "application/json", event_id)
            )
        return events

    async def execute(
        self,
        aggregate_id: str,
        command: Callable[[State], Sequence[Event]],
        *,
        causation_id: str = "",
        correlation_id: str = "",
    ) -> Executed[State, Event]:
        """Run `command` on the current state and append what it decides, expecting the version
        it saw; on a conflict, reload and run it again.

        With `causation_id` (the id of the event being reacted to), the new events' ids derive
        from it: a reaction run twice (a redelivery, two replicas) appends the same ids, and the
        store answers the second append with the first's result instead of writing again.
        `correlation_id` (the business process the command belongs to, a saga say) goes into
        the new events' metadata: consumer groups ordered by correlation deliver by it.
        """
        loop = asyncio.get_running_loop()
        queued = _Queued(command, causation_id, correlation_id, loop.create_future())
        waiting = self._queued.setdefault(aggregate_id, [])
        waiting.append(queued)
        try:
            async with self._exclusive(aggregate_id):
                if not queued.outcome.done():  # nobody took it in a batch: run what waits
                    batch = self._queued.pop(aggregate_id, [])
                    await self._execute_batch(aggregate_id, batch)
        except asyncio.CancelledError:
            if queued in waiting:  # not taken yet: it never runs
                waiting.remove(queued)
            raise
        return await queued.outcome

    async def _execute_batch(self, aggregate_id: str, batch: list[_Queued[State, Event]]) -> None:
        """Every command of `batch` answered: together in one append when they can be, each on
        its own when the batch's append is refused for a reason other than a conflict (a
        redelivered reaction whose events were written before, say)."""
        try:
            if len(batch) > 1 and await self._execute_together(aggregate_id, batch):
                return
            for queued in batch:
                if queued.outcome.done():
                    continue
                try:
                    executed = await self._execute(
                        aggregate_id, queued.command, queued.causation_id, queued.correlation_id
                    )
                except Exception as exc:
                    queued.outcome.set_exception(exc)
                else:
                    queued.outcome.set_result(executed)
        except BaseException as exc:  # cancelled mid-way: nobody waits for ever
            for queued in batch:
                if queued.outcome.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    # Cancelled, not failed: a future whose waiter was cancelled too (a
                    # consumer's handlers all go when its call ends) then logs nothing.
                    queued.outcome.cancel()
                else:
                    queued.outcome.set_exception(exc)
            raise

    async def _execute_together(
        self, aggregate_id: str, batch: list[_Queued[State, Event]]
    ) -> bool:
        """The commands run one after another on one loaded state, their events appended at
        once. False: the append was refused as a whole; run them one by one."""
        kind = self._kind
        stream = kind.stream(aggregate_id)
        for _ in range(self._max_attempts):
            loaded = await self.load(aggregate_id)
            state, version = loaded.state, loaded.version
            events: list[NewEvent] = []
            outcomes: list[tuple[_Queued[State, Event], Executed[State, Event] | Exception]] = []
            for queued in batch:
                try:
                    decided = list(queued.command(state))
                except Exception as exc:  # a refused command fails alone
                    outcomes.append((queued, exc))
                    continue
                state, version = kind.fold(state, decided), version + len(decided)
                events += self._new_events(
                    aggregate_id, decided, queued.causation_id, queued.correlation_id
                )
                after = Loaded(state, version, loaded.snapshot_version, loaded.events_read)
                outcomes.append((queued, Executed(after, decided)))
            if events:
                try:
                    result = await self._append(aggregate_id, events, loaded.version)
                except WrongExpectedVersionError:
                    continue
                except EventStoreError:
                    return False
                if result.version != version:  # an earlier identical append: reload next time
                    self._cache.pop(aggregate_id, None)
                    return False
                final = Loaded(state, version, loaded.snapshot_version, loaded.events_read)
                self._remember(aggregate_id, final)
                if version // self._snapshot_every > loaded.version // self._snapshot_every:
                    await self.save_snapshot(aggregate_id, final)
            for queued, outcome in outcomes:
                if isinstance(outcome, Exception):
                    queued.outcome.set_exception(outcome)
                else:
                    queued.outcome.set_result(outcome)
            return True
        for queued in batch:
            queued.outcome.set_exception(
                ConcurrencyError(f"{stream}: gave up after {self._max_attempts} attempts")
            )
        return True

    async def _execute(
        self,
        aggregate_id: str,
        command: Callable[[State], Sequence[Event]],
        causation_id: str,
        correlation_id: str = "",
    ) -> Executed[State, Event]:
        kind = self._kind
        stream = kind.stream(aggregate_id)
        for _ in range(self._max_attempts):
            loaded = await self.load(aggregate_id)
            decided = list(command(loaded.state))
            if not decided:
                return Executed(loaded, [])
            events = self._new_events(aggregate_id, decided, causation_id, correlation_id)
            try:
                result = await self._append(aggregate_id, events, loaded.version)
            except WrongExpectedVersionError:
                continue
            state = kind.fold(loaded.state, decided)
            after = Loaded(state, result.version, loaded.snapshot_version, loaded.events_read)
            if result.version == loaded.version + len(decided):
                self._remember(aggregate_id, after)
            else:  # a retried append answered with an earlier result: reload next time
                self._cache.pop(aggregate_id, None)
            if result.version // self._snapshot_every > loaded.version // self._snapshot_every:
                await self.save_snapshot(aggregate_id, after)
            return Executed(after, decided)
        raise ConcurrencyError(f"{stream}: gave up after {self._max_attempts} conflicting attempts")

    async def save_snapshot(self, aggregate_id: str, loaded: Loaded[State]) -> None:
        kind = self._kind
        values = dict(kind.to_snapshot(loaded.state))
        personal = self._personal
        if personal is not None and any(values.get(f) for f in personal.in_snapshot):
            sealing = await personal.for_writing(aggregate_id)
            values = seal_fields(sealing, personal.in_snapshot, values)
        data = json.dumps(values, separators=(",", ":")).encode()
        await self._client.save_snapshot(
            kind.stream(aggregate_id),
            loaded.version,
            SNAPSHOT_TYPE,
            data,
            {"schema": str(kind.snapshot_schema)},
        )

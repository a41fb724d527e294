"""`event_store.client.streams.Streams`: KurrentDB's stream calls, answered by our store.

Every append goes through `EventStoreService.submit_append`, so the same checks, limits, access
rules, metrics and group commit apply as on our own port; reads and subscriptions use the same
Reader and LiveTail. What differs is only the wire: answers and errors are shaped as KurrentDB's
clients expect them (see `mapping` for the numbering).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.kurrentdb.protocols.v1 import shared_pb2, streams_pb2
from eventstore_server.access import ALL_STREAMS
from eventstore_server.errors import (
    DuplicateEventId,
    InvalidArgument,
    StoreError,
    StreamDeleted,
    Unavailable,
    WrongExpectedVersion,
)
from eventstore_server.handling import Context
from eventstore_server.kurrentdb import mapping, stream_metadata
from eventstore_server.kurrentdb.answers import kurrent_answers
from eventstore_server.kurrentdb.filters import EventFilter, event_filter
from eventstore_server.service import EventStoreService
from eventstore_server.sql_codes import Expectation
from eventstore_server.subscriptions import Target, subscribe
from eventstore_server.validation import MAX_INT64, category_of, stream_name
from eventstore_server.writer import CONNECTION_ERRORS

Options = streams_pb2.ReadReq.Options
BACKWARDS = Options.ReadDirection.Backwards
MAX_PENDING_BATCHES = 256  # BatchAppend requests taken and not yet answered, per call


@dataclass(frozen=True)
class Written:
    """An append's outcome in KurrentDB's terms: the stream's revision after it (-1: no
    stream) and the position of its last event (0: none, an empty append)."""

    revision: int
    position: int


class WrongRevision(StoreError):
    """An expected revision that does not hold, with both sides in KurrentDB's numbering."""

    code = WrongExpectedVersion.code
    reason = WrongExpectedVersion.reason

    def __init__(self, stream: str, expected: int, actual_version: int) -> None:
        self.expected = expected  # ours
        self.actual = actual_version - 1  # a revision; -1: no stream
        kurrent_expected = mapping.kurrent_expected(expected)
        super().__init__(
            f"WrongExpectedVersion. Stream: {stream}, "
            f"Expected version: {kurrent_expected}, Actual version: {self.actual}",
            stream=stream,
            **{"expected-version": str(kurrent_expected), "actual-version": str(self.actual)},
        )


class StreamSoftDeleted(StreamDeleted):
    """A soft-deleted stream where one that exists is expected: KurrentDB says it is deleted."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.message = f"stream {stream!r} is deleted"
        self.args = (self.message,)


def _not_found(identifier: shared_pb2.StreamIdentifier) -> streams_pb2.ReadResp:
    return streams_pb2.ReadResp(
        stream_not_found=streams_pb2.ReadResp.StreamNotFound(stream_identifier=identifier)
    )


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _count(value: int) -> int | None:
    """A read's count as the reader's max_count (0: no limit); None: read nothing."""
    if value == 0:
        return None
    return 0 if value >= MAX_INT64 else value


def _events(records: bytes) -> Sequence[pb.RecordedEvent]:
    """The events of a page (its records are a ReadStreamResponse's encoding)."""
    return pb.ReadStreamResponse.FromString(records).events


def _status(error: StoreError, detail: Message | None) -> status_pb2.Status:
    details = []
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def _batch_error(error: StoreError, stream: str) -> status_pb2.Status:
    """A refused BatchAppend as KurrentDB reports it: a google.rpc.Status packing one of its
    shared error messages."""
    if isinstance(error, WrongRevision):
        wrong = shared_pb2.WrongExpectedVersion()
        if error.actual < 0:
            wrong.current_no_stream.SetInParent()
        else:
            wrong.current_stream_revision = error.actual
        if error.expected >= 0:
            wrong.expected_stream_position = error.expected - 1
        elif error.expected == Expectation.NO_STREAM:
            wrong.expected_no_stream.SetInParent()
        elif error.expected == Expectation.STREAM_EXISTS:
            wrong.expected_stream_exists.SetInParent()
        else:
            wrong.expected_any.SetInParent()
        status = _status(error, wrong)
        status.code = grpc.StatusCode.ALREADY_EXISTS.value[0]  # as KurrentDB answers a batch
        return status
    if isinstance(error, StreamDeleted):
        return _status(
            error, shared_pb2.StreamDeleted(stream_identifier=mapping.identifier(stream))
        )
    if error.code.name in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return _status(error, shared_pb2.AccessDenied())
    if error.code.name == "INVALID_ARGUMENT" or isinstance(error, DuplicateEventId):
        return _status(error, shared_pb2.BadRequest(message=error.message))
    return _status(error, shared_pb2.Unknown())


@dataclass
class _Batch:
    options: streams_pb2.BatchAppendReq.Options | None = None
    events: list[pb.EventData] = field(default_factory=list)
    too_many: bool = False  # more events than one append may carry: kept no more, refused


class KurrentStreams:
    """The Streams service's handlers (registered by `serve.start`)."""

    def __init__(self, store: EventStoreService) -> None:
        self._store = store
        self._reader = store.reader
        self._tail = store.tail
        self._access = store.access
        self._limits = store.limits

    def _principal(self, context: Context) -> str:
        return self._access.principal(context, basic=True)

    def _name(self, identifier: shared_pb2.StreamIdentifier) -> str:
        return stream_name(mapping.stream_of(identifier), self._limits)

    # Appends -------------------------------------------------------------------------------

    async def _write(
        self, principal: str, stream: str, expected: int, events: list[pb.EventData]
    ) -> Written:
        """Append `events` to `stream` (a checked name) under `expected` (ours); WrongRevision,
        StreamDeleted or another StoreError when refused."""
        described = stream_metadata.described_stream(stream)
        if described is not None:
            return await self._write_metadata(principal, described, expected, events)
        if not events:
            return await self._expect(principal, stream, expected)
        request = mapping.with_expected(pb.AppendRequest(stream=stream, events=events), expected)
        try:
            result = await self._store.submit_append(principal, request)
        except WrongExpectedVersion as wrong:
            raise WrongRevision(stream, expected, wrong.actual) from None
        except DuplicateEventId:
            # Some of the ids are taken (a retry mixed with new events, say). KurrentDB checks
            # the expectation first: a stale one is reported as such.
            if expected != Expectation.ANY:
                await self._expect(principal, stream, expected)
            raise
        return Written(result.version - 1, result.position)

    async def _expect(self, principal: str, stream: str, expected: int) -> Written:
        """An append of nothing: only the expectation is checked, as KurrentDB does."""
        self._access.authorize(principal, "append", category_of(stream))
        view = await self._reader.stream_view(stream)
        if view is not None and view.tombstoned:
            raise StreamDeleted(stream)
        version = view.version if view is not None else 0
        exists = view is not None and not view.empty
        if (
            (expected >= 0 and version != expected)
            or (expected == Expectation.NO_STREAM and exists)
            or (expected == Expectation.STREAM_EXISTS and not exists)
        ):
            raise WrongRevision(stream, expected, version)
        return Written(version - 1, 0)

    async def _write_metadata(
        self, principal: str, stream: str, expected: int, events: list[pb.EventData]
    ) -> Written:
        """An append to `$$<stream>`: the last event's JSON becomes the stream's metadata."""
        stream = stream_name(stream, self._limits)
        if not events:
            raise InvalidArgument("a metadata append needs an event", field="events")
        rules = stream_metadata.rules_from_json(events[-1].data)
        try:
            version = await self._store.set_stream_rules(principal, stream, rules, expected)
        except WrongExpectedVersion as wrong:
            name = stream_metadata.PREFIX + stream
            raise WrongRevision(name, expected, wrong.actual) from None
        return Written(version - 1, await self._reader.head())

    @kurrent_answers
    async def Append(
        self, requests: AsyncIterator[streams_pb2.AppendReq], context: Context
    ) -> streams_pb2.AppendResp:
        principal = self._principal(context)
        options: streams_pb2.AppendReq.Options | None = None
        events: list[pb.EventData] = []
        async for request in requests:
            if request.WhichOneof("content") == "options":
                if options is not None:
                    raise InvalidArgument("options were sent twice", field="options")
                options = request.options
            elif options is None:
                raise InvalidArgument("options must come first", field="options")
            else:
                message = request.proposed_message
                if len(events) >= self._limits.max_events_per_append:
                    raise InvalidArgument(
                        f"an append may carry at most {self._limits.max_events_per_append} events",
                        field="proposed_message",
                    )
                events.append(
                    mapping.event_data(
                        message.id, message.metadata, message.custom_metadata, message.data
                    )
                )
        if options is None:
            raise InvalidArgument("an append needs options", field="options")
        stream = self._name(options.stream_identifier)
        expected = mapping.expected_version(options, "expected_stream_revision")
        try:
            written = await self._write(principal, stream, expected, events)
        except WrongRevision as wrong:
            return _wrong_append(wrong)
        success = streams_pb2.AppendResp.Success()
        if written.revision < 0:
            success.no_stream.SetInParent()
        else:
            success.current_revision = written.revision
        if written.position:
            success.position.commit_position = written.position
            success.position.prepare_position = written.position
        else:
            success.no_position.SetInParent()
        return streams_pb2.AppendResp(success=success)

    @kurrent_answers
    async def BatchAppend(
        self, requests: AsyncIterator[streams_pb2.BatchAppendReq], context: Context
    ) -> AsyncIterator[streams_pb2.BatchAppendResp]:
        """Batches as they come, each answered when it is decided (in any order, by correlation
        id); a batch may arrive in several requests, the last with `is_final`."""
        principal: str | StoreError
        try:
            principal = self._principal(context)
        except StoreError as refused:  # answered per batch, as KurrentDB does
            principal = refused
        answered: asyncio.Queue[streams_pb2.BatchAppendResp | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_PENDING_BATCHES)
        pending: set[asyncio.Task[None]] = set()

        async def take() -> None:
            open_batches: dict[str, _Batch] = {}
            try:
                async for request in requests:
                    key = mapping.uuid_text(request.correlation_id)
                    batch = open_batches.setdefault(key, _Batch())
                    if len(open_batches) > MAX_PENDING_BATCHES:
                        raise InvalidArgument(
                            f"more than {MAX_PENDING_BATCHES} batches are open at once",
                            field="correlation_id",
                        )
                    if request.HasField("options"):
                        batch.options = request.options
                    most = self._limits.max_events_per_append
                    if len(batch.events) + len(request.proposed_messages) > most:
                        batch.too_many, batch.events = True, []
                    for message in [] if batch.too_many else request.proposed_messages:
                        batch.events.append(
                            mapping.event_data(
                                message.id, message.metadata, message.custom_metadata, message.data
                            )
                        )
                    if request.is_final:
                        del open_batches[key]
                        await slots.acquire()
                        task = asyncio.create_task(
                            self._batch(principal, request.correlation_id, batch, answered)
                        )
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                        task.add_done_callback(lambda _: slots.release())
            finally:
                if pending:
                    await asyncio.wait(list(pending))
                answered.put_nowait(None)

        taker = asyncio.create_task(take())
        try:
            while (answer := await answered.get()) is not None:
                yield answer
            await taker  # a request stream that broke ends the call with its error
        finally:
            taker.cancel()
            for task in list(pending):
                task.cancel()

    async def _batch(
        self,
        principal: str | StoreError,
        correlation_id: shared_pb2.UUID,
        batch: _Batch,
        answered: asyncio.Queue[streams_pb2.BatchAppendResp | None],
    ) -> None:
        options = batch.options or streams_pb2.BatchAppendReq.Options()
        answer = streams_pb2.BatchAppendResp(
            correlation_id=correlation_id, stream_identifier=options.stream_identifier
        )
        which = options.WhichOneof("expected_stream_position")
        if which == "stream_position":
            answer.stream_position = options.stream_position
        elif which is not None:
            getattr(answer, which).SetInParent()
        stream = ""
        try:
            if isinstance(principal, StoreError):
                raise principal
            if batch.options is None:
                raise InvalidArgument("a batch needs options", field="options")
            if batch.too_many:
                raise InvalidArgument(
                    f"a batch may carry at most {self._limits.max_events_per_append} events",
                    field="proposed_messages",
                )
            stream = self._name(options.stream_identifier)
            expected = mapping.expected_version(options, "expected_stream_position")
            written = await self._write(principal, stream, expected, batch.events)
        except StoreError as error:
            answer.error.CopyFrom(_batch_error(error, stream))
        except CONNECTION_ERRORS as exc:
            unavailable = Unavailable(f"database unavailable: {exc.__class__.__name__}")
            answer.error.CopyFrom(_batch_error(unavailable, stream))
        else:
            if written.revision < 0:
                answer.success.no_stream.SetInParent()
            else:
                answer.success.current_revision = written.revision
            if written.position:
                answer.success.position.commit_position = written.position
                answer.success.position.prepare_position = written.position
            else:
                answer.success.no_position.SetInParent()
        answered.put_nowait(answer)

    # Deletes -------------------------------------------------------------------------------

    async def _delete(self, options: Any, context: Context, tombstone: bool) -> int:
        principal = self._principal(context)
        stream = self._name(options.stream_identifier)
        if stream_metadata.described_stream(stream) is not None:
            raise InvalidArgument("a metadata stream cannot be deleted", field="stream_name")
        expected = mapping.expected_version(options, "expected_stream_revision")
        try:
            return await self._store.delete_stream(principal, stream, expected, tombstone)
        except WrongExpectedVersion as wrong:
            view = await self._reader.stream_view(stream)
            if expected == Expectation.STREAM_EXISTS and view is not None and view.version:
                raise StreamSoftDeleted(stream) from None  # as KurrentDB reports it
            raise WrongRevision(stream, expected, wrong.actual) from None

    @kurrent_answers
    async def Delete(self, request: streams_pb2.DeleteReq, context: Context) -> Message:
        position = await self._delete(request.options, context, tombstone=False)
        return streams_pb2.DeleteResp(
            position=streams_pb2.DeleteResp.Position(
                commit_position=position, prepare_position=position
            )
        )

    @kurrent_answers
    async def Tombstone(self, request: streams_pb2.TombstoneReq, context: Context) -> Message:
        position = await self._delete(request.options, context, tombstone=True)
        return streams_pb2.TombstoneResp(
            position=streams_pb2.TombstoneResp.Position(
                commit_position=position, prepare_position=position
            )
        )

    # Reads and subscriptions ---------------------------------------------------------------

    @kurrent_answers
    async def Read(
        self, request: streams_pb2.ReadReq, context: Context
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        principal = self._principal(context)
        options = request.options
        structured = options.uuid_option.WhichOneof("content") == "structured"
        which = options.WhichOneof("stream_option")
        if which not in ("stream", "all"):
            raise InvalidArgument("a read needs a stream or all", field="stream_option")
        if options.WhichOneof("count_option") == "subscription":
            reads = self._subscribe(principal, options, structured)
        elif which == "stream":
            if options.WhichOneof("filter_option") == "filter":
                raise InvalidArgument("filters apply to $all only", field="filter")
            reads = self._read_stream(principal, options, structured)
        else:
            reads = self._read_all(principal, options, structured)
        async for response in reads:
            yield response

    async def _read_stream(
        self, principal: str, options: Options, structured: bool
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        count = _count(options.count)
        stream = self._name(options.stream.stream_identifier)
        described = stream_metadata.described_stream(stream)
        if described is not None:
            metadata = self._read_metadata(principal, described, options, count, structured)
            async for response in metadata:
                yield response
            return
        self._access.authorize(principal, "read", category_of(stream))
        view = await self._reader.stream_view(stream)
        if view is not None and view.tombstoned:
            raise StreamDeleted(stream)  # FAILED_PRECONDITION "... is deleted", as KurrentDB
        if view is None or view.empty:
            # KurrentDB reports a soft-deleted stream as not found, too.
            yield _not_found(options.stream.stream_identifier)
            return
        if count is None:
            return
        backwards = options.read_direction == BACKWARDS
        start = options.stream.WhichOneof("revision_option")
        if start == "revision":
            from_version = min(options.stream.revision, MAX_INT64 - 1) + 1
        elif start == "end":
            if not backwards:
                return
            from_version = 0  # the reader's "from the last"
        else:
            from_version = 1
        pages = self._reader.read_stream(stream, from_version, count, backwards, None, view)
        async for page in pages:
            for event in _events(page.records):
                yield mapping.read_event(event, structured)

    async def _read_metadata(
        self, principal: str, stream: str, options: Options, count: int | None, structured: bool
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        found = await self._store.stream_rules(
            principal, stream_name(stream, self._limits), with_deletion=True
        )
        if found is None:
            yield _not_found(options.stream.stream_identifier)
            return
        rules, version = found
        # Only the current metadata is kept: it is read when a read from the given revision
        # (the start: 0, the end: past every revision) reaches its revision.
        origin = options.stream.WhichOneof("revision_option")
        bound = {"revision": options.stream.revision, "end": MAX_INT64}.get(origin or "", 0)
        backwards = options.read_direction == BACKWARDS
        if count is None or (version - 1 > bound if backwards else version - 1 < bound):
            return
        head = await self._reader.head()
        event = stream_metadata.metadata_event(stream, rules, version, head)
        yield mapping.read_event(event, structured)

    async def _read_all(
        self, principal: str, options: Options, structured: bool
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        self._access.authorize(principal, "read", ALL_STREAMS)
        count = _count(options.count)
        if count is None:
            return
        chosen = event_filter(options)
        start = options.all.WhichOneof("all_option")
        position = options.all.position.commit_position
        if options.read_direction == BACKWARDS:
            if start == "start":
                return
            # From a position: the events before it, as KurrentDB reads its log backwards.
            before = min(position, MAX_INT64) if start == "position" else 0
            pages = self._reader.read_all_backwards(before, 0 if chosen else count)
        else:
            if start == "end":
                return
            # From a position: that event and those after it.
            after = max(min(position, MAX_INT64) - 1, 0) if start == "position" else 0
            pages = self._reader.read_all(after, 0 if chosen else count)
        sent = 0
        async for page in pages:
            for event in _events(page.records):
                if chosen is not None and not chosen.test(event):
                    continue
                yield mapping.read_event(event, structured)
                sent += 1
                if sent == count:
                    return

    async def _subscribe(
        self, principal: str, options: Options, structured: bool
    ) -> AsyncIterator[streams_pb2.ReadResp]:
        """Confirmation, then the events after the given revision or position, `caught_up`,
        then live events; a filtered $all subscription also reports checkpoints."""
        chosen: EventFilter | None = None
        if options.WhichOneof("stream_option") == "stream":
            if options.WhichOneof("filter_option") == "filter":
                raise InvalidArgument("filters apply to $all only", field="filter")
            stream = self._name(options.stream.stream_identifier)
            if stream_metadata.described_stream(stream) is not None:
                raise InvalidArgument("metadata streams cannot be subscribed to", field="stream")
            self._access.authorize(principal, "subscribe", category_of(stream))
            view = await self._reader.stream_view(stream)
            if view is not None and view.tombstoned:
                raise StreamDeleted(stream)
            start = options.stream.WhichOneof("revision_option")
            if start == "revision":
                after_version = min(options.stream.revision, MAX_INT64 - 1) + 1
            elif start == "end":
                after_version = view.version if view is not None else 0
            else:
                after_version = 0
            target, after = Target(stream=stream, after_version=after_version), 0
        else:
            self._access.authorize(principal, "subscribe", ALL_STREAMS)
            chosen = event_filter(options)
            origin = options.all.WhichOneof("all_option")
            if origin == "position":
                after = min(options.all.position.commit_position, MAX_INT64)
            elif origin == "end":
                after = await self._reader.head()
            else:
                after = 0
            target = Target()
        checkpointed = after
        last_version = target.after_version
        feed = subscribe(self._reader, self._tail, target, after, self._limits.read_page_size)
        try:
            with self._store.subscription_slot(principal):
                yield streams_pb2.ReadResp(
                    confirmation=streams_pb2.ReadResp.SubscriptionConfirmation(
                        subscription_id=str(uuid.uuid4())
                    )
                )
                async for message in feed:
                    response = pb.SubscribeResponse.FromString(message)
                    for event in response.events:
                        if chosen is None or chosen.test(event):
                            yield mapping.read_event(event, structured)
                        last_version = event.version
                    scanned = response.scanned_position
                    if response.caught_up:
                        yield _caught_up(target, last_version, scanned)
                    elif (
                        chosen is not None
                        and scanned > checkpointed
                        and (
                            not response.events or scanned - checkpointed >= chosen.checkpoint_every
                        )
                    ):
                        checkpointed = scanned
                        yield streams_pb2.ReadResp(
                            checkpoint=streams_pb2.ReadResp.Checkpoint(
                                commit_position=scanned, prepare_position=scanned, timestamp=_now()
                            )
                        )
        finally:
            with contextlib.suppress(Exception):
                await feed.aclose()  # type: ignore[attr-defined]


def _caught_up(target: Target, last_version: int, scanned: int) -> streams_pb2.ReadResp:
    caught_up = streams_pb2.ReadResp.CaughtUp(timestamp=_now())
    if target.stream:
        if last_version:
            caught_up.stream_revision = last_version - 1
    elif scanned:
        caught_up.position.commit_position = scanned
        caught_up.position.prepare_position = scanned
    return streams_pb2.ReadResp(caught_up=caught_up)


def _wrong_append(wrong: WrongRevision) -> streams_pb2.AppendResp:
    """A wrong expected revision on Append: an answer, not an error (KurrentDB's wire); both the
    current fields and the 20.6.0 ones clients of that version read."""
    answer = streams_pb2.AppendResp.WrongExpectedVersion()
    if wrong.actual < 0:
        answer.current_no_stream.SetInParent()
        answer.no_stream_20_6_0.SetInParent()
    else:
        answer.current_revision = wrong.actual
        answer.current_revision_20_6_0 = wrong.actual
    if wrong.expected >= 0:
        answer.expected_revision = wrong.expected - 1
        answer.expected_revision_20_6_0 = wrong.expected - 1
    elif wrong.expected == Expectation.NO_STREAM:
        answer.expected_no_stream.SetInParent()
    elif wrong.expected == Expectation.STREAM_EXISTS:
        answer.expected_stream_exists.SetInParent()
        answer.stream_exists_20_6_0.SetInParent()
    else:
        answer.expected_any.SetInParent()
        answer.any_20_6_0.SetInParent()
    return streams_pb2.AppendResp(wrong_expected_version=answer)

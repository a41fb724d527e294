"""AppendSession and LoadStream: the store's calls that take the per-call cost of Python gRPC off
the hot path (a part of `EventStoreService`).

A unary call costs the client and the server more CPU than the store's whole work for a small
append (see "Appends on one call" in the README); a message on an open stream costs less
(measured here: the store's CPU per append 186 µs on a session against 202 µs unary, and a
bare bidi echo 1.2-1.3x a bare unary one). A session carries many appends, each answered on
its own by correlation id with exactly what a unary Append would answer, through the same
`submit_append`: so the group commit sees the same batches, and every rule, limit, metric and
access check holds per append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from opentelemetry import propagate, trace

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import metrics
from eventstore_server.access import Access
from eventstore_server.config import Limits
from eventstore_server.errors import StoreError, Unavailable
from eventstore_server.handling import Context, answers, as_of_time, position_field
from eventstore_server.reader import Reader
from eventstore_server.validation import category_of, metadata_json, stream_name
from eventstore_server.wire import field, varint
from eventstore_server.writer import CONNECTION_ERRORS, AppendResult

# Appends of one session taken but not yet answered on the wire, at most. At the limit the
# session stops reading requests, and HTTP/2 flow control holds the client back: backpressure,
# not memory (a client that stops reading answers stops being read too).
MAX_PENDING = 1024
MAX_PACKED = 256  # answers in one message, at most (a message stays well under gRPC's 4 MiB)
TRACE_KEYS = ("traceparent", "tracestate")

_tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)


def _span(request: pb.AppendRequest) -> trace.Span:
    """The append's span: a child of the trace context its events carry; none without one."""
    metadata: Mapping[str, str] = request.events[0].metadata if request.events else {}
    if "traceparent" not in metadata:
        return trace.INVALID_SPAN
    parent = propagate.extract({k: metadata[k] for k in TRACE_KEYS if k in metadata})
    return _tracer.start_span(
        "eventstore AppendSession append", context=parent, kind=trace.SpanKind.SERVER
    )


def _answer_success(correlation_id: int, written: AppendResult) -> bytes:
    """A SessionAnswer with its AppendResponse, encoded by hand (fields 1 and 2; pinned by
    tests/unit/test_sql_seams.py): it is also a whole AppendSessionResponse."""
    success = b"\x08" + varint(written.version) + b"\x10" + varint(written.position)
    return b"\x08" + varint(correlation_id) + field(0x12, success)


def _answer_error(correlation_id: int, error: StoreError) -> bytes:
    answer = pb.SessionAnswer(correlation_id=correlation_id, error=error.status_message())
    return answer.SerializeToString()


def _packed(answers: list[bytes]) -> bytes:
    """Answers as one AppendSessionResponse's `more` (field 4)."""
    return b"".join(field(0x22, answer) for answer in answers)


def _unexpected(exc: BaseException) -> StoreError:
    if isinstance(exc, CONNECTION_ERRORS):
        return Unavailable(f"database unavailable: {exc.__class__.__name__}")
    log.error("append session: unexpected failure", exc_info=exc)
    return StoreError(f"internal error: {exc.__class__.__name__}")


class _Call:
    """One AppendSession call's state shared by its reading and its answering sides."""

    def __init__(self, principal: str | StoreError) -> None:
        self.principal = principal
        self.answered: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.slots = asyncio.Semaphore(MAX_PENDING)
        self.pending: set[asyncio.Future[Any]] = set()
        self.packs = False  # the client sent `more`: it reads packed answers too

    def next_answers(self, first: bytes) -> tuple[bytes, int]:
        """The answer `first` and, to a client that packs, every other one ready now: the
        message, and how many answers it carries."""
        if not self.packs or self.answered.empty():
            return first, 1
        answers = [first]
        while len(answers) < MAX_PACKED and not self.answered.empty():
            answer = self.answered.get_nowait()
            if answer is None:  # the end: put back for the caller's loop
                self.answered.put_nowait(None)
                break
            answers.append(answer)
        return _packed(answers), len(answers)


class SessionHandlers:
    _access: Access
    _limits: Limits
    _reader: Reader
    _closing: asyncio.Event

    def submit_append(
        self, principal: str, request: pb.AppendRequest
    ) -> asyncio.Future[AppendResult]:
        raise NotImplementedError  # EventStoreService's: the rules and metrics of every append

    @answers
    async def AppendSession(
        self, requests: AsyncIterator[pb.AppendSessionRequest], context: Context
    ) -> AsyncIterator[bytes]:
        """Appends as they come, answers as they finish (in any order). The call ends when the
        client stops sending and every append is answered, or when the server shuts down:
        then it stops reading, answers what it has taken, and ends with UNAVAILABLE.

        No task per append: each is checked where it is read and handed to the group commit,
        whose result a callback turns into the answer (measured: a task, a span and a wait per
        append cost as much CPU as the unary call this replaces). Answers are encoded by hand,
        and packed several to a message for a client that packs its appends."""
        # A caller without valid credentials gets its answer per append, as unary Appends
        # would: aborting the call at once races the client's first writes, and gRPC's core
        # then reports a bare INTERNAL instead of UNAUTHENTICATED.
        principal: str | StoreError
        try:
            principal = self._access.principal(context)
        except StoreError as refused:
            principal = refused
        call = _Call(principal)
        taker = asyncio.create_task(self._take(requests, call))
        watcher = asyncio.create_task(self._closing.wait())
        watcher.add_done_callback(lambda _: taker.cancel())  # shutdown: stop reading
        try:
            while (answer := await call.answered.get()) is not None:
                message, count = call.next_answers(answer)
                yield message
                for _ in range(count):  # after they are sent: a client that does not read waits
                    call.slots.release()
            with contextlib.suppress(asyncio.CancelledError):
                await taker  # a request stream that broke ends the call with its error
        finally:
            watcher.cancel()
            taker.cancel()
        if self._closing.is_set():
            raise Unavailable("the server is shutting down; open another session")

    async def _take(self, requests: AsyncIterator[pb.AppendSessionRequest], call: _Call) -> None:
        try:
            async for request in requests:
                if request.more:
                    call.packs = True
                    if request.HasField("append"):
                        await self._take_one(call, request.correlation_id, request.append)
                    for item in request.more:
                        await self._take_one(call, item.correlation_id, item.append)
                else:
                    await self._take_one(call, request.correlation_id, request.append)
        finally:
            if call.pending:  # every append taken is answered before the call ends
                await asyncio.wait(list(call.pending))
            call.answered.put_nowait(None)

    async def _take_one(self, call: _Call, correlation_id: int, append: pb.AppendRequest) -> None:
        await call.slots.acquire()
        future = self._submit(call, correlation_id, append)
        if future is not None:
            call.pending.add(future)
            future.add_done_callback(call.pending.discard)

    def _submit(
        self, call: _Call, correlation_id: int, append: pb.AppendRequest
    ) -> asyncio.Future[Any] | None:
        """Check and queue one append; its answer goes to `call.answered` when it is decided.
        With tracing on, it runs in a span whose parent is the producer's trace context from
        the events' metadata (a session call spans many traces), linked to its commit."""
        answered = call.answered
        span = _span(append)
        try:
            with trace.use_span(span, end_on_exit=False):
                if isinstance(call.principal, StoreError):
                    metrics.APPENDS.labels(call.principal.reason.lower()).inc()
                    raise call.principal
                future = self.submit_append(call.principal, append)
        except StoreError as error:
            span.end()
            answered.put_nowait(_answer_error(correlation_id, error))
            return None

        def done(result: asyncio.Future[AppendResult]) -> None:
            span.end()
            try:
                answered.put_nowait(_answer_success(correlation_id, result.result()))
            except StoreError as error:
                answered.put_nowait(_answer_error(correlation_id, error))
            except Exception as exc:  # a lost connection, or a bug: still an answer
                answered.put_nowait(_answer_error(correlation_id, _unexpected(exc)))

        future.add_done_callback(done)
        return future

    @answers
    async def LoadStream(
        self, request: pb.LoadStreamRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """The snapshot (if any fits), then pages of the events after it, encoded as stored."""
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        self._access.authorize(principal, "read", category_of(stream))
        until = position_field(request.max_version, "max_version")
        wanted, _ = metadata_json(request.snapshot_metadata, self._limits, "snapshot_metadata")
        as_of = as_of_time(request, "as_of")
        view = await self._reader.stream_view(stream)
        if view is None:
            return
        # A tombstone's snapshots went with it; read_stream refuses the stream itself.
        snapshot = await self._reader.read_snapshot(stream, until, wanted, as_of)
        start = snapshot.version + 1 if snapshot is not None else 1
        if snapshot is not None:
            yield pb.LoadStreamResponse(snapshot=snapshot).SerializeToString()
        count = until - start + 1 if until else 0
        if until and count <= 0:
            return
        pages = self._reader.read_stream(stream, start, count, False, as_of, view)
        async for page in pages:
            yield page.records  # framed as field 1: LoadStreamResponse.events

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
from eventstore_server.handling import Context, answers, position_field
from eventstore_server.reader import Reader
from eventstore_server.validation import category_of, metadata_json, stream_name
from eventstore_server.writer import CONNECTION_ERRORS, AppendResult

# Appends of one session taken but not yet answered on the wire, at most. At the limit the
# session stops reading requests, and HTTP/2 flow control holds the client back: backpressure,
# not memory (a client that stops reading answers stops being read too).
MAX_PENDING = 1024
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


def _failed(correlation_id: int, error: StoreError) -> pb.AppendSessionResponse:
    return pb.AppendSessionResponse(correlation_id=correlation_id, error=error.status_message())


def _unexpected(exc: BaseException) -> StoreError:
    if isinstance(exc, CONNECTION_ERRORS):
        return Unavailable(f"database unavailable: {exc.__class__.__name__}")
    log.error("append session: unexpected failure", exc_info=exc)
    return StoreError(f"internal error: {exc.__class__.__name__}")


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
    ) -> AsyncIterator[pb.AppendSessionResponse]:
        """Appends as they come, answers as they finish (in any order). The call ends when the
        client stops sending and every append is answered, or when the server shuts down:
        then it stops reading, answers what it has taken, and ends with UNAVAILABLE.

        No task per append: each is checked where it is read and handed to the group commit,
        whose result a callback turns into the answer (measured: a task, a span and a wait per
        append cost as much CPU as the unary call this replaces)."""
        # A caller without valid credentials gets its answer per append, as unary Appends
        # would: aborting the call at once races the client's first writes, and gRPC's core
        # then reports a bare INTERNAL instead of UNAUTHENTICATED.
        principal: str | StoreError
        try:
            principal = self._access.principal(context)
        except StoreError as refused:
            principal = refused
        answered: asyncio.Queue[pb.AppendSessionResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_PENDING)
        pending: set[asyncio.Future[Any]] = set()
        taker = asyncio.create_task(self._take(requests, principal, answered, slots, pending))
        watcher = asyncio.create_task(self._closing.wait())
        watcher.add_done_callback(lambda _: taker.cancel())  # shutdown: stop reading
        try:
            while (response := await answered.get()) is not None:
                yield response
                slots.release()  # after the answer is sent: a client that does not read is held
            with contextlib.suppress(asyncio.CancelledError):
                await taker  # a request stream that broke ends the call with its error
        finally:
            watcher.cancel()
            taker.cancel()
        if self._closing.is_set():
            raise Unavailable("the server is shutting down; open another session")

    async def _take(
        self,
        requests: AsyncIterator[pb.AppendSessionRequest],
        principal: str | StoreError,
        answered: asyncio.Queue[pb.AppendSessionResponse | None],
        slots: asyncio.Semaphore,
        pending: set[asyncio.Future[Any]],
    ) -> None:
        try:
            async for request in requests:
                await slots.acquire()
                future = self._submit(principal, request, answered)
                if future is not None:
                    pending.add(future)
                    future.add_done_callback(pending.discard)
        finally:
            if pending:  # every append taken is answered before the call ends
                await asyncio.wait(list(pending))
            answered.put_nowait(None)

    def _submit(
        self,
        principal: str | StoreError,
        request: pb.AppendSessionRequest,
        answered: asyncio.Queue[pb.AppendSessionResponse | None],
    ) -> asyncio.Future[Any] | None:
        """Check and queue one append; its answer goes to `answered` when it is decided.
        With tracing on, it runs in a span whose parent is the producer's trace context from
        the events' metadata (a session call spans many traces), linked to its commit."""
        correlation_id = request.correlation_id
        span = _span(request.append)
        try:
            with trace.use_span(span, end_on_exit=False):
                if isinstance(principal, StoreError):
                    metrics.APPENDS.labels(principal.reason.lower()).inc()
                    raise principal
                future = self.submit_append(principal, request.append)
        except StoreError as error:
            span.end()
            answered.put_nowait(_failed(correlation_id, error))
            return None

        def done(result: asyncio.Future[AppendResult]) -> None:
            span.end()
            try:
                written = result.result()
            except StoreError as error:
                answered.put_nowait(_failed(correlation_id, error))
                return
            except Exception as exc:  # a lost connection, or a bug: still an answer
                answered.put_nowait(_failed(correlation_id, _unexpected(exc)))
                return
            success = pb.AppendResponse(version=written.version, position=written.position)
            answered.put_nowait(
                pb.AppendSessionResponse(correlation_id=correlation_id, success=success)
            )

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
        snapshot = await self._reader.read_snapshot(stream, until, wanted)
        start = snapshot.version + 1 if snapshot is not None else 1
        if snapshot is not None:
            yield pb.LoadStreamResponse(snapshot=snapshot).SerializeToString()
        count = until - start + 1 if until else 0
        if until and count <= 0:
            return
        async for page in self._reader.read_stream(stream, start, count, False):
            yield page.records  # framed as field 1: LoadStreamResponse.events

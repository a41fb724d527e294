"""AppendSession and LoadStream: the store's calls that take the per-call cost of Python gRPC off
the hot path (a part of `EventStoreService`).

A unary call costs the client and the server more CPU than the store's whole work for a small
append (see "Appends on one call" in the README); a message on an open stream costs about a
third of it. A session carries many appends, each answered on its own by correlation id with
exactly what a unary Append would answer, through the same `append_one`: so the group commit
sees the same batches, and every rule, limit, metric and access check holds per append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from opentelemetry import propagate, trace

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.access import Access
from eventstore_server.config import Limits
from eventstore_server.errors import StoreError, Unavailable
from eventstore_server.handling import Context, answers, position_field
from eventstore_server.reader import Reader
from eventstore_server.validation import category_of, metadata_json, stream_name
from eventstore_server.writer import CONNECTION_ERRORS

# Appends of one session taken but not yet answered on the wire, at most. At the limit the
# session stops reading requests, and HTTP/2 flow control holds the client back: backpressure,
# not memory (a client that stops reading answers stops being read too).
MAX_PENDING = 1024
TRACE_KEYS = ("traceparent", "tracestate")

_tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)


class SessionHandlers:
    _access: Access
    _limits: Limits
    _reader: Reader
    _closing: asyncio.Event

    async def append_one(self, principal: str, request: pb.AppendRequest) -> pb.AppendResponse:
        raise NotImplementedError  # EventStoreService's

    @answers
    async def AppendSession(
        self, requests: AsyncIterator[pb.AppendSessionRequest], context: Context
    ) -> AsyncIterator[pb.AppendSessionResponse]:
        """Appends as they come, answers as they finish (in any order). The call ends when the
        client stops sending and every append is answered, or when the server shuts down:
        then it stops reading, answers what it has taken, and ends with UNAVAILABLE."""
        principal = self._access.principal(context)
        answered: asyncio.Queue[pb.AppendSessionResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_PENDING)
        pending: set[asyncio.Task[None]] = set()

        async def one(request: pb.AppendSessionRequest) -> None:
            try:
                answer = await self._answer(principal, request)
            except Exception as exc:  # a bug: still an answer, so the slot and the call go on
                log.exception("append session: unexpected failure")
                answer = pb.AppendSessionResponse(
                    correlation_id=request.correlation_id,
                    error=StoreError(f"internal error: {exc.__class__.__name__}").status_message(),
                )
            answered.put_nowait(answer)

        async def take() -> None:
            try:
                incoming = aiter(requests)
                while True:
                    await slots.acquire()
                    request = await self._next_unless_closing(incoming)
                    if request is None:
                        break
                    task = asyncio.create_task(one(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            finally:
                if pending:
                    await asyncio.gather(*pending, return_exceptions=True)
                answered.put_nowait(None)

        taker = asyncio.create_task(take())
        try:
            while (response := await answered.get()) is not None:
                yield response
                slots.release()  # after the answer is sent: a client that does not read is held
            await taker  # its errors (a broken stream) end the call
        finally:
            taker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await taker
        if self._closing.is_set():
            raise Unavailable("the server is shutting down; open another session")

    async def _next_unless_closing(
        self, incoming: AsyncIterator[pb.AppendSessionRequest]
    ) -> pb.AppendSessionRequest | None:
        """The next request, or None once the client is done or the server is closing."""
        if self._closing.is_set():
            return None
        following = asyncio.ensure_future(anext(incoming, None))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            done, _ = await asyncio.wait({following, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if following in done:
            return following.result()
        following.cancel()
        return None

    async def _answer(
        self, principal: str, request: pb.AppendSessionRequest
    ) -> pb.AppendSessionResponse:
        """One append's answer. It runs in a span whose parent is the producer's trace context
        from the events' metadata (a session call spans many traces), linked to its commit."""
        metadata: Mapping[str, str] = (
            request.append.events[0].metadata if request.append.events else {}
        )
        parent = propagate.extract({k: metadata[k] for k in TRACE_KEYS if k in metadata})
        with _tracer.start_as_current_span(
            "eventstore AppendSession append", context=parent, kind=trace.SpanKind.SERVER
        ):
            try:
                success = await self.append_one(principal, request.append)
                return pb.AppendSessionResponse(
                    correlation_id=request.correlation_id, success=success
                )
            except StoreError as error:
                status = error.status_message()
            except CONNECTION_ERRORS as exc:
                status = Unavailable(
                    f"database unavailable: {exc.__class__.__name__}"
                ).status_message()
        return pb.AppendSessionResponse(correlation_id=request.correlation_id, error=status)

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

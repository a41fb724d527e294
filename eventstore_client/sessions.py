"""A process's concurrent appends multiplexed over one AppendSession call.

Each append gets a correlation id, goes out on the open call, and waits for its own answer:
the store answers it as a unary Append would (the same result or the same error), so callers
cannot tell the difference, except that a message on an open stream costs less CPU than a
unary call. When the call breaks (the store restarts, the network drops), every append still
waiting fails with UNAVAILABLE and the client's retry sends it again on a new call with the
same event ids, which the store recognises: nothing is written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.errors import EventStoreError, UnavailableError, from_rpc_error, from_status

SESSION_METHOD = "/eventstore.v1.EventStore/AppendSession"
MAX_PACKED = 256  # appends in one message, at most


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _session_append(correlation_id: int, request: pb.AppendRequest) -> bytes:
    """A SessionAppend (or a whole one-append AppendSessionRequest: fields 1 and 2 are the
    same), encoded by hand: the append is serialized once, never copied into a wrapper."""
    body = request.SerializeToString()
    return b"\x08" + _varint(correlation_id) + b"\x12" + _varint(len(body)) + body


def _pack(appends: list[bytes]) -> bytes:
    """Encoded appends as one AppendSessionRequest: alone, or in `more` (field 3)."""
    if len(appends) == 1:
        return appends[0]
    return b"".join(b"\x1a" + _varint(len(a)) + a for a in appends)


class _Session:
    """One open AppendSession call: grpc's own task sends from an async generator of this
    session's (ended with the session, so nothing of the call is left pending once it is
    over), a reader task matches answers.

    Appends that are ready together go out in one message (and the store answers those that
    finish together in one): a gRPC message costs more CPU than the appends it carries, and
    concurrent callers are exactly the case where many are ready at once."""

    def __init__(self, channel: grpc.aio.Channel, pack: bool, wait_for_ready: bool) -> None:
        method = channel.stream_stream(
            SESSION_METHOD,
            request_serializer=bytes,
            response_deserializer=pb.AppendSessionResponse.FromString,
        )
        self._pack = pack
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[pb.AppendResponse]] = {}
        self._ids = itertools.count(1)
        self.broken: EventStoreError | None = None
        self._call: Any = method(self._requests(), wait_for_ready=wait_for_ready)
        self._reader = asyncio.create_task(self._read())

    def submit(self, request: pb.AppendRequest) -> asyncio.Future[pb.AppendResponse]:
        future: asyncio.Future[pb.AppendResponse] = asyncio.get_running_loop().create_future()
        # Retrieved even when its caller left (cancelled, or past its deadline): no warning.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        correlation_id = next(self._ids)
        self._pending[correlation_id] = future
        self._outbox.put_nowait(_session_append(correlation_id, request))
        return future

    def forget(self, future: asyncio.Future[pb.AppendResponse]) -> None:
        """A caller that gave up (its deadline): its answer, if it comes, is dropped."""
        for key, waiting in list(self._pending.items()):
            if waiting is future:
                del self._pending[key]

    async def _requests(self) -> AsyncGenerator[bytes, None]:
        try:
            while (first := await self._outbox.get()) is not None:
                ready = [first]
                while self._pack and len(ready) < MAX_PACKED and not self._outbox.empty():
                    more = self._outbox.get_nowait()
                    if more is None:
                        yield _pack(ready)
                        return
                    ready.append(more)
                yield _pack(ready)
        except Exception as error:  # nothing more can be sent: every waiting append hears it
            self._break(error)
            raise

    async def _read(self) -> None:
        """Answers until the call ends; however it ends (an error status, or grpc.aio's
        InvalidStateError for a call that had ended), every append still waiting is failed,
        so no caller waits past the end of its call."""
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                if response.WhichOneof("result") is not None:
                    self._answer(response)
                for answer in response.more:
                    self._answer(answer)
            self._break(None)
        except Exception as error:
            self._break(error)
        # grpc.aio finishes its own tasks for the call once its status is in.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._call.code(), 5)

    def _answer(self, answer: pb.AppendSessionResponse | pb.SessionAnswer) -> None:
        future = self._pending.pop(answer.correlation_id, None)
        if future is None or future.done():
            return
        if answer.WhichOneof("result") == "success":
            future.set_result(answer.success)
        else:
            future.set_exception(from_status(answer.error))

    def _break(self, error: Exception | None) -> None:
        if self.broken is None:
            self.broken = (
                from_rpc_error(error)
                if isinstance(error, grpc.aio.AioRpcError)
                else UnavailableError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the append session ended{f': {error!r}' if error else ''}",
                )
            )
            if self.broken.code == grpc.StatusCode.CANCELLED:  # the call, not the append: retry
                self.broken = UnavailableError(grpc.StatusCode.UNAVAILABLE, self.broken.message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self.broken)
        self._pending.clear()
        self._call.cancel()
        self._outbox.put_nowait(None)  # the requests end: grpc's task sending them finishes

    async def close(self) -> None:
        self._break(None)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class AppendSessions:
    """Appends over `count` sessions, round robin, each opened when first needed and again
    after it broke. `pack`: appends ready together share a message (False: one per message,
    for a store that predates packing and would not answer the others)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        count: int = 1,
        pack: bool = True,
        wait_for_ready: bool = False,
    ) -> None:
        self._channel = channel
        self._pack = pack
        self._wait_for_ready = wait_for_ready
        self._sessions: list[_Session | None] = [None] * max(1, count)
        self._turn = itertools.cycle(range(len(self._sessions)))

    async def append(self, request: pb.AppendRequest, timeout: float | None) -> pb.AppendResponse:
        index = next(self._turn)
        session = self._sessions[index]
        if session is None or session.broken is not None:
            session = self._sessions[index] = _Session(
                self._channel, self._pack, self._wait_for_ready
            )
        future = session.submit(request)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            session.forget(future)
            raise EventStoreError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "no answer to the append in time"
            ) from None
        except asyncio.CancelledError:
            session.forget(future)  # its answer, if it comes, is nobody's
            raise

    async def close(self) -> None:
        for session in self._sessions:
            if session is not None:
                await session.close()

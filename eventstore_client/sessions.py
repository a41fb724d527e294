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
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client.errors import EventStoreError, UnavailableError, from_rpc_error, from_status


class _Session:
    """One open AppendSession call: a writer task sends, a reader task matches answers."""

    def __init__(self, stub: pb_grpc.EventStoreStub) -> None:
        self._call: Any = stub.AppendSession()
        self._outbox: asyncio.Queue[pb.AppendSessionRequest] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[pb.AppendResponse]] = {}
        self._ids = itertools.count(1)
        self.broken: EventStoreError | None = None
        self._tasks = [asyncio.create_task(self._write()), asyncio.create_task(self._read())]

    def submit(self, request: pb.AppendRequest) -> asyncio.Future[pb.AppendResponse]:
        future: asyncio.Future[pb.AppendResponse] = asyncio.get_running_loop().create_future()
        # Retrieved even when its caller left (cancelled, or past its deadline): no warning.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        correlation_id = next(self._ids)
        self._pending[correlation_id] = future
        self._outbox.put_nowait(
            pb.AppendSessionRequest(correlation_id=correlation_id, append=request)
        )
        return future

    def forget(self, future: asyncio.Future[pb.AppendResponse]) -> None:
        """A caller that gave up (its deadline): its answer, if it comes, is dropped."""
        for key, waiting in list(self._pending.items()):
            if waiting is future:
                del self._pending[key]

    async def _write(self) -> None:
        try:
            while True:
                await self._call.write(await self._outbox.get())
        except Exception:  # the call ended: the reader hears why, and says it
            return

    async def _read(self) -> None:
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                future = self._pending.pop(response.correlation_id, None)
                if future is None or future.done():
                    continue
                if response.WhichOneof("result") == "success":
                    future.set_result(response.success)
                else:
                    future.set_exception(from_status(response.error))
            self._break(None)
        except grpc.aio.AioRpcError as error:
            self._break(error)

    def _break(self, error: Exception | None) -> None:
        if self.broken is None:
            self.broken = (
                from_rpc_error(error)
                if isinstance(error, grpc.aio.AioRpcError)
                else UnavailableError(grpc.StatusCode.UNAVAILABLE, "the append session ended")
            )
            if self.broken.code == grpc.StatusCode.CANCELLED:  # the call, not the append: retry
                self.broken = UnavailableError(grpc.StatusCode.UNAVAILABLE, self.broken.message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self.broken)
        self._pending.clear()
        self._call.cancel()

    async def close(self) -> None:
        self._call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class AppendSessions:
    """Appends over `count` sessions, round robin, each opened when first needed and again
    after it broke."""

    def __init__(self, stub: pb_grpc.EventStoreStub, count: int = 1) -> None:
        self._stub = stub
        self._sessions: list[_Session | None] = [None] * max(1, count)
        self._turn = itertools.cycle(range(len(self._sessions)))

    async def append(self, request: pb.AppendRequest, timeout: float | None) -> pb.AppendResponse:
        index = next(self._turn)
        session = self._sessions[index]
        if session is None or session.broken is not None:
            session = self._sessions[index] = _Session(self._stub)
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

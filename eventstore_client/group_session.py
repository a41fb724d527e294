"""A consumer-group member's Consume call, as the client library holds it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client.errors import from_code, from_rpc_error

# How long leaving waits for the answers already given to be sent and the call to end.
LEAVE_TIMEOUT_S = 5.0


class GroupSession:
    """One member's Consume call: deliveries in, acks and nacks out, in order.

    The requests (the join, then the answers) are an async generator that grpc's own task
    sends from, and that this session ends: a call that grpc.aio fed through its own proxy (as
    it does for `write()` under a client interceptor such as the tracing one) left that proxy
    and the task sending from it pending for ever once the call had ended, and they were
    destroyed mid-flight. Leaving (`__aexit__`, whatever ended the call) ends the requests,
    cancels the call and awaits its end, so nothing of it outlives the `async with`. With
    `wait_for_ready` (the client's setting) the call waits for the store to be reachable
    instead of failing at once while the store restarts."""

    def __init__(
        self,
        stub: pb_grpc.EventStoreStub,
        group: str,
        member: str,
        max_in_flight: int,
        wait_for_ready: bool = False,
    ) -> None:
        self._outbox: asyncio.Queue[pb.ConsumeRequest | None] = asyncio.Queue()
        self._outbox.put_nowait(
            pb.ConsumeRequest(join=pb.Join(group=group, member=member, max_in_flight=max_in_flight))
        )
        self._acks: list[int] = []
        self._requests_ended = asyncio.Event()
        self._requests_failed: Exception | None = None
        self._call: Any = stub.Consume(self._requests(), wait_for_ready=wait_for_ready)
        self.last_heard = 0.0  # time.monotonic() of the store's last message (0: none yet)
        # The read under way. A reader cancelled mid-read must not cancel the call (grpc.aio
        # does when a read() is cancelled): the answers given so far still have to go out, so
        # reads are shielded, and leaving takes over the one a cancelled reader left behind.
        self._reading: asyncio.Future[Any] | None = None
        self.answered = asyncio.Event()  # the store's first message: the join was taken

    async def __aenter__(self) -> GroupSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Acks and nacks already given are sent, then the call is closed from this side and
        its end awaited (5 s at most), so the store applies them before the member leaves: a
        cancel could overtake them, and an acked event would come again."""
        self._outbox.put_nowait(None)
        if not self._call.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._finish(), LEAVE_TIMEOUT_S)
        self._call.cancel()
        if self._reading is not None:  # ends with the call
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._reading
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._call.code(), LEAVE_TIMEOUT_S)

    async def _finish(self) -> None:
        await self._requests_ended.wait()  # sent, and half-closed by grpc
        while await self._read() is not grpc.aio.EOF:
            pass  # deliveries after the last answer: the store takes them back as we leave

    async def _read(self) -> Any:
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._call.read())
        reading = self._reading
        try:
            return await asyncio.shield(reading)
        finally:
            if reading.done():
                self._reading = None

    async def _requests(self) -> AsyncGenerator[pb.ConsumeRequest, None]:
        try:
            while (request := await self._outbox.get()) is not None:
                if not request.WhichOneof("kind"):
                    positions, self._acks = self._acks, []
                    request = pb.ConsumeRequest(ack=pb.Ack(positions=positions))
                yield request
        except Exception as error:  # grpc cancels the call; the reader reports this instead
            self._requests_failed = error
            raise
        finally:
            self._requests_ended.set()

    async def _ended(self, error: BaseException) -> Exception:
        """Why the call ended: our own requests' failure, else the store's typed error (an
        AioRpcError says it; grpc.aio answers some calls on an ended call with
        InvalidStateError, so then ask the call itself)."""
        if self._requests_failed is not None:
            return self._requests_failed
        if isinstance(error, grpc.aio.AioRpcError):
            return from_rpc_error(error)
        try:
            code = await asyncio.wait_for(self._call.code(), LEAVE_TIMEOUT_S)
            details = await self._call.details()
        except Exception:
            code, details = grpc.StatusCode.UNAVAILABLE, ""
        if code == grpc.StatusCode.OK:
            code = grpc.StatusCode.UNAVAILABLE
        return from_code(code, details or f"the call ended: {error!r}")

    async def deliveries(self) -> AsyncGenerator[pb.Delivery, None]:
        """Deliveries until the server ends the call (raising why, if it was an error). The
        store's heartbeats (empty messages) only move `last_heard`."""
        try:
            while True:
                response = await self._read()
                if response is grpc.aio.EOF:  # ended with OK: an error status raises in read()
                    if self._requests_failed is not None:
                        raise self._requests_failed
                    return
                self.last_heard = time.monotonic()
                self.answered.set()
                for delivery in response.deliveries:
                    yield delivery
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            raise await self._ended(error) from None

    def ack(self, *positions: int) -> None:
        """Acks are sent together, as soon as the call takes the next message."""
        if not self._acks:
            self._outbox.put_nowait(pb.ConsumeRequest())  # a marker: send what has gathered
        self._acks.extend(positions)

    def nack(self, position: int, *, park: bool = False, reason: str = "") -> None:
        """Retry the event later (after a back-off; parked after the group's attempts), or
        park it now."""
        nack = pb.Nack(position=position, park=park, reason=reason)
        self._outbox.put_nowait(pb.ConsumeRequest(nack=nack))

"""A consumer-group member's Consume call, as the client library holds it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client.errors import from_rpc_error


class GroupSession:
    """One member's Consume call: deliveries in, acks and nacks out. Writes go through one
    task, in order (a gRPC call takes one write at a time)."""

    def __init__(
        self, stub: pb_grpc.EventStoreStub, group: str, member: str, max_in_flight: int
    ) -> None:
        self._call: Any = stub.Consume()
        self._join = pb.ConsumeRequest(
            join=pb.Join(group=group, member=member, max_in_flight=max_in_flight)
        )
        self._outbox: asyncio.Queue[pb.ConsumeRequest | None] = asyncio.Queue()
        self._acks: list[int] = []
        self._writer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GroupSession:
        try:
            await self._call.write(self._join)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        self._writer = asyncio.create_task(self._write())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Acks and nacks already given are sent, then the call is closed from this side and
        its end awaited (5 s at most each), so the store applies them before the member
        leaves: a cancel could overtake them, and an acked event would come again."""
        if self._writer is not None:
            self._outbox.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), 5)
            self._writer.cancel()
            if not self._call.done():  # (a reader that was cancelled has cancelled the call)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._finish(), 5)
        self._call.cancel()

    async def _finish(self) -> None:
        await self._call.done_writing()
        while await self._call.read() is not grpc.aio.EOF:
            pass  # deliveries after the last answer: the store takes them back as we leave

    async def deliveries(self) -> AsyncGenerator[pb.Delivery, None]:
        """Deliveries until the server ends the call (raising why, if it was an error)."""
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:  # ended with OK: an error status raises in read()
                    return
                for delivery in response.deliveries:
                    yield delivery
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None

    def ack(self, *positions: int) -> None:
        """Acks are sent together, as soon as the writer is free."""
        if not self._acks:
            self._outbox.put_nowait(pb.ConsumeRequest())  # a marker: send what has gathered
        self._acks.extend(positions)

    def nack(self, position: int, *, park: bool = False, reason: str = "") -> None:
        """Retry the event later (after a back-off; parked after the group's attempts), or
        park it now."""
        nack = pb.Nack(position=position, park=park, reason=reason)
        self._outbox.put_nowait(pb.ConsumeRequest(nack=nack))

    async def _write(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            while (request := await self._outbox.get()) is not None:
                if not request.WhichOneof("kind"):
                    positions, self._acks = self._acks, []
                    request = pb.ConsumeRequest(ack=pb.Ack(positions=positions))
                await self._call.write(request)

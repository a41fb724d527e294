"""The baseline: a bare grpc.aio EventStore that answers at once and stores nothing.

Append returns a fixed response; ReadStream and Subscribe stream pre-built batches of events of
the same shape the real store sends. Whatever the real store adds on top of this is its cost.
A Subscribe to a category is live: each Append to that category is echoed to it at once, with no
database and no commit, which is the floor of the live-latency benchmark on the same machine.
`python -m bench.bare_server --listen HOST:PORT`
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from hosting import event_loop


def sample_events(count: int, size: int = 100) -> list[pb.RecordedEvent]:
    return [
        pb.RecordedEvent(
            id="6f1c8e8e-0f3b-4b43-9b6e-1f2d3c4b5a69",
            stream="bench-1",
            version=i + 1,
            position=i + 1,
            type="Benchmarked",
            data=b"x" * size,
            content_type="application/json",
        )
        for i in range(count)
    ]


class BareEventStore(pb_grpc.EventStoreServicer):
    def __init__(self, page: int) -> None:
        self._page = page
        self._events = sample_events(page)
        self._live: dict[str, set[asyncio.Queue[pb.SubscribeResponse]]] = {}

    async def Append(self, request: pb.AppendRequest, context: Any) -> pb.AppendResponse:
        subscribers = self._live.get(request.stream.split("-", 1)[0])
        if subscribers:
            echo = pb.SubscribeResponse(
                events=[
                    pb.RecordedEvent(id=e.id, stream=request.stream, type=e.type, data=e.data)
                    for e in request.events
                ]
            )
            for queue in subscribers:
                queue.put_nowait(echo)
        return pb.AppendResponse(version=len(request.events), position=1)

    async def AppendSession(
        self, requests: AsyncIterator[pb.AppendSessionRequest], context: Any
    ) -> AsyncIterator[pb.AppendSessionResponse]:
        """The bidi-stream echo: each message's appends answered at once, in one message as the
        store answers a client that packs (one per message to one that does not)."""
        async for request in requests:
            if not request.more:
                yield pb.AppendSessionResponse(
                    correlation_id=request.correlation_id,
                    success=await self.Append(request.append, context),
                )
                continue
            yield pb.AppendSessionResponse(
                more=[
                    pb.SessionAnswer(
                        correlation_id=item.correlation_id,
                        success=await self.Append(item.append, context),
                    )
                    for item in request.more
                ]
            )

    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: Any
    ) -> AsyncIterator[pb.ReadStreamResponse]:
        remaining = request.max_count
        while remaining > 0:
            n = min(remaining, self._page)
            yield pb.ReadStreamResponse(events=self._events[:n])
            remaining -= n

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[pb.SubscribeResponse]:
        if request.category:
            queue: asyncio.Queue[pb.SubscribeResponse] = asyncio.Queue()
            subscribers = self._live.setdefault(request.category, set())
            subscribers.add(queue)
            try:
                yield pb.SubscribeResponse(caught_up=True)
                while True:
                    yield await queue.get()
            finally:
                subscribers.discard(queue)
        # after_position carries how many events to stream, for the catch-up benchmark.
        remaining = request.after_position
        while remaining > 0:
            n = min(remaining, self._page)
            yield pb.SubscribeResponse(events=self._events[:n])
            remaining -= n
        yield pb.SubscribeResponse(caught_up=True)


async def _unimplemented(self: BareEventStore, request: Any, context: Any) -> Any:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the baseline")


for _name in (
    "ReadAll",
    "CommitCheckpoint",
    "GetCheckpoint",
    "SaveSnapshot",
    "ReadSnapshot",
    "GetStats",
    "CreateGroup",
    "DeleteGroup",
    "ListGroups",
    "Consume",
    "ReadParked",
    "ReplayParked",
    "LoadStream",
):
    setattr(BareEventStore, _name, _unimplemented)


async def serve(listen: str, page: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_EventStoreServicer_to_server(BareEventStore(page), server)  # type: ignore[abstract]
    server.add_insecure_port(listen)
    await server.start()
    print(f"bare server listening on {listen}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:50099")
    parser.add_argument("--page", type=int, default=1000, help="events per streamed message")
    args = parser.parse_args()
    event_loop.run(serve(args.listen, args.page))  # the same loop as the store's

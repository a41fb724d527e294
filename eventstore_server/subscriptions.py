"""One subscription: catch-up from PostgreSQL, then live from the tail, never skipping an event.

The cursor is the last position *scanned* (not the last delivered): with filters, events that do
not match still move it, so neither a reconnect nor the switch from catch-up to live can deliver
an event twice or skip one. Each step reads only up to the tail's head, which is committed.
A stream subscription also keeps the last version delivered: its PostgreSQL reads use the
stream's (stream_id, version) index instead of scanning the global log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.reader import Reader, to_event
from eventstore_server.tail import LiveTail, TailEvent


@dataclass(frozen=True)
class Target:
    stream: str = ""  # one stream (events with version > after_version), or
    category: str = ""  # one category, or neither: all streams
    types: frozenset[str] = frozenset()
    after_version: int = 0

    def matcher(self) -> Callable[[TailEvent], bool]:
        stream, category, types, after = self.stream, self.category, self.types, self.after_version
        if stream:
            return lambda e: (
                e.event.stream == stream
                and e.event.version > after
                and (not types or e.event.type in types)
            )
        if category:
            return lambda e: e.category == category and (not types or e.event.type in types)
        if types:
            return lambda e: e.event.type in types
        return lambda e: True


async def subscribe(
    reader: Reader, tail: LiveTail, target: Target, after: int, page: int
) -> AsyncIterator[pb.SubscribeResponse]:
    """Responses for a subscription that starts after global position `after`."""
    tail.attach()
    try:
        async for response in _deliver(reader, tail, target, after, page):
            yield response
    finally:
        tail.detach()


async def _deliver(
    reader: Reader, tail: LiveTail, target: Target, after: int, page: int
) -> AsyncIterator[pb.SubscribeResponse]:
    match = target.matcher()
    types = sorted(target.types)
    cursor = after
    last_version = target.after_version
    caught_up = False
    while True:
        head = tail.head
        while cursor < head:
            if tail.covers(cursor):
                events, cursor = tail.after(cursor, page, match)
            else:
                if target.stream:
                    rows = await reader.read_stream_after(
                        target.stream, last_version, head, page, types
                    )
                else:
                    rows = await reader.read_after(
                        cursor, head, page, category=target.category, types=types
                    )
                events = [to_event(r) for r in rows]
                cursor = rows[-1]["position"] if len(rows) == page else head
            if events:
                if target.stream:
                    last_version = events[-1].version
                yield pb.SubscribeResponse(events=events)
            head = tail.head
        if not caught_up:
            caught_up = True
            yield pb.SubscribeResponse(caught_up=True)
        await tail.wait_beyond(cursor)

"""One subscription: catch-up from PostgreSQL, then live from the tail, never skipping an event.

The cursor is the last position *scanned* (not the last delivered): with filters, events that do
not match still move it, so neither a reconnect nor the switch from catch-up to live can deliver
an event twice or skip one. Each step reads only up to the tail's head, which is committed.
A stream subscription also keeps the last version delivered: its PostgreSQL reads use the
stream's (stream_id, version) index instead of scanning the global log.

Responses are yielded already encoded (the events' stored records; see `es_events.record`),
except the one caught_up marker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import metrics
from eventstore_server.reader import Page, Reader
from eventstore_server.tail import LiveTail, TailEvent
from eventstore_server.wire import varint

QUIET_REPORT = 1.0  # seconds without matching events before the scanned position is reported


def _scanned(position: int) -> bytes:
    """SubscribeResponse.scanned_position (field 3, varint), to append to an encoded message:
    protobuf merges concatenated encodings."""
    return b"\x18" + varint(position)


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
                e.stream == stream and e.version > after and (not types or e.type in types)
            )
        if category:
            return lambda e: e.category == category and (not types or e.type in types)
        if types:
            return lambda e: e.type in types
        return lambda e: True


async def subscribe(
    reader: Reader, tail: LiveTail, target: Target, after: int, page: int
) -> AsyncIterator[bytes]:
    """Encoded SubscribeResponses for a subscription that starts after global position `after`."""
    tail.attach()
    try:
        async for response in _deliver(reader, tail, target, after, page):
            yield response
    finally:
        tail.detach()


async def _deliver(
    reader: Reader, tail: LiveTail, target: Target, after: int, page: int
) -> AsyncIterator[bytes]:
    match = target.matcher()
    types = sorted(target.types)
    cursor = after
    last_version = target.after_version
    caught_up = False
    # During catch-up the next page is read while the current one is being sent.
    ahead: asyncio.Task[Page] | None = None

    def read(cursor: int, head: int) -> Awaitable[Page]:
        if target.stream:
            return reader.stream_page_after(target.stream, last_version, head, page, types)
        return reader.page_after(cursor, head, page, category=target.category, types=types)

    reported = after
    try:
        while True:
            head = tail.head
            while cursor < head:
                if ahead is None and tail.covers(cursor):
                    events, cursor = tail.after(cursor, page, match)
                    if target.stream:
                        events = [e for e in events if e.version > last_version]
                    if events:
                        last_version = events[-1].version
                        reported = cursor
                        metrics.READ_EVENTS.labels("Subscribe").inc(len(events))
                        yield b"".join(e.record for e in events) + _scanned(cursor)
                else:
                    found = await (ahead if ahead is not None else read(cursor, head))
                    ahead = None
                    if target.stream:
                        # A stream page's bounds are versions: the version cursor carries the
                        # read on, and the position cursor moves once the page is exhausted.
                        last_version = found.last if found.count else last_version
                        cursor = head if found.exhausted else cursor
                    else:
                        cursor = head if found.exhausted else found.last
                    if cursor < head and not tail.covers(cursor):
                        ahead = asyncio.ensure_future(read(cursor, head))
                    if found.count:
                        reported = cursor
                        metrics.READ_EVENTS.labels("Subscribe").inc(found.count)
                        yield found.records + _scanned(cursor)
                head = tail.head if ahead is None else head
            if not caught_up:
                caught_up = True
                reported = cursor
                yield pb.SubscribeResponse(
                    caught_up=True, scanned_position=cursor
                ).SerializeToString()
            try:
                await asyncio.wait_for(
                    tail.wait_beyond(cursor), QUIET_REPORT if cursor > reported else None
                )
            except TimeoutError:
                reported = cursor
                yield _scanned(cursor)
    finally:
        if ahead is not None:
            ahead.cancel()

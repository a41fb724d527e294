"""The `eventstore` command's commands: each one call (or a few) to the store, and the printing
of what comes back, as text for people or JSON lines for scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.client import EventStoreClient, Expected, NewEvent

STATES = {"any": Expected.ANY, "no-stream": Expected.NO_STREAM, "exists": Expected.STREAM_EXISTS}
COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96]


class UsageError(Exception):
    """What the user asked for cannot be done as asked; nothing was sent."""


class StreamNotFound(Exception):
    """The stream read has no events and never had any."""


def _payload(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "backslashreplace")


def event_dict(e: pb.RecordedEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "stream": e.stream,
        "version": e.version,
        "position": e.position,
        "type": e.type,
        "data": _payload(e.data),
        "metadata": dict(e.metadata),
        "content_type": e.content_type,
        "recorded_at": e.recorded_at.ToJsonString(),
    }


class Printer:
    """Events and results as text (coloured by type on a terminal) or as JSON lines."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout) -> None:
        self.json = as_json
        self.out = out
        self.colour = out.isatty() and not os.environ.get("NO_COLOR")

    def event(self, e: pb.RecordedEvent) -> None:
        if self.json:
            print(json.dumps(event_dict(e)), file=self.out, flush=True)
            return
        kind = e.type
        if self.colour:
            kind = f"\033[{COLOURS[zlib.crc32(e.type.encode()) % len(COLOURS)]}m{e.type}\033[0m"
        when = e.recorded_at.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
        data = json.dumps(_payload(e.data)) if e.data else ""
        meta = (
            "  " + " ".join(f"{k}={v}" for k, v in sorted(e.metadata.items())) if e.metadata else ""
        )
        print(
            f"{e.position:>8}  {when}  {e.stream}@{e.version}  {kind}  {data}{meta}",
            file=self.out,
            flush=True,
        )

    def result(self, values: dict[str, Any]) -> None:
        if self.json:
            print(json.dumps(values), file=self.out, flush=True)
        else:
            for key, value in values.items():
                print(f"{key}: {value}", file=self.out)


async def _events(source: AsyncIterator[pb.RecordedEvent], printer: Printer) -> int:
    count = 0
    progress = sys.stderr.isatty() and not printer.out.isatty()
    async for event in source:
        printer.event(event)
        count += 1
        if progress and count % 1000 == 0:
            print(f"\r{count} events...", end="", file=sys.stderr, flush=True)
    if progress and count >= 1000:
        print(f"\r{count} events.    ", file=sys.stderr)
    return count


def is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def append_data(args: argparse.Namespace) -> bytes:
    """The event's data from the argument or stdin, checked against its content type."""
    data: bytes = args.data.encode() if args.data is not None else sys.stdin.buffer.read()
    if not data and args.data is None:
        raise UsageError("no data on stdin: give DATA, or pipe the data in")
    if is_json(args.content_type):
        try:
            json.loads(data)
        except ValueError as error:
            raise UsageError(
                f"the data is not valid JSON ({error}); "
                "give --content-type for data of another kind"
            ) from None
    return data


async def _append(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    data = append_data(args)
    metadata = dict(item.split("=", 1) for item in args.metadata)
    new = NewEvent(
        args.type, data, metadata, args.content_type, **({"id": args.id} if args.id else {})
    )
    if args.expected_version is not None:
        result = await store.append(args.stream, [new], expected_version=args.expected_version)
    else:
        result = await store.append(args.stream, [new], STATES[args.expected_state])
    printer.result(
        {
            "stream": args.stream,
            "version": result.version,
            "position": result.position,
            "id": new.id,
        }
    )


async def _read(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    events = store.read_stream(
        args.stream, args.start, args.count, backwards=args.backwards, as_of=args.as_of
    )
    shown = await _events(events, printer)
    if not shown and not await store.read_stream_list(args.stream, max_count=1):
        raise StreamNotFound(args.stream)


async def _read_all(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    await _events(
        store.read_all(args.after, args.count, category=args.category, event_types=args.type),
        printer,
    )


async def _tail(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    after = args.after if args.after is not None else (await store.stats()).head_position
    target = {"stream": args.stream} if args.stream else {"category": args.category}
    async for response in store.subscribe(after_position=after, event_types=args.type, **target):
        for event in response.events:
            printer.event(event)


async def _stats(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    stats = await store.stats()
    printer.result(
        {
            "head_position": stats.head_position,
            "events": stats.head_position - stats.events_scavenged,
            "streams": stats.streams,
            "subscribers": len(stats.subscribers),
            "events_scavenged": stats.events_scavenged,
            "streams_to_scavenge": stats.streams_to_scavenge,
        }
    )


async def _subscribers(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    stats = await store.stats()
    rows = [
        {
            "name": s.name,
            "position": s.position,
            "lag": s.lag,
            "updated_at": s.updated_at.ToJsonString(),
        }
        for s in stats.subscribers
    ]
    if printer.json:
        for row in rows:
            printer.result(row)
        return
    print(f"{'subscriber':<40} {'position':>10} {'lag':>8}  updated")
    for row in rows:
        name, position, lag = row["name"], row["position"], row["lag"]
        print(f"{name:<40} {position:>10} {lag:>8}  {row['updated_at']}")


async def _groups(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    groups = await store.list_groups()
    rows = [
        {
            "group": g.group,
            "category": g.category or "*",
            "event_types": list(g.event_types),
            "checkpoint": g.checkpoint,
            "lag": g.lag,
            "members": g.members,
            "in_flight": g.in_flight,
            "parked": g.parked,
        }
        for g in groups
    ]
    if printer.json:
        for row in rows:
            printer.result(row)
        return
    print(
        f"{'group':<32} {'category':<16} {'checkpoint':>10} {'lag':>7} {'members':>7} "
        f"{'in flight':>9} {'parked':>7}",
        file=printer.out,
    )
    for r in rows:
        print(
            f"{r['group']:<32} {r['category']:<16} {r['checkpoint']:>10} {r['lag']:>7} "
            f"{r['members']:>7} {r['in_flight']:>9} {r['parked']:>7}",
            file=printer.out,
        )


async def _parked(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    for parked in await store.read_parked(args.group):
        if printer.json:
            printer.result(
                {
                    "event": event_dict(parked.event),
                    "reason": parked.reason,
                    "attempts": parked.attempts,
                }
            )
        else:
            printer.event(parked.event)
            print(
                f"          parked after {parked.attempts} attempt(s): {parked.reason}",
                file=printer.out,
            )


async def _replay(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    printer.result({"group": args.group, "replayed": await store.replay_parked(args.group)})


async def _create_group(
    store: EventStoreClient, args: argparse.Namespace, printer: Printer
) -> None:
    created = await store.create_group(
        args.group,
        category=args.category,
        event_types=args.type,
        start_after_position=args.after,
        max_attempts=args.max_attempts,
        ack_timeout_ms=args.ack_timeout_ms,
    )
    printer.result({"group": args.group, "created": created})


async def _delete_group(
    store: EventStoreClient, args: argparse.Namespace, printer: Printer
) -> None:
    await store.delete_group(args.group)
    printer.result({"group": args.group, "deleted": True})


async def _delete(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    if args.expected_version is not None:
        position = await store.delete_stream(
            args.stream, expected_version=args.expected_version, tombstone=args.tombstone
        )
    else:
        position = await store.delete_stream(
            args.stream, STATES[args.expected_state], tombstone=args.tombstone
        )
    kind = "tombstoned" if args.tombstone else "deleted"
    printer.result({"stream": args.stream, kind: True, "position": position})


async def _metadata(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    changing = [args.max_count, args.max_age, args.truncate_before]
    if any(v is not None for v in changing) or args.set:
        version = await store.set_stream_metadata(
            args.stream,
            max_count=args.max_count or 0,
            max_age_seconds=args.max_age or 0,
            truncate_before=args.truncate_before or 0,
            custom=dict(item.split("=", 1) for item in args.set),
            expected_metadata_version=args.expected_version,
        )
        printer.result({"stream": args.stream, "metadata_version": version})
        return
    found = await store.get_stream_metadata(args.stream)
    if found is None:
        printer.result({"stream": args.stream, "metadata": None})
        return
    metadata, version = found
    printer.result(
        {
            "stream": args.stream,
            "metadata_version": version,
            "max_count": metadata.max_count,
            "max_age_seconds": metadata.max_age_seconds,
            "truncate_before": metadata.truncate_before,
            "custom": dict(metadata.custom),
        }
    )


Command = Callable[[EventStoreClient, argparse.Namespace, Printer], Awaitable[None]]
COMMANDS: dict[str, Command] = {
    "append": _append,
    "read": _read,
    "read-all": _read_all,
    "tail": _tail,
    "stats": _stats,
    "streams": _stats,
    "subscribers": _subscribers,
    "groups": _groups,
    "parked": _parked,
    "replay-parked": _replay,
    "create-group": _create_group,
    "delete-group": _delete_group,
    "delete": _delete,
    "metadata": _metadata,
}

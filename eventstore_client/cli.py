"""`eventstore`: the event store from the command line.

    eventstore append order-42 OrderPlaced '{"total": 5}' --expected-version 0
    eventstore read order-42 --backwards --count 10
    eventstore read-all --category order --type OrderPlaced
    eventstore tail --category order
    eventstore stats | subscribers | groups
    eventstore parked customer_svc.orders
    eventstore replay-parked customer_svc.orders

Exit codes: 0 success, 1 an error from the store, 2 bad usage, 3 wrong expected version,
4 unavailable (the store cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_client.client import EventStoreClient, Expected, NewEvent
from eventstore_client.errors import EventStoreError, UnavailableError, WrongExpectedVersionError
from eventstore_client.security import add_client_flags, client_security

EXIT_ERROR, EXIT_USAGE, EXIT_CONFLICT, EXIT_UNAVAILABLE = 1, 2, 3, 4
STATES = {"any": Expected.ANY, "no-stream": Expected.NO_STREAM, "exists": Expected.STREAM_EXISTS}
COLOURS = [31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96]


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
        print(
            f"{e.position:>8}  {when}  {e.stream}@{e.version}  {kind}  {data}",
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


async def _append(store: EventStoreClient, args: argparse.Namespace, printer: Printer) -> None:
    data = args.data.encode() if args.data is not None else sys.stdin.buffer.read()
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
    await _events(
        store.read_stream(args.stream, args.start, args.count, backwards=args.backwards), printer
    )


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
            "events": stats.head_position,
            "streams": stats.streams,
            "subscribers": len(stats.subscribers),
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
}


async def run(args: argparse.Namespace) -> int:
    printer = Printer(args.json)
    security = client_security(args)
    async with EventStoreClient(args.address, security=security, timeout=args.timeout) as store:
        await COMMANDS[args.command](store, args, printer)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eventstore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--address",
        default=os.environ.get("EVENTSTORE_ADDRESS", "127.0.0.1:50051"),
        help="the store's HOST:PORT [$EVENTSTORE_ADDRESS]",
    )
    add_client_flags(p, os.environ)
    p.add_argument("--json", action="store_true", help="JSON output (one object per line)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("append", help="append one event (data from the argument or stdin)")
    a.add_argument("stream")
    a.add_argument("type")
    a.add_argument("data", nargs="?", help="the event's data; read from stdin when absent")
    a.add_argument("--expected-version", type=int)
    a.add_argument("--expected-state", choices=sorted(STATES), default="any")
    a.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--content-type", default="application/json")
    a.add_argument("--id", help="the event's UUID (a retry with the same id is recognised)")

    r = sub.add_parser("read", help="read one stream")
    r.add_argument("stream")
    r.add_argument("--from", dest="start", type=int, default=0, help="first version (inclusive)")
    r.add_argument("--count", type=int, default=0, help="at most this many (0: all)")
    r.add_argument("--backwards", action="store_true")

    ra = sub.add_parser("read-all", help="read every stream in global order")
    ra.add_argument("--after", type=int, default=0, help="events after this position")
    ra.add_argument("--count", type=int, default=0)
    ra.add_argument("--category", default="")
    ra.add_argument("--type", action="append", default=[], help="only this event type (repeatable)")

    t = sub.add_parser("tail", help="follow new events live (all, a category or a stream)")
    group = t.add_mutually_exclusive_group()
    group.add_argument("--category", default="")
    group.add_argument("--stream", default="")
    t.add_argument("--type", action="append", default=[])
    t.add_argument("--after", type=int, help="start after this position (default: the head)")

    sub.add_parser("stats", help="head position, event and stream counts")
    sub.add_parser("streams", help="the same as stats")
    sub.add_parser("subscribers", help="durable subscribers, their checkpoint and lag")
    sub.add_parser("groups", help="consumer groups: checkpoint, lag, members, in flight, parked")
    for name, text in [
        ("parked", "a group's parked events, with why each was parked"),
        ("replay-parked", "deliver a group's parked events again"),
        ("delete-group", "delete a consumer group (its members' calls end)"),
    ]:
        sub.add_parser(name, help=text).add_argument("group")
    cg = sub.add_parser("create-group", help="create a consumer group (idempotent)")
    cg.add_argument("group")
    cg.add_argument("--category", default="", help="the category it follows (default: all)")
    cg.add_argument("--type", action="append", default=[], help="only this type (repeatable)")
    cg.add_argument("--after", type=int, default=0, help="start after this position")
    cg.add_argument("--max-attempts", type=int, default=0, help="deliveries before parking (5)")
    cg.add_argument("--ack-timeout-ms", type=int, default=0, help="redeliver after (30000)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "append" and args.data is None and sys.stdin.isatty():
        print("eventstore: append needs DATA or data on stdin", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "append" and any("=" not in m for m in args.metadata):
        print("eventstore: --metadata takes KEY=VALUE", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run(args))
    except (OSError, ValueError) as error:  # unreadable certificate or token file, ...
        print(f"eventstore: {error}", file=sys.stderr)
        return EXIT_USAGE
    except WrongExpectedVersionError as error:
        print(f"eventstore: {error.message}", file=sys.stderr)
        return EXIT_CONFLICT
    except UnavailableError as error:
        print(
            f"eventstore: cannot reach the store at {args.address}: {error.message}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except EventStoreError as error:
        print(f"eventstore: {error.code.name}: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

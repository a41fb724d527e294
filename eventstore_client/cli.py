"""`eventstore`: the event store from the command line.

    eventstore append order-42 OrderPlaced '{"total": 5}' --expected-version 0
    eventstore read order-42 --backwards --count 10
    eventstore read-all --category order --type OrderPlaced
    eventstore tail --category order
    eventstore stats | subscribers | groups
    eventstore parked customer_svc.orders
    eventstore replay-parked customer_svc.orders
    eventstore delete order-42 [--tombstone]
    eventstore metadata order-42 --max-count 100 --max-age 86400
    eventstore read order-42 --as-of 2026-12-01T00:00Z

Exit codes: 0 success, 1 an error from the store, 2 bad usage, 3 wrong expected version,
4 unavailable (the store cannot be reached), 5 the stream read does not exist (or is
tombstoned).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import grpc

from eventstore_client.cli_commands import COMMANDS, STATES, Printer, StreamNotFound, UsageError
from eventstore_client.client import EventStoreClient
from eventstore_client.errors import (
    EventStoreError,
    StreamDeletedError,
    UnavailableError,
    WrongExpectedVersionError,
)
from eventstore_client.security import add_client_flags, client_security

EXIT_ERROR, EXIT_USAGE, EXIT_CONFLICT, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 1, 2, 3, 4, 5


async def run(args: argparse.Namespace) -> int:
    printer = Printer(args.json)
    security = client_security(args)
    async with EventStoreClient(args.address, security=security, timeout=args.timeout) as store:
        await COMMANDS[args.command](store, args, printer)
    return 0


def count(text: str) -> int:
    """A whole number, 0 or more (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: it must be 0 or more")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 seconds")
    return value


def moment(text: str) -> datetime:
    """An ISO 8601 time; without a zone, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
    p.add_argument("--timeout", type=seconds, default=30.0, help="seconds per call")
    # --json is also taken after the command (`eventstore read order-42 --json`).
    anywhere = argparse.ArgumentParser(add_help=False)
    anywhere.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    sub = p.add_subparsers(dest="command", required=True)
    real_add = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return real_add(name, parents=[anywhere], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    a = sub.add_parser("append", help="append one event (data from the argument or stdin)")
    a.add_argument("stream")
    a.add_argument("type")
    a.add_argument("data", nargs="?", help="the event's data; read from stdin when absent")
    a.add_argument("--expected-version", type=count)
    a.add_argument("--expected-state", choices=sorted(STATES), default="any")
    a.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--content-type", default="application/json")
    a.add_argument("--id", help="the event's UUID (a retry with the same id is recognised)")

    r = sub.add_parser("read", help="read one stream")
    r.add_argument("stream")
    r.add_argument("--from", dest="start", type=count, default=0, help="first version (inclusive)")
    r.add_argument("--count", type=count, default=0, help="at most this many (0: all)")
    r.add_argument("--backwards", action="store_true")
    r.add_argument(
        "--as-of", type=moment, help="the stream as it was then (ISO 8601, e.g. 2026-12-01T00:00Z)"
    )

    ra = sub.add_parser("read-all", help="read every stream in global order")
    ra.add_argument("--after", type=count, default=0, help="events after this position")
    ra.add_argument("--count", type=count, default=0, help="at most this many (0: all)")
    ra.add_argument("--category", default="")
    ra.add_argument("--type", action="append", default=[], help="only this event type (repeatable)")

    t = sub.add_parser("tail", help="follow new events live (all, a category or a stream)")
    group = t.add_mutually_exclusive_group()
    group.add_argument("--category", default="")
    group.add_argument("--stream", default="")
    t.add_argument("--type", action="append", default=[])
    t.add_argument("--after", type=count, help="start after this position (default: the head)")

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
    d = sub.add_parser("delete", help="delete a stream (soft: appends may go on; or tombstone)")
    d.add_argument("stream")
    d.add_argument("--tombstone", action="store_true", help="never to be written again")
    d.add_argument("--expected-version", type=count)
    d.add_argument("--expected-state", choices=sorted(STATES), default="any")
    m = sub.add_parser("metadata", help="show a stream's metadata, or set it (replacing it)")
    m.add_argument("stream")
    m.add_argument("--max-count", type=count, help="keep only the last N events")
    m.add_argument("--max-age", type=count, metavar="SECONDS", help="events older than this go")
    m.add_argument("--truncate-before", type=count, metavar="VERSION", help="versions below go")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="custom entry")
    m.add_argument("--expected-version", type=count, help="the metadata version it replaces")
    cg = sub.add_parser("create-group", help="create a consumer group (idempotent)")
    cg.add_argument("group")
    cg.add_argument("--category", default="", help="the category it follows (default: all)")
    cg.add_argument("--type", action="append", default=[], help="only this type (repeatable)")
    cg.add_argument("--after", type=count, default=0, help="start after this position")
    cg.add_argument("--max-attempts", type=count, default=0, help="deliveries before parking (5)")
    cg.add_argument("--ack-timeout-ms", type=count, default=0, help="redeliver after (30000)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "append" and args.data is None and sys.stdin.isatty():
        print("eventstore: append needs DATA or data on stdin", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "append" and any("=" not in m for m in args.metadata):
        print("eventstore: --metadata takes KEY=VALUE", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "metadata" and any("=" not in m for m in args.set):
        print("eventstore: --set takes KEY=VALUE", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run(args))
    except BrokenPipeError:  # `eventstore read-all | head`: the reader has all it wanted
        end_of_output()
        return 0
    except UsageError as error:
        print(f"eventstore: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StreamNotFound as missing:
        print(f"eventstore: stream {missing.args[0]!r} not found", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (OSError, ValueError) as error:  # unreadable certificate or token file, ...
        print(f"eventstore: {error}", file=sys.stderr)
        return EXIT_USAGE
    except WrongExpectedVersionError as error:
        print(f"eventstore: {error.message}", file=sys.stderr)
        return EXIT_CONFLICT
    except StreamDeletedError as error:
        print(f"eventstore: {error.message}", file=sys.stderr)
        return EXIT_NOT_FOUND if error.code == grpc.StatusCode.NOT_FOUND else EXIT_ERROR
    except UnavailableError as error:
        print(
            f"eventstore: cannot reach the store at {args.address}: {error.message}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except EventStoreError as error:
        print(f"eventstore: {error.code.name}: {error.message}", file=sys.stderr)
        if error.code == grpc.StatusCode.UNIMPLEMENTED:
            print(
                f"eventstore: is {args.address} the event store? (--address, $EVENTSTORE_ADDRESS;"
                " a service such as order_svc answers UNIMPLEMENTED)",
                file=sys.stderr,
            )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def end_of_output() -> None:
    """The reader of our output went away (a pipe into `head`): write nothing more, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again


if __name__ == "__main__":
    sys.exit(main())

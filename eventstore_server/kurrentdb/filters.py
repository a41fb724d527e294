"""KurrentDB's $all filters: a regular expression or name prefixes, on stream names or on event
types, and how often a filtered subscription reports the position it has searched to."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.kurrentdb.protocols.v1 import streams_pb2
from eventstore_server.errors import InvalidArgument

FilterOptions = streams_pb2.ReadReq.Options.FilterOptions
DEFAULT_WINDOW = 32  # KurrentDB's default search window, used when the client sends `count`


@dataclass(frozen=True)
class EventFilter:
    """Which events a filtered read or subscription of $all returns."""

    test: Callable[[pb.RecordedEvent], bool]
    checkpoint_every: int  # positions searched between two checkpoints, at least


def _matcher(expression: FilterOptions.Expression) -> Callable[[str], bool]:
    if expression.regex:
        try:
            # KurrentDB matches anywhere (.NET's IsMatch); the clients anchor their patterns.
            pattern = re.compile(expression.regex)
        except re.error as error:
            raise InvalidArgument(f"filter regex is not valid: {error}", field="filter") from None
        return lambda value: pattern.search(value) is not None
    prefixes = tuple(expression.prefix)
    if not prefixes:
        raise InvalidArgument("a filter needs a regex or prefixes", field="filter")
    return lambda value: value.startswith(prefixes)


def event_filter(options: streams_pb2.ReadReq.Options) -> EventFilter | None:
    """The read's filter; None for `no_filter` (or none given)."""
    if options.WhichOneof("filter_option") != "filter":
        return None
    given = options.filter
    which = given.WhichOneof("filter")
    if which == "stream_identifier":
        by_stream = _matcher(given.stream_identifier)

        def test(event: pb.RecordedEvent) -> bool:
            return by_stream(event.stream)

    elif which == "event_type":
        by_type = _matcher(given.event_type)

        def test(event: pb.RecordedEvent) -> bool:
            return by_type(event.type)

    else:
        raise InvalidArgument("a filter needs stream_identifier or event_type", field="filter")
    window = given.max if given.WhichOneof("window") == "max" else DEFAULT_WINDOW
    every = max(1, window) * max(1, given.checkpointIntervalMultiplier)
    return EventFilter(test, every)

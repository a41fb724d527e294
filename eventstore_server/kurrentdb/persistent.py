"""KurrentDB's persistent subscriptions, as our consumer groups where the two agree.

A persistent subscription to `$all` is a group over all streams; one to `$ce-<category>` (the
stream KurrentDB's category projection fills) is a group over that category. A group has one
name whatever it follows, so a group created through our API shows here too, and a name is
taken by one subscription at a time. What does not map is refused with a clear error: a
subscription to any other stream (KurrentDB reads one stream; a group follows categories), and
$all filters (a group filters by exact event types, not by patterns).

Delivery is the group's: an event of a stream is not delivered before the stream's earlier ones
are acked or parked, whatever consumer strategy is named (`PinnedByCorrelation` orders by
correlation id, as its name says); `max_retry_count` retries then parks; `message_timeout`
takes an unacked event back. A nack's `park` parks, `retry` retries, `skip` acks, `stop` ends
the call. Acks name event ids: each member's call remembers the ids it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.kurrentdb.protocols.v1 import persistent_pb2 as ps
from contracts.kurrentdb.protocols.v1 import shared_pb2
from eventstore_server.access import ALL_STREAMS
from eventstore_server.errors import AlreadyExists, InvalidArgument, NotFound, StoreError
from eventstore_server.group_service import (
    ACK_TIMEOUT_MS,
    DEFAULT_ACK_TIMEOUT_MS,
    DEFAULT_MAX_IN_FLIGHT,
    MAX_ATTEMPTS,
    MAX_IN_FLIGHT,
)
from eventstore_server.group_store import GroupSettings
from eventstore_server.groups import GroupManager
from eventstore_server.handling import Context
from eventstore_server.kurrentdb import mapping
from eventstore_server.kurrentdb.answers import kurrent_answers
from eventstore_server.service import EventStoreService
from eventstore_server.validation import MAX_INT64, category_name, stream_name
from hosting.interceptors import MalformedRequest

ALL = "$all"
# The filter KurrentDB's clients send by default: no KurrentDB system events. This store writes
# none, so a group over all streams is that subscription (a `$`-typed event a user appended
# would be delivered).
SYSTEM_EVENTS_EXCLUDED = r"^(?!(\$.+$|PersistentConfig\d+$|Result$))"
CATEGORY_STREAM = "$ce-"
Nack = ps.ReadReq.Nack.Action
# KurrentDB's strategies by name ("" from clients that send only the old enum field). All are
# served with each stream in order; PinnedByCorrelation with each correlation id in order.
STRATEGIES = ("", "DispatchToSingle", "RoundRobin", "Pinned", "PinnedByCorrelation")


class Unimplemented(StoreError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


def _source(options: Any) -> str:
    """The category a request's `stream_option` names ("" for $all). The option holds a
    StreamIdentifier, or (in CreateReq) StreamOptions around one."""
    which = options.WhichOneof("stream_option")
    if which is None:
        raise InvalidArgument("a persistent subscription needs a stream or all", field="stream")
    if which == "all":
        return ""
    identifier = getattr(options, which)
    if not isinstance(identifier, shared_pb2.StreamIdentifier):
        identifier = identifier.stream_identifier
    stream = mapping.stream_of(identifier)
    if stream == ALL:
        return ""
    if not stream.startswith(CATEGORY_STREAM) or len(stream) == len(CATEGORY_STREAM):
        raise Unimplemented(
            f"persistent subscriptions here follow $all or a category ($ce-<category>), "
            f"not the stream {stream!r}"
        )
    return stream[len(CATEGORY_STREAM) :]


def _event_source(category: str) -> str:
    return CATEGORY_STREAM + category if category else ALL


def _read_event(delivery: pb.Delivery, structured: bool) -> ps.ReadResp:
    # The streams' and the persistent subscriptions' RecordedEvent are one message on the wire.
    streamed = mapping.read_event(delivery.event, structured).event.event
    recorded = ps.ReadResp.ReadEvent.RecordedEvent.FromString(streamed.SerializeToString())
    return ps.ReadResp(
        event=ps.ReadResp.ReadEvent(
            event=recorded,
            commit_position=delivery.event.position,
            retry_count=max(delivery.attempt - 1, 0),
        )
    )


class KurrentPersistentSubscriptions:
    """The PersistentSubscriptions service's handlers (registered by `serve`)."""

    def __init__(self, store: EventStoreService) -> None:
        self._store = store
        self._access = store.access
        self._limits = store.limits

    @property
    def _groups(self) -> GroupManager:
        if self._store.groups is None:
            raise Unimplemented("consumer groups are not enabled on this server")
        return self._store.groups

    def _principal(self, context: Context) -> str:
        return self._access.principal(context, basic=True)

    def _name(self, group: str) -> str:
        return stream_name(group, self._limits, "group_name")

    async def _settings(self, group: str, category: str) -> GroupSettings:
        found = await self._groups.store.get(self._name(group))
        if found is None or found.category != category:
            source = _event_source(category)
            raise NotFound(f"no persistent subscription {group!r} to {source}", group=group)
        return found

    @kurrent_answers
    async def Create(self, request: ps.CreateReq, context: Context) -> ps.CreateResp:
        principal = self._principal(context)
        options = request.options
        name = self._name(options.group_name)
        category = _source(options)
        start: str | None
        if category:
            category = category_name(category, self._limits)
            start = options.stream.WhichOneof("revision_option")
            if start == "revision":
                raise InvalidArgument(
                    "a category subscription starts at the start or the end", field="revision"
                )
        else:
            start = options.all.WhichOneof("all_option")
            if options.all.WhichOneof("filter_option") == "filter":
                given = options.all.filter
                if not (
                    given.WhichOneof("filter") == "event_type"
                    and given.event_type.regex == SYSTEM_EVENTS_EXCLUDED
                ):
                    raise Unimplemented(
                        "filtered persistent subscriptions to $all are not served (a consumer "
                        "group over all streams is, and the clients' default exclusion of "
                        "KurrentDB's system events)"
                    )
        settings = options.settings
        if settings.max_retry_count < 0 or settings.max_retry_count >= MAX_ATTEMPTS:
            raise InvalidArgument(
                f"max_retry_count must be from 0 to {MAX_ATTEMPTS - 1}", field="max_retry_count"
            )
        timeout = DEFAULT_ACK_TIMEOUT_MS
        if settings.WhichOneof("message_timeout") == "message_timeout_ms":
            timeout = settings.message_timeout_ms or timeout
        elif settings.WhichOneof("message_timeout") == "message_timeout_ticks":
            timeout = settings.message_timeout_ticks // 10_000 or timeout
        if not ACK_TIMEOUT_MS[0] <= timeout <= ACK_TIMEOUT_MS[1]:
            raise InvalidArgument(
                f"message_timeout must be from {ACK_TIMEOUT_MS[0]} to {ACK_TIMEOUT_MS[1]} ms",
                field="message_timeout",
            )
        self._access.authorize(principal, "admin", name)
        if start == "end":
            start_after = await self._store.reader.head()
        elif start == "position":
            start_after = max(min(options.all.position.commit_position, MAX_INT64) - 1, 0)
        else:
            start_after = 0
        if settings.consumer_strategy not in STRATEGIES:
            raise InvalidArgument(
                f"consumer_strategy must be one of {', '.join(STRATEGIES)}",
                field="consumer_strategy",
            )
        ordering = pb.GROUP_ORDERING_STREAM
        if settings.consumer_strategy == "PinnedByCorrelation":
            ordering = pb.GROUP_ORDERING_CORRELATION
        wanted = GroupSettings(
            name=name,
            category=category,
            event_types=(),
            start_after=start_after,
            max_attempts=settings.max_retry_count + 1,  # the first delivery and the retries
            ack_timeout_ms=timeout,
            ordering=ordering,
        )
        created, _ = await self._groups.store.create(wanted)
        if not created:
            raise AlreadyExists(f"a subscription named {name!r} exists", group=name)
        return ps.CreateResp()

    @kurrent_answers
    async def Update(self, request: ps.UpdateReq, context: Context) -> ps.UpdateResp:
        raise Unimplemented("a group's settings are fixed: delete it and create it again")

    @kurrent_answers
    async def RestartSubsystem(self, request: shared_pb2.Empty, context: Context) -> Any:
        raise Unimplemented("groups run on every replica: there is no subsystem to restart")

    @kurrent_answers
    async def Delete(self, request: ps.DeleteReq, context: Context) -> ps.DeleteResp:
        principal = self._principal(context)
        options = request.options
        settings = await self._settings(options.group_name, _source(options))
        self._access.authorize(principal, "admin", settings.name)
        if not await self._groups.store.delete(settings.name):
            raise NotFound(f"no persistent subscription {settings.name!r}", group=settings.name)
        self._groups.wake(settings.name)
        return ps.DeleteResp()

    @kurrent_answers
    async def ReplayParked(
        self, request: ps.ReplayParkedReq, context: Context
    ) -> ps.ReplayParkedResp:
        principal = self._principal(context)
        options = request.options
        settings = await self._settings(options.group_name, _source(options))
        self._access.authorize(principal, "admin", settings.name)
        await self._groups.replay_parked(settings)
        return ps.ReplayParkedResp()

    async def _infos(self) -> list[ps.SubscriptionInfo]:
        found = []
        for info in await self._groups.store.infos():
            if info.event_types:
                continue  # a group of ours over some types: no persistent subscription's shape
            found.append(
                ps.SubscriptionInfo(
                    event_source=_event_source(info.category),
                    group_name=info.group,
                    status="Live",
                    connections=[ps.SubscriptionInfo.ConnectionInfo() for _ in range(info.members)],
                    last_checkpointed_event_position=str(info.checkpoint),
                    total_in_flight_messages=info.in_flight,
                    parked_message_count=info.parked,
                    named_consumer_strategy=(
                        "PinnedByCorrelation"
                        if info.ordering == pb.GROUP_ORDERING_CORRELATION
                        else "Pinned"
                    ),
                )
            )
        return found

    @kurrent_answers
    async def List(self, request: ps.ListReq, context: Context) -> ps.ListResp:
        self._access.authorize(self._principal(context), "stats", ALL_STREAMS)
        infos = await self._infos()
        options = request.options
        if options.WhichOneof("list_option") == "list_for_stream":
            source = _event_source(_source(options.list_for_stream))
            infos = [i for i in infos if i.event_source == source]
        if not infos:
            raise NotFound("no persistent subscriptions")  # what KurrentDB answers for none
        return ps.ListResp(subscriptions=infos)

    @kurrent_answers
    async def GetInfo(self, request: ps.GetInfoReq, context: Context) -> ps.GetInfoResp:
        self._access.authorize(self._principal(context), "stats", ALL_STREAMS)
        options = request.options
        source = _event_source(_source(options))
        for info in await self._infos():
            if info.group_name == options.group_name and info.event_source == source:
                return ps.GetInfoResp(subscription_info=info)
        raise NotFound(f"no persistent subscription {options.group_name!r} to {source}")

    @kurrent_answers
    async def Read(
        self, requests: AsyncIterator[ps.ReadReq], context: Context
    ) -> AsyncIterator[ps.ReadResp]:
        principal = self._principal(context)
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("content") != "options":
            raise InvalidArgument("a Read starts with options", field="options")
        options = first.options
        settings = await self._settings(options.group_name, _source(options))
        self._access.authorize(principal, "subscribe", settings.category or ALL_STREAMS)
        structured = options.uuid_option.WhichOneof("content") == "structured"
        in_flight = options.buffer_size or DEFAULT_MAX_IN_FLIGHT
        if not 0 < in_flight <= MAX_IN_FLIGHT:
            raise InvalidArgument(
                f"buffer_size must be from 1 to {MAX_IN_FLIGHT}", field="buffer_size"
            )
        member = await self._groups.join(settings, principal, in_flight)
        positions: dict[str, int] = {}  # event id -> position, of what this call was sent
        answering = asyncio.create_task(self._answers(requests, member, positions))
        try:
            yield ps.ReadResp(
                subscription_confirmation=ps.ReadResp.SubscriptionConfirmation(
                    subscription_id=f"{_event_source(settings.category)}::{settings.name}"
                )
            )
            async for message in member.messages():
                for delivery in pb.ConsumeResponse.FromString(message).deliveries:
                    positions[delivery.event.id] = delivery.event.position
                    yield _read_event(delivery, structured)
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answering
            await self._groups.leave(member)

    async def _answers(
        self, requests: AsyncIterator[ps.ReadReq], member: Any, positions: dict[str, int]
    ) -> None:
        try:
            async for request in requests:
                dispatcher = self._groups.dispatcher(member)
                if dispatcher is None:
                    break
                which = request.WhichOneof("content")
                if which == "ack":
                    acked = [positions.pop(mapping.uuid_text(i), 0) for i in request.ack.ids]
                    dispatcher.ack(member, [p for p in acked if p])
                elif which == "nack":
                    nack = request.nack
                    if nack.action == Nack.Stop:
                        return
                    for event_id in nack.ids:
                        position = positions.pop(mapping.uuid_text(event_id), 0)
                        if not position:
                            continue
                        if nack.action == Nack.Skip:
                            dispatcher.ack(member, [position])
                        else:
                            park = nack.action == Nack.Park
                            dispatcher.nack(member, position, park, nack.reason[:1000])
                else:
                    member.close(InvalidArgument("a Read sends its options once", field="options"))
                    return
        except MalformedRequest as malformed:  # answers given before it stand
            member.close(InvalidArgument(str(malformed)))
        finally:
            member.close()

"""The gRPC face of the store: checks each request, calls the writer or reader, maps errors.

Streaming handlers are async generators (not `context.write`), which keeps them compatible with
interceptors such as OpenTelemetry's. The reading handlers yield pages that are already encoded
(bytes); `add_to_server` registers the methods with a serializer that passes bytes through.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import metrics
from eventstore_server.access import ALL_STREAMS, Access
from eventstore_server.append_session import SessionHandlers
from eventstore_server.config import Limits
from eventstore_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    StoreError,
)
from eventstore_server.group_service import GroupHandlers
from eventstore_server.groups import GroupManager
from eventstore_server.handling import Context, answers, as_of_time, position_field
from eventstore_server.history import History
from eventstore_server.history_service import HistoryHandlers
from eventstore_server.reader import Reader
from eventstore_server.scavenger import Scavenger
from eventstore_server.subscriptions import Target, subscribe
from eventstore_server.tail import LiveTail
from eventstore_server.validation import (
    MAX_INT64,
    append_command,
    category_name,
    category_of,
    event_types,
    metadata_json,
    stream_name,
)
from eventstore_server.writer import AppendResult, GroupCommitWriter
from hosting.grpc_server import service_handlers


def _serialize(message: Any) -> bytes:
    """Pages come encoded; everything else is a message."""
    if isinstance(message, bytes):
        return message
    encoded: bytes = message.SerializeToString()
    return encoded


def add_to_server(service: EventStoreService, server: grpc.aio.Server) -> None:
    """Register the service like the generated helper does, but with `_serialize`, and with
    malformed requests refused cleanly."""
    descriptor = pb.DESCRIPTOR.services_by_name["EventStore"]
    server.add_generic_rpc_handlers((service_handlers(service, descriptor, _serialize),))


def _subscriber_name(name: str, limits: Limits) -> str:
    return stream_name(name, limits, "subscriber")


class EventStoreService(GroupHandlers, SessionHandlers, HistoryHandlers):
    """The handlers of eventstore.v1.EventStore (registered by `add_to_server`); the consumer
    groups' are in `GroupHandlers`, deleting and retention in `HistoryHandlers`."""

    def __init__(
        self,
        writer: GroupCommitWriter,
        reader: Reader,
        tail: LiveTail,
        limits: Limits,
        access: Access | None = None,
        groups: GroupManager | None = None,
        scavenger: Scavenger | None = None,
    ) -> None:
        self._groups = groups
        self._history = History(reader.pool)
        self._scavenger = scavenger
        self._closing = asyncio.Event()  # set on shutdown: append sessions stop taking appends
        self._writer = writer
        self._reader = reader
        self._tail = tail
        self._limits = limits
        self._access = access or Access()
        self._subscriptions: collections.Counter[str] = collections.Counter()  # per principal

    # For the KurrentDB port, which answers through the same parts.
    @property
    def reader(self) -> Reader:
        return self._reader

    @property
    def tail(self) -> LiveTail:
        return self._tail

    @property
    def access(self) -> Access:
        return self._access

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def groups(self) -> GroupManager | None:
        return self._groups

    def close_sessions(self) -> None:
        """On shutdown: sessions answer what they have taken, then end (UNAVAILABLE)."""
        self._closing.set()

    @answers
    async def Append(self, request: pb.AppendRequest, context: Context) -> pb.AppendResponse:
        result = await self.submit_append(self._access.principal(context), request)
        return pb.AppendResponse(version=result.version, position=result.position)

    def submit_append(
        self, principal: str, request: pb.AppendRequest
    ) -> asyncio.Future[AppendResult]:
        """One append, from a unary call or a session: checked, authorised and queued for the
        group commit, its outcome counted when it is known. Every rule and metric is here."""
        started = time.perf_counter()
        try:
            command = append_command(request, self._limits)
            self._access.authorize(principal, "append", command.category)
        except StoreError as error:
            metrics.APPENDS.labels(error.reason.lower()).inc()
            raise

        def count(outcome: asyncio.Future[AppendResult]) -> None:
            if outcome.cancelled():
                return
            error = outcome.exception()
            if error is None:
                metrics.APPENDS.labels("written").inc()
                metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
            elif isinstance(error, StoreError):
                metrics.APPENDS.labels(error.reason.lower()).inc()

        future = self._writer.submit(command)
        future.add_done_callback(count)
        return future

    @answers
    async def ReadStream(
        self, request: pb.ReadStreamRequest, context: Context
    ) -> AsyncIterator[bytes]:
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        self._access.authorize(principal, "read", category_of(stream))
        start = position_field(request.from_version, "from_version")
        count = position_field(request.max_count, "max_count")
        as_of = as_of_time(request, "as_of")
        metrics.READS.labels("ReadStream").inc()
        async for page in self._reader.read_stream(stream, start, count, request.backwards, as_of):
            metrics.READ_EVENTS.labels("ReadStream").inc(page.count)
            yield page.records

    @answers
    async def ReadAll(self, request: pb.ReadAllRequest, context: Context) -> AsyncIterator[bytes]:
        principal = self._access.principal(context)
        after = position_field(request.after_position, "after_position")
        count = position_field(request.max_count, "max_count")
        category = category_name(request.category, self._limits) if request.category else ""
        self._access.authorize(principal, "read", category or ALL_STREAMS)
        types = event_types(list(request.event_types), self._limits)
        metrics.READS.labels("ReadAll").inc()
        async for page in self._reader.read_all(after, count, category=category, types=types):
            metrics.READ_EVENTS.labels("ReadAll").inc(page.count)
            yield page.records

    @answers
    async def Subscribe(
        self, request: pb.SubscribeRequest, context: Context
    ) -> AsyncIterator[bytes]:
        principal = self._access.principal(context)
        target, after = await self._subscription(request, principal)
        with self.subscription_slot(principal):
            metrics.READS.labels("Subscribe").inc()
            async for message in subscribe(
                self._reader, self._tail, target, after, self._limits.read_page_size
            ):
                yield message

    @contextlib.contextmanager
    def subscription_slot(self, principal: str) -> Iterator[None]:
        """One of `principal`'s open subscriptions (on either port), while it lasts;
        ResourceExhausted when it has the most allowed open already."""
        most = self._limits.max_subscriptions_per_principal
        if self._subscriptions[principal] >= most:
            raise ResourceExhausted(
                f"{principal} has {most} subscriptions open, the most allowed at once"
            )
        self._subscriptions[principal] += 1
        metrics.SUBSCRIPTIONS.inc()
        try:
            yield
        finally:
            self._subscriptions[principal] -= 1
            if not self._subscriptions[principal]:
                del self._subscriptions[principal]
            metrics.SUBSCRIPTIONS.dec()

    async def _subscription(
        self, request: pb.SubscribeRequest, principal: str
    ) -> tuple[Target, int]:
        types = frozenset(event_types(list(request.event_types), self._limits))
        which = request.WhichOneof("target")
        after = position_field(request.after_position, "after_position")
        if which == "stream":
            if request.subscriber:
                raise InvalidArgument(
                    "durable subscribers follow a category or all streams", field="subscriber"
                )
            stream = stream_name(request.stream, self._limits)
            self._access.authorize(principal, "subscribe", category_of(stream))
            version = position_field(request.after_version, "after_version")
            return Target(stream=stream, types=types, after_version=version), after
        if which == "category":
            target = Target(category=category_name(request.category, self._limits), types=types)
        elif which == "all":
            target = Target(types=types)
        else:
            raise InvalidArgument(
                "a subscription needs a target: stream, category or all", field="target"
            )
        self._access.authorize(principal, "subscribe", target.category or ALL_STREAMS)
        if request.subscriber:
            name = _subscriber_name(request.subscriber, self._limits)
            self._access.authorize(principal, "checkpoint", name)
            stored = await self._reader.checkpoint(name)
            after = max(after, stored or 0)
        return target, after

    @answers
    async def CommitCheckpoint(
        self, request: pb.CommitCheckpointRequest, context: Context
    ) -> pb.CommitCheckpointResponse:
        principal = self._access.principal(context)
        name = _subscriber_name(request.subscriber, self._limits)
        self._access.authorize(principal, "checkpoint", name)
        position = position_field(request.position, "position")
        stored = await self._reader.commit_checkpoint(name, position, request.reset)
        return pb.CommitCheckpointResponse(position=stored)

    @answers
    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Context
    ) -> pb.GetCheckpointResponse:
        principal = self._access.principal(context)
        name = _subscriber_name(request.subscriber, self._limits)
        self._access.authorize(principal, "checkpoint", name)
        stored = await self._reader.checkpoint(name)
        if stored is None:
            return pb.GetCheckpointResponse(found=False)
        return pb.GetCheckpointResponse(found=True, position=stored)

    @answers
    async def SaveSnapshot(
        self, request: pb.SaveSnapshotRequest, context: Context
    ) -> pb.SaveSnapshotResponse:
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        self._access.authorize(principal, "append", category_of(stream))
        if request.version < 1 or request.version > MAX_INT64:
            raise InvalidArgument("a snapshot's version must be at least 1", field="version")
        if not request.type:
            raise InvalidArgument("a snapshot needs a type", field="type")
        event_types([request.type], self._limits)
        metadata, size = metadata_json(request.metadata, self._limits, "metadata")
        if len(request.data) + size > self._limits.max_append_size:
            raise InvalidArgument("the snapshot is larger than the append size limit", field="data")
        current = await self._reader.save_snapshot(
            stream, request.version, request.type, request.data, metadata
        )
        if current is None:
            raise NotFound(f"stream {stream!r} does not exist", stream=stream)
        if request.version > current:
            raise FailedPrecondition(
                f"stream {stream!r} is at version {current}, "
                f"below the snapshot's {request.version}",
                stream=stream,
                actual=str(current),
            )
        return pb.SaveSnapshotResponse()

    @answers
    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.GetStatsResponse:
        self._access.authorize(self._access.principal(context), "stats", ALL_STREAMS)
        return await self._reader.stats()

    @answers
    async def ReadSnapshot(
        self, request: pb.ReadSnapshotRequest, context: Context
    ) -> pb.ReadSnapshotResponse:
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        self._access.authorize(principal, "read", category_of(stream))
        snapshot = await self._reader.read_snapshot(
            stream, position_field(request.max_version, "max_version")
        )
        if snapshot is None:
            return pb.ReadSnapshotResponse(found=False)
        return pb.ReadSnapshotResponse(found=True, snapshot=snapshot)

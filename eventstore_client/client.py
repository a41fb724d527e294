"""The typed async client for the event store."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc
from eventstore_client import tracing
from eventstore_client.errors import EventStoreError, UnavailableError, from_rpc_error
from eventstore_client.group_session import GroupSession
from eventstore_client.security import PLAINTEXT, ChannelSecurity
from eventstore_client.sessions import AppendSessions

RecordedEvent = pb.RecordedEvent
Snapshot = pb.Snapshot


class Expected:
    """Expectations for `append` besides an exact version (an int: 0 means an empty stream)."""

    ANY = pb.EXPECTED_STATE_ANY
    NO_STREAM = pb.EXPECTED_STATE_NO_STREAM
    STREAM_EXISTS = pb.EXPECTED_STATE_STREAM_EXISTS


class Ordering:
    """What a consumer group delivers in order (`create_group(ordering=...)`)."""

    STREAM = pb.GROUP_ORDERING_STREAM  # each stream's events, one at a time
    CORRELATION = pb.GROUP_ORDERING_CORRELATION  # each correlation_id's (else each stream's)


def new_event_id() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) gives, at half its cost (an
    append's id is made on the hot path)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


@dataclass(frozen=True)
class NewEvent:
    """An event to append. The id is chosen here so that a retried append is recognised."""

    type: str
    data: bytes = b""
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    id: str = field(default_factory=new_event_id)

    @classmethod
    def json(
        cls, type: str, data: Any, metadata: Mapping[str, str] | None = None, id: str | None = None
    ) -> NewEvent:
        return cls(
            type=type,
            data=json.dumps(data, separators=(",", ":")).encode(),
            metadata=dict(metadata or {}),
            content_type="application/json",
            id=id or new_event_id(),
        )

    def to_proto(self) -> pb.EventData:
        return pb.EventData(
            id=self.id,
            type=self.type,
            data=self.data,
            metadata=dict(self.metadata),
            content_type=self.content_type,
        )


@dataclass(frozen=True)
class AppendResult:
    version: int  # the stream's version after the append
    position: int  # the global position of the append's last event


def channel_options(max_message_bytes: int = 8 * 1024 * 1024) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Reconnect to a store that went away within 2 s of its return (gRPC's default back-off
        # grows to 120 s): calls waiting for it (wait-for-ready) and members joining again
        # would otherwise sit out a back-off long after a restart.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


class EventStoreClient:
    """An async client; use as `async with EventStoreClient("host:port") as store: ...`.

    Appends that fail with UNAVAILABLE are retried (`retries` times, with back-off): event ids
    are fixed before the first attempt, so a retry of an append that did commit is recognised by
    the store and answered with the original result instead of being written twice.
    """

    def __init__(
        self,
        address: str,
        *,
        channel: grpc.aio.Channel | None = None,
        security: ChannelSecurity = PLAINTEXT,
        retries: int = 5,
        timeout: float | None = 30.0,
        append_sessions: int = 1,
        pack_appends: bool = True,
        wait_for_ready: bool = False,
    ) -> None:
        """`security`: the CA file for TLS, a client certificate, a bearer token
        (`ChannelSecurity.from_files(...)`); plaintext by default. `append_sessions`: appends
        go over this many AppendSession calls, shared by every caller (0: one unary Append
        call each, as before; what a store without sessions needs). `pack_appends`: appends
        ready at the same moment share one session message (False: one each, for a store that
        predates packing). `wait_for_ready`: a call made while the store cannot be reached
        (restarting, say) waits for it, within `timeout`, instead of failing at once with
        UNAVAILABLE: what a service whose requests need the store wants (a store that never
        becomes reachable, a TLS setup it cannot agree with, say, then answers only when
        `timeout` has passed)."""
        self.address = address
        self._channel = channel or security.channel(address, channel_options())
        self._stub = pb_grpc.EventStoreStub(self._channel)
        self._retries = retries
        self._timeout = timeout
        self._wait_for_ready = wait_for_ready
        self._sessions = (
            AppendSessions(self._channel, append_sessions, pack_appends, wait_for_ready)
            if append_sessions
            else None
        )

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the store (for its health service, say)."""
        return self._channel

    @property
    def stub(self) -> pb_grpc.EventStoreStub:
        """The raw generated stub, for what this class does not wrap."""
        return self._stub

    async def close(self) -> None:
        if self._sessions is not None:
            await self._sessions.close()
        await self._channel.close()

    async def __aenter__(self) -> EventStoreClient:
        return self

    async def __aexit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        expected: int | pb.ExpectedState.ValueType | None = None,
        *,
        expected_version: int | None = None,
    ) -> AppendResult:
        """Append events atomically. `expected_version=N` requires the stream to be at version N;
        `expected=Expected.NO_STREAM` / `STREAM_EXISTS` / `ANY` check the state instead."""
        request = pb.AppendRequest(stream=stream, events=[e.to_proto() for e in events])
        if expected_version is not None:
            request.expected_version = expected_version
        elif expected is not None:
            request.expected_state = expected  # type: ignore[assignment]
        if self._sessions is None:  # the gRPC instrumentation's client span is the append's
            tracing.inject_into(request)
            return await self._append(request)
        # On a session the call spans many appends: each gets a client span of its own.
        with tracing.append_span(stream):
            tracing.inject_into(request)
            return await self._append(request)

    async def _append(self, request: pb.AppendRequest) -> AppendResult:
        delay = 0.05
        for attempt in range(self._retries + 1):
            try:
                if self._sessions is not None:
                    response = await self._sessions.append(request, self._timeout)
                else:
                    response = await self._stub.Append(
                        request, timeout=self._timeout, wait_for_ready=self._wait_for_ready
                    )
                return AppendResult(response.version, response.position)
            except grpc.aio.AioRpcError as error:
                failure = from_rpc_error(error)
            except EventStoreError as error:
                failure = error
            if not isinstance(failure, UnavailableError) or attempt == self._retries:
                raise failure from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        max_count: int = 0,
        *,
        backwards: bool = False,
        as_of: datetime | None = None,
    ) -> AsyncGenerator[pb.RecordedEvent, None]:
        """A stream's events in version order (deleted and expired ones are not shown; a
        tombstoned stream raises StreamDeletedError). `as_of`: only those recorded by then."""
        request = pb.ReadStreamRequest(
            stream=stream, from_version=from_version, max_count=max_count, backwards=backwards
        )
        if as_of is not None:
            request.as_of.FromDatetime(as_of)
        async for event in self._events(
            self._stub.ReadStream(
                request, timeout=self._timeout, wait_for_ready=self._wait_for_ready
            )
        ):
            yield event

    async def read_stream_list(
        self,
        stream: str,
        from_version: int = 0,
        max_count: int = 0,
        *,
        backwards: bool = False,
        as_of: datetime | None = None,
    ) -> list[pb.RecordedEvent]:
        events = self.read_stream(stream, from_version, max_count, backwards=backwards, as_of=as_of)
        return [e async for e in events]

    async def read_all(
        self,
        after_position: int = 0,
        max_count: int = 0,
        *,
        category: str = "",
        event_types: Sequence[str] = (),
    ) -> AsyncGenerator[pb.RecordedEvent, None]:
        request = pb.ReadAllRequest(
            after_position=after_position,
            max_count=max_count,
            category=category,
            event_types=list(event_types),
        )
        async for event in self._events(
            self._stub.ReadAll(request, timeout=self._timeout, wait_for_ready=self._wait_for_ready)
        ):
            yield event

    async def subscribe(
        self,
        *,
        stream: str = "",
        category: str = "",
        after_position: int = 0,
        after_version: int = 0,
        event_types: Sequence[str] = (),
        subscriber: str = "",
    ) -> AsyncGenerator[pb.SubscribeResponse, None]:
        """Catch-up, then live. Without stream or category: all streams. Never ends by itself."""
        request = pb.SubscribeRequest(
            after_position=after_position,
            after_version=after_version,
            event_types=list(event_types),
            subscriber=subscriber,
        )
        if stream:
            request.stream = stream
        elif category:
            request.category = category
        else:
            request.all.SetInParent()
        async for response in self._responses(
            self._stub.Subscribe(request, wait_for_ready=self._wait_for_ready)
        ):
            yield response

    async def commit_checkpoint(
        self, subscriber: str, position: int, *, reset: bool = False
    ) -> int:
        """Store a durable subscriber's position (only forward, unless `reset`); returns it."""
        response: pb.CommitCheckpointResponse = await self._unary(
            self._stub.CommitCheckpoint,
            pb.CommitCheckpointRequest(subscriber=subscriber, position=position, reset=reset),
        )
        return response.position

    async def get_checkpoint(self, subscriber: str) -> int | None:
        response = await self._unary(
            self._stub.GetCheckpoint, pb.GetCheckpointRequest(subscriber=subscriber)
        )
        return response.position if response.found else None

    async def save_snapshot(
        self,
        stream: str,
        version: int,
        type: str,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        await self._unary(
            self._stub.SaveSnapshot,
            pb.SaveSnapshotRequest(
                stream=stream, version=version, type=type, data=data, metadata=dict(metadata or {})
            ),
        )

    async def read_snapshot(self, stream: str, max_version: int = 0) -> pb.Snapshot | None:
        response = await self._unary(
            self._stub.ReadSnapshot, pb.ReadSnapshotRequest(stream=stream, max_version=max_version)
        )
        return response.snapshot if response.found else None

    async def load_stream(
        self,
        stream: str,
        max_version: int = 0,
        snapshot_metadata: Mapping[str, str] | None = None,
        as_of: datetime | None = None,
    ) -> AsyncGenerator[pb.Snapshot | pb.RecordedEvent, None]:
        """An aggregate's history in one call: the latest snapshot at or below `max_version`
        (0: the latest) whose metadata has `snapshot_metadata`'s entries, if there is one,
        then the events after it (up to `max_version`); with `as_of`, as it was at that time."""
        request = pb.LoadStreamRequest(
            stream=stream, max_version=max_version, snapshot_metadata=dict(snapshot_metadata or {})
        )
        if as_of is not None:
            request.as_of.FromDatetime(as_of)
        async for response in self._responses(
            self._stub.LoadStream(
                request, timeout=self._timeout, wait_for_ready=self._wait_for_ready
            )
        ):
            if response.HasField("snapshot"):
                yield response.snapshot
            for event in response.events:
                yield event

    async def delete_stream(
        self,
        stream: str,
        expected: pb.ExpectedState.ValueType | None = None,
        *,
        expected_version: int | None = None,
        tombstone: bool = False,
    ) -> int:
        """Delete a stream: soft (its events so far disappear; appends may go on, numbered on
        from where it was) or, with `tombstone`, for ever. The head position at the delete."""
        request = pb.DeleteStreamRequest(stream=stream, tombstone=tombstone)
        if expected_version is not None:
            request.expected_version = expected_version
        elif expected is not None:
            request.expected_state = expected
        response = await self._unary(self._stub.DeleteStream, request)
        position: int = response.position
        return position

    async def set_stream_metadata(
        self,
        stream: str,
        *,
        max_count: int = 0,
        max_age_seconds: int = 0,
        truncate_before: int = 0,
        custom: Mapping[str, str] | None = None,
        expected_metadata_version: int | None = None,
    ) -> int:
        """Set a stream's retention (0: none) and custom entries, replacing what was set;
        `expected_metadata_version` guards against a concurrent change (0: none set yet).
        The new metadata version."""
        request = pb.SetStreamMetadataRequest(
            stream=stream,
            metadata=pb.StreamMetadata(
                max_count=max_count,
                max_age_seconds=max_age_seconds,
                truncate_before=truncate_before,
                custom=dict(custom or {}),
            ),
        )
        if expected_metadata_version is not None:
            request.expected_metadata_version = expected_metadata_version
        response = await self._unary(self._stub.SetStreamMetadata, request)
        version: int = response.metadata_version
        return version

    async def get_stream_metadata(self, stream: str) -> tuple[pb.StreamMetadata, int] | None:
        """A stream's metadata and its version; None when none was set."""
        response = await self._unary(
            self._stub.GetStreamMetadata, pb.GetStreamMetadataRequest(stream=stream)
        )
        return (response.metadata, response.metadata_version) if response.found else None

    async def stats(self) -> pb.GetStatsResponse:
        """Head position, stream count and durable subscribers with their lag."""
        response: pb.GetStatsResponse = await self._unary(self._stub.GetStats, pb.GetStatsRequest())
        return response

    async def create_group(
        self,
        group: str,
        *,
        category: str = "",
        event_types: Sequence[str] = (),
        start_after_position: int = 0,
        max_attempts: int = 0,
        ack_timeout_ms: int = 0,
        ordering: pb.GroupOrdering.ValueType = pb.GROUP_ORDERING_STREAM,
    ) -> bool:
        """Create a consumer group over a category (all streams when empty); True when created,
        False when it existed with the same settings (`AlreadyExistsError` with others).
        `ordering`: what is delivered in order (each stream, or each correlation id)."""
        request = pb.CreateGroupRequest(
            group=group,
            event_types=list(event_types),
            start_after_position=start_after_position,
            max_attempts=max_attempts,
            ack_timeout_ms=ack_timeout_ms,
            ordering=ordering,
        )
        if category:
            request.category = category
        else:
            request.all.SetInParent()
        response = await self._unary(self._stub.CreateGroup, request)
        return bool(response.created)

    async def delete_group(self, group: str) -> None:
        await self._unary(self._stub.DeleteGroup, pb.DeleteGroupRequest(group=group))

    async def list_groups(self) -> list[pb.GroupInfo]:
        response = await self._unary(self._stub.ListGroups, pb.ListGroupsRequest())
        return list(response.groups)

    async def read_parked(self, group: str) -> list[pb.ParkedEvent]:
        call = self._stub.ReadParked(
            pb.ReadParkedRequest(group=group),
            timeout=self._timeout,
            wait_for_ready=self._wait_for_ready,
        )
        return [e async for response in self._responses(call) for e in response.events]

    async def replay_parked(self, group: str) -> int:
        """Deliver the group's parked events again; how many there were."""
        response = await self._unary(self._stub.ReplayParked, pb.ReplayParkedRequest(group=group))
        return int(response.replayed)

    def consume(self, group: str, member: str = "", max_in_flight: int = 0) -> GroupSession:
        """Join a consumer group: `async with client.consume("g") as session: ...`."""
        return GroupSession(self._stub, group, member, max_in_flight, self._wait_for_ready)

    @staticmethod
    async def _responses(call: Any) -> AsyncGenerator[Any, None]:
        """A server-streaming call's messages, with the store's errors typed; a reader that
        stops early cancels the call, which frees the server's side at once."""
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    @classmethod
    async def _events(cls, call: Any) -> AsyncGenerator[pb.RecordedEvent, None]:
        """The events of a reading call's pages, one by one."""
        async for response in cls._responses(call):
            for event in response.events:
                yield event

    async def _unary(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout, wait_for_ready=self._wait_for_ready)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None


__all__ = [
    "AppendResult",
    "EventStoreClient",
    "EventStoreError",
    "Expected",
    "NewEvent",
    "Ordering",
    "RecordedEvent",
    "Snapshot",
]

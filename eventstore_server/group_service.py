"""The consumer-group RPCs of eventstore.v1.EventStore (a part of `EventStoreService`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server.access import ALL_STREAMS, Access
from eventstore_server.config import Limits
from eventstore_server.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from eventstore_server.group_store import GroupSettings
from eventstore_server.groups import GroupManager, Member
from eventstore_server.handling import Context, answers, position_field
from eventstore_server.validation import category_name, event_types, stream_name
from hosting.interceptors import MalformedRequest

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_ACK_TIMEOUT_MS = 30_000
DEFAULT_MAX_IN_FLIGHT = 64
MAX_IN_FLIGHT = 10_000  # per member, at most
MAX_ATTEMPTS = 1_000
ACK_TIMEOUT_MS = (100, 3_600_000)  # the range accepted
PARKED_PAGE = 500


class GroupHandlers:
    _access: Access
    _limits: Limits
    _groups: GroupManager | None

    @property
    def _manager(self) -> GroupManager:
        if self._groups is None:
            raise Unavailable("consumer groups are not enabled on this server")
        return self._groups

    def _group_name(self, name: str) -> str:
        return stream_name(name, self._limits, "group")

    async def _settings(self, name: str) -> GroupSettings:
        found = await self._manager.store.get(self._group_name(name))
        if found is None:
            raise NotFound(f"no group {name!r}", group=name)
        return found

    @answers
    async def CreateGroup(
        self, request: pb.CreateGroupRequest, context: Context
    ) -> pb.CreateGroupResponse:
        principal = self._access.principal(context)
        name = self._group_name(request.group)
        which = request.WhichOneof("target")
        if which is None:
            raise InvalidArgument("a group needs a target: category or all", field="target")
        category = category_name(request.category, self._limits) if which == "category" else ""
        if request.max_attempts > MAX_ATTEMPTS:
            raise InvalidArgument(f"max_attempts is above {MAX_ATTEMPTS}", field="max_attempts")
        timeout = request.ack_timeout_ms or DEFAULT_ACK_TIMEOUT_MS
        if not ACK_TIMEOUT_MS[0] <= timeout <= ACK_TIMEOUT_MS[1]:
            raise InvalidArgument(
                f"ack_timeout_ms must be from {ACK_TIMEOUT_MS[0]} to {ACK_TIMEOUT_MS[1]}",
                field="ack_timeout_ms",
            )
        if request.ordering not in pb.GroupOrdering.values():
            raise InvalidArgument("ordering is not a known GroupOrdering", field="ordering")
        self._access.authorize(principal, "admin", name)
        wanted = GroupSettings(
            name=name,
            category=category,
            event_types=tuple(sorted(set(event_types(list(request.event_types), self._limits)))),
            start_after=position_field(request.start_after_position, "start_after_position"),
            max_attempts=request.max_attempts or DEFAULT_MAX_ATTEMPTS,
            ack_timeout_ms=timeout,
            ordering=request.ordering,
        )
        created, existing = await self._manager.store.create(wanted)
        if not created and not existing.same_as(wanted):
            raise AlreadyExists(
                f"group {name!r} exists with other settings",
                group=name,
                category=existing.category,
                event_types=",".join(existing.event_types),
                start_after_position=str(existing.start_after),
                max_attempts=str(existing.max_attempts),
                ack_timeout_ms=str(existing.ack_timeout_ms),
                ordering=pb.GroupOrdering.Name(existing.ordering),  # type: ignore[arg-type]
            )
        return pb.CreateGroupResponse(created=created)

    @answers
    async def DeleteGroup(
        self, request: pb.DeleteGroupRequest, context: Context
    ) -> pb.DeleteGroupResponse:
        principal = self._access.principal(context)
        name = self._group_name(request.group)
        self._access.authorize(principal, "admin", name)
        if not await self._manager.store.delete(name):
            raise NotFound(f"no group {name!r}", group=name)
        self._manager.wake(name)
        return pb.DeleteGroupResponse()

    @answers
    async def ListGroups(
        self, request: pb.ListGroupsRequest, context: Context
    ) -> pb.ListGroupsResponse:
        self._access.authorize(self._access.principal(context), "stats", ALL_STREAMS)
        return pb.ListGroupsResponse(groups=await self._manager.store.infos())

    @answers
    async def ReadParked(
        self, request: pb.ReadParkedRequest, context: Context
    ) -> AsyncIterator[pb.ReadParkedResponse]:
        principal = self._access.principal(context)
        settings = await self._settings(request.group)
        self._access.authorize(principal, "read", settings.category or ALL_STREAMS)
        after = 0
        while True:
            rows = await self._manager.store.parked(settings.name, after, PARKED_PAGE)
            if not rows:
                return
            yield pb.ReadParkedResponse(
                events=[
                    pb.ParkedEvent(
                        event=pb.ReadAllResponse.FromString(r["record"]).events[0],
                        reason=r["reason"],
                        attempts=r["attempts"],
                    )
                    for r in rows
                ]
            )
            after = rows[-1]["position"]

    @answers
    async def ReplayParked(
        self, request: pb.ReplayParkedRequest, context: Context
    ) -> pb.ReplayParkedResponse:
        principal = self._access.principal(context)
        settings = await self._settings(request.group)
        self._access.authorize(principal, "admin", settings.name)
        replayed = await self._manager.replay_parked(settings)
        return pb.ReplayParkedResponse(replayed=replayed)

    @answers
    async def Consume(
        self, requests: AsyncIterator[pb.ConsumeRequest], context: Context
    ) -> AsyncIterator[bytes]:
        """The first message joins; deliveries go out as the group's rounds claim them, and
        acks and nacks come in on the same call until either side ends it."""
        principal = self._access.principal(context)
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("kind") != "join":
            raise InvalidArgument("a Consume call starts with a join", field="join")
        join = first.join
        settings = await self._settings(join.group)
        self._access.authorize(principal, "subscribe", settings.category or ALL_STREAMS)
        if join.max_in_flight > MAX_IN_FLIGHT:
            raise InvalidArgument(f"max_in_flight is above {MAX_IN_FLIGHT}", field="max_in_flight")
        if len(join.member) > self._limits.max_name_length:
            raise InvalidArgument("member is too long", field="member")
        member = await self._manager.join(
            settings, join.member or principal, join.max_in_flight or DEFAULT_MAX_IN_FLIGHT
        )
        answering = asyncio.create_task(self._answers(requests, member))
        try:
            async for message in member.messages():
                yield message
        finally:
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answering
            await self._manager.leave(member)

    async def _answers(self, requests: AsyncIterator[pb.ConsumeRequest], member: Member) -> None:
        """Acks and nacks as they come; the member's call ends when the client stops sending."""
        try:
            async for request in requests:
                dispatcher = self._manager.dispatcher(member)
                if dispatcher is None:
                    break
                which = request.WhichOneof("kind")
                if which == "ack":
                    dispatcher.ack(member, list(request.ack.positions))
                elif which == "nack":
                    nack = request.nack
                    dispatcher.nack(member, nack.position, nack.park, nack.reason[:1000])
                elif which == "join":
                    member.close(InvalidArgument("a Consume call joins once", field="join"))
                    return
        except MalformedRequest as malformed:  # answers given before it stand
            member.close(InvalidArgument(str(malformed)))
        finally:
            member.close()

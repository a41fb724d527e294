"""The RPCs that delete and expire data (a part of `EventStoreService`): DeleteStream,
SetStreamMetadata and GetStreamMetadata. Both changing calls need the policy's `delete`
operation on the stream's category; reading metadata needs `read`."""

from __future__ import annotations

import dataclasses
import json

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import metrics
from eventstore_server.access import Access
from eventstore_server.config import Limits
from eventstore_server.handling import Context, answers, position_field
from eventstore_server.history import History, StreamRules
from eventstore_server.scavenger import Scavenger
from eventstore_server.validation import category_of, expectation, metadata_json, stream_name


class HistoryHandlers:
    _access: Access
    _limits: Limits
    _history: History
    _scavenger: Scavenger | None

    async def delete_stream(
        self, principal: str, stream: str, expected: int, tombstone: bool
    ) -> int:
        """Delete or tombstone a checked stream name for `principal`; the head position when
        it took effect. DeleteStream's work, shared with KurrentDB's Delete and Tombstone."""
        self._access.authorize(principal, "delete", category_of(stream))
        position = await self._history.delete(stream, expected, tombstone)
        metrics.STREAMS_DELETED.labels("tombstone" if tombstone else "soft").inc()
        if self._scavenger is not None:
            self._scavenger.wake()
        return position

    async def set_stream_rules(
        self, principal: str, stream: str, rules: StreamRules, expected: int
    ) -> int:
        """Set a checked stream name's metadata for `principal`; its new metadata version."""
        self._access.authorize(principal, "delete", category_of(stream))
        version = await self._history.set_rules(stream, rules, expected)
        if self._scavenger is not None and rules.removes:
            self._scavenger.wake()
        return version

    async def stream_rules(
        self, principal: str, stream: str, *, with_deletion: bool = False
    ) -> tuple[StreamRules, int] | None:
        """A checked stream name's metadata and its version, for `principal`; None: none set.
        `with_deletion`: a soft delete shows as the truncate-before it amounts to (as KurrentDB
        writes `$tb` into the metadata when it deletes), metadata or not."""
        self._access.authorize(principal, "read", category_of(stream))
        found = await self._history.rules(stream)
        if not with_deletion:
            return found
        deleted = await self._history.deleted_through(stream)
        if not deleted:
            return found
        rules, version = found or (StreamRules(), 1)
        truncate_before = max(rules.truncate_before, deleted + 1)
        return dataclasses.replace(rules, truncate_before=truncate_before), version

    @answers
    async def DeleteStream(
        self, request: pb.DeleteStreamRequest, context: Context
    ) -> pb.DeleteStreamResponse:
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        expected = expectation(request)
        position = await self.delete_stream(principal, stream, expected, request.tombstone)
        return pb.DeleteStreamResponse(position=position)

    @answers
    async def SetStreamMetadata(
        self, request: pb.SetStreamMetadataRequest, context: Context
    ) -> pb.SetStreamMetadataResponse:
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        given = request.metadata
        custom, _ = metadata_json(given.custom, self._limits, "metadata.custom")
        rules = StreamRules(
            position_field(given.max_count, "metadata.max_count"),
            position_field(given.max_age_seconds, "metadata.max_age_seconds"),
            position_field(given.truncate_before, "metadata.truncate_before"),
            json.loads(custom),
        )
        expected = expectation(request, "expected_metadata_version")
        version = await self.set_stream_rules(principal, stream, rules, expected)
        return pb.SetStreamMetadataResponse(metadata_version=version)

    @answers
    async def GetStreamMetadata(
        self, request: pb.GetStreamMetadataRequest, context: Context
    ) -> pb.GetStreamMetadataResponse:
        principal = self._access.principal(context)
        stream = stream_name(request.stream, self._limits)
        found = await self.stream_rules(principal, stream)
        if found is None:
            return pb.GetStreamMetadataResponse(found=False)
        rules, version = found
        return pb.GetStreamMetadataResponse(
            found=True,
            metadata=pb.StreamMetadata(
                max_count=rules.max_count,
                max_age_seconds=rules.max_age_seconds,
                truncate_before=rules.truncate_before,
                custom={
                    k: v if isinstance(v, str) else json.dumps(v) for k, v in rules.custom.items()
                },
            ),
            metadata_version=version,
        )

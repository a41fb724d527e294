"""Errors the store answers with: each maps to one gRPC status with a `google.rpc.ErrorInfo`.

The ErrorInfo's `reason` is a stable machine-readable name (WRONG_EXPECTED_VERSION, ...), its
`metadata` the facts a client needs to act (for a version conflict: stream, expected, actual).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "eventstore.v1"


class StoreError(Exception):
    """A refusal the client is told about; nothing was written."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata

    def status_message(self) -> status_pb2.Status:
        """As a google.rpc.Status message: the code, message and ErrorInfo."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=[detail])

    def to_status(self) -> grpc.Status:
        result: grpc.Status = rpc_status.to_status(self.status_message())
        return result


class InvalidArgument(StoreError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class WrongExpectedVersion(StoreError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "WRONG_EXPECTED_VERSION"

    def __init__(self, stream: str, expected: str, actual: int) -> None:
        self.actual = actual  # the stream's version (0: none)
        super().__init__(
            f"stream {stream!r} is at version {actual}, expected {expected}",
            stream=stream,
            expected=expected,
            actual=str(actual),
        )


class DuplicateEventId(StoreError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "DUPLICATE_EVENT_ID"


class AlreadyExists(StoreError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class Unavailable(StoreError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class NotFound(StoreError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(StoreError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class StreamDeleted(StoreError):
    """A tombstoned stream: FAILED_PRECONDITION for an append, NOT_FOUND for a read."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "STREAM_DELETED"

    def __init__(self, stream: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION):
        super().__init__(f"stream {stream!r} is deleted for ever (tombstoned)", stream=stream)
        self.code = code


class Unauthenticated(StoreError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(StoreError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ResourceExhausted(StoreError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

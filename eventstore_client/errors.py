"""Typed errors for the store's refusals, read from the gRPC status and its ErrorInfo detail."""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import error_details_pb2, status_pb2


class EventStoreError(Exception):
    """Any error answered by the store (or the transport), with its gRPC code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}


class WrongExpectedVersionError(EventStoreError):
    """The stream was not at the expected version; `actual` says where it is."""

    @property
    def stream(self) -> str:
        return self.metadata.get("stream", "")

    @property
    def actual(self) -> int:
        return int(self.metadata.get("actual", "-1"))


class AlreadyExistsError(EventStoreError):
    """What was to be created exists already (with other settings, for a group)."""


class DuplicateEventIdError(AlreadyExistsError):
    """An event id was already used by another append."""


class InvalidArgumentError(EventStoreError):
    """The request was malformed or too large; nothing was written."""


class UnavailableError(EventStoreError):
    """The store (or its database) could not be reached; safe to retry with the same event ids."""


class NotFoundError(EventStoreError):
    pass


class StreamDeletedError(EventStoreError):
    """The stream is tombstoned: it can be neither read nor written, ever again."""

    @property
    def stream(self) -> str:
        return self.metadata.get("stream", "")


_BY_REASON: dict[str, type[EventStoreError]] = {
    "WRONG_EXPECTED_VERSION": WrongExpectedVersionError,
    "DUPLICATE_EVENT_ID": DuplicateEventIdError,
    "ALREADY_EXISTS": AlreadyExistsError,
    "STREAM_DELETED": StreamDeletedError,
}
_BY_CODE: dict[grpc.StatusCode, type[EventStoreError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: DuplicateEventIdError,
}


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, if it carries one."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    return None


def from_rpc_error(error: grpc.aio.AioRpcError) -> EventStoreError:
    return _typed(error.code(), error.details() or "", error_info(error))


def from_code(code: grpc.StatusCode, message: str) -> EventStoreError:
    """The typed error for a bare status code and message (no ErrorInfo)."""
    return _typed(code, message, None)


def from_status(status: status_pb2.Status) -> EventStoreError:
    """The error a google.rpc.Status stands for (an AppendSession answer, say)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    info = None
    for detail in status.details:
        found = error_details_pb2.ErrorInfo()
        if detail.Unpack(found):
            info = found
            break
    return _typed(code, status.message, info)


def _typed(
    code: grpc.StatusCode, message: str, info: error_details_pb2.ErrorInfo | None
) -> EventStoreError:
    reason = info.reason if info else ""
    kind = _BY_REASON.get(reason) or _BY_CODE.get(code, EventStoreError)
    return kind(code, message, reason, dict(info.metadata) if info else None)


# Codes that say the store or the network failed, not the request: the same request may succeed
# later. RESOURCE_EXHAUSTED is not among them (an oversized message stays oversized). INTERNAL
# is: gRPC's core answers it for a connection torn down mid-call ("Internal error from Core", as
# `make soak` saw when replicas and PostgreSQL crashed), and the store for a database failure it
# could not name; neither is the request's fault, and a consumer must not give up over them (an
# event whose handling keeps failing so is still taken back at its ack timeout, and counted).
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
    }
)


def is_transient(error: BaseException) -> bool:
    """Whether `error` is the store's or the network's failure (the store restarting, a
    connection refused or reset, a deadline passed) rather than the caller's or the event's:
    doing the same again later may succeed. Consumers retry such failures without counting
    them against the event."""
    if isinstance(error, EventStoreError):
        return error.code in TRANSIENT_CODES
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in TRANSIENT_CODES
    # OSError: refused, reset, unreachable; InvalidStateError: a call that had already ended
    # (grpc.aio's answer to a write on it).
    return isinstance(error, (OSError, TimeoutError, asyncio.InvalidStateError))

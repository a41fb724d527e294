"""How the store's handlers answer failures and read numeric and time fields: one place."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from eventstore_server.errors import InvalidArgument, StoreError, Unavailable
from eventstore_server.tail import ShuttingDown
from eventstore_server.validation import MAX_INT64
from eventstore_server.writer import CONNECTION_ERRORS
from hosting.interceptors import MalformedRequest
from hosting.times import timestamp_field

# The generated servicer types contexts per method; one loose alias keeps signatures readable.
Context = grpc.aio.ServicerContext[Any, Any]


def position_field(value: int, field: str) -> int:
    if value > MAX_INT64:
        raise InvalidArgument(f"{field} is out of range", field=field)
    return value


def as_of_time(request: Message, field: str) -> datetime | None:
    """`hosting.times.timestamp_field`, refused as the store refuses (INVALID_ARGUMENT
    with the field in its ErrorInfo)."""
    try:
        return timestamp_field(request, field)
    except ValueError as error:
        raise InvalidArgument(f"{field} is not a valid time: {error}", field=field) from None


ANSWERED = (StoreError, ShuttingDown, MalformedRequest, *CONNECTION_ERRORS)


def _as_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, MalformedRequest):
        return InvalidArgument(str(exc))
    if isinstance(exc, ShuttingDown):
        return Unavailable("the server is shutting down; subscribe again")
    return Unavailable(f"database unavailable: {exc.__class__.__name__}")


Handler = TypeVar("Handler", bound=Callable[..., Any])
Abort = Callable[[Context, StoreError], Awaitable[None]]


async def _abort(context: Context, error: StoreError) -> None:
    await context.abort_with_status(error.to_status())


def answering(abort: Abort) -> Callable[[Handler], Handler]:
    """A decorator that turns a handler's failures into answers through `abort` (which ends
    the call): a refusal (`StoreError`) as itself; a lost database connection, or a server
    shutting down under a subscription, as UNAVAILABLE (the client may retry). Anything else is
    a bug: UNKNOWN."""

    def decorate(handler: Handler) -> Handler:
        if inspect.isasyncgenfunction(handler):

            @functools.wraps(handler)
            async def streaming(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    async for message in handler(self, request, context):
                        yield message
                except ANSWERED as exc:
                    await abort(context, _as_store_error(exc))
                    raise AssertionError("abort returned") from exc

            return streaming  # type: ignore[return-value]

        @functools.wraps(handler)
        async def unary(self: Any, request: Any, context: Context) -> Any:
            try:
                return await handler(self, request, context)
            except ANSWERED as exc:
                await abort(context, _as_store_error(exc))
                raise AssertionError("abort returned") from exc

        return unary  # type: ignore[return-value]

    return decorate


# Our own API's answers: the status with its ErrorInfo (see errors.py).
answers = answering(_abort)

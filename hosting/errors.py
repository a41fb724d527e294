"""One way for a service's gRPC handlers to answer errors: raise, and let `answers` map the
exception to a status. Handlers then read straight through, with no abort-and-return dance."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

import grpc

from eventstore_client.errors import EventStoreError

Context = grpc.aio.ServicerContext[Any, Any]
Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Servicer, Request, Context], Awaitable[Response]]


class Refused(Exception):
    """Raise in a handler to answer with `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> NoReturn:
    """Refuse the request as malformed (INVALID_ARGUMENT)."""
    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, message)


def answers(
    table: Mapping[type[Exception], grpc.StatusCode],
) -> Callable[[Method[Servicer, Request, Response]], Method[Servicer, Request, Response]]:
    """A decorator for unary handlers: `Refused` answers with its own code, an exception of a
    class in `table` (the first that matches, in the table's order) with that code and its
    text, and the store's errors with the store's code. Anything else is a bug: UNKNOWN."""

    def decorate(
        method: Method[Servicer, Request, Response],
    ) -> Method[Servicer, Request, Response]:
        @functools.wraps(method)
        async def handler(self: Servicer, request: Request, context: Context) -> Response:
            try:
                return await method(self, request, context)
            except Refused as refused:
                await context.abort(refused.code, refused.message)
            except EventStoreError as error:
                # The store not answering within the call's time (it waited for the store to
                # come back) is the store being unavailable, as a caller should hear it.
                code = error.code
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    code = grpc.StatusCode.UNAVAILABLE
                await context.abort(code, f"event store: {error.message}")
            except tuple(table) as error:
                code = next(c for kind, c in table.items() if isinstance(error, kind))
                await context.abort(code, str(error))
            raise AssertionError("context.abort returned")

        return handler

    return decorate

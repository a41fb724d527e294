"""Server interceptors every gRPC server of ours installs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc


class _Malformed:
    def __init__(self, error: str) -> None:
        self.error = error


class MalformedRequest(Exception):
    """A message of a request stream that does not decode as its type. The request iterator
    raises it where the message stands, so a handler first answers what it took before it;
    unless the handler answers it itself, the call ends with INVALID_ARGUMENT."""


def _message_name(parse: Any) -> str:
    descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "")) or "request"


def refuse_malformed(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method handler, answering INVALID_ARGUMENT, with the message type's name, to
    request bytes that do not decode as its message, on every shape of call. Without this,
    gRPC answers a failing deserializer with an opaque UNKNOWN."""
    parse = handler.request_deserializer
    if parse is None:
        return handler
    name = _message_name(parse)

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or whatever a custom parser raises
            return _Malformed(f"the request is not a valid {name} message: {exc}")

    async def refuse(request: _Malformed, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)

    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Malformed):
                raise MalformedRequest(request.error)
            yield request

    behaviour: Any  # an async function or generator here (typed for sync gRPC)
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Malformed):
                await refuse(request, context)
            return await behaviour(request, context)

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=lenient, unary_unary=guarded_unary
        )
    if handler.unary_stream is not None:
        behaviour = handler.unary_stream

        async def guarded_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if isinstance(request, _Malformed):
                await refuse(request, context)
            async for message in behaviour(request, context):
                yield message

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=lenient, unary_stream=guarded_stream
        )
    if handler.stream_unary is not None:
        behaviour = handler.stream_unary

        async def guarded_client_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            try:
                return await behaviour(checked(requests), context)
            except MalformedRequest as malformed:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(malformed))

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=lenient, stream_unary=guarded_client_stream
        )
    behaviour = handler.stream_stream

    async def guarded_bidi(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for message in behaviour(checked(requests), context):
                yield message
        except MalformedRequest as malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(malformed))

    return handler._replace(  # type: ignore[attr-defined,no-any-return]
        request_deserializer=lenient, stream_stream=guarded_bidi
    )


class RefuseMalformed(grpc.aio.ServerInterceptor):
    """`refuse_malformed` for every method of a server (each handler wrapped once)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self, continuation: Any, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        method = handler_call_details.method
        if method not in self._wrapped:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            self._wrapped[method] = refuse_malformed(handler)
        return self._wrapped[method]

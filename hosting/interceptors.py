"""Server interceptors every gRPC server of ours installs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc


class _Malformed:
    def __init__(self, error: str) -> None:
        self.error = error


def _abort_malformed(request: _Malformed, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    return context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message: {request.error}"
    )


def refuse_malformed(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method handler, answering INVALID_ARGUMENT to request bytes that do not decode
    as its message. Without this, gRPC answers a failing deserializer with an opaque UNKNOWN."""
    parse = handler.request_deserializer
    if parse is None or handler.request_streaming:
        return handler

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, or whatever a custom parser raises
            return _Malformed(str(exc))

    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary  # an async function here (typed for sync gRPC)

        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Malformed):
                await _abort_malformed(request, context)
            return await unary(request, context)

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=lenient, unary_unary=guarded_unary
        )
    stream: Any = handler.unary_stream

    async def guarded_stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if isinstance(request, _Malformed):
            await _abort_malformed(request, context)
        async for message in stream(request, context):
            yield message

    return handler._replace(  # type: ignore[attr-defined,no-any-return]
        request_deserializer=lenient, unary_stream=guarded_stream
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

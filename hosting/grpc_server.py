"""What every gRPC server of ours has besides its own services: health, reflection, a
plaintext health port for probes, and a stop on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.reflection import aio as reflection_aio

from hosting.interceptors import refuse_malformed
from hosting.security import NO_PORT_SHARING, add_port

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


def _encode(message: Any) -> bytes:
    encoded: bytes = message.SerializeToString()
    return encoded


def service_handlers(
    service: Any, descriptor: ServiceDescriptor, serialize: Callable[[Any], bytes] = _encode
) -> grpc.GenericRpcHandler:
    """Every method of `descriptor`, served by `service`'s method of the same name: requests
    parsed as the generated code parses them (malformed ones answered INVALID_ARGUMENT, see
    `refuse_malformed`), answers encoded by `serialize` (which may pass bytes through)."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in descriptor.methods:
        kind = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = refuse_malformed(
            kind(
                getattr(service, method.name),
                request_deserializer=message_factory.GetMessageClass(method.input_type).FromString,
                response_serializer=serialize,
            )
        )
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)


async def health_only_server(address: str, servicer: health.aio.HealthServicer) -> grpc.aio.Server:
    """Plaintext health on a port of its own: kubelet's gRPC probes cannot speak TLS."""
    server = grpc.aio.server(options=[NO_PORT_SHARING])
    server.add_generic_rpc_handlers((service_handlers(servicer, HEALTH),))
    add_port(server, address, None)
    await server.start()
    return server


def add_health_and_reflection(
    server: grpc.aio.Server, names: Sequence[str]
) -> health.aio.HealthServicer:
    """The standard health service (its statuses are the caller's to set) and reflection over
    `names`, health and reflection itself; served through `service_handlers`, so that they too
    answer an undecodable request with INVALID_ARGUMENT."""
    servicer = health.aio.HealthServicer()
    server.add_generic_rpc_handlers((service_handlers(servicer, HEALTH),))
    names = [*names, HEALTH.full_name, REFLECTION.full_name]
    server.add_generic_rpc_handlers(
        (service_handlers(reflection_aio.ReflectionServicer(names), REFLECTION),)
    )
    return servicer


def stop_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (the handlers are installed now)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_signalled(ready: asyncio.Event | None = None) -> None:
    """Return on SIGTERM or SIGINT (the signal handlers are installed first, then `ready` set)."""
    stop = stop_signal()
    if ready is not None:
        ready.set()
    await stop.wait()

"""What every gRPC server of ours has besides its own services: health, reflection, a
plaintext health port for probes, and a stop on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hosting.security import NO_PORT_SHARING, add_port


async def health_only_server(address: str, servicer: health.aio.HealthServicer) -> grpc.aio.Server:
    """Plaintext health on a port of its own: kubelet's gRPC probes cannot speak TLS."""
    server = grpc.aio.server(options=[NO_PORT_SHARING])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    add_port(server, address, None)
    await server.start()
    return server


def add_health_and_reflection(
    server: grpc.aio.Server, names: Sequence[str]
) -> health.aio.HealthServicer:
    """The standard health service (its statuses are the caller's to set) and reflection over
    `names`, health and reflection itself."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
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

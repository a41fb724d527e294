"""Running a gRPC service built on the store: flags, health, reflection, background
subscriptions and a graceful stop on SIGTERM. Both example services use it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from eventstore_client import event_loop, tracing
from eventstore_client.security import (
    PLAINTEXT,
    ChannelSecurity,
    RequireToken,
    ServerTLS,
    Tokens,
    add_client_flags,
    add_port,
    client_security,
    server_tls,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSettings:
    listen: str
    eventstore: str
    database_url: str
    snapshot_every: int
    shutdown_grace: float
    metrics_listen: str = ""
    health_listen: str = ""  # plaintext health only, for probes when the API is on TLS
    tls: ServerTLS | None = None  # the service's own port
    tokens_file: str = ""  # callers of the service's API must bring one of these tokens
    eventstore_security: ChannelSecurity = PLAINTEXT  # how the service reaches the store


def parse_settings(
    prog: str,
    env_prefix: str,
    default_listen: str,
    argv: Sequence[str] | None = None,
    environ: dict[str, str] | None = None,
) -> ServiceSettings:
    """Flags, each with an environment variable (`{env_prefix}_LISTEN`, ...) as its default."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--listen",
        default=env.get(f"{env_prefix}_LISTEN", default_listen),
        help=f"HOST:PORT to serve gRPC on [${env_prefix}_LISTEN]",
    )
    parser.add_argument(
        "--eventstore",
        default=env.get("EVENTSTORE_ADDRESS", "127.0.0.1:50051"),
        help="the event store's HOST:PORT [$EVENTSTORE_ADDRESS]",
    )
    parser.add_argument(
        "--database-url",
        default=env.get("DATABASE_URL", ""),
        help="PostgreSQL for the service's read model, if it has one [$DATABASE_URL]",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=int(env.get("SNAPSHOT_EVERY", "100")),
        help="save an aggregate snapshot every N events [$SNAPSHOT_EVERY]",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(env.get(f"{env_prefix}_SHUTDOWN_GRACE", "10")),
        help=f"seconds to finish calls on SIGTERM [${env_prefix}_SHUTDOWN_GRACE]",
    )
    parser.add_argument(
        "--metrics-listen",
        default=env.get(f"{env_prefix}_METRICS_LISTEN", ""),
        help=f"HOST:PORT for Prometheus /metrics; empty: off [${env_prefix}_METRICS_LISTEN]",
    )
    parser.add_argument(
        "--health-listen",
        default=env.get(f"{env_prefix}_HEALTH_LISTEN", ""),
        help=f"HOST:PORT for plaintext health only [${env_prefix}_HEALTH_LISTEN]",
    )
    for flag, suffix, text in [
        ("--tls-cert", "TLS_CERT", "PEM certificate chain: serve TLS"),
        ("--tls-key", "TLS_KEY", "PEM private key of the certificate"),
        ("--tls-client-ca", "TLS_CLIENT_CA", "PEM CA: require client certificates"),
        ("--tokens-file", "TOKENS_FILE", "file of `principal token` lines: require a token"),
    ]:
        var = f"{env_prefix}_{suffix}"
        parser.add_argument(flag, default=env.get(var, ""), help=f"{text} [${var}]")
    add_client_flags(parser, env)
    args = parser.parse_args(argv)
    try:
        tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
        security = client_security(args)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    return ServiceSettings(
        args.listen,
        args.eventstore,
        args.database_url,
        args.snapshot_every,
        args.shutdown_grace,
        args.metrics_listen,
        args.health_listen,
        tls,
        args.tokens_file,
        security,
    )


def is_uuid(value: str) -> bool:
    """Ids in the example services' APIs are UUIDs."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def main(
    name: str,
    env_prefix: str,
    default_listen: str,
    run: Callable[[ServiceSettings], Coroutine[Any, Any, None]],
    *,
    asyncpg: bool = False,
) -> None:
    """A service's entry point: logging, settings, tracing (before any channel or server exists:
    the gRPC instrumentation wraps their creation), then `run` until SIGTERM; spans flushed."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = parse_settings(f"python -m {name}", env_prefix, default_listen)
    tracing.setup(name, asyncpg=asyncpg)
    try:
        event_loop.run(run(settings))
    finally:
        tracing.shutdown()


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


async def health_only_server(address: str, servicer: health.aio.HealthServicer) -> grpc.aio.Server:
    """Plaintext health on a port of its own: kubelet's gRPC probes cannot speak TLS."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    add_port(server, address, None)
    await server.start()
    return server


async def serve(
    name: str,
    settings: ServiceSettings,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> None:
    """Serve until SIGTERM/SIGINT. `register` adds the servicers and returns their full names;
    `background` tasks (subscriptions) run beside the server and are cancelled on stop."""
    if settings.metrics_listen:
        host, port_text = settings.metrics_listen.rsplit(":", 1)
        start_http_server(int(port_text), addr=host)
    interceptors: list[grpc.aio.ServerInterceptor] = [RefuseMalformed()]
    if settings.tokens_file:
        interceptors.insert(0, RequireToken(Tokens.from_file(settings.tokens_file)))
    server = grpc.aio.server(interceptors=interceptors)
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = add_port(server, settings.listen, settings.tls)
    await server.start()
    health_server = None
    if settings.health_listen:
        health_server = await health_only_server(settings.health_listen, health_servicer)
    for service in ["", *names]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    tasks = [asyncio.create_task(job(), name=f"{name}-background") for job in background]
    print(f"{name} listening on {settings.listen.rsplit(':', 1)[0]}:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("%s shutting down", name)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace)
    if health_server is not None:
        await health_server.stop(0)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""Running a gRPC service built on the store: flags, health, reflection, background
subscriptions and a graceful stop on SIGTERM. Both example services use it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import start_http_server

from eventstore_client.errors import is_transient
from hosting import event_loop, telemetry
from hosting.database import WAITABLE
from hosting.grpc_server import add_health_and_reflection, health_only_server, stop_signal
from hosting.interceptors import RefuseMalformed
from hosting.security import NO_PORT_SHARING, CannotListen, RequireToken, Tokens, add_port
from hosting.settings import ServiceSettings, parse_settings

log = logging.getLogger(__name__)


def dependency_away(error: BaseException) -> bool:
    """Whether `error` says that the store, the network or the service's own PostgreSQL is away
    for now (the same work may succeed later), not that the work itself is wrong: a consumer
    retries such failures without counting them against the event."""
    return is_transient(error) or isinstance(error, WAITABLE)


async def _prepared(prepare: Callable[[], Awaitable[object]] | None, stop: asyncio.Event) -> bool:
    """Run `prepare` unless a stop comes first; whether it finished."""
    if prepare is None:
        return not stop.is_set()
    preparing = asyncio.ensure_future(prepare())
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if preparing not in done:
        preparing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await preparing
        return False
    preparing.result()  # its errors (a database that does not exist) end the process
    return True


async def _watch(name: str, tasks: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
    """Until `stop` is set, or one of `tasks` ends (logged, with why)."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    for task in done - {stopping}:
        error = None if task.cancelled() else task.exception()
        log.error(
            "%s: %s stopped (%s): health is NOT_SERVING until the service is restarted",
            name,
            task.get_name(),
            repr(error) if error else "it returned",
            exc_info=error,
        )


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
    telemetry.setup(name, asyncpg=asyncpg)
    try:
        event_loop.run(run(settings))
    except CannotListen as error:
        raise SystemExit(f"{name}: {error}") from None
    finally:
        telemetry.shutdown()


async def serve(
    name: str,
    settings: ServiceSettings,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    prepare: Callable[[], Awaitable[object]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set). `register` adds the servicers and returns
    their full names; `prepare` waits for what the service depends on (its database, the
    store) while health says NOT_SERVING; then health turns SERVING and the `background` tasks
    (consumers) start, running beside the server until they are cancelled on stop. A background
    task that ends before then (it gave up, or a bug ended it) turns health NOT_SERVING and is
    logged with its reason: a service whose consumer died must not look healthy."""
    if settings.metrics_listen:
        host, port_text = settings.metrics_listen.rsplit(":", 1)
        start_http_server(int(port_text), addr=host)
    interceptors: list[grpc.aio.ServerInterceptor] = [RefuseMalformed()]
    if settings.tokens_file:
        interceptors.insert(0, RequireToken(Tokens.from_file(settings.tokens_file)))
    server = grpc.aio.server(interceptors=interceptors, options=[NO_PORT_SHARING])
    names = list(register(server))
    health_servicer = add_health_and_reflection(server, names)
    port = add_port(server, settings.listen, settings.tls)
    await server.start()
    health_server = None
    if settings.health_listen:
        health_server = await health_only_server(settings.health_listen, health_servicer)
    for service in ["", *names]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    print(f"{name} listening on {settings.listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = stop or stop_signal()
    tasks: list[asyncio.Task[None]] = []
    if await _prepared(prepare, stop):
        for service in ["", *names]:
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        tasks = [
            asyncio.create_task(job(), name=f"{name}-background-{job.__qualname__}")
            for job in background
        ]
        await _watch(name, tasks, stop)
        if not stop.is_set():
            for service in ["", *names]:
                await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            await stop.wait()
    log.info("%s shutting down", name)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.shutdown_grace)
    if health_server is not None:
        await health_server.stop(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # (a task that had ended was logged)

"""Real processes for tests, the bench and the tools: the store as a subprocess, PostgreSQL
(embedded or DATABASE_URL), fresh databases, health checks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from localpg import LocalPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server whose databases may be created: DATABASE_URL's, or an
    embedded one for as long as the context lasts."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    with LocalPostgres() as pg:
        yield pg.dsn


def unique(prefix: str = "test") -> str:
    """A name no other test uses: `prefix` + 12 hex digits (no '-', so usable as a category)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def create_database(server_url: str, name: str = "") -> str:
    """A new, empty database on the server at `server_url` (named `name`, or uniquely);
    returns its URL."""
    name = name or unique("db")

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    # In a thread of its own: callers may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


def wait_until(
    condition: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def health_status(address: str, service: str = "", timeout: float = 1.0) -> int | None:
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            return int(response.status)
    except grpc.RpcError:
        return None


class ServerProcess:
    """A server of ours (`python -m MODULE`) on a free local port, with its log in a file."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        port: int | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        """With `argv`, that exact command (`python` meaning this interpreter) replaces
        `python -m MODULE --listen 127.0.0.1:PORT ARGS`."""
        self.argv = [sys.executable if a == "python" else a for a in argv] if argv else None
        self.module = module
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.health_address = self.address  # where readiness is asked
        self.args = ["--listen", self.address, *args]
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix=f"{module}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 60.0) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv or [sys.executable, "-m", self.module, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float = 60.0) -> None:
        def serving() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited:\n{self.log()}")
            status = health_status(self.health_address)
            return bool(status == health_pb2.HealthCheckResponse.SERVING)

        wait_until(serving, timeout)

    def with_health_port(self) -> ServerProcess:
        """Serve plaintext health on a port of its own and wait for readiness there (the main
        port may speak only TLS)."""
        self.health_address = f"127.0.0.1:{free_port()}"
        self.args += ["--health-listen", self.health_address]
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait: the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(15)
            except subprocess.TimeoutExpired:
                self.kill()


def store_process(
    database_url: str, *extra: str, port: int | None = None, env: dict[str, str] | None = None
) -> ServerProcess:
    return ServerProcess(
        "eventstore_server", ["--database-url", database_url, *extra], env=env, port=port
    )

"""`make run`: PostgreSQL (embedded, unless DATABASE_URL is set) and every process of the system.

Data lives in .run/ and survives restarts. Ctrl-C (or SIGTERM) stops everything gracefully.
Ports: EVENTSTORE_PORT (50051), CUSTOMER_PORT (50052), ORDER_PORT (50053), LOCALPG_PORT (5433).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from hosting.ports import busy_message, in_use
from localpg import LocalPostgres, data_directory

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".run"


async def _ensure_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def _processes(database_url: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) of each process; metrics on METRICS_PORT (9101) and the next two."""
    store = f"127.0.0.1:{os.environ.get('EVENTSTORE_PORT', '50051')}"
    metrics = int(os.environ.get("METRICS_PORT", "9101"))
    db = ["--database-url", database_url]
    console = f"127.0.0.1:{os.environ.get('CONSOLE_PORT', '8080')}"
    kurrentdb = f"127.0.0.1:{os.environ.get('KURRENTDB_PORT', '2113')}"
    served = ["--listen", store, "--console-listen", console, "--kurrentdb-listen", kurrentdb]
    procs = [("eventstore_server", [*served, *db])]
    for module, port_var, default in (
        ("customer_svc", "CUSTOMER_PORT", "50052"),
        ("order_svc", "ORDER_PORT", "50053"),
    ):
        listen = f"127.0.0.1:{os.environ.get(port_var, default)}"
        procs.append((module, ["--listen", listen, "--eventstore", store, *db]))
    return [
        (module, [*args, "--metrics-listen", f"127.0.0.1:{metrics + i}"])
        for i, (module, args) in enumerate(procs)
    ]


def _ports(embedded: bool, receiver: bool) -> list[tuple[str, int]]:
    """Every port `make run` is about to listen on, with what for."""
    ports = [
        ("the store", int(os.environ.get("EVENTSTORE_PORT", "50051"))),
        ("customer_svc", int(os.environ.get("CUSTOMER_PORT", "50052"))),
        ("order_svc", int(os.environ.get("ORDER_PORT", "50053"))),
    ]
    metrics = int(os.environ.get("METRICS_PORT", "9101"))
    ports += [(f"{name}'s metrics", metrics + i) for i, (name, _) in enumerate(ports)]
    ports.append(("the web console", int(os.environ.get("CONSOLE_PORT", "8080"))))
    ports.append(("KurrentDB's protocol", int(os.environ.get("KURRENTDB_PORT", "2113"))))
    if embedded:
        ports.append(("PostgreSQL", int(os.environ.get("LOCALPG_PORT", "5433"))))
    if receiver:
        ports.append(("the trace receiver", int(os.environ.get("OTLP_PORT", "4317"))))
    return ports


def _check_ports(ports: list[tuple[str, int]]) -> None:
    """Before anything starts: a port in use is named, with what holds it."""
    busy = [
        f"port {port} ({what}): {busy_message(f'127.0.0.1:{port}')}"
        for what, port in ports
        if in_use("127.0.0.1", port)
    ]
    if busy:
        raise SystemExit(
            "make run: cannot start, ports are taken (is another `make run` up?)\n  "
            + "\n  ".join(busy)
        )


def _postgres() -> tuple[LocalPostgres, str]:
    data, note = data_directory(RUN / "pgdata")
    if note:
        print(note, flush=True)
    pg = LocalPostgres(data, int(os.environ.get("LOCALPG_PORT", "5433")), ephemeral=False)
    try:
        pg.start()
    except (RuntimeError, TimeoutError, OSError) as error:
        raise SystemExit(f"make run: PostgreSQL did not start: {error}") from None
    return pg, asyncio.run(_ensure_database(pg.dsn, "eventstore"))


def _tracing_wanted() -> bool:
    return not any(
        k.startswith("OTEL_EXPORTER_OTLP") or k == "OTEL_TRACES_EXPORTER" for k in os.environ
    )


Child = tuple[str, "subprocess.Popen[bytes]"]


def _trace_receiver(env: dict[str, str]) -> Child:
    """A local receiver that keeps the spans for `make traces`; `env` points the servers at it."""
    otlp = f"127.0.0.1:{os.environ.get('OTLP_PORT', '4317')}"
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.otlp_receiver",
            "--listen",
            otlp,
            "--out",
            str(RUN / "spans.jsonl"),
        ],
        cwd=ROOT,
        # Out of the terminal's process group: Ctrl-C must not stop it before the servers have
        # flushed their last spans to it (it is stopped last).
        start_new_session=True,
    )
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{otlp}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    return "otlp_receiver", receiver


def _stop_in_order(children: list[Child]) -> None:
    """The services, then the store (they flush their spans on the way out), then the trace
    receiver."""
    for names in (("customer_svc", "order_svc"), ("eventstore_server",), ("otlp_receiver",)):
        group = [c for c in children if c[0] in names]
        for _, child in reversed(group):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _, child in group:
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()


def main() -> None:
    RUN.mkdir(exist_ok=True)
    pg: LocalPostgres | None = None
    server_url = os.environ.get("DATABASE_URL", "")
    _check_ports(_ports(embedded=not server_url, receiver=_tracing_wanted()))
    if server_url:
        database_url = server_url
    else:
        pg, database_url = _postgres()
        print(f"PostgreSQL (embedded) at {database_url}", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    env = dict(os.environ)
    # Traces: unless OTEL_* says otherwise, a local receiver keeps them for `make traces`.
    children: list[Child] = [_trace_receiver(env)] if _tracing_wanted() else []
    try:
        for module, args in _processes(database_url):
            # Each in a session of its own: Ctrl-C reaches only us, and we stop them in order
            # (the services before the store they depend on), so none logs the others' exit.
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args], cwd=ROOT, env=env, start_new_session=True
            )
            children.append((module, process))
            time.sleep(0.5)  # let the store migrate before the services connect to it
        print("Running. Ctrl-C stops everything.", flush=True)
        while not stopping and all(c.poll() is None for _, c in children):
            time.sleep(0.2)
    finally:
        _stop_in_order(children)
        if pg is not None:
            pg.stop()
    failed = [name for name, c in children if c.returncode not in (0, None, -signal.SIGTERM)]
    if failed and not stopping:
        sys.exit(f"stopped because a process exited: {failed}")


if __name__ == "__main__":
    main()

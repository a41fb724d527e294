"""What a new user meets in the first hour, each through the real entry point: the CLI as a
subprocess, the store's and `make run`'s launchers as processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventstore_client import EventStoreClient, NewEvent
from localpg import LocalPostgres, free_port
from tests.integration.test_cli import cli
from tools.processes import ROOT, ServerProcess, health_status, store_process, unique, wait_until


def test_invalid_json_is_refused_and_nothing_is_stored(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    bad = cli(store, "append", stream, "T", '{"total": 5')
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr, bad.stderr
    empty = cli(store, "append", stream, "T", stdin="")
    assert empty.returncode == 2 and "no data on stdin" in empty.stderr, empty.stderr
    assert cli(store, "read", stream).returncode == 5  # nothing was written
    other = cli(store, "append", stream, "T", "not json", "--content-type", "text/plain")
    assert other.returncode == 0, other.stderr


def test_reading_into_a_closed_pipe_ends_quietly(store: ServerProcess) -> None:
    async def fill() -> None:
        async with EventStoreClient(store.address) as client:
            await client.append(
                f"{unique()}-1", [NewEvent.json("Fill", {"n": i}) for i in range(1000)]
            )

    asyncio.run(fill())
    env = {**os.environ, "EVENTSTORE_ADDRESS": store.address}
    reader = subprocess.Popen(
        [sys.executable, "-m", "eventstore_client.cli", "read-all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert reader.stdout is not None and reader.stderr is not None
    lines = [reader.stdout.readline() for _ in range(2)]  # as `| head -2` does
    reader.stdout.close()
    assert reader.wait(30) == 0
    assert reader.stderr.read() == b"" and all(lines)


def test_traces_into_a_closed_pipe_end_quietly(tmp_path: Path) -> None:
    spans = tmp_path / "spans.jsonl"
    spans.write_text(
        "".join(_span_lines(f"t{n}", "order.v1.OrderService/CreateOrder") for n in range(300))
    )
    reader = subprocess.Popen(
        [sys.executable, "-m", "tools.traces", "--file", str(spans), "--last", "300"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.readline()
    reader.stdout.close()
    assert reader.wait(30) == 0
    assert reader.stderr.read() == b""


def _span_lines(trace: str, rpc: str, start: int = 0, child: str = "") -> str:
    root = {
        "trace_id": trace,
        "span_id": f"{trace}-root",
        "parent_span_id": "",
        "name": rpc,
        "kind": 2,
        "service": rpc.split(".")[0] + "_svc",
        "start_ns": start,
        "end_ns": start + 5_000_000,
    }
    lines = [root]
    if child:
        lines.append(
            {
                **root,
                "span_id": f"{trace}-child",
                "parent_span_id": root["span_id"],
                "name": child,
                "kind": 1,
            }
        )
    return "".join(json.dumps(line) + "\n" for line in lines)


def test_traces_show_the_last_create_order_with_full_span_names(tmp_path: Path) -> None:
    long_name = "eventstore.v1.EventStore/CommitCheckpoint with a name longer than any column"
    spans = tmp_path / "spans.jsonl"
    spans.write_text(
        _span_lines("saga", "order.v1.OrderService/CreateOrder", 0, child=long_name)
        + _span_lines("later", "order.v1.OrderService/GetOrder", 10**9)
    )
    shown = subprocess.run(
        [sys.executable, "-m", "tools.traces", "--file", str(spans)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "trace saga" in shown and "trace later" not in shown
    assert long_name in shown


def test_cli_flags_are_checked_by_name_and_json_is_taken_anywhere(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    for args, flag in [
        (("read", stream, "--count", "-1"), "--count"),
        (("read-all", "--after", "-1"), "--after"),
        (("--timeout", "-1", "stats"), "--timeout"),
    ]:
        refused = cli(store, *args)
        assert refused.returncode == 2 and flag in refused.stderr, refused.stderr
    assert cli(store, "append", stream, "T", "{}", "--metadata", "by=ops").returncode == 0
    as_json = cli(store, "read", stream, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["metadata"] == {"by": "ops"}
    text = cli(store, "read", stream)
    assert "by=ops" in text.stdout  # the text output shows metadata too
    missing = cli(store, "read", f"{unique()}-none")
    assert missing.returncode == 5 and "not found" in missing.stderr
    assert missing.stdout == ""


def test_pointing_the_cli_at_a_service_says_so(new_database: Callable[[], str]) -> None:
    url = new_database()
    store = store_process(url).start()
    service = ServerProcess(
        "customer_svc", ["--eventstore", store.address, "--database-url", url]
    ).start()
    try:
        answer = cli(service, "stats")
        assert answer.returncode == 1
        assert "UNIMPLEMENTED" in answer.stderr and "the event store?" in answer.stderr
    finally:
        service.stop()
        store.stop()


def test_a_second_store_on_a_taken_port_names_the_port_and_who_holds_it(
    store: ServerProcess, new_database: Callable[[], str]
) -> None:
    second = store_process(new_database(), port=store.port)
    second.start(wait=False)
    assert second.process is not None and second.process.wait(60) != 0
    log = second.log()
    assert f"{store.address} is in use by pid {store.process.pid}" in log, log  # type: ignore[union-attr]
    assert "Traceback" not in log


def test_a_database_that_does_not_exist_is_one_clear_line(postgres_server_url: str) -> None:
    missing = postgres_server_url.rsplit("/", 1)[0] + f"/nosuch{uuid.uuid4().hex[:8]}"
    server = store_process(missing)
    server.start(wait=False)
    assert server.process is not None and server.process.wait(60) != 0
    log = server.log()
    assert "does not exist" in log and "Traceback" not in log, log


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_make_run_checks_its_ports_before_starting_anything(listener: int, tmp_path: Path) -> None:
    env = {**os.environ, "EVENTSTORE_PORT": str(listener), "DATABASE_URL": "postgresql://unused/x"}
    done = subprocess.run(
        [sys.executable, "-m", "tools.run_local"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"port {listener} (the store)" in done.stderr and f"pid {os.getpid()}" in done.stderr, (
        done.stderr
    )
    assert "Running" not in done.stdout and "Traceback" not in done.stderr


def test_postgres_own_error_is_shown_when_it_cannot_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "something").write_text("not a cluster")  # initdb refuses a non-empty directory
    # initdb's own words, whichever it finds first (not empty; or, under root in a private
    # temporary directory, that `nobody` cannot access it).
    with pytest.raises(RuntimeError, match=r"initdb failed for .*: initdb: error: "):
        LocalPostgres(data, free_port()).start()


def test_the_embedded_postgres_start_is_quiet() -> None:
    with LocalPostgres() as pg:
        log = pg.log_path.read_text()
    assert "FATAL" not in log, log


def test_the_package_metadata_uses_an_spdx_licence() -> None:
    """A licence table makes setuptools print a deprecation warning on every install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: PostgreSQL then runs as nobody")
def test_make_run_as_root_in_a_private_directory(tmp_path: Path) -> None:
    """`make run`'s launcher in a clone under `mktemp -d` (mode 0700), as root: as CI runs."""
    private = Path(
        subprocess.run(["mktemp", "-d"], capture_output=True, text=True, check=True).stdout.strip()
    )
    clone = private / "clone"
    try:
        # The working tree as it is (a clone of HEAD would test the last commit instead).
        shutil.copytree(
            ROOT,
            clone,
            ignore=shutil.ignore_patterns(".git", ".venv", ".run", "*cache*", "__pycache__"),
        )
        ports = {
            name: str(free_port())
            for name in (
                "EVENTSTORE_PORT",
                "CUSTOMER_PORT",
                "ORDER_PORT",
                "LOCALPG_PORT",
                "OTLP_PORT",
                "CONSOLE_PORT",
                "KURRENTDB_PORT",
            )
        }
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | ports
        env["METRICS_PORT"] = str(free_port())
        log = tmp_path / "run.log"
        with open(log, "wb") as out:
            run = subprocess.Popen(
                [sys.executable, "-m", "tools.run_local"],
                cwd=clone,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        addresses = [
            f"127.0.0.1:{ports[p]}" for p in ("EVENTSTORE_PORT", "CUSTOMER_PORT", "ORDER_PORT")
        ]
        try:
            wait_until(
                lambda: run.poll() is not None or all(health_status(a) == 1 for a in addresses), 120
            )
            assert run.poll() is None, log.read_text()
        finally:
            run.send_signal(signal.SIGINT)
            code = run.wait(60)
        text = log.read_text()
        assert code == 0, text
        assert "links there" in text  # where the data went, and why
        assert f"console at http://127.0.0.1:{ports['CONSOLE_PORT']}/" in text
        assert f"KurrentDB protocol on 127.0.0.1:{ports['KURRENTDB_PORT']}" in text
        assert (clone / ".run" / "pgdata").is_symlink()
        for noise in ("Traceback", "joining again", "resubscribing"):
            assert noise not in text, text
    finally:
        target = clone / ".run" / "pgdata"
        if target.is_symlink():
            subprocess.run(["rm", "-rf", os.readlink(target)], check=False)
        subprocess.run(["rm", "-rf", str(private)], check=False)

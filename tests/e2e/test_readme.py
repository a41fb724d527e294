"""The README as a new user follows it: its command-line examples in the order it shows them,
its Python example, then `make demo`, against a running system; outputs checked, not only
exit codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.system import System, local_only, start_system
from tools.processes import ROOT

README = (ROOT / "README.md").read_text()


def block(after_heading: str, language: str) -> str:
    """The first ```language block after a heading."""
    part = README[README.index(after_heading) :]
    start = part.index(f"```{language}\n") + len(language) + 4
    return part[start : part.index("```", start)]


@pytest.fixture(scope="module")
def running(new_database: Callable[[], str]) -> Iterator[System]:
    system = start_system(new_database())
    yield system
    system.stop()


def run(line: str, system: System) -> subprocess.CompletedProcess[str]:
    eventstore = f"{sys.executable} -m eventstore_client.cli"
    command = re.sub(r"(^|\| )eventstore ", lambda m: f"{m.group(1)}{eventstore} ", line)
    if "| jq" in command and shutil.which("jq") is None:
        command = command.split("| jq")[0]  # jq is not installed here: the part before it
    env = {**os.environ, "EVENTSTORE_ADDRESS": system.store.address, "NO_COLOR": "1"}
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@local_only
def test_the_readme_walkthrough(running: System, tmp_path: Path) -> None:
    outputs: dict[str, str] = {}
    for raw in block("## The command line", "sh").splitlines():
        line = re.sub(r"\s+# .*$", "", raw).strip()
        if line.startswith("eventstore tail"):
            continue  # follows live events until interrupted: tested in test_cli.py
        done = run(line, running)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        key = line.split()[1] if line.startswith("eventstore") else line
        outputs.setdefault(key, done.stdout)  # the first of each command
    assert "OrderPlaced" in outputs["read"] and "by=ops" in outputs["read"]
    assert "customer_svc.orders" in outputs["groups"]

    # The malformed OrderCreated is parked by customer_svc (with the missing fields named).
    deadline = time.monotonic() + 30
    while (
        "order-77" not in (parked := run("eventstore parked customer_svc.orders", running)).stdout
    ):
        assert time.monotonic() < deadline, parked.stdout + parked.stderr
        time.sleep(0.2)
    assert "'customer_id'" in parked.stdout

    example = block("### From Python", "python").replace("127.0.0.1:50051", running.store.address)
    script = tmp_path / "example.py"
    script.write_text(example)
    python = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:  # it follows the account category for ever: its history is enough
        out, err = python.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        python.kill()
        out, err = python.communicate()
    assert "stream is at 1" in out and "live: account-42 Opened" in out, out + err

    ports = {
        "EVENTSTORE_PORT": running.store.address.rsplit(":", 1)[1],
        "CUSTOMER_PORT": running.customers[0].address.rsplit(":", 1)[1],
        "ORDER_PORT": running.orders[0].address.rsplit(":", 1)[1],
    }
    demo = subprocess.run(
        [sys.executable, "-m", "tools.demo"],
        cwd=ROOT,
        env={**os.environ, **ports},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    shown = demo.stdout
    for expected in [
        "APPROVED",
        "REJECTED (credit limit exceeded)",
        "CANCELLED",
        "Customer: limit 1000, reserved 0, available 1000",
        "as of version 2 (a temporal query): APPROVED",
        "`eventstore parked customer_svc.orders`",
        "The customer's orders (read model): ['APPROVED', 'CANCELLED', 'REJECTED']",
    ]:
        assert expected in shown, f"{expected!r} not in the demo's output:\n{shown}"
    assert re.search(r"placed_at=\d\d:\d\d:\d\d\.\d{3}", shown), shown  # a time, not a float

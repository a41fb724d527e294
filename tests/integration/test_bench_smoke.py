"""`make bench-smoke` inside `make test`: every benchmark scenario runs briefly, so the harness
cannot rot. No thresholds here: timing belongs in `make bench`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tools.processes import ROOT


def test_every_benchmark_scenario_runs(postgres_server_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_server_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((ROOT / "bench" / "results" / "smoke.json").read_text())
    scenarios = {r["scenario"] for r in report["results"]}
    assert {
        "append 1 event",
        "append 100 events",
        "ReadStream 1000 events",
        "catch-up Subscribe",
        "live latency",
        "group consumer 10 ms handler",
        "group delivery latency",
        "saga replicas",
        "scavenge",
        "appends during a scavenge",
    } <= scenarios
    # Every measure came out as a number; only counts of what went wrong may be zero.
    assert all(r["value"] > 0 for r in report["results"] if r["metric"] != "missing")
    missing = [r for r in report["results"] if r["metric"] == "missing"]
    assert missing and all(r["value"] == 0 for r in missing), missing
    assert (ROOT / "bench" / "results" / "smoke.md").read_text().startswith("Measured")

"""KurrentDB's Node.js client (npm `@kurrent/kurrentdb-client`, whose reads run through its Rust
bridge) against our KurrentDB port: a client of another language and another code base.

Needs Node.js and the npm registry: it installs the client into .run/ once (the version pinned in
tests/kurrentdb/node/package.json) and is skipped, saying why, where either is missing."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.kurrentdb.conftest import KurrentStore
from tests.support import npm_installed
from tools.processes import ROOT

SOURCE = Path(__file__).parent / "node"
INSTALLED = ROOT / ".run" / "node-kurrentdb"


@pytest.fixture(scope="module")
def node_client() -> Path:
    return npm_installed(SOURCE, INSTALLED) / "client_walk.mjs"


def test_the_node_client_appends_reads_follows_and_deletes(
    kurrent_store: KurrentStore, node_client: Path
) -> None:
    stream = f"node-{uuid.uuid4()}"
    run = subprocess.run(
        ["node", str(node_client), kurrent_store.kurrentdb_address, stream],
        cwd=node_client.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    commit = seen["append"]["commit"]
    assert seen["append"]["revision"] == 1 and commit > 0
    assert seen["conflict"] == {"type": "wrong-expected-version", "actual": 1}
    assert seen["forwards"] == [
        {"type": "Opened", "revision": 0, "data": {"n": 1}},
        {"type": "Noted", "revision": 1, "data": {"n": 2}},
    ]
    assert seen["backwards"] == ["Noted"]
    assert {"stream": stream, "type": "Noted"} in seen["allBackwards"]
    assert seen["subscribed"] == ["Opened", "Noted", "Live"]
    assert seen["afterDelete"] == "stream-not-found"

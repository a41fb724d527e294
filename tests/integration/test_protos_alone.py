"""`protos/` as a client in another language takes it: it compiles with nothing but protoc's
bundled well-known types, Node.js's @grpc/proto-loader loads every file of it, and the README's
grpc-js example runs as written against a real store.

The Node.js parts need Node.js and the npm registry: they install the two packages pinned in
tests/protos_node/package.json into .run/ once, and are skipped, saying why, where either is
missing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from grpc_tools import protoc  # type: ignore[import-untyped]

from tests.support import npm_installed
from tools.processes import ROOT, ServerProcess

PROTOS = ROOT / "protos"
SOURCE = Path(__file__).parent.parent / "protos_node"
INSTALLED = ROOT / ".run" / "node-protos"


def test_every_proto_compiles_with_only_the_bundled_includes(tmp_path: Path) -> None:
    bundled = Path(protoc.__file__).parent / "_proto"  # protoc's own well-known types
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    assert "eventstore/v1/eventstore.proto" in files
    assert any(f.startswith("kurrentdb/") for f in files)
    out = tmp_path / "all.pb"
    args = ["protoc", f"-I{PROTOS}", f"-I{bundled}", f"--descriptor_set_out={out}", *files]
    assert protoc.main(args) == 0, "protos/ does not compile on its own"
    assert out.stat().st_size > 0


@pytest.fixture(scope="module")
def node_packages() -> Path:
    return npm_installed(SOURCE, INSTALLED)


def test_proto_loader_loads_every_proto(node_packages: Path) -> None:
    run = subprocess.run(
        ["node", str(node_packages / "load_all.mjs"), str(PROTOS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    services = json.loads(run.stdout)
    for wanted in (
        "eventstore.v1.EventStore",
        "customer.v1.CustomerService",
        "order.v1.OrderService",
        "event_store.client.streams.Streams",
        "event_store.client.persistent_subscriptions.PersistentSubscriptions",
    ):
        assert wanted in services, services


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### From other languages") :]
    found = re.search(r"```js\n(.*?)```", section, re.S)
    assert found is not None, "the README's grpc-js example is missing"
    return found.group(1)


def test_the_readme_grpc_js_example_works_as_written(
    node_packages: Path, store: ServerProcess
) -> None:
    script = node_packages / "append.mjs"
    script.write_text(readme_example())
    run = subprocess.run(
        ["node", str(script), store.address],
        cwd=ROOT,  # "from the project root", as the README says
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("appended: version 1, position "), run.stdout
    assert lines[1:] == ['1 Greeted {"to":"world"}'], run.stdout

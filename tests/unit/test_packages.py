"""The packages stay what they say they are: the client library is only a client, and the
server does not load it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools.processes import ROOT


def loaded_by(module: str) -> set[str]:
    """The top-level packages of ours that importing `module` loads, in a fresh interpreter."""
    code = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    ours = {
        "eventstore_server",
        "eventstore_client",
        "hosting",
        "localpg",
        "tests",
        "tools",
        "bench",
    }
    return set(out.split()) & ours


@pytest.mark.parametrize(
    "module", ["eventstore_client.repository", "eventstore_client.cli", "eventstore_client.testing"]
)
def test_the_client_library_loads_neither_server_nor_hosting(module: str) -> None:
    assert loaded_by(module) == {"eventstore_client"}


def test_the_server_does_not_load_the_client_library() -> None:
    assert loaded_by("eventstore_server.__main__") == {"eventstore_server", "hosting"}


@pytest.mark.parametrize("module", ["bench.harness", "tools.demo", "tools.image_test"])
def test_tools_and_bench_do_not_load_the_tests(module: str) -> None:
    assert "tests" not in loaded_by(module)

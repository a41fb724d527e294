"""KurrentDB's messages stay out of every process that does not serve them: KurrentDB's clients
bundle their own copy, and the protobuf runtime refuses two in one process (the tests of the
KurrentDB port import such a client)."""

from __future__ import annotations

import subprocess
import sys

from tools.processes import ROOT


def test_the_store_loads_kurrentdbs_messages_only_to_serve_them() -> None:
    script = (
        "import sys, eventstore_server.server, eventstore_server.__main__, eventstore_client\n"
        "loaded = [m for m in sys.modules if m.startswith(('contracts.kurrentdb',"
        " 'eventstore_server.kurrentdb'))]\n"
        "assert not loaded, loaded\n"
        "import kurrentdbclient\n"  # and then a KurrentDB client loads beside the store
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)


def test_a_kurrentdb_client_and_the_stores_copy_cannot_share_a_process() -> None:
    """Why the isolation above matters: this is the failure it prevents."""
    script = "import kurrentdbclient\nimport contracts.kurrentdb.protocols.v1.streams_pb2\n"
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "duplicate symbol" in run.stderr

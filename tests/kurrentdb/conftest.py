"""A store serving KurrentDB's protocol beside its own, for KurrentDB's own clients.

These tests import `kurrentdbclient`, which bundles KurrentDB's messages: no test process may
import the store's copy (`contracts.kurrentdb`, `eventstore_server.kurrentdb`), so the store
runs as its own process, as everywhere in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from localpg import free_port
from tools.processes import ServerProcess, store_process


@dataclass(frozen=True)
class KurrentStore:
    process: ServerProcess
    kurrentdb_address: str  # 127.0.0.1:PORT of the KurrentDB port

    @property
    def uri(self) -> str:
        """The connection string KurrentDB's clients take (single node, no discovery)."""
        return f"kurrentdb://{self.kurrentdb_address}?Tls=false"


def start_kurrent_store(database_url: str, *extra: str) -> KurrentStore:
    address = f"127.0.0.1:{free_port()}"
    process = store_process(database_url, "--kurrentdb-listen", address, *extra)
    if "--tls-cert" in extra:
        process.with_health_port()  # readiness is asked in plaintext
    return KurrentStore(process.start(), address)


@pytest.fixture(scope="session")
def kurrent_store(new_database: Callable[[], str]) -> Iterator[KurrentStore]:
    """One store with both ports for the session, on a database of its own."""
    store = start_kurrent_store(new_database())
    yield store
    store.process.stop()

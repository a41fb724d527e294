"""The same suite against both stores: the real server (over gRPC, as a process) and the
in-memory one that the services' fast tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventstore_client import EventStoreClient
from eventstore_client.store import EventStore
from eventstore_client.testing import InMemoryEventStore
from tools.processes import ServerProcess


@pytest.fixture(params=["server", "server-unary", "memory"])
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    """The in-memory store; the server through the client's default path (appends over an
    AppendSession); and the server with one unary Append per append, which a session must
    equal, append for append."""
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    server: ServerProcess = request.getfixturevalue("store")
    sessions = 0 if request.param == "server-unary" else 1
    async with EventStoreClient(server.address, retries=0, append_sessions=sessions) as client:
        yield client

"""The same suite against both stores: the real server (over gRPC, as a process) and the
in-memory one that the services' fast tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventstore_client import EventStoreClient
from eventstore_client.store import EventStore
from eventstore_client.testing import InMemoryEventStore
from tools.processes import ServerProcess


@pytest.fixture(params=["server", "memory"])
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore()
        return
    server: ServerProcess = request.getfixturevalue("store")
    async with EventStoreClient(server.address, retries=0) as client:
        yield client

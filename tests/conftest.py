"""Shared fixtures: one real PostgreSQL per test session (the embedded wheel, or DATABASE_URL),
a fresh database where a test needs one, and the store as a real server process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from eventstore_client import EventStoreClient
from tools.processes import ServerProcess, create_database, postgres_server, store_process


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server whose databases the tests may create."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def new_database(postgres_server_url: str) -> Callable[[], str]:
    """Call it for the URL of a new, empty database."""
    return lambda: create_database(postgres_server_url)


@pytest.fixture(scope="session")
def store_database(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture(scope="session")
def store(store_database: str) -> Iterator[ServerProcess]:
    """One store server for the session; tests keep apart by using their own stream names."""
    server = store_process(store_database).start()
    yield server
    server.stop()


@pytest.fixture
async def client(store: ServerProcess) -> AsyncIterator[EventStoreClient]:
    async with EventStoreClient(store.address) as c:
        yield c

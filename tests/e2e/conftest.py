"""Fixtures of the end-to-end suite. The same tests run against processes started here
(`make test`), a kind cluster (`make kind-test`) and containers (`make image-test`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.e2e.saga import Stubs, connect
from tests.e2e.system import EXTERNAL, Endpoints, start_system


@pytest.fixture(scope="module")
def endpoints(request: pytest.FixtureRequest) -> Iterator[Endpoints]:
    """The system under test; started here, two replicas of each service as a deployment
    would run them, unless the E2E_* variables point at a running one."""
    if EXTERNAL:
        yield Endpoints.from_environment()
        return
    new_database: Callable[[], str] = request.getfixturevalue("new_database")
    running = start_system(new_database(), customer_replicas=2, order_replicas=2)
    yield running.endpoints
    running.stop()


@pytest.fixture
async def stubs(endpoints: Endpoints) -> AsyncIterator[Stubs]:
    async with connect(endpoints.customer, endpoints.order) as connected:
        yield connected

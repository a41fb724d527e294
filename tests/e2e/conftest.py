"""The whole system as real processes: PostgreSQL, the store, customer_svc and order_svc."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from localpg import free_port
from tests.e2e.saga import Stubs, connect
from tests.support import ServerProcess, store_process


@dataclass
class System:
    database_url: str
    store: ServerProcess
    customers: list[ServerProcess] = field(default_factory=list)
    orders: list[ServerProcess] = field(default_factory=list)
    metrics: dict[str, int] = field(default_factory=dict)  # module -> metrics port
    env: dict[str, str] = field(default_factory=dict)

    def service(self, module: str, *extra: str) -> ServerProcess:
        return ServerProcess(
            module,
            ["--eventstore", self.store.address, "--database-url", self.database_url, *extra],
            env=self.env,
        )

    def stop(self) -> None:
        for p in [*self.orders, *self.customers, self.store]:
            p.stop()


def start_system(
    database_url: str,
    customer_replicas: int = 1,
    order_replicas: int = 1,
    metrics: bool = False,
    env: dict[str, str] | None = None,
) -> System:
    system = System(database_url, store_process(database_url, env=env).start(), env=env or {})
    if metrics:
        system.metrics = {"customer_svc": free_port(), "order_svc": free_port()}

    def flags(module: str) -> list[str]:
        return ["--metrics-listen", f"127.0.0.1:{system.metrics[module]}"] if metrics else []

    system.customers = [
        system.service("customer_svc", *flags("customer_svc")) for _ in range(customer_replicas)
    ]
    system.orders = [
        system.service("order_svc", *flags("order_svc")) for _ in range(order_replicas)
    ]
    for p in [*system.customers, *system.orders]:
        p.start(wait=False)
    for p in [*system.customers, *system.orders]:
        p.wait_serving()
    return system


@pytest.fixture(scope="module")
def system(new_database: Callable[[], str]) -> Iterator[System]:
    """Two replicas of each service, as a deployment would run them."""
    running = start_system(new_database(), customer_replicas=2, order_replicas=2)
    yield running
    running.stop()


@pytest.fixture
async def stubs(system: System) -> AsyncIterator[Stubs]:
    async with connect(system.customers[0].address, system.orders[-1].address) as connected:
        yield connected

"""The system under test: either real processes this test session starts (PostgreSQL, the
store, customer_svc and order_svc), or one already running elsewhere (the suite in a
kind cluster's Job, containers from the image) that the E2E_* variables point at."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from localpg import free_port
from tools.processes import ServerProcess, store_process

# The kind-test Job (k8s/e2e) and `make image-test` set these to the system's gRPC addresses.
TARGET_VARIABLES = ("E2E_EVENTSTORE", "E2E_CUSTOMER", "E2E_ORDER")
EXTERNAL = all(name in os.environ for name in TARGET_VARIABLES)

local_only = pytest.mark.skipif(
    EXTERNAL, reason="starts, kills or inspects its own processes: runs in make test"
)


@dataclass(frozen=True)
class Endpoints:
    """Where the system under test answers gRPC."""

    store: str
    customer: str
    order: str

    @classmethod
    def from_environment(cls) -> Endpoints:
        return cls(*(os.environ[name] for name in TARGET_VARIABLES))


@dataclass
class System:
    database_url: str
    store: ServerProcess
    customers: list[ServerProcess] = field(default_factory=list)
    orders: list[ServerProcess] = field(default_factory=list)
    metrics: dict[str, int] = field(default_factory=dict)  # module -> metrics port
    env: dict[str, str] = field(default_factory=dict)

    @property
    def endpoints(self) -> Endpoints:
        # Calls go to different replicas of each service where there are several.
        return Endpoints(self.store.address, self.customers[0].address, self.orders[-1].address)

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

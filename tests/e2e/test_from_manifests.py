"""The system started exactly as the kind overlay starts it: each container's command,
arguments and environment come from the rendered manifests (in-cluster addresses mapped to
local ports), so a wrong flag or variable name in the manifests fails here."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.order.v1 import order_pb2 as opb
from localpg import free_port
from tests.e2e.saga import connect, settled
from tests.e2e.system import local_only
from tests.integration.test_metrics import scrape
from tools.manifests import APPS, KUBECTL, local_process
from tools.processes import ServerProcess

pytestmark = [
    pytest.mark.skipif(KUBECTL is None, reason="kubectl is needed to render the kind overlay"),
    local_only,
]


async def test_the_system_runs_as_its_manifests_configure_it(
    new_database: Callable[[], str],
) -> None:
    database_url = new_database()
    ports = {name: free_port() for name in APPS} | {f"{name}-metrics": free_port() for name in APPS}
    processes: list[ServerProcess] = []
    try:
        for component, module in APPS.items():
            argv, env = local_process(component, ports, database_url)
            assert argv[:3] == ["python", "-m", module]
            process = ServerProcess(
                module, [], env={**os.environ, **env}, port=ports[component], argv=argv
            )
            processes.append(process.start())
        async with connect(
            f"127.0.0.1:{ports['customer']}", f"127.0.0.1:{ports['order']}"
        ) as stubs:
            customers, orders = stubs.customers, stubs.orders
            customer = await customers.CreateCustomer(
                cpb.CreateCustomerRequest(name="K", credit_limit=10)
            )
            order = await orders.CreateOrder(
                opb.CreateOrderRequest(customer_id=customer.customer_id, total=5)
            )
            assert (await settled(orders, order.order_id)).state == opb.ORDER_STATE_APPROVED
        assert "saga_orders_total" in scrape(ports["order-metrics"])  # --metrics-listen as deployed
        assert "eventstore_appends_total" in scrape(ports["eventstore-metrics"])
    finally:
        for process in processes:
            process.stop()

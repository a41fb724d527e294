"""A cold start of the whole system in the wrong order, as a fresh deployment does it: the
services before the store, everything before PostgreSQL. Nothing exits; each reports
NOT_SERVING while it waits and SERVING once what it depends on is there."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.order.v1 import order_pb2 as opb
from localpg import LocalPostgres, free_port
from tests.e2e.saga import connect, new_customer, place, settled
from tools.processes import ServerProcess, create_database, health_status, store_process, wait_until

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


async def test_services_wait_for_the_store_and_postgres_without_exiting() -> None:
    pg_port, store_port = free_port(), free_port()
    server_url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    database = server_url.rsplit("/", 1)[0] + "/coldstart"
    store = store_process(database, port=store_port)
    customers = ServerProcess(
        "customer_svc", ["--eventstore", store.address, "--database-url", database]
    )
    orders = ServerProcess("order_svc", ["--eventstore", store.address, "--database-url", database])
    services = [customers, orders]
    try:
        for process in [*services, store]:
            process.start(wait=False)
        wait_until(lambda: all(health_status(p.address) == NOT_SERVING for p in services), 30)
        await asyncio.sleep(1.0)  # a while with nothing to depend on: still up, still waiting
        assert all(p.process is not None and p.process.poll() is None for p in [*services, store])
        assert all(health_status(p.address) == NOT_SERVING for p in services)

        with LocalPostgres(port=pg_port) as pg:
            assert pg.port == pg_port
            create_database(server_url, "coldstart")
            for process in [store, *services]:
                process.wait_serving(60)
            async with connect(customers.address, orders.address) as stubs:
                customer_id = await new_customer(stubs, 100)
                [order_id] = await place(stubs.orders, customer_id, 1, total=10)
                assert (await settled(stubs.orders, order_id)).state == opb.ORDER_STATE_APPROVED
                got = await stubs.customers.GetCustomer(
                    cpb.GetCustomerRequest(customer_id=customer_id)
                )
                assert got.credit_reserved == 10
            for process in [*services, store]:
                assert "Traceback" not in process.log(), process.log()
                process.stop()
    finally:
        for process in [*services, store]:
            process.stop()

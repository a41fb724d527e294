"""The saga through faults: the store killed with SIGKILL and restarted, and the network
between customer_svc and the store cut and restored. Orders keep coming throughout; afterwards
every order has settled, none twice, and the customer's reserved credit is exactly the sum of
its approved orders."""

from __future__ import annotations

from collections.abc import Callable

from contracts.order.v1 import order_pb2 as opb
from tests.e2e.saga import Stubs, connect, new_customer, place, quiet_invariant, settled
from tests.e2e.system import local_only, start_system
from tests.support import TcpProxy
from tools.processes import ServerProcess, store_process

pytestmark = local_only

LIMIT, TOTAL = 3000, 100  # room for 30 orders


async def settle_all(stubs: Stubs, customer_id: str, ids: list[str]) -> None:
    final = [await settled(stubs.orders, i, timeout=90) for i in ids]
    states = [o.state for o in final]
    assert states.count(opb.ORDER_STATE_APPROVED) == LIMIT // TOTAL
    assert states.count(opb.ORDER_STATE_REJECTED) == len(ids) - LIMIT // TOTAL
    customer = await quiet_invariant(stubs.customers, stubs.orders, customer_id, ids)
    assert customer.credit_reserved == LIMIT


async def test_the_store_killed_mid_saga(new_database: Callable[[], str]) -> None:
    system = start_system(new_database())
    try:
        async with connect(system.customers[0].address, system.orders[0].address) as stubs:
            customer_id = await new_customer(stubs, LIMIT, name="Faulty")
            ids = await place(
                stubs.orders, customer_id, 15, TOTAL
            )  # some still pending at the kill
            system.store.kill()
            system.store.start()  # same port: the services' channels reconnect with back-off
            ids += await place(stubs.orders, customer_id, 25, TOTAL)
            await settle_all(stubs, customer_id, ids)
    finally:
        system.stop()


async def test_the_network_to_the_store_cut_and_restored(new_database: Callable[[], str]) -> None:
    database_url = new_database()
    store = store_process(database_url).start()
    proxy = TcpProxy(store.address).start()
    args = ["--database-url", database_url]
    customers = ServerProcess("customer_svc", ["--eventstore", proxy.address, *args]).start()
    orders = ServerProcess("order_svc", ["--eventstore", store.address, *args]).start()
    try:
        async with connect(customers.address, orders.address) as stubs:
            customer_id = await new_customer(stubs, LIMIT, name="Faulty")
            ids = await place(stubs.orders, customer_id, 10, TOTAL)
            proxy.cut()
            cut_off = await place(stubs.orders, customer_id, 15, TOTAL)  # nobody can answer credit
            last = await stubs.orders.GetOrder(opb.GetOrderRequest(order_id=cut_off[-1]))
            assert last.state == opb.ORDER_STATE_PENDING
            proxy.restore()
            ids += cut_off + await place(stubs.orders, customer_id, 15, TOTAL)
            await settle_all(stubs, customer_id, ids)
    finally:
        for process in (orders, customers, store):
            process.stop()
        proxy.close()

"""The saga against an already running system (a kind cluster, through port-forwards):
`make kind-test` sets E2E_CUSTOMER, E2E_ORDER and E2E_EVENTSTORE. Skipped otherwise."""

from __future__ import annotations

import asyncio
import os

import pytest

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.order.v1 import order_pb2 as opb
from tests.e2e.saga import connect, quiet_invariant, settled

pytestmark = pytest.mark.skipif(
    "E2E_ORDER" not in os.environ, reason="runs against a cluster: make kind-test"
)


async def test_saga_on_the_cluster() -> None:
    async with connect(os.environ["E2E_CUSTOMER"], os.environ["E2E_ORDER"]) as stubs:
        customers, orders = stubs.customers, stubs.orders
        customer = await customers.CreateCustomer(
            cpb.CreateCustomerRequest(name="Kind", credit_limit=1000)
        )
        placed = await asyncio.gather(
            *(
                orders.CreateOrder(
                    opb.CreateOrderRequest(customer_id=customer.customer_id, total=100)
                )
                for _ in range(20)
            )
        )
        final = [await settled(orders, p.order_id, timeout=60) for p in placed]
        assert [f.state for f in final].count(opb.ORDER_STATE_APPROVED) == 10
        approved = next(f for f in final if f.state == opb.ORDER_STATE_APPROVED)
        await orders.CancelOrder(opb.CancelOrderRequest(order_id=approved.order_id))
        ids = [f.order_id for f in final]
        assert (
            await quiet_invariant(customers, orders, customer.customer_id, ids)
        ).credit_reserved == 900

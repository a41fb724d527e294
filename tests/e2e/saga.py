"""Steps of the credit saga as a client takes them, and the invariant that must hold."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.customer.v1 import customer_pb2_grpc
from contracts.order.v1 import order_pb2 as opb
from contracts.order.v1 import order_pb2_grpc


@dataclass
class Stubs:
    customers: customer_pb2_grpc.CustomerServiceStub
    orders: order_pb2_grpc.OrderServiceStub


@contextlib.asynccontextmanager
async def connect(customers: str, orders: str) -> AsyncIterator[Stubs]:
    """Channels to a customer_svc and an order_svc, and their stubs."""
    async with grpc.aio.insecure_channel(customers) as c, grpc.aio.insecure_channel(orders) as o:
        yield Stubs(customer_pb2_grpc.CustomerServiceStub(c), order_pb2_grpc.OrderServiceStub(o))


async def new_customer(stubs: Stubs, limit: int, name: str = "Ada") -> str:
    """A new customer with this credit limit; its id."""
    customer = await stubs.customers.CreateCustomer(
        cpb.CreateCustomerRequest(name=name, credit_limit=limit)
    )
    return customer.customer_id


async def place(
    orders: order_pb2_grpc.OrderServiceStub, customer_id: str, n: int, total: int = 100
) -> list[str]:
    """`n` orders of `total`, one after another; their ids."""
    placed = []
    for _ in range(n):
        order = await orders.CreateOrder(
            opb.CreateOrderRequest(customer_id=customer_id, total=total)
        )
        placed.append(order.order_id)
    return placed


async def one_approved_one_rejected(stubs: Stubs) -> tuple[str, list[opb.Order]]:
    """A customer with room for one order of 100 places two: once both have settled, the
    approved one is cancelled. The customer's id, and the two orders as they settled."""
    customer_id = await new_customer(stubs, 150)
    placed = await place(stubs.orders, customer_id, 2)
    final = [await settled(stubs.orders, order_id) for order_id in placed]
    approved = next(f for f in final if f.state == opb.ORDER_STATE_APPROVED)
    await stubs.orders.CancelOrder(opb.CancelOrderRequest(order_id=approved.order_id))
    return customer_id, final


async def settled(
    orders: order_pb2_grpc.OrderServiceStub, order_id: str, timeout: float = 30.0
) -> opb.Order:
    """The order once it has left PENDING (approved or rejected), polling until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        order = await orders.GetOrder(opb.GetOrderRequest(order_id=order_id))
        if order.state != opb.ORDER_STATE_PENDING:
            return order
        if time.monotonic() > deadline:
            raise TimeoutError(f"order {order_id} still pending")
        await asyncio.sleep(0.02)


async def quiet_invariant(
    customers: customer_pb2_grpc.CustomerServiceStub,
    orders: order_pb2_grpc.OrderServiceStub,
    customer_id: str,
    order_ids: list[str],
    timeout: float = 30.0,
) -> cpb.Customer:
    """Wait until the customer's reserved credit equals the sum of its approved, uncancelled
    orders (the saga's invariant at a quiet moment), and return the customer."""
    deadline = time.monotonic() + timeout
    while True:
        customer = await customers.GetCustomer(cpb.GetCustomerRequest(customer_id=customer_id))
        states = [await orders.GetOrder(opb.GetOrderRequest(order_id=i)) for i in order_ids]
        held = sum(o.total for o in states if o.state == opb.ORDER_STATE_APPROVED)
        assert customer.credit_reserved <= customer.credit_limit
        if customer.credit_reserved == held and all(
            o.state != opb.ORDER_STATE_PENDING for o in states
        ):
            return customer
        if time.monotonic() > deadline:
            raise AssertionError(f"reserved {customer.credit_reserved} != approved {held}")
        await asyncio.sleep(0.05)

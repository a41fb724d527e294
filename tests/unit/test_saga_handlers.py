"""The saga's use cases over the in-memory store: the services' handlers and repositories as
they run in production, without processes (the e2e suite runs them for real)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from customer_svc.domain.customer import CUSTOMER
from customer_svc.service_layer.handlers import ORDER_TYPES, Customers
from eventstore_client.client import AppendResult, NewEvent
from eventstore_client.codec import MalformedEvent
from eventstore_client.consumer import GroupConsumer
from eventstore_client.errors import WrongExpectedVersionError
from eventstore_client.repository import Repository
from eventstore_client.testing import InMemoryEventStore
from order_svc.domain.order import ORDER, State
from order_svc.service_layer.handlers import CREDIT_EVENTS, Orders


@dataclass
class Saga:
    store: InMemoryEventStore
    customers: Customers
    orders: Orders


@pytest.fixture
async def saga() -> AsyncIterator[Saga]:
    """Both services' handlers, each reacting in a consumer group as in production."""
    store = InMemoryEventStore()
    customers = Customers(Repository(store, CUSTOMER))
    orders = Orders(Repository(store, ORDER))
    await store.create_group("customers", category="order", event_types=ORDER_TYPES)
    await store.create_group("orders", category="customer", event_types=CREDIT_EVENTS)
    runners = [
        GroupConsumer(store, "customers", customers.on_order_event),
        GroupConsumer(store, "orders", orders.on_credit_event),
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        yield Saga(store, customers, orders)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def settled(saga: Saga, order_id: str) -> State:
    """The order's state once the saga has answered it (the store is in memory: this is fast)."""
    for _ in range(500):
        state = (await saga.orders.get(order_id)).state.state
        if state is not State.PENDING:
            return state
        await asyncio.sleep(0.001)
    raise TimeoutError(f"order {order_id} still pending")


async def test_orders_within_the_limit_are_approved_and_the_rest_rejected(saga: Saga) -> None:
    customer_id = str(uuid.uuid4())
    await saga.customers.create(customer_id, "Ada", 1000)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for order_id, total in zip(ids, [600, 300, 200], strict=True):
        await saga.orders.create(order_id, customer_id, total)
    assert [await settled(saga, i) for i in ids] == [State.APPROVED, State.APPROVED, State.REJECTED]
    rejected = await saga.orders.get(ids[2])
    assert rejected.state.rejection_reason == "credit limit exceeded"
    assert (await saga.customers.get(customer_id)).state.credit_reserved == 900


async def test_cancelling_releases_the_credit(saga: Saga) -> None:
    customer_id, order_id = str(uuid.uuid4()), str(uuid.uuid4())
    await saga.customers.create(customer_id, "Bo", 500)
    await saga.orders.create(order_id, customer_id, 400)
    assert await settled(saga, order_id) is State.APPROVED
    await saga.orders.cancel(order_id)
    for _ in range(500):
        if (await saga.customers.get(customer_id)).state.credit_reserved == 0:
            break
        await asyncio.sleep(0.001)
    customer = (await saga.customers.get(customer_id)).state
    assert customer.credit_reserved == 0 and order_id in customer.released


async def test_an_unknown_customer_is_rejected(saga: Saga) -> None:
    order_id = str(uuid.uuid4())
    await saga.orders.create(order_id, str(uuid.uuid4()), 10)
    assert await settled(saga, order_id) is State.REJECTED
    assert (await saga.orders.get(order_id)).state.rejection_reason == "unknown customer"


async def test_a_redelivered_order_event_changes_nothing() -> None:
    store = InMemoryEventStore()
    customers = Customers(Repository(store, CUSTOMER))
    customer_id, order_id = str(uuid.uuid4()), str(uuid.uuid4())
    await customers.create(customer_id, "Cy", 100)
    await Orders(Repository(store, ORDER)).create(order_id, customer_id, 60)
    [created] = await store.read_stream_list(ORDER.stream(order_id))
    await customers.on_order_event(created)
    await customers.on_order_event(created)  # at least once: it comes again
    events = await store.read_stream_list(CUSTOMER.stream(customer_id))
    assert [e.type for e in events] == ["CustomerCreated", "CreditReserved"]


async def test_events_a_handler_does_not_know_are_skipped_and_malformed_ones_refused() -> None:
    store = InMemoryEventStore()
    customers = Customers(Repository(store, CUSTOMER))
    await store.append("order-x", [NewEvent.json("OrderShipped", {"order_id": "x"})])
    await store.append("order-y", [NewEvent.json("OrderCreated", {"order_id": "y", "total": 5})])
    shipped, created = [e async for e in store.read_all()]
    labels = {"handler": "customer_svc.orders", "type": "OrderShipped"}
    before = REGISTRY.get_sample_value("events_skipped_total", labels) or 0.0
    await customers.on_order_event(shipped)
    assert REGISTRY.get_sample_value("events_skipped_total", labels) == before + 1
    with pytest.raises(MalformedEvent, match="customer_id"):
        await customers.on_order_event(created)
    assert store.head == 2  # nothing was written for either


class CountingStore(InMemoryEventStore):
    """The in-memory store, counting the appends it refuses for a wrong expected version."""

    conflicts = 0

    async def append(self, *args: Any, **kwargs: Any) -> AppendResult:
        try:
            return await super().append(*args, **kwargs)
        except WrongExpectedVersionError:
            self.conflicts += 1
            raise


@pytest.mark.parametrize("repositories", [1, 4])
async def test_one_repository_runs_commands_on_an_aggregate_one_at_a_time(
    repositories: int,
) -> None:
    store = CountingStore()
    customer_id = str(uuid.uuid4())
    customers = [Customers(Repository(store, CUSTOMER)) for _ in range(repositories)]
    await customers[0].create(customer_id, "Hot", 10**6)
    orders = Orders(Repository(store, ORDER))
    created = []
    for _ in range(32):
        order_id = str(uuid.uuid4())
        await orders.create(order_id, customer_id, 1)
        [event] = await store.read_stream_list(ORDER.stream(order_id))
        created.append(event)
    await asyncio.gather(
        *(customers[i % repositories].on_order_event(e) for i, e in enumerate(created))
    )
    assert (await customers[0].get(customer_id)).state.credit_reserved == 32
    if repositories == 1:
        assert store.conflicts == 0  # in one process, commands on one customer queue up
    else:
        assert store.conflicts > 0  # separate processes race, and the retry sorts it out

"""The credit saga end to end, over real processes (two replicas of each service)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.customer.v1 import customer_pb2_grpc
from contracts.order.v1 import order_pb2 as opb
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from tests.e2e.saga import (
    Stubs,
    connect,
    new_customer,
    one_approved_one_rejected,
    place,
    quiet_invariant,
    settled,
)
from tests.e2e.system import Endpoints, local_only, start_system
from tests.integration.test_metrics import scrape
from tools.processes import wait_until


async def test_twenty_concurrent_orders_against_a_limit_of_ten(stubs: Stubs) -> None:
    customer_id = await new_customer(stubs, 1000)
    created = await asyncio.gather(
        *(
            stubs.orders.CreateOrder(opb.CreateOrderRequest(customer_id=customer_id, total=100))
            for _ in range(20)
        )
    )
    assert all(o.state == opb.ORDER_STATE_PENDING for o in created)
    final = [await settled(stubs.orders, o.order_id) for o in created]
    states = [o.state for o in final]
    assert states.count(opb.ORDER_STATE_APPROVED) == 10
    assert states.count(opb.ORDER_STATE_REJECTED) == 10
    assert {o.rejection_reason for o in final if o.state == opb.ORDER_STATE_REJECTED} == {
        "credit limit exceeded"
    }
    ids = [o.order_id for o in final]
    customer = await quiet_invariant(stubs.customers, stubs.orders, customer_id, ids)
    assert (customer.credit_reserved, customer.available_credit) == (1000, 0)

    approved = [o for o in final if o.state == opb.ORDER_STATE_APPROVED]
    cancelled = await stubs.orders.CancelOrder(
        opb.CancelOrderRequest(order_id=approved[0].order_id)
    )
    assert cancelled.state == opb.ORDER_STATE_CANCELLED
    customer = await quiet_invariant(stubs.customers, stubs.orders, customer_id, ids)
    assert customer.credit_reserved == 900  # the compensation released the cancelled order's credit
    again = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(customer_id=customer_id, total=100)
    )
    assert (await settled(stubs.orders, again.order_id)).state == opb.ORDER_STATE_APPROVED


async def test_cancelling_a_pending_order_releases_the_credit_reserved_after_it(
    stubs: Stubs,
) -> None:
    customer_id = await new_customer(stubs, 500)
    order = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(customer_id=customer_id, total=300)
    )
    cancelled = await stubs.orders.CancelOrder(opb.CancelOrderRequest(order_id=order.order_id))
    assert cancelled.state == opb.ORDER_STATE_CANCELLED
    customer = await quiet_invariant(stubs.customers, stubs.orders, customer_id, [order.order_id])
    assert customer.credit_reserved == 0
    final = await stubs.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id))
    assert final.state == opb.ORDER_STATE_CANCELLED  # a late reservation does not approve it


async def test_unknown_customer_is_rejected(stubs: Stubs) -> None:
    order = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(customer_id=str(uuid.uuid4()), total=1)
    )
    final = await settled(stubs.orders, order.order_id)
    assert (final.state, final.rejection_reason) == (opb.ORDER_STATE_REJECTED, "unknown customer")


async def test_a_duplicated_order_created_does_not_reserve_twice(
    stubs: Stubs, endpoints: Endpoints
) -> None:
    customer_id = await new_customer(stubs, 1000)
    order = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(customer_id=customer_id, total=250)
    )
    await settled(stubs.orders, order.order_id)
    async with EventStoreClient(endpoints.store) as store:
        [original] = await store.read_stream_list(f"order-{order.order_id}", max_count=1)
        # The same business event again, under a new event id: only the business key can tell.
        copy = NewEvent("OrderCreated", original.data, {}, "application/json")
        await store.append(f"order-{order.order_id}", [copy])
        marker = await store.append(
            f"order-{uuid.uuid4()}",
            [
                NewEvent.json(
                    "OrderCreated",
                    {"order_id": str(uuid.uuid4()), "customer_id": customer_id, "total": 1},
                )
            ],
        )
        # Once the customer has answered an order appended after the copy, the copy was seen.
        async for response in store.subscribe(
            category="customer", after_position=marker.position - 1
        ):
            if any(
                json.loads(e.data).get("customer_id") == customer_id
                and e.type == "CreditReserved"
                and json.loads(e.data)["amount"] == 1
                for e in response.events
            ):
                break
    customer = await stubs.customers.GetCustomer(cpb.GetCustomerRequest(customer_id=customer_id))
    assert customer.credit_reserved == 251
    events = await EventStoreClient(endpoints.store).read_stream_list(f"customer-{customer_id}")
    assert [e.type for e in events].count("CreditReserved") == 2


def _reserved(type_: str, data: bytes, customer_id: str, amount: int) -> bool:
    fields = json.loads(data)
    return type_ == "CreditReserved" and (fields["customer_id"], fields["amount"]) == (
        customer_id,
        amount,
    )


async def test_creates_are_idempotent_by_id(stubs: Stubs) -> None:
    customer_id = str(uuid.uuid4())
    first = await stubs.customers.CreateCustomer(
        cpb.CreateCustomerRequest(customer_id=customer_id, name="Bo", credit_limit=10)
    )
    again = await stubs.customers.CreateCustomer(
        cpb.CreateCustomerRequest(customer_id=customer_id, name="Bo", credit_limit=10)
    )
    assert first == again and again.version == 1
    order_id = str(uuid.uuid4())
    one = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(order_id=order_id, customer_id=customer_id, total=5)
    )
    two = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(order_id=order_id, customer_id=customer_id, total=5)
    )
    assert one.order_id == two.order_id == order_id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.orders.CreateOrder(
            opb.CreateOrderRequest(order_id=order_id, customer_id=customer_id, total=6)
        )
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_temporal_query_and_read_model(stubs: Stubs) -> None:
    customer_id = await new_customer(stubs, 1000)
    order = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(customer_id=customer_id, total=400)
    )
    await settled(stubs.orders, order.order_id)
    await stubs.orders.CancelOrder(opb.CancelOrderRequest(order_id=order.order_id))
    history = [
        await stubs.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id, as_of_version=v))
        for v in (1, 2, 3)
    ]
    assert [o.state for o in history] == [
        opb.ORDER_STATE_PENDING,
        opb.ORDER_STATE_APPROVED,
        opb.ORDER_STATE_CANCELLED,
    ]
    assert [o.version for o in history] == [1, 2, 3]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.orders.GetOrder(opb.GetOrderRequest(order_id=order.order_id, as_of_version=9))
    assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE

    async def listed() -> list[opb.Order]:
        while True:
            response = await stubs.orders.ListCustomerOrders(
                opb.ListCustomerOrdersRequest(customer_id=customer_id)
            )
            if response.orders and response.orders[0].state == opb.ORDER_STATE_CANCELLED:
                return list(response.orders)
            await asyncio.sleep(0.02)

    [row] = await asyncio.wait_for(listed(), 30)
    assert (row.order_id, row.total, row.version) == (order.order_id, 400, 3)


async def test_orders_and_customers_as_they_were_at_a_time(
    stubs: Stubs, endpoints: Endpoints
) -> None:
    """GetOrder and GetCustomer with `as_of_time`: the times are the events' own."""
    customer_id = await new_customer(stubs, 1000)
    order = await stubs.orders.CreateOrder(
        opb.CreateOrderRequest(customer_id=customer_id, total=400)
    )
    await settled(stubs.orders, order.order_id)
    await stubs.orders.CancelOrder(opb.CancelOrderRequest(order_id=order.order_id))
    async with EventStoreClient(endpoints.store) as store:
        history = await store.read_stream_list(f"order-{order.order_id}")

        async def credit() -> list[RecordedEvent]:
            while True:  # the release follows the cancel
                events = await store.read_stream_list(f"customer-{customer_id}")
                if len(events) == 3:
                    return events
                await asyncio.sleep(0.02)

        created, reserved, released = await asyncio.wait_for(credit(), 30)
    states = [
        (
            await stubs.orders.GetOrder(
                opb.GetOrderRequest(order_id=order.order_id, as_of_time=e.recorded_at)
            )
        ).state
        for e in history
    ]
    assert states == [opb.ORDER_STATE_PENDING, opb.ORDER_STATE_APPROVED, opb.ORDER_STATE_CANCELLED]
    reserved_then = [
        (
            await stubs.customers.GetCustomer(
                cpb.GetCustomerRequest(customer_id=customer_id, as_of_time=e.recorded_at)
            )
        ).credit_reserved
        for e in (created, reserved, released)
    ]
    assert reserved_then == [0, 400, 0]
    before = Timestamp(seconds=created.recorded_at.seconds - 3600)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.customers.GetCustomer(
            cpb.GetCustomerRequest(customer_id=customer_id, as_of_time=before)
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stubs.orders.GetOrder(
            opb.GetOrderRequest(order_id=order.order_id, as_of_time=Timestamp(nanos=-1))
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


BAD = [
    (
        "customers",
        "CreateCustomer",
        cpb.CreateCustomerRequest(name="A", credit_limit=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "customers",
        "CreateCustomer",
        cpb.CreateCustomerRequest(name="A", credit_limit=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "customers",
        "CreateCustomer",
        cpb.CreateCustomerRequest(name="", credit_limit=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "customers",
        "CreateCustomer",
        cpb.CreateCustomerRequest(customer_id="not a uuid", name="A", credit_limit=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "customers",
        "GetCustomer",
        cpb.GetCustomerRequest(customer_id=""),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "customers",
        "GetCustomer",
        cpb.GetCustomerRequest(customer_id=str(uuid.uuid4())),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "orders",
        "CreateOrder",
        opb.CreateOrderRequest(customer_id="", total=5),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "orders",
        "CreateOrder",
        opb.CreateOrderRequest(customer_id=str(uuid.uuid4()), total=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    (
        "orders",
        "CreateOrder",
        opb.CreateOrderRequest(customer_id=str(uuid.uuid4()), total=-3),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    ("orders", "GetOrder", opb.GetOrderRequest(order_id=""), grpc.StatusCode.INVALID_ARGUMENT),
    (
        "orders",
        "GetOrder",
        opb.GetOrderRequest(order_id=str(uuid.uuid4())),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "orders",
        "CancelOrder",
        opb.CancelOrderRequest(order_id=str(uuid.uuid4())),
        grpc.StatusCode.NOT_FOUND,
    ),
    (
        "orders",
        "ListCustomerOrders",
        opb.ListCustomerOrdersRequest(customer_id="x"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
]


@pytest.mark.parametrize(
    ("service", "method", "request_", "code"),
    BAD,
    ids=[f"{m}-{i}" for i, (_, m, _, _) in enumerate(BAD)],
)
async def test_bad_requests(
    stubs: Stubs, service: str, method: str, request_: object, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(getattr(stubs, service), method)(request_)
    assert raised.value.code() == code


@local_only
async def test_saga_metrics(new_database: Callable[[], str]) -> None:
    system = start_system(new_database(), metrics=True)
    try:
        async with connect(system.customers[0].address, system.orders[0].address) as stubs:
            await one_approved_one_rejected(stubs)
        text = scrape(system.metrics["order_svc"])
        assert 'saga_orders_total{outcome="approved"} 1.0' in text
        assert 'saga_orders_total{outcome="rejected"} 1.0' in text
        assert 'saga_orders_total{outcome="cancelled"} 1.0' in text
        assert "saga_seconds_count 2.0" in text
        wait_until(
            lambda: (
                'credit_decisions_total{decision="released"} 1.0'
                in scrape(system.metrics["customer_svc"])
            )
        )
        assert 'credit_decisions_total{decision="refused"} 1.0' in scrape(
            system.metrics["customer_svc"]
        )
    finally:
        system.stop()


@local_only
async def test_kill_9_of_customer_svc_mid_saga(new_database: Callable[[], str]) -> None:
    """Orders keep coming while customer_svc is killed and restarted: every order settles and
    the invariant holds."""
    system = start_system(new_database())
    try:
        async with connect(system.customers[0].address, system.orders[0].address) as stubs:
            orders = stubs.orders
            customer_id = await new_customer(stubs, 3000, name="Kim")
            ids = await place(orders, customer_id, 10)
            system.customers[0].kill()  # mid-flow: some of those orders are still pending
            ids += await place(orders, customer_id, 15)  # placed while nobody answers credit
            system.customers[0].start()
            async with grpc.aio.insecure_channel(system.customers[0].address) as c2:
                customers = customer_pb2_grpc.CustomerServiceStub(c2)
                ids += await place(orders, customer_id, 15)
                final = [await settled(orders, i, timeout=60) for i in ids]
                assert [o.state for o in final].count(opb.ORDER_STATE_APPROVED) == 30
                assert [o.state for o in final].count(opb.ORDER_STATE_REJECTED) == 10
                settled_customer = await quiet_invariant(customers, orders, customer_id, ids)
                assert settled_customer.credit_reserved == 3000
    finally:
        system.stop()


async def test_poison_events_are_parked_and_the_saga_goes_on(
    stubs: Stubs, endpoints: Endpoints
) -> None:
    """The README's first CLI examples, as a new user types them: an event type no service
    handles, and an OrderCreated without a customer. Neither stalls anything."""
    unknown, malformed = f"order-{uuid.uuid4()}", f"order-{uuid.uuid4()}"
    async with EventStoreClient(endpoints.store) as store:
        await store.append(unknown, [NewEvent.json("OrderPlaced", {"total": 5})])
        await store.append(malformed, [NewEvent.json("OrderCreated", {"total": 5})])
        customer_id = await new_customer(stubs, 500)
        [order_id] = await place(stubs.orders, customer_id, 1)
        assert (await settled(stubs.orders, order_id)).state == opb.ORDER_STATE_APPROVED

        async def parked_in(group: str) -> list[str]:
            for _ in range(200):
                found = [p for p in await store.read_parked(group) if p.event.stream == malformed]
                if found:
                    return [p.reason for p in found]
                await asyncio.sleep(0.05)
            return []

        for group in ("customer_svc.orders", "order_svc.customer_orders"):
            [reason] = await parked_in(group)
            assert "customer_id" in reason, reason
            everything = await store.read_parked(group)
            assert unknown not in {p.event.stream for p in everything}  # skipped, not parked
    listed = await stubs.orders.ListCustomerOrders(
        opb.ListCustomerOrdersRequest(customer_id=customer_id)
    )
    assert [o.order_id for o in listed.orders] == [order_id]

"""One CreateOrder is one trace across the three processes and PostgreSQL, through a real
OTLP/gRPC receiver."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator

import pytest

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.order.v1 import order_pb2 as opb
from eventstore_client import EventStoreClient
from tests.e2e.saga import connect, settled
from tests.e2e.system import EXTERNAL, Endpoints, local_only, start_system
from tools.otlp_receiver import Receiver, Span, start

SERVER, CLIENT, CONSUMER = 2, 3, 5


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    sink = Receiver()
    server, port = start("127.0.0.1:0", sink)
    yield sink, port
    server.stop(0)


@pytest.fixture
def traced(request: pytest.FixtureRequest) -> Iterator[tuple[Receiver, Endpoints]]:
    """A system that exports its spans to this test's receiver."""
    if EXTERNAL:
        listen = os.environ.get("E2E_OTLP_LISTEN")
        if not listen:
            pytest.skip("the system under test exports elsewhere (E2E_OTLP_LISTEN is not set)")
        sink = Receiver()
        server, _ = start(listen, sink)
        yield sink, Endpoints.from_environment()
        server.stop(0)
        return
    sink, port = request.getfixturevalue("receiver")
    new_database: Callable[[], str] = request.getfixturevalue("new_database")
    system = start_system(new_database(), env=tracing_env(port))
    yield sink, system.endpoints
    system.stop()


def tracing_env(port: int) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


async def one_saga(endpoints: Endpoints) -> tuple[str, str]:
    async with connect(endpoints.customer, endpoints.order) as stubs:
        customers, orders = stubs.customers, stubs.orders
        customer = await customers.CreateCustomer(
            cpb.CreateCustomerRequest(name="T", credit_limit=100)
        )
        order = await orders.CreateOrder(
            opb.CreateOrderRequest(customer_id=customer.customer_id, total=10)
        )
        assert (await settled(orders, order.order_id)).state == opb.ORDER_STATE_APPROVED
        return customer.customer_id, order.order_id


def saga_trace(spans: list[Span], trace_id: str) -> list[Span]:
    trace = [s for s in spans if s.trace_id == trace_id]
    [_] = [s for s in trace if s.name == "/order.v1.OrderService/CreateOrder" and s.kind == SERVER]
    return trace


async def trace_of(store_address: str, order_id: str) -> str:
    """The trace id carried by the order's OrderCreated event."""
    async with EventStoreClient(store_address) as store:
        [created] = await store.read_stream_list(f"order-{order_id}", max_count=1)
    return created.metadata["traceparent"].split("-")[1]


APPEND_SPANS = ("eventstore append", "eventstore AppendSession append")


def complete(trace: list[Span]) -> bool:
    services = {s.service for s in trace}
    appends = [s for s in trace if s.name in APPEND_SPANS]
    approved = any(
        s.kind == CONSUMER
        and s.attributes.get("messaging.eventstore.event_type") == "CreditReserved"
        for s in trace
    )
    return (
        services >= {"eventstore", "customer_svc", "order_svc"} and len(appends) >= 6 and approved
    )


async def test_one_create_order_is_one_trace(traced: tuple[Receiver, Endpoints]) -> None:
    sink, endpoints = traced
    customer_id, order_id = await one_saga(endpoints)
    trace_id = await trace_of(endpoints.store, order_id)

    def arrived() -> list[Span]:
        return [s for s in sink.snapshot() if s.trace_id == trace_id]

    deadline = time.monotonic() + 30
    while not (any(s.name.endswith("/CreateOrder") for s in arrived()) and complete(arrived())):
        assert time.monotonic() < deadline, "the saga's spans did not all arrive"
        await asyncio.sleep(0.1)
    trace = saga_trace(sink.snapshot(), trace_id)
    by_id = {s.span_id: s for s in trace}
    appends = [s for s in trace if s.name in APPEND_SPANS]
    # OrderCreated, CreditReserved and OrderApproved: a client span in the producing service
    # and a server span in the store for each (appends go over an AppendSession: one span per
    # append on each side, not one for the long call).
    assert {s.service for s in appends if s.kind == CLIENT} == {"order_svc", "customer_svc"}
    assert sum(1 for s in appends if s.kind == CLIENT) >= 3
    assert sum(1 for s in appends if s.kind == SERVER and s.service == "eventstore") >= 3

    database = [
        s
        for s in trace
        if s.attributes.get("db.system.name", s.attributes.get("db.system")) == "postgresql"
    ]
    assert database
    # Statements are recorded, their parameters (customer data) are not.
    assert not any("parameters" in key for s in database for key in s.attributes)
    # Each consumer span's parent is the context stored in the event it handled.
    async with EventStoreClient(endpoints.store) as store:
        events = {
            e.id: e
            for e in [
                *await store.read_stream_list(f"order-{order_id}"),
                *await store.read_stream_list(f"customer-{customer_id}"),
            ]
        }
    consumers = [s for s in trace if s.kind == CONSUMER]
    assert {s.service for s in consumers} >= {"customer_svc", "order_svc"}
    for span in consumers:
        event = events[span.attributes["messaging.message.id"]]
        stored_parent = event.metadata["traceparent"].split("-")[2]
        assert span.parent_span_id == stored_parent
        assert span.attributes["messaging.destination.name"] == event.stream
        assert span.attributes["messaging.eventstore.position"] == event.position
        assert stored_parent in by_id  # the producer's span is in the same trace
    # The group commit that wrote OrderCreated is in the trace too, linked to its append.
    commits = [s for s in trace if s.name == "eventstore group commit"]
    assert commits and all(s.links for s in commits)
    assert any(
        s.parent_span_id in by_id and by_id[s.parent_span_id].kind == SERVER for s in commits
    )


@local_only
async def test_tracing_off_costs_no_errors_and_no_spans(
    new_database: Callable[[], str], receiver: tuple[Receiver, int]
) -> None:
    sink, _ = receiver
    system = start_system(new_database())  # no OTEL_* variables
    try:
        _, order_id = await one_saga(system.endpoints)
        async with EventStoreClient(system.store.address) as store:
            [created] = await store.read_stream_list(f"order-{order_id}", max_count=1)
        assert "traceparent" not in created.metadata
    finally:
        system.stop()
    assert sink.snapshot() == []
    for process in [system.store, *system.customers, *system.orders]:
        log = process.log()
        assert "Traceback" not in log and " ERROR " not in log, log

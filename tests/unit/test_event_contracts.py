"""The events that cross services: what each producer writes must read, through the contract,
as each consumer expects it; and an event stored in an older shape still loads."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import pytest

from contracts.order.v1 import events_pb2 as order_pb
from customer_svc.domain import customer
from customer_svc.domain.customer import CUSTOMER
from customer_svc.service_layer import handlers as customer_handlers
from event_contracts.customer import CUSTOMER_EVENTS
from event_contracts.order import ORDER_EVENTS
from eventstore_client.aggregate import AggregateType, EventCodec
from eventstore_client.client import NewEvent
from eventstore_client.codec import VERSION_KEY, Contracts, EventContract, MalformedEvent
from eventstore_client.repository import Repository
from eventstore_client.testing import InMemoryEventStore
from order_svc.adapters import read_model
from order_svc.domain import order
from order_svc.domain.order import ORDER
from order_svc.service_layer import handlers as order_handlers

# One of every event each producer writes, with every field set.
ORDER_SAMPLES = [
    order.OrderCreated("o1", "c1", 250, 1_700_000_000.5),
    order.OrderApproved("o1"),
    order.OrderRejected("o1", "credit limit exceeded"),
    order.OrderCancelled("o1", "c1"),
]
CUSTOMER_SAMPLES = [
    customer.CustomerCreated("c1", "Ada", 1000),
    customer.CreditReserved("c1", "o1", 250),
    customer.CreditLimitExceeded("c1", "o2", 900, 750, customer.LIMIT_EXCEEDED),
    customer.CreditReleased("c1", "o1", 250),
    customer.CustomerForgotten("c1"),
]


@pytest.mark.parametrize(
    ("kind", "samples", "consumers"),
    [
        (ORDER, ORDER_SAMPLES, [customer_handlers.REACTIONS, read_model._CHANGES]),
        (CUSTOMER, CUSTOMER_SAMPLES, [order_handlers.REACTIONS]),
    ],
    ids=["order events", "customer events"],
)
def test_what_a_producer_writes_reads_as_its_consumers_expect(
    kind: AggregateType[Any, Any], samples: list[Any], consumers: list[dict[type[Any], Any]]
) -> None:
    assert sorted(type(s).__name__ for s in samples) == kind.codec.types, "a sample per type"
    contracts = {ORDER.category: ORDER_EVENTS, CUSTOMER.category: CUSTOMER_EVENTS}[kind.category]
    for consumer in consumers:
        handled = {message.DESCRIPTOR.name for message in consumer}
        assert handled <= set(kind.codec.types), "a consumer reacts to an event nobody writes"
    for sample in samples:
        type_name, data, metadata = kind.codec.encode(sample)
        message = contracts.decode(type_name, data, metadata)
        assert message is not None
        assert {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields} == (
            dataclasses.asdict(sample)
        )
        assert kind.codec.decode(type_name, data, metadata) == sample


def test_a_field_renamed_on_one_side_only_fails_when_the_codec_is_built() -> None:
    @dataclass(frozen=True)
    class OrderApproved:
        id: str  # the contract calls it order_id

    with pytest.raises(ValueError, match="differ from its contract"):
        EventCodec([OrderApproved], ORDER_EVENTS)


def test_a_malformed_event_names_the_field() -> None:
    with pytest.raises(MalformedEvent, match="customer_id"):
        ORDER_EVENTS.decode("OrderCreated", b'{"order_id": "o1", "total": 5}', {})
    with pytest.raises(MalformedEvent, match="total"):
        ORDER_EVENTS.decode("OrderCreated", b'{"order_id": "o", "total": "lots"}', {})
    with pytest.raises(MalformedEvent, match="not JSON"):
        ORDER_EVENTS.decode("OrderCreated", b'{"order_id": ', {})
    assert ORDER_EVENTS.decode("SomethingElse", b"<xml/>", {}) is None


def test_fields_a_newer_producer_added_are_ignored() -> None:
    data = b'{"order_id": "o1", "customer_id": "c1", "total": 5, "currency": "EUR"}'
    message = ORDER_EVENTS.decode("OrderCreated", data, {})
    assert isinstance(message, order_pb.OrderCreated) and message.total == 5


async def test_an_event_stored_in_an_older_shape_loads_through_its_upcaster() -> None:
    store = InMemoryEventStore()
    order_id = "o-upcast"
    stream = ORDER.stream(order_id)
    # Version 1 of OrderRejected, as an older order_svc stored it: the reason was `why`.
    await store.append(
        stream,
        [NewEvent.json("OrderCreated", {"order_id": order_id, "customer_id": "c1", "total": 5})],
    )
    await store.append(
        stream, [NewEvent.json("OrderRejected", {"order_id": order_id, "why": "no credit"})]
    )

    def v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
        return {"order_id": fields["order_id"], "reason": fields.get("why", "")}

    rejected_v2 = EventContract(order_pb.OrderRejected, version=2, upcasters={1: v1_to_v2})
    contracts = Contracts([ORDER_EVENTS["OrderCreated"], rejected_v2])
    codec: EventCodec[order.OrderEvent] = EventCodec(
        [order.OrderCreated, order.OrderRejected], contracts
    )
    kind = dataclasses.replace(ORDER, codec=codec)

    loaded = await Repository(store, kind).load(order_id)
    assert loaded.state.state is order.State.REJECTED
    assert loaded.state.rejection_reason == "no credit"

    # What the new code writes says which version it is, and reads back without the upcaster.
    type_name, data, metadata = codec.encode(order.OrderRejected(order_id, "again"))
    assert metadata == {VERSION_KEY: "2"} and json.loads(data)["reason"] == "again"
    assert codec.decode(type_name, data, metadata) == order.OrderRejected(order_id, "again")
    with pytest.raises(MalformedEvent, match="newer"):
        ORDER_EVENTS.decode(type_name, data, metadata)  # the version-1 contract cannot read it


def test_a_contract_needs_every_upcaster_up_to_its_version() -> None:
    with pytest.raises(ValueError, match="no upcaster"):
        EventContract(order_pb.OrderRejected, version=3, upcasters={1: dict})

"""Use cases of the customer service: commands from gRPC and reactions to order events."""

from __future__ import annotations

import json
import logging

from customer_svc.adapters.metrics import CREDIT_DECISIONS
from customer_svc.domain import customer
from customer_svc.domain.customer import Customer, CustomerEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.hosting import is_uuid
from eventstore_client.repository import Loaded, Repository

log = logging.getLogger(__name__)

DECISIONS = {
    "CreditReserved": "reserved",
    "CreditLimitExceeded": "refused",
    "CreditReleased": "released",
}

# The order events this service reacts to (its subscription's filter).
ORDER_EVENTS = ("OrderCreated", "OrderCancelled")


class Customers:
    def __init__(self, repository: Repository[Customer, CustomerEvent]) -> None:
        self._repository = repository

    async def create(self, customer_id: str, name: str, credit_limit: int) -> Loaded[Customer]:
        executed = await self._repository.create(
            customer_id, lambda state: customer.create(state, name, credit_limit)
        )
        return executed.loaded

    async def get(self, customer_id: str) -> Loaded[Customer]:
        return await self._repository.load(customer_id)

    async def on_order_event(self, event: RecordedEvent) -> None:
        """The saga's customer side: answer each new order once, release cancelled ones."""
        fields = json.loads(event.data)
        customer_id, order_id = fields["customer_id"], fields["order_id"]
        if not is_uuid(customer_id):
            # order_svc accepts only UUIDs; anything else cannot name a customer stream.
            log.error(
                "ignoring %s %s: customer id %r is not a UUID", event.type, event.id, customer_id
            )
            return
        if event.type == "OrderCreated":
            total = int(fields["total"])
            executed = await self._repository.execute(
                customer_id,
                lambda s: customer.reserve_credit(s, order_id, total),
                causation_id=event.id,
            )
        elif event.type == "OrderCancelled":
            executed = await self._repository.execute(
                customer_id, lambda s: customer.release_credit(s, order_id), causation_id=event.id
            )
        else:
            return
        for decided in executed.events:
            CREDIT_DECISIONS.labels(DECISIONS[type(decided).__name__]).inc()

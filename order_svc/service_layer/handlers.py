"""Use cases of the order service: commands from gRPC and reactions to customer events."""

from __future__ import annotations

import json
import time

from eventstore_client.client import RecordedEvent
from eventstore_client.repository import Loaded, Repository
from order_svc.adapters.metrics import SAGA_OUTCOMES, SAGA_SECONDS
from order_svc.domain import order
from order_svc.domain.order import Order, OrderEvent

# The customer events this service reacts to (its subscription's filter).
CREDIT_EVENTS = ("CreditReserved", "CreditLimitExceeded")


class Orders:
    def __init__(self, repository: Repository[Order, OrderEvent]) -> None:
        self._repository = repository

    async def create(self, order_id: str, customer_id: str, total: int) -> Loaded[Order]:
        placed_at = time.time()
        executed = await self._repository.create(
            order_id, lambda state: order.create(state, customer_id, total, placed_at)
        )
        return executed.loaded

    async def get(self, order_id: str, as_of_version: int = 0) -> Loaded[Order]:
        return await self._repository.load(order_id, as_of_version)

    async def cancel(self, order_id: str) -> Loaded[Order]:
        executed = await self._repository.execute(order_id, order.cancel)
        if executed.events:
            SAGA_OUTCOMES.labels("cancelled").inc()
        return executed.loaded

    async def on_credit_event(self, event: RecordedEvent) -> None:
        """The saga's order side: the customer's answer approves or rejects a pending order."""
        fields = json.loads(event.data)
        order_id = fields["order_id"]
        if event.type == "CreditReserved":
            executed = await self._repository.execute(
                order_id, order.approve, causation_id=event.id
            )
            outcome = "approved"
        elif event.type == "CreditLimitExceeded":
            reason = fields.get("reason", "credit refused")
            executed = await self._repository.execute(
                order_id, lambda s: order.reject(s, reason), causation_id=event.id
            )
            outcome = "rejected"
        else:
            return
        if executed.events:
            SAGA_OUTCOMES.labels(outcome).inc()
            placed_at = executed.loaded.state.placed_at
            if placed_at:
                SAGA_SECONDS.observe(max(0.0, time.time() - placed_at))

"""Use cases of the order service: commands from gRPC and reactions to customer events."""

from __future__ import annotations

import json

from eventstore_client.client import RecordedEvent
from eventstore_client.repository import Loaded, Repository
from order_svc.domain import order
from order_svc.domain.order import Order, OrderEvent

# The customer events this service reacts to (its subscription's filter).
CREDIT_EVENTS = ("CreditReserved", "CreditLimitExceeded")


class Orders:
    def __init__(self, repository: Repository[Order, OrderEvent]) -> None:
        self._repository = repository

    async def create(self, order_id: str, customer_id: str, total: int) -> Loaded[Order]:
        executed = await self._repository.create(
            order_id, lambda state: order.create(state, customer_id, total)
        )
        return executed.loaded

    async def get(self, order_id: str, as_of_version: int = 0) -> Loaded[Order]:
        return await self._repository.load(order_id, as_of_version)

    async def cancel(self, order_id: str) -> Loaded[Order]:
        return (await self._repository.execute(order_id, order.cancel)).loaded

    async def on_credit_event(self, event: RecordedEvent) -> None:
        """The saga's order side: the customer's answer approves or rejects a pending order."""
        fields = json.loads(event.data)
        order_id = fields["order_id"]
        if event.type == "CreditReserved":
            await self._repository.execute(order_id, order.approve, causation_id=event.id)
        elif event.type == "CreditLimitExceeded":
            reason = fields.get("reason", "credit refused")
            await self._repository.execute(
                order_id, lambda s: order.reject(s, reason), causation_id=event.id
            )

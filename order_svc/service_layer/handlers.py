"""Use cases of the order service: commands from gRPC and reactions to customer events."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contracts.customer.v1 import events_pb2 as customer_events
from event_contracts.customer import CUSTOMER_EVENTS
from eventstore_client.client import RecordedEvent
from eventstore_client.repository import Loaded, Repository
from hosting.metrics import EVENTS_SKIPPED
from order_svc.adapters.metrics import SAGA_OUTCOMES, SAGA_SECONDS
from order_svc.domain import order
from order_svc.domain.order import Order, OrderEvent


class Orders:
    def __init__(self, repository: Repository[Order, OrderEvent]) -> None:
        self._repository = repository

    async def create(self, order_id: str, customer_id: str, total: int) -> Loaded[Order]:
        placed_at = time.time()
        executed = await self._repository.create(
            order_id, lambda state: order.create(state, customer_id, total, placed_at)
        )
        return executed.loaded

    async def get(
        self, order_id: str, as_of_version: int = 0, as_of: datetime | None = None
    ) -> Loaded[Order]:
        return await self._repository.load(order_id, as_of_version, as_of)

    async def cancel(self, order_id: str) -> Loaded[Order]:
        executed = await self._repository.execute(order_id, order.cancel)
        if executed.events:
            SAGA_OUTCOMES.labels("cancelled").inc()
        return executed.loaded

    async def on_credit_event(self, event: RecordedEvent) -> None:
        """The saga's order side: the customer's answer approves or rejects a pending order."""
        message = CUSTOMER_EVENTS.decode(event.type, event.data, event.metadata)
        reaction = REACTIONS.get(type(message))
        if message is None or reaction is None:
            EVENTS_SKIPPED.labels("order_svc.credit", event.type).inc()
            return  # not a credit answer
        outcome, command = reaction(message)
        executed = await self._repository.execute(
            message.order_id,  # type: ignore[attr-defined]
            command,
            causation_id=event.id,
        )
        if executed.events:
            SAGA_OUTCOMES.labels(outcome).inc()
            placed_at = executed.loaded.state.placed_at
            if placed_at:
                SAGA_SECONDS.observe(max(0.0, time.time() - placed_at))


Command = Callable[[Order], Sequence[OrderEvent]]


def _approve(reserved: customer_events.CreditReserved) -> tuple[str, Command]:
    return "approved", order.approve


def _reject(refused: customer_events.CreditLimitExceeded) -> tuple[str, Command]:
    reason = refused.reason or "credit refused"
    return "rejected", lambda state: order.reject(state, reason)


# The customer's answers and what each does to the order: a handler table, by contract message.
REACTIONS: dict[type[Any], Callable[[Any], tuple[str, Command]]] = {
    customer_events.CreditReserved: _approve,
    customer_events.CreditLimitExceeded: _reject,
}
# The customer events this service reacts to (its subscription's filter).
CREDIT_EVENTS = tuple(message.DESCRIPTOR.name for message in REACTIONS)

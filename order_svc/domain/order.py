"""The Order aggregate: its events, its state, and the decisions of its life cycle.

Pure and synchronous: no I/O. An order is PENDING until the customer's credit answers; the saga
moves it to APPROVED or REJECTED; it may be CANCELLED while PENDING or APPROVED. Decisions that
find the order already past the point they would move it record nothing, which is what makes a
redelivered answer harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from event_contracts.order import ORDER_EVENTS
from eventstore_client.aggregate import AggregateType, EventCodec


class OrderError(Exception):
    """A command the order's state does not allow."""


class OrderNotFound(OrderError):
    """No order with this id (the exception's argument)."""

    def __str__(self) -> str:
        return f"no order {self.args[0]}"


class State(StrEnum):
    NEW = "NEW"  # no OrderCreated yet
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class OrderCreated:
    order_id: str
    customer_id: str
    total: int
    placed_at: float = 0.0  # seconds since the epoch, when the customer placed it


@dataclass(frozen=True)
class OrderApproved:
    order_id: str


@dataclass(frozen=True)
class OrderRejected:
    order_id: str
    reason: str


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    customer_id: str


OrderEvent = OrderCreated | OrderApproved | OrderRejected | OrderCancelled


@dataclass(frozen=True)
class Order:
    order_id: str
    state: State = State.NEW
    customer_id: str = ""
    total: int = 0
    rejection_reason: str = ""
    placed_at: float = 0.0

    @property
    def exists(self) -> bool:
        return self.state is not State.NEW


def evolve(order: Order, event: OrderEvent) -> Order:
    match event:
        case OrderCreated(customer_id=customer_id, total=total, placed_at=placed_at):
            return replace(
                order,
                state=State.PENDING,
                customer_id=customer_id,
                total=total,
                placed_at=placed_at,
            )
        case OrderApproved():
            return replace(order, state=State.APPROVED)
        case OrderRejected(reason=reason):
            return replace(order, state=State.REJECTED, rejection_reason=reason)
        case OrderCancelled():
            return replace(order, state=State.CANCELLED)
    raise TypeError(f"not an order event: {event!r}")


# Commands -------------------------------------------------------------------------------------


def create(order: Order, customer_id: str, total: int, placed_at: float = 0.0) -> list[OrderEvent]:
    """Place the order; placing it again is a no-op (the create is idempotent by id)."""
    if total <= 0:
        raise OrderError("the total must be positive")
    if not customer_id:
        raise OrderError("an order needs a customer")
    if order.exists:
        return []
    return [OrderCreated(order.order_id, customer_id, total, placed_at)]


def approve(order: Order) -> list[OrderEvent]:
    """Credit was reserved: approve a pending order (a cancelled one stays cancelled)."""
    return [OrderApproved(order.order_id)] if order.state is State.PENDING else []


def reject(order: Order, reason: str) -> list[OrderEvent]:
    return [OrderRejected(order.order_id, reason)] if order.state is State.PENDING else []


def cancel(order: Order) -> list[OrderEvent]:
    """Cancel a pending or approved order; cancelling twice is a no-op."""
    if not order.exists:
        raise OrderNotFound(order.order_id)
    if order.state is State.REJECTED:
        raise OrderError("a rejected order cannot be cancelled")
    if order.state is State.CANCELLED:
        return []
    return [OrderCancelled(order.order_id, order.customer_id)]


# Snapshots ------------------------------------------------------------------------------------


def to_snapshot(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "state": order.state.value,
        "customer_id": order.customer_id,
        "total": order.total,
        "rejection_reason": order.rejection_reason,
        "placed_at": order.placed_at,
    }


def from_snapshot(data: Mapping[str, Any]) -> Order:
    return Order(
        order_id=data["order_id"],
        state=State(data["state"]),
        customer_id=data["customer_id"],
        total=data["total"],
        rejection_reason=data["rejection_reason"],
        placed_at=data["placed_at"],
    )


ORDER: AggregateType[Order, OrderEvent] = AggregateType(
    category="order",
    initial=Order,
    evolve=evolve,
    codec=EventCodec([OrderCreated, OrderApproved, OrderRejected, OrderCancelled], ORDER_EVENTS),
    snapshot_schema=1,
    to_snapshot=to_snapshot,
    from_snapshot=from_snapshot,
)

"""The Customer aggregate: its events, its state, and the decisions on credit.

Pure and synchronous: no I/O. State changes only by `evolve(state, event)`; commands are
functions from a state to the events that record their outcome (empty: nothing to do).
Reservations are keyed by order id, so a redelivered request is recognised by its business key
and answered with nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from event_contracts.customer import CUSTOMER_EVENTS
from eventstore_client.aggregate import AggregateType, EventCodec


class DomainError(Exception):
    """A command the customer's state does not allow."""


@dataclass(frozen=True)
class CustomerCreated:
    customer_id: str
    name: str
    credit_limit: int


@dataclass(frozen=True)
class CreditReserved:
    customer_id: str
    order_id: str
    amount: int


@dataclass(frozen=True)
class CreditLimitExceeded:
    customer_id: str
    order_id: str
    amount: int
    available: int
    reason: str


@dataclass(frozen=True)
class CreditReleased:
    customer_id: str
    order_id: str
    amount: int


@dataclass(frozen=True)
class CustomerForgotten:
    customer_id: str


CustomerEvent = (
    CustomerCreated | CreditReserved | CreditLimitExceeded | CreditReleased | CustomerForgotten
)

UNKNOWN_CUSTOMER = "unknown customer"
LIMIT_EXCEEDED = "credit limit exceeded"


@dataclass(frozen=True)
class Customer:
    customer_id: str
    exists: bool = False
    name: str = ""  # personal data: empty once forgotten
    forgotten: bool = False
    credit_limit: int = 0
    reservations: Mapping[str, int] = field(default_factory=dict)  # order id -> amount held
    refused: frozenset[str] = frozenset()  # orders answered with CreditLimitExceeded
    released: frozenset[str] = frozenset()  # orders whose reservation was released

    @property
    def credit_reserved(self) -> int:
        return sum(self.reservations.values())

    @property
    def available_credit(self) -> int:
        return self.credit_limit - self.credit_reserved

    def answered(self, order_id: str) -> bool:
        return (
            order_id in self.reservations or order_id in self.refused or order_id in self.released
        )


def evolve(state: Customer, event: CustomerEvent) -> Customer:
    match event:
        case CustomerCreated(name=name, credit_limit=limit):
            return replace(state, exists=True, name=name, credit_limit=limit)
        case CreditReserved(order_id=order_id, amount=amount):
            return replace(state, reservations={**state.reservations, order_id: amount})
        case CreditLimitExceeded(order_id=order_id):
            return replace(state, refused=state.refused | {order_id})
        case CreditReleased(order_id=order_id):
            reservations = {k: v for k, v in state.reservations.items() if k != order_id}
            return replace(state, reservations=reservations, released=state.released | {order_id})
        case CustomerForgotten():
            return replace(state, name="", forgotten=True)
    raise TypeError(f"not a customer event: {event!r}")


# Commands -------------------------------------------------------------------------------------


def create(state: Customer, name: str, credit_limit: int) -> list[CustomerEvent]:
    """Create the customer; creating it again is a no-op (the create is idempotent by id)."""
    if credit_limit <= 0:
        raise DomainError("the credit limit must be positive")
    if not name:
        raise DomainError("a customer needs a name")
    if state.exists:
        return []
    return [CustomerCreated(state.customer_id, name, credit_limit)]


def reserve_credit(state: Customer, order_id: str, amount: int) -> list[CustomerEvent]:
    """Answer an order's request for credit once: reserve it, or refuse it."""
    if state.answered(order_id):
        return []
    if not state.exists:
        return [CreditLimitExceeded(state.customer_id, order_id, amount, 0, UNKNOWN_CUSTOMER)]
    if amount <= 0 or amount > state.available_credit:
        return [
            CreditLimitExceeded(
                state.customer_id, order_id, amount, state.available_credit, LIMIT_EXCEEDED
            )
        ]
    return [CreditReserved(state.customer_id, order_id, amount)]


def release_credit(state: Customer, order_id: str) -> list[CustomerEvent]:
    """Release what an order holds (the compensation for a cancelled order); else nothing."""
    amount = state.reservations.get(order_id)
    if amount is None:
        return []
    return [CreditReleased(state.customer_id, order_id, amount)]


def forget(state: Customer) -> list[CustomerEvent]:
    """Forget the customer's personal data; again: nothing to do."""
    if not state.exists:
        raise DomainError("no such customer")
    if state.forgotten:
        return []
    return [CustomerForgotten(state.customer_id)]


# Snapshots ------------------------------------------------------------------------------------


def to_snapshot(state: Customer) -> dict[str, Any]:
    return {
        "customer_id": state.customer_id,
        "exists": state.exists,
        "name": state.name,
        "forgotten": state.forgotten,
        "credit_limit": state.credit_limit,
        "reservations": dict(state.reservations),
        "refused": sorted(state.refused),
        "released": sorted(state.released),
    }


def from_snapshot(data: Mapping[str, Any]) -> Customer:
    return Customer(
        customer_id=data["customer_id"],
        exists=data["exists"],
        name=data["name"],
        forgotten=data.get("forgotten", False),  # absent from snapshots taken before it
        credit_limit=data["credit_limit"],
        reservations=dict(data["reservations"]),
        refused=frozenset(data["refused"]),
        released=frozenset(data["released"]),
    )


CUSTOMER: AggregateType[Customer, CustomerEvent] = AggregateType(
    category="customer",
    initial=Customer,
    evolve=evolve,
    codec=EventCodec(
        [CustomerCreated, CreditReserved, CreditLimitExceeded, CreditReleased, CustomerForgotten],
        CUSTOMER_EVENTS,
    ),
    snapshot_schema=1,
    to_snapshot=to_snapshot,
    from_snapshot=from_snapshot,
)

"""The customer stream's events (produced by customer_svc)."""

from __future__ import annotations

from contracts.customer.v1 import events_pb2 as pb
from eventstore_client.codec import Contracts, EventContract

CUSTOMER_CREATED = EventContract(pb.CustomerCreated, required=("customer_id",))
CREDIT_RESERVED = EventContract(pb.CreditReserved, required=("customer_id", "order_id", "amount"))
CREDIT_LIMIT_EXCEEDED = EventContract(pb.CreditLimitExceeded, required=("customer_id", "order_id"))
CREDIT_RELEASED = EventContract(pb.CreditReleased, required=("customer_id", "order_id", "amount"))
CUSTOMER_FORGOTTEN = EventContract(pb.CustomerForgotten, required=("customer_id",))

CUSTOMER_EVENTS = Contracts(
    [CUSTOMER_CREATED, CREDIT_RESERVED, CREDIT_LIMIT_EXCEEDED, CREDIT_RELEASED, CUSTOMER_FORGOTTEN]
)

# The fields that hold personal data, by event type: sealed with the customer's own key
# (eventstore_client.personal), so erasing the key forgets them everywhere.
PERSONAL_FIELDS = {CUSTOMER_CREATED.type: ("name",)}

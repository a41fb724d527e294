"""The order stream's events (produced by order_svc)."""

from __future__ import annotations

from contracts.order.v1 import events_pb2 as pb
from eventstore_client.codec import Contracts, EventContract

ORDER_CREATED = EventContract(pb.OrderCreated, required=("order_id", "customer_id", "total"))
ORDER_APPROVED = EventContract(pb.OrderApproved, required=("order_id",))
ORDER_REJECTED = EventContract(pb.OrderRejected, required=("order_id",))
ORDER_CANCELLED = EventContract(pb.OrderCancelled, required=("order_id", "customer_id"))

ORDER_EVENTS = Contracts([ORDER_CREATED, ORDER_APPROVED, ORDER_REJECTED, ORDER_CANCELLED])

"""order_svc's Prometheus metrics: how sagas end, and how long they take."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SAGA_OUTCOMES = Counter("saga_orders_total", "Orders by outcome", ["outcome"])
SAGA_SECONDS = Histogram(
    "saga_seconds",
    "From CreateOrder to the order's approval or rejection",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

"""customer_svc's Prometheus metrics: its answers to the saga."""

from __future__ import annotations

from prometheus_client import Counter

CREDIT_DECISIONS = Counter("credit_decisions_total", "Credit answers by decision", ["decision"])

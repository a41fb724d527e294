"""Metrics every service built on the store has (its own are in its adapters)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_SKIPPED = Counter(
    "events_skipped_total",
    "Events delivered to a handler that does not handle their type (skipped, not parked)",
    ["handler", "type"],
)

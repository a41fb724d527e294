"""The store's Prometheus metrics, served on their own port (`--metrics-listen`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPENDS = Counter("eventstore_appends_total", "Append requests by outcome", ["outcome"])
APPEND_SECONDS = Histogram(
    "eventstore_append_seconds",
    "Append latency in the server, queueing and commit included",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_WRITTEN = Counter("eventstore_events_written_total", "Events committed")
BATCH_APPENDS = Histogram(
    "eventstore_batch_appends",
    "Appends per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_SECONDS = Histogram(
    "eventstore_batch_seconds",
    "Time to write one group commit",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
BATCHES_DELAYED = Counter(
    "eventstore_batches_delayed_total",
    "Group commits that waited --commit-delay-ms for more appends (sustained load)",
)
READS = Counter("eventstore_reads_total", "Read requests", ["rpc"])
READ_EVENTS = Counter(
    "eventstore_read_events_total", "Events sent by reads and subscriptions", ["rpc"]
)
SUBSCRIPTIONS = Gauge("eventstore_subscriptions_active", "Open Subscribe calls")
HEAD = Gauge("eventstore_head_position", "The last committed position")
SUBSCRIBER_POSITION = Gauge(
    "eventstore_subscriber_position", "A durable subscriber's checkpoint", ["subscriber"]
)
SUBSCRIBER_LAG = Gauge(
    "eventstore_subscriber_lag",
    "Events committed after a durable subscriber's checkpoint",
    ["subscriber"],
)


def start(listen: str) -> None:
    """Serve /metrics on HOST:PORT (nothing when empty)."""
    if not listen:
        return
    from prometheus_client import start_http_server

    host, port = listen.rsplit(":", 1)
    start_http_server(int(port), addr=host)

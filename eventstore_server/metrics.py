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

# Consumer groups. Counters count what this replica did; gauges are the group's state in the
# database (every replica reports the same numbers; aggregate with max, not sum).
GROUP_DELIVERIES = Counter(
    "eventstore_group_deliveries_total", "Deliveries to a group's members", ["group"]
)
GROUP_REDELIVERIES = Counter(
    "eventstore_group_redeliveries_total",
    "Deliveries of an event that had been delivered before (attempt > 1)",
    ["group"],
)
GROUP_ACKS = Counter("eventstore_group_acks_total", "Acks applied", ["group"])
GROUP_IGNORED = Counter(
    "eventstore_group_answers_ignored_total",
    "Acks and nacks for deliveries not in flight for that member (taken back, or unknown)",
    ["group"],
)
GROUP_PARKED_TOTAL = Counter(
    "eventstore_group_parked_events_total", "Events parked (by nack or attempts)", ["group"]
)
GROUP_REPLAYED = Counter("eventstore_group_replayed_total", "Parked events replayed", ["group"])
GROUP_LAG = Gauge("eventstore_group_lag", "Matching events not yet acked or parked", ["group"])
GROUP_IN_FLIGHT = Gauge("eventstore_group_in_flight", "Deliveries awaiting an answer", ["group"])
GROUP_PARKED = Gauge("eventstore_group_parked", "Events parked now", ["group"])
GROUP_MEMBERS = Gauge("eventstore_group_members", "Members connected, all replicas", ["group"])


def start(listen: str) -> None:
    """Serve /metrics on HOST:PORT (nothing when empty)."""
    if not listen:
        return
    from prometheus_client import start_http_server

    host, port = listen.rsplit(":", 1)
    start_http_server(int(port), addr=host)


SCAVENGED = Counter(
    "eventstore_scavenged_events_total", "Deleted or expired events removed by this replica"
)
SCAVENGE_ROUNDS = Counter(
    "eventstore_scavenge_rounds_total", "Scavenge rounds this replica ran, by outcome", ["outcome"]
)
SCAVENGE_SECONDS = Histogram(
    "eventstore_scavenge_seconds",
    "Duration of this replica's scavenge rounds",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCAVENGE_QUEUE = Gauge(
    "eventstore_scavenge_streams", "Streams with deleted or expiring events to look at"
)
STREAMS_DELETED = Counter(
    "eventstore_streams_deleted_total", "DeleteStream calls that took effect, by kind", ["kind"]
)

"""Prometheus metrics, scraped over HTTP after real traffic."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

from eventstore_client import EventStoreClient, NewEvent
from localpg import free_port
from tools.processes import store_process, unique, wait_until


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def value(text: str, name: str, required: bool = True) -> float:
    """The sum of a metric's samples (over all its labels)."""
    found = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    assert found or not required, f"{name} not exported"
    return sum(float(v) for v in found)


async def test_store_metrics_move_with_traffic(new_database: Callable[[], str]) -> None:
    port = free_port()
    server = store_process(new_database(), "--metrics-listen", f"127.0.0.1:{port}").start()
    try:
        before = scrape(port)
        async with EventStoreClient(server.address) as client:
            category = unique("m")
            for i in range(5):
                await client.append(f"{category}-{i}", [NewEvent("E"), NewEvent("E")])
            await client.read_stream_list(f"{category}-0")
            await client.commit_checkpoint("metrics-test", 3)
        after = scrape(port)
        before_appends = value(before, "eventstore_appends_total", required=False)
        assert value(after, "eventstore_appends_total") - before_appends == 5
        assert value(after, "eventstore_events_written_total") == 10
        assert value(after, "eventstore_batch_appends_count") >= 1
        assert value(after, "eventstore_append_seconds_count") == 5
        assert value(after, "eventstore_read_events_total") >= 2
        # Gauges follow the database at the health interval.
        wait_until(lambda: value(scrape(port), "eventstore_head_position") == 10, timeout=30)
        assert 'eventstore_subscriber_lag{subscriber="metrics-test"} 7.0' in scrape(port)
    finally:
        server.stop()

"""A consumer-group member as a process of its own, for tests that kill it with SIGKILL:
`python -m tests.integration.group_member ADDRESS GROUP NAME LOG`. It writes a line to LOG when
it starts handling a delivery and when it acks it, each with the system-wide monotonic clock,
so a test can check across processes that no stream's event started before the one before it
was acked."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import TextIO

from eventstore_client import EventStoreClient


async def main(address: str, group: str, name: str, log: TextIO) -> None:

    def note(op: str, stream: str, version: int) -> None:
        record = {"op": op, "member": name, "stream": stream, "version": version}
        log.write(json.dumps({**record, "t": time.monotonic_ns()}) + "\n")

    async with EventStoreClient(address) as client:
        while True:
            try:
                async with client.consume(group, name, 8) as session:
                    running: set[asyncio.Task[None]] = set()

                    async def handle(event_stream: str, version: int, position: int) -> None:
                        note("start", event_stream, version)
                        await asyncio.sleep(random.uniform(0.001, 0.005))
                        note("ack", event_stream, version)
                        session.ack(position)

                    async for delivery in session.deliveries():
                        event = delivery.event
                        task = asyncio.create_task(
                            handle(event.stream, event.version, event.position)
                        )
                        running.add(task)
                        task.add_done_callback(running.discard)
            except Exception as exc:  # a store replica went away: join again
                print(f"{name}: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.1)


if __name__ == "__main__":
    with open(sys.argv[4], "a", buffering=1) as lines:  # a line at a time: a kill loses none
        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], lines))

"""One subscriber of the live fan-out scenario, in a process of its own (as a service replica
would be): `python -m bench.fanout_subscriber ADDRESS CATEGORY COUNT`.

Subscribes to CATEGORY from its start, prints `ready` once caught up, then takes COUNT events
and prints, as one JSON line, each one's delay in milliseconds from the time the writer put in
its data (the writer and subscribers share the machine's clock) to its arrival here, how many
messages carried them, and the CPU seconds this process spent while it was live."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

import grpc

from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.eventstore.v1 import eventstore_pb2_grpc as pb_grpc


async def main(address: str, category: str, count: int) -> None:
    delays: list[float] = []
    messages = 0
    live_from = 0.0
    gc.disable()  # its pauses would be counted as the store's latency
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.EventStoreStub(channel).Subscribe(pb.SubscribeRequest(category=category))
        async for response in call:
            now = time.time()
            delays.extend((now - float(event.data)) * 1000 for event in response.events)
            messages += bool(response.events)
            if response.caught_up:
                live_from = time.process_time()
                print("ready", flush=True)
            if len(delays) >= count:
                break
        call.cancel()
    report = {"delays": delays, "messages": messages, "cpu_s": time.process_time() - live_from}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

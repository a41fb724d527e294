"""The services: aggregate load time against history length, GetCustomer on a long history
against a new customer, and the saga's CreateOrder -> APPROVED latency and throughput."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import statistics
import time
import uuid
from typing import Any

import grpc

from bench.harness import Bench, Result, absolute, ratio, timed_rate
from contracts.customer.v1 import customer_pb2 as cpb
from contracts.customer.v1 import customer_pb2_grpc
from contracts.order.v1 import order_pb2 as opb
from contracts.order.v1 import order_pb2_grpc
from customer_svc.domain import customer
from customer_svc.domain.customer import CUSTOMER
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.repository import Loaded, Repository
from tools.processes import ServerProcess

# The aggregate-load histories live in a category no service follows: written into `customer`,
# they would be a backlog for order_svc's saga subscription while other scenarios are timed.
LOAD_KIND = dataclasses.replace(CUSTOMER, category="benchload")


async def _customer_with_history(
    client: EventStoreClient, events: int, kind: Any = CUSTOMER
) -> str:
    """A customer whose stream holds `events` events (1 creation, then reservations)."""
    customer_id = str(uuid.uuid4())
    stream = kind.stream(customer_id)
    created = customer.CustomerCreated(customer_id, "Bench", 10**12)
    batch = [NewEvent(*CUSTOMER.codec.encode(created), content_type="application/json")]
    for i in range(events - 1):
        event = customer.CreditReserved(customer_id, f"o{i}", 1)
        batch.append(NewEvent(*CUSTOMER.codec.encode(event), content_type="application/json"))
        if len(batch) == 1000:
            await client.append(stream, batch)
            batch = []
    if batch:
        await client.append(stream, batch)
    return customer_id


async def _load_ms(repository: Repository[Any, Any], customer_id: str, times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        loaded: Loaded[Any] = await repository.load(customer_id)
        samples.append((time.perf_counter() - start) * 1000)
    assert loaded.state.exists
    return statistics.median(samples)


async def aggregate_load(bench: Bench, store: ServerProcess) -> None:
    lengths = (10, 100) if bench.config.smoke else (10, 100, 1_000, 10_000)
    async with EventStoreClient(store.address) as client:
        # No cache: each load is a cold load, what this scenario measures.
        with_snapshots = Repository(client, LOAD_KIND, snapshot_every=100, cache_size=0)
        # Another snapshot schema: every snapshot is ignored and the whole history folded.
        without = Repository(
            client, dataclasses.replace(LOAD_KIND, snapshot_schema=-1), cache_size=0
        )
        for n in lengths:
            customer_id = await _customer_with_history(client, n, LOAD_KIND)
            full = await with_snapshots.load(customer_id)
            if n >= 100:  # as the repository does every 100 events: the last multiple of 100
                at = n - n % 100
                state = await with_snapshots.load(customer_id, as_of_version=at)
                await with_snapshots.save_snapshot(customer_id, state)
            assert full.version == n
            for label, repository in (
                ("with snapshots", with_snapshots),
                ("without snapshots", without),
            ):
                await bench.measure(
                    "aggregate load",
                    label,
                    "ms",
                    functools.partial(
                        _load_ms, repository, customer_id, 3 if bench.config.smoke else 10
                    ),
                    events=n,
                )


async def get_customer(
    bench: Bench, store: ServerProcess, customers: ServerProcess
) -> list[dict[str, Any]]:
    cfg = bench.config
    async with (
        EventStoreClient(store.address) as client,
        grpc.aio.insecure_channel(customers.address) as channel,
    ):
        stub = customer_pb2_grpc.CustomerServiceStub(channel)
        # A long-lived customer, snapshotted every 100 events as customer_svc does.
        repository = Repository(client, CUSTOMER, snapshot_every=100)
        long_id = await _customer_with_history(client, 1_500)
        await repository.save_snapshot(long_id, await repository.load(long_id))
        new = await stub.CreateCustomer(cpb.CreateCustomerRequest(name="New", credit_limit=10))

        def rate(customer_id: str) -> Any:
            async def work(_: int) -> int:
                await stub.GetCustomer(cpb.GetCustomerRequest(customer_id=customer_id))
                return 1

            return lambda: timed_rate(cfg.duration, 4, work)

        long_rate = await bench.measure(
            "GetCustomer", "1500 events", "calls/s", rate(long_id), events=1500
        )
        new_rate = await bench.measure(
            "GetCustomer", "new customer", "calls/s", rate(new.customer_id), events=1
        )
        return [ratio(long_rate, new_rate, target=0.5)]


async def _caught_up(client: EventStoreClient, subscribers: int, timeout: float = 120) -> None:
    """Until the services' durable subscribers have handled everything committed so far."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await client.stats()
        lagging = [s for s in stats.subscribers if s.lag > 0]
        if len(stats.subscribers) >= subscribers and not lagging:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"subscribers still behind: {lagging}")
        await asyncio.sleep(0.1)


async def saga(
    bench: Bench, customers: ServerProcess, orders: ServerProcess, store: ServerProcess
) -> list[dict[str, Any]]:
    cfg = bench.config
    rates = (5,) if cfg.smoke else (10, 50, 100, 200)
    duration = cfg.duration if cfg.smoke else 3.0
    results = []
    async with (
        EventStoreClient(store.address) as client,
        grpc.aio.insecure_channel(customers.address) as c,
        grpc.aio.insecure_channel(orders.address) as o,
    ):
        customer_stub, order_stub = (
            customer_pb2_grpc.CustomerServiceStub(c),
            order_pb2_grpc.OrderServiceStub(o),
        )
        owner = await customer_stub.CreateCustomer(
            cpb.CreateCustomerRequest(name="Saga", credit_limit=10**15)
        )
        started: dict[str, float] = {}
        latencies: list[float] = []
        approvals = asyncio.Queue[str]()

        async def watch() -> None:
            head = (await client.stats()).head_position
            async for response in client.subscribe(
                category="order", after_position=head, event_types=["OrderApproved"]
            ):
                now = time.perf_counter()
                for e in response.events:
                    order_id = e.stream.removeprefix("order-")
                    if order_id in started:
                        latencies.append((now - started[order_id]) * 1000)
                        approvals.put_nowait(order_id)

        watcher = asyncio.create_task(watch())
        # Warm up every path once, then let the services drain what came before the timing.
        warm = await order_stub.CreateOrder(
            opb.CreateOrderRequest(customer_id=owner.customer_id, total=1)
        )
        started[warm.order_id] = time.perf_counter()
        await asyncio.wait_for(approvals.get(), 60)
        await _caught_up(client, subscribers=2)
        for rate in rates:
            latencies.clear()
            count = int(rate * duration)
            begin = time.perf_counter()
            calls = []
            for i in range(count):
                delay = begin + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                order_id = str(uuid.uuid4())
                started[order_id] = time.perf_counter()
                calls.append(
                    asyncio.ensure_future(
                        order_stub.CreateOrder(
                            opb.CreateOrderRequest(
                                order_id=order_id, customer_id=owner.customer_id, total=1
                            )
                        )
                    )
                )
            await asyncio.gather(*calls)
            for _ in range(count):
                await asyncio.wait_for(approvals.get(), 60)
            elapsed = time.perf_counter() - begin
            ordered = sorted(latencies)
            p50 = ordered[len(ordered) // 2]
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            for metric, value in (("p50 ms", p50), ("p99 ms", p99), ("sagas/s", count / elapsed)):
                result = Result(
                    "saga CreateOrder->APPROVED",
                    "ours",
                    metric,
                    value,
                    {"offered/s": rate},
                    [value],
                )
                bench.results.append(result)
                print(f"  saga at {rate:>4}/s offered: {metric:<8} {value:8.1f}", flush=True)
                if metric == "p50 ms" and rate == rates[0]:
                    results.append(absolute(result, 20.0))
        watcher.cancel()
    return results


async def run(bench: Bench) -> list[dict[str, Any]]:
    db = bench.database()
    store = bench.store(db)
    await aggregate_load(bench, store)
    customers = bench.service("customer_svc", store, db)
    ratios = await get_customer(bench, store, customers)
    orders = bench.service("order_svc", store, db)  # after: the long customer is no saga backlog
    ratios += await saga(bench, customers, orders, store)
    return ratios

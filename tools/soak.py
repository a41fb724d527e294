"""`make soak` (`python -m tools.soak --minutes N --seed S`): the whole system under a randomized
schedule of faults, and a checker of the history at the end.

The system: an embedded PostgreSQL (or DATABASE_URL's server, whose crashes it cannot inject),
two store replicas, two replicas each of customer_svc and order_svc reaching the store through
one target naming both. The load: writers appending with expected versions, a live subscriber
that resubscribes from its last position, a consumer group, and sagas (CreateOrder). The faults,
one at a time from a seeded schedule: SIGKILL or SIGTERM of a store replica (started again after
up to 3 s), SIGSTOP of a store replica for up to 8 s, SIGKILL of a service replica (started
again), and a crash of PostgreSQL (SIGKILL of the postmaster, started again).

When the time is up the faults stop, the load settles, and the history is checked:
- every acknowledged append is stored at the position it was acknowledged with, as written;
- the subscriber saw every stored event of its category once, in position order;
- the group handled every stored event, each stream's events in version order;
- every order CreateOrder acknowledged settled, and the customer's reserved credit equals the
  sum of its approved orders.
It prints the faults injected, the operations, the violations (each named) and the seed, so a
failure can be replayed; the exit code is 1 when there is any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.customer.v1 import customer_pb2_grpc
from contracts.order.v1 import order_pb2 as opb
from contracts.order.v1 import order_pb2_grpc
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.client import RecordedEvent
from eventstore_client.consumer import GroupConsumer
from eventstore_client.errors import EventStoreError, is_transient
from localpg import LocalPostgres
from tools.processes import ServerProcess, create_database, store_process

CATEGORY = "soak"
GROUP = "soak.checker"
WRITERS = 8


@dataclass
class History:
    """What the load saw; the checker compares it with what is stored."""

    acknowledged: dict[int, tuple[str, int, str]] = field(default_factory=dict)  # position ->
    followed: list[int] = field(default_factory=list)  # subscriber, in arrival order
    grouped: dict[str, list[int]] = field(default_factory=dict)  # stream -> versions handled
    orders: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # answers other than success, by code
    unexpected: list[str] = field(default_factory=list)  # the first few that are not UNAVAILABLE
    faults: Counter[str] = field(default_factory=Counter)
    incidents: list[str] = field(default_factory=list)  # violations seen while faults ran


class System:
    def __init__(self, postgres: LocalPostgres | None, server_url: str) -> None:
        self.postgres = postgres
        self.database_url = create_database(server_url)
        self.stores = [store_process(self.database_url) for _ in range(2)]
        target = "ipv4:" + ",".join(s.address for s in self.stores)
        args = ["--eventstore", target, "--database-url", self.database_url]
        self.services = [
            ServerProcess(module, args) for module in ("customer_svc", "order_svc") * 2
        ]

    def start(self) -> None:
        for store in self.stores:
            store.start()
        for service in self.services:
            service.start(wait=False)
        for service in self.services:
            service.wait_serving()

    def stop(self) -> None:
        for process in [*self.services, *self.stores]:
            with contextlib.suppress(Exception):
                if process.process is not None:
                    os.kill(process.process.pid, signal.SIGCONT)
                process.stop()


async def inject(system: System, history: History, rng: random.Random, until: float) -> None:
    """One fault at a time, 2 to 6 s apart, until `until`."""
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(2, 6))
        kinds = ["store SIGKILL", "store SIGTERM", "store SIGSTOP", "service SIGKILL"]
        if system.postgres is not None:
            kinds.append("PostgreSQL crash")
        kind = rng.choice(kinds)
        history.faults[kind] += 1
        if kind.startswith("store"):
            store = rng.choice(system.stores)
            assert store.process is not None
            if kind == "store SIGSTOP":
                os.kill(store.process.pid, signal.SIGSTOP)
                await asyncio.sleep(rng.uniform(1, 8))
                os.kill(store.process.pid, signal.SIGCONT)
                continue
            if kind == "store SIGKILL":
                store.kill()
            else:
                try:
                    await asyncio.to_thread(store.terminate)
                except subprocess.TimeoutExpired:
                    history.incidents.append("a store replica did not exit within 30 s of SIGTERM")
                    store.kill()
            await asyncio.sleep(rng.uniform(0, 3))
            await asyncio.to_thread(store.start)
        elif kind == "service SIGKILL":
            service = rng.choice(system.services)
            service.kill()
            await asyncio.to_thread(service.start)
        else:
            assert system.postgres is not None
            system.postgres.kill()
            await asyncio.sleep(rng.uniform(0, 2))
            await restart_postgres(system.postgres)


async def restart_postgres(postgres: LocalPostgres) -> None:
    """Start PostgreSQL again after a crash: its last backends may still be going away, and
    a start before they have gone fails (their shared memory is still attached)."""
    for attempt in range(60):
        try:
            await asyncio.to_thread(postgres.start)
            return
        except RuntimeError:
            if attempt == 59:
                raise
            await asyncio.sleep(0.5)


async def write(client: EventStoreClient, n: int, history: History, stop: asyncio.Event) -> None:
    """Appends to one stream with expected versions; an answer that is not a success may still
    have committed, so the stream's version is read again before the next one."""
    stream, version = f"{CATEGORY}-{n}", 0
    while not stop.is_set():
        event = NewEvent.json("Written", {"writer": n, "after": version})
        try:
            result = await client.append(stream, [event], expected_version=version)
        except EventStoreError as error:
            history.refused[error.code.name] += 1
            if not is_transient(error) and len(history.unexpected) < 5:
                history.unexpected.append(str(error)[:300])
            await asyncio.sleep(0.1)
            with contextlib.suppress(EventStoreError):
                version = len(await client.read_stream_list(stream))
            continue
        version = result.version
        history.acknowledged[result.position] = (stream, result.version, event.id)
        await asyncio.sleep(0.01)


async def follow(client: EventStoreClient, history: History) -> None:
    while True:
        after = history.followed[-1] if history.followed else 0
        try:
            async for response in client.subscribe(category=CATEGORY, after_position=after):
                history.followed.extend(e.position for e in response.events)
        except EventStoreError:
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def saga_stubs(
    system: System,
) -> AsyncIterator[tuple[customer_pb2_grpc.CustomerServiceStub, order_pb2_grpc.OrderServiceStub]]:
    """Stubs for the first customer_svc and order_svc replicas."""
    customer, order = system.services[0].address, system.services[1].address
    async with grpc.aio.insecure_channel(customer) as c, grpc.aio.insecure_channel(order) as o:
        yield customer_pb2_grpc.CustomerServiceStub(c), order_pb2_grpc.OrderServiceStub(o)


async def place_orders(system: System, history: History, stop: asyncio.Event) -> str:
    """Orders of 100 for one customer until `stop`; the customer's id."""
    async with saga_stubs(system) as (customers, orders):
        while True:
            try:
                created = await customers.CreateCustomer(
                    cpb.CreateCustomerRequest(name="Soak", credit_limit=5000), timeout=30
                )
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)
        while not stop.is_set():
            try:
                order = await orders.CreateOrder(
                    opb.CreateOrderRequest(customer_id=created.customer_id, total=100), timeout=30
                )
                history.orders.append(order.order_id)
            except grpc.aio.AioRpcError as error:
                history.refused[f"CreateOrder {error.code().name}"] += 1
            await asyncio.sleep(0.1)
        return str(created.customer_id)


async def settled(predicate: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.5)
    return False


async def check(
    system: System, client: EventStoreClient, history: History, customer_id: str
) -> list[str]:
    violations = list(history.incidents)
    stored = {e.position: e async for e in client.read_all(category=CATEGORY)}
    for position, (stream, version, event_id) in history.acknowledged.items():
        event = stored.get(position)
        if event is None or (event.stream, event.version, event.id) != (stream, version, event_id):
            violations.append(
                f"acknowledged append lost or moved: {stream}@{version} at {position}"
            )
    if history.followed != sorted(set(history.followed)):
        violations.append("the subscriber saw an event twice or out of order")
    missing = set(stored) - set(history.followed)
    if missing:
        violations.append(f"the subscriber missed {len(missing)} events, first {min(missing)}")
    extra = set(history.followed) - set(stored)
    if extra:
        violations.append(f"the subscriber saw {len(extra)} events that are not stored")
    for stream, versions in history.grouped.items():
        firsts = list(dict.fromkeys(versions))
        if firsts != sorted(firsts):
            violations.append(f"the group handled {stream} out of order")
    handled = {(s, v) for s, vs in history.grouped.items() for v in vs}
    unhandled = [e for e in stored.values() if (e.stream, e.version) not in handled]
    if unhandled:
        violations.append(
            f"the group had not handled {len(unhandled)} events when checked (120 s after the "
            "faults stopped, at most): lost, or a group slower than the appends"
        )
    async with saga_stubs(system) as (customers, orders):
        # Every order of the customer, from order_svc's read model: a CreateOrder answered with
        # an error may still have created one, and its credit counts like any other's.
        listed = await orders.ListCustomerOrders(
            opb.ListCustomerOrdersRequest(customer_id=customer_id), timeout=30
        )
        states = {o.order_id: o for o in listed.orders}
        for order_id in set(history.orders) - set(states):
            states[order_id] = await orders.GetOrder(
                opb.GetOrderRequest(order_id=order_id), timeout=30
            )
            violations.append(f"acknowledged order {order_id} missing from the read model")
        for order_id in states:  # the read model's states, against the orders themselves
            order = await orders.GetOrder(opb.GetOrderRequest(order_id=order_id), timeout=30)
            if order.state != states[order_id].state:
                violations.append(
                    f"order {order_id}: read model {states[order_id].state}, order {order.state}"
                )
            states[order_id] = order
        pending = [i for i, o in states.items() if o.state == opb.ORDER_STATE_PENDING]
        if pending:
            violations.append(f"{len(pending)} orders never settled")
        approved = sum(o.total for o in states.values() if o.state == opb.ORDER_STATE_APPROVED)
        customer = await customers.GetCustomer(
            cpb.GetCustomerRequest(customer_id=customer_id), timeout=30
        )
        if customer.credit_reserved != approved or customer.credit_reserved > customer.credit_limit:
            violations.append(
                f"credit reserved {customer.credit_reserved} != approved {approved} "
                f"(limit {customer.credit_limit})"
            )
    return violations


async def soak(minutes: float, seed: int) -> int:
    rng = random.Random(seed)
    history = History()
    external = os.environ.get("DATABASE_URL")
    postgres = None if external else LocalPostgres()
    if postgres is not None:
        postgres.start()
    system = System(postgres, external or (postgres.dsn if postgres else ""))
    try:
        await asyncio.to_thread(system.start)
        stores = "ipv4:" + ",".join(s.address for s in system.stores)
        async with EventStoreClient(stores, wait_for_ready=True, retries=0) as client:
            await client.create_group(GROUP, category=CATEGORY)

            async def grouped(event: RecordedEvent) -> None:
                history.grouped.setdefault(event.stream, []).append(event.version)

            stop = asyncio.Event()
            background = [
                asyncio.create_task(GroupConsumer(client, GROUP, grouped).run()),
                asyncio.create_task(follow(client, history)),
                *(asyncio.create_task(write(client, n, history, stop)) for n in range(WRITERS)),
            ]
            saga = asyncio.create_task(place_orders(system, history, stop))
            until = time.monotonic() + minutes * 60
            await inject(system, history, rng, until)
            stop.set()
            customer_id = await saga
            await asyncio.gather(*background[2:])

            async def caught_up() -> bool:
                stored = [e.position async for e in client.read_all(category=CATEGORY)]
                grouped_count = sum(len(set(v)) for v in history.grouped.values())
                return set(stored) <= set(history.followed) and grouped_count >= len(stored)

            if not await settled(caught_up, 120):
                print("the load did not catch up within 120 s after the faults stopped")

            async def sagas_quiet() -> bool:
                async with saga_stubs(system) as (_, orders):
                    try:
                        listed = await orders.ListCustomerOrders(
                            opb.ListCustomerOrdersRequest(customer_id=customer_id), timeout=30
                        )
                    except grpc.aio.AioRpcError:
                        return False
                states = {o.order_id: o.state for o in listed.orders}
                return set(history.orders) <= set(states) and all(
                    state != opb.ORDER_STATE_PENDING for state in states.values()
                )

            if not await settled(sagas_quiet, 120):
                print("the sagas did not settle within 120 s after the faults stopped")
            violations = await check(system, client, history, customer_id)
            for task in background[:2]:
                task.cancel()
            await asyncio.gather(*background[:2], return_exceptions=True)
    finally:
        await asyncio.to_thread(system.stop)
        if postgres is not None:
            postgres.close()
    print(f"seed {seed}, {minutes} min")
    print("faults:", dict(history.faults))
    print(
        f"operations: {len(history.acknowledged)} appends acknowledged, "
        f"{len(history.followed)} events followed, "
        f"{sum(len(v) for v in history.grouped.values())} group deliveries handled, "
        f"{len(history.orders)} orders placed; refused: {dict(history.refused)}"
    )
    for answer in history.unexpected:
        print(f"  an append answered: {answer}")
    print(f"violations: {len(violations)}")
    for violation in violations:
        print(f"  - {violation}")
    return 1 if violations else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 5)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", time.time())))
    args = parser.parse_args()
    sys.exit(asyncio.run(soak(args.minutes, args.seed)))


if __name__ == "__main__":
    main()

"""The saga through restarts of the store: stopped with SIGTERM or SIGKILL and started again on
the same port after 0 to 6 s, alone and as two replicas restarted in turn (a rolling restart).
Orders keep coming throughout. After each restart every consumer of every service is a member
of its group again (it joined again and hears the store) within 10 s of the store's return,
every order placed so far settles within 15 s of it, no CreateOrder failed (a request that
arrives while the store is away waits for it), and nothing was parked: a store restart is not
the events' fault."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.order.v1 import order_pb2 as opb
from eventstore_client import EventStoreClient
from localpg import free_port
from tests.e2e.saga import Stubs, connect, new_customer, quiet_invariant
from tests.e2e.system import local_only
from tools.processes import ServerProcess, store_process

pytestmark = [local_only, pytest.mark.timeout(600)]

GROUPS = {
    "customer_svc": ["customer_svc.orders"],
    "order_svc": ["order_svc.credit", "order_svc.customer_orders"],
}
BACK_WITHIN_S = 10.0  # every member joined again, after the store's return
SETTLED_WITHIN_S = 15.0  # every order placed so far settled, after the store's return
ORDER_DEADLINE_S = 30.0  # a CreateOrder waits this long for a store that is away
# Tracing on, as deployments run the services: the gRPC instrumentation then wraps every call
# of theirs, and a Consume call ended under it answers a write with InvalidStateError (the path
# by which a consumer once stopped joining for good).
TRACING_ON = {"OTEL_TRACES_EXPORTER": "console"}
# (SIGKILL?, seconds down): both signals, downtimes from none to 6 s.
RESTARTS = [(False, 0.0), (True, 0.0), (False, 0.2), (True, 2.0), (False, 6.0), (True, 6.0)]


@dataclass
class Service:
    process: ServerProcess
    metrics_port: int

    def metrics(self) -> dict[tuple[str, str], float]:
        """(sample name, group) -> value, for the consumer-group samples."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, sample.labels.get("group", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("consumer_group_")
        }


def start_services(store_target: str, database_url: str) -> list[Service]:
    services = []
    for module in ("customer_svc", "customer_svc", "order_svc"):
        port = free_port()
        args = ["--eventstore", store_target, "--database-url", database_url]
        args += ["--metrics-listen", f"127.0.0.1:{port}"]
        process = ServerProcess(module, args, env=TRACING_ON).start(wait=False)
        services.append(Service(process, port))
    for service in services:
        service.process.wait_serving()
    return services


class OrderLoad:
    """Orders of 100 placed one after another until stopped, each waiting for the store for up
    to ORDER_DEADLINE_S; every id that CreateOrder answered, and every failure. Stopping lets
    the call under way finish: an order created by a call cut short would be known to the
    services but not to the test, and the credit invariant would count it wrongly."""

    def __init__(self, stubs: Stubs, customer_id: str) -> None:
        self.placed: list[str] = []
        self.failures: list[str] = []
        self._stubs = stubs
        self._customer = customer_id
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        request = opb.CreateOrderRequest(customer_id=self._customer, total=100)
        while not self._stop.is_set():
            try:
                order = await self._stubs.orders.CreateOrder(request, timeout=ORDER_DEADLINE_S)
                self.placed.append(order.order_id)
            except Exception as error:  # counted, and asserted on
                self.failures.append(repr(error))
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def until(condition: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(0.1)


def joins(services: Sequence[Service]) -> dict[tuple[int, str], float]:
    """(service index, group) -> joins so far."""
    found = {}
    for index, service in enumerate(services):
        samples = service.metrics()
        for group in GROUPS[service.process.module]:
            found[index, group] = samples.get(("consumer_group_joins_total", group), 0.0)
    return found


def members_back(
    services: Sequence[Service], before: dict[tuple[int, str], float], rejoined: bool
) -> bool:
    """Every consumer is a member (the store answered its join) and, with `rejoined`, joined
    again since `before`."""
    for index, service in enumerate(services):
        samples = service.metrics()
        for group in GROUPS[service.process.module]:
            if samples.get(("consumer_group_member", group)) != 1.0:
                return False
            again = samples.get(("consumer_group_joins_total", group), 0.0) > before[index, group]
            if rejoined and not again:
                return False
    return True


async def pending(stubs: Stubs, order_ids: list[str]) -> list[str]:
    still = []
    for order_id in order_ids:
        order = await stubs.orders.GetOrder(opb.GetOrderRequest(order_id=order_id), timeout=10)
        if order.state == opb.ORDER_STATE_PENDING:
            still.append(order_id)
    return still


@contextlib.asynccontextmanager
async def saga_load(services: Sequence[Service]) -> AsyncIterator[tuple[Stubs, str, OrderLoad]]:
    async with connect(services[0].process.address, services[-1].process.address) as stubs:
        customer_id = await new_customer(stubs, 10**9, name="Restarted")
        load = OrderLoad(stubs, customer_id)
        try:
            yield stubs, customer_id, load
        finally:
            await load.stop()


async def restart(
    store: ServerProcess,
    services: Sequence[Service],
    stubs: Stubs,
    load: OrderLoad,
    *,
    kill: bool,
    down_s: float,
    others_serve: bool = False,
) -> None:
    """One restart of `store`, then what must hold within the bounds after its return. With
    `others_serve` (another replica serves meanwhile) a consumer need not have been on it."""
    await until(lambda: len(load.placed) >= 3, 30, "orders before the restart")
    before = joins(services)
    if kill:
        store.kill()
    else:
        store.terminate()
    await asyncio.sleep(down_s)  # the outage itself: what the services must sit out
    await asyncio.to_thread(store.start)
    await until(
        lambda: members_back(services, before, rejoined=not others_serve),
        BACK_WITHIN_S,
        f"every consumer a member again after {'SIGKILL' if kill else 'SIGTERM'}, {down_s} s down",
    )
    count = len(load.placed)
    await until(lambda: len(load.placed) >= count + 3, BACK_WITHIN_S, "orders after the restart")
    placed = list(load.placed)

    async def all_settled() -> bool:
        return not await pending(stubs, placed)

    await until(all_settled, SETTLED_WITHIN_S, f"{len(placed)} orders settled")


LEAKS = (
    "Task was destroyed but it is pending",
    "Task exception was never retrieved",
    "Future exception was never retrieved",
)


def no_task_left_behind(services: Sequence[Service]) -> None:
    """The consumers' calls and tasks were all ended and awaited: asyncio complains of none."""
    for service in services:
        text = service.process.log_path.read_text(errors="replace")
        for leak in LEAKS:
            assert leak not in text, f"{service.process.module}: {leak}"


async def nothing_parked(store_address: str) -> None:
    async with EventStoreClient(store_address) as client:
        groups = {g.group: g for g in await client.list_groups()}
        for group in [g for names in GROUPS.values() for g in names]:
            assert groups[group].parked == 0, (group, await client.read_parked(group))


async def test_the_store_restarted_under_running_sagas(new_database: Callable[[], str]) -> None:
    database_url = new_database()
    store = store_process(database_url).start()
    services = start_services(store.address, database_url)
    try:
        async with saga_load(services) as (stubs, customer_id, load):
            for kill, down_s in RESTARTS:
                await restart(store, services, stubs, load, kill=kill, down_s=down_s)
            await load.stop()
            assert load.failures == []
            await quiet_invariant(stubs.customers, stubs.orders, customer_id, load.placed)
        await nothing_parked(store.address)
        no_task_left_behind(services)
    finally:
        for process in [*(s.process for s in services), store]:
            process.stop()


async def test_two_store_replicas_restarted_in_turn(new_database: Callable[[], str]) -> None:
    """As `kubectl rollout restart` does: each replica stopped and started again while the
    other serves; the services reach the store through one target naming both."""
    database_url = new_database()
    stores = [store_process(database_url).start() for _ in range(2)]
    target = "ipv4:" + ",".join(s.address for s in stores)
    services = start_services(target, database_url)
    try:
        async with saga_load(services) as (stubs, customer_id, load):
            for kill, down_s in [(False, 0.2), (True, 1.0)]:
                for store in stores:
                    await restart(
                        store, services, stubs, load, kill=kill, down_s=down_s, others_serve=True
                    )
            await load.stop()
            assert load.failures == []
            await quiet_invariant(stubs.customers, stubs.orders, customer_id, load.placed)
        await nothing_parked(stores[0].address)
        no_task_left_behind(services)
    finally:
        for process in [*(s.process for s in services), *stores]:
            process.stop()

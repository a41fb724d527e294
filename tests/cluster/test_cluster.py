"""What only a cluster can show: pods deleted under load, the trace in Jaeger, and the network
policies enforced. Run by the Job in k8s/e2e (`make kind-test`), against the Services by name."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.error
import urllib.request

import grpc
import pytest

from contracts.order.v1 import order_pb2 as opb
from eventstore_client import EventStoreClient, NewEvent
from tests.cluster.kube import Kubernetes
from tests.e2e.saga import Stubs, connect, new_customer, quiet_invariant, settled
from tests.e2e.system import Endpoints
from tools.processes import unique


@pytest.fixture
def endpoints(kube: Kubernetes) -> Endpoints:
    return Endpoints.from_environment()


async def replaced(kube: Kubernetes, component: str, count: int, timeout: float = 120) -> None:
    """Wait until `count` pods of the component are ready and none is going away."""
    deadline = time.monotonic() + timeout
    while True:
        pods = kube.pods(component)
        if sum(p.ready and not p.deleting for p in pods) >= count and not any(
            p.deleting for p in pods
        ):
            return
        assert time.monotonic() < deadline, f"{component}: {pods}"
        await asyncio.sleep(0.5)


async def create_order(stubs: Stubs, customer_id: str) -> str | None:
    """An order's id, or None when the call failed in a way that leaves it unknown whether the
    order exists (the pod that took it died): only acknowledged orders are held to account."""
    try:
        order = await stubs.orders.CreateOrder(
            opb.CreateOrderRequest(customer_id=customer_id, total=10), timeout=10
        )
    except grpc.aio.AioRpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return None
        raise
    return str(order.order_id)


@pytest.mark.parametrize("component", ["order", "customer"])
async def test_a_service_pod_killed_mid_saga_settles_every_order(
    kube: Kubernetes, endpoints: Endpoints, component: str
) -> None:
    replicas = len([p for p in kube.pods(component) if p.ready])
    async with connect(endpoints.customer, endpoints.order) as stubs:
        customer_id = await new_customer(stubs, 10_000, name="Kubernetes")
        placed: list[str] = []
        for i in range(60):
            if i == 20:  # mid-flow: some orders are still waiting for their credit decision
                kube.delete_pod(kube.pods(component)[0].name)
            order_id = await create_order(stubs, customer_id)
            if order_id is not None:
                placed.append(order_id)
            await asyncio.sleep(0.05)
        assert len(placed) >= 50
        await replaced(kube, component, replicas)
        final = [await settled(stubs.orders, order_id, timeout=120) for order_id in placed]
        assert all(o.state == opb.ORDER_STATE_APPROVED for o in final), [o.state for o in final]
        await quiet_invariant(stubs.customers, stubs.orders, customer_id, placed)


async def test_store_pods_deleted_during_appends_lose_nothing_acknowledged(
    kube: Kubernetes, endpoints: Endpoints
) -> None:
    """Both store pods are deleted in turn (so the one this client is connected to is among
    them) while appends go on; every append the client was told succeeded is there, in order."""
    stream = unique("churn")
    acknowledged: list[tuple[int, str]] = []
    replicas = len([p for p in kube.pods("eventstore") if p.ready])
    async with EventStoreClient(endpoints.store, retries=20) as client:

        async def append_all(stop: asyncio.Event) -> None:
            n = 0
            while not stop.is_set():
                event = NewEvent.json("Appended", {"n": n})
                try:
                    result = await client.append(stream, [event])
                except Exception:  # not acknowledged: not held to account
                    n += 1
                    continue
                acknowledged.append((result.version, event.id))
                n += 1

        stop = asyncio.Event()
        appending = asyncio.create_task(append_all(stop))
        for pod in kube.pods("eventstore"):
            await asyncio.sleep(1)
            kube.delete_pod(pod.name)
            await replaced(kube, "eventstore", replicas)
        await asyncio.sleep(1)
        stop.set()
        await appending
        stored = await client.read_stream_list(stream)
    by_version = {e.version: e.id for e in stored}
    assert acknowledged, "no append was acknowledged"
    for version, event_id in acknowledged:
        assert by_version.get(version) == event_id, (version, event_id)
    assert [e.version for e in stored] == list(range(1, len(stored) + 1))


async def test_create_order_is_one_trace_in_jaeger(kube: Kubernetes, endpoints: Endpoints) -> None:
    async with connect(endpoints.customer, endpoints.order) as stubs:
        customer_id = await new_customer(stubs, 100, name="Traced")
        order = await stubs.orders.CreateOrder(
            opb.CreateOrderRequest(customer_id=customer_id, total=10)
        )
        assert (await settled(stubs.orders, order.order_id)).state == opb.ORDER_STATE_APPROVED
    async with EventStoreClient(endpoints.store) as store:
        [created] = await store.read_stream_list(f"order-{order.order_id}", max_count=1)
    trace_id = created.metadata["traceparent"].split("-")[1]
    query = os.environ["E2E_JAEGER_QUERY"]
    deadline = time.monotonic() + 60
    while True:
        services, operations = _trace(query, trace_id)
        if services >= {"eventstore", "customer_svc", "order_svc"} and any(
            o.endswith("/CreateOrder") for o in operations
        ):
            return
        assert time.monotonic() < deadline, (services, sorted(operations))
        await asyncio.sleep(1)


def _trace(query: str, trace_id: str) -> tuple[set[str], set[str]]:
    """The services and operations of one trace, from Jaeger's query API."""
    try:
        with urllib.request.urlopen(f"{query}/api/traces/{trace_id}", timeout=10) as answer:
            data = json.load(answer)["data"]
    except urllib.error.HTTPError as error:
        if error.code == 404:  # not (yet) collected
            return set(), set()
        raise
    services = {p["serviceName"] for t in data for p in t["processes"].values()}
    operations = {s["operationName"] for t in data for s in t["spans"]}
    return services, operations


def _connects(address: str, timeout: float = 3.0) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def test_network_policies_admit_clients_and_keep_postgres_to_its_own(kube: Kubernetes) -> None:
    """This pod is admitted to the gRPC Services (NetworkPolicy e2e-clients) and to nothing
    else: PostgreSQL (NetworkPolicy postgres) must refuse it where policies are enforced."""
    for name in ("E2E_EVENTSTORE", "E2E_CUSTOMER", "E2E_ORDER"):
        assert _connects(os.environ[name]), os.environ[name]
    if _connects(os.environ["E2E_POSTGRES"]):
        pytest.skip(
            "NetworkPolicy postgres is not enforced by this cluster's network plugin: "
            "a pod it does not admit reached PostgreSQL"
        )

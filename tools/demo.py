"""`make demo`: an approved order, a rejected one and a cancellation, with every event printed
as the saga records it. Uses the system `make run` started, or starts one for the walk-through."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.customer.v1 import customer_pb2_grpc
from contracts.eventstore.v1 import eventstore_pb2 as pb
from contracts.order.v1 import order_pb2 as opb
from contracts.order.v1 import order_pb2_grpc
from eventstore_client import EventStoreClient, NewEvent
from tools.processes import ROOT, health_status

STORE = f"127.0.0.1:{os.environ.get('EVENTSTORE_PORT', '50051')}"
CUSTOMERS = f"127.0.0.1:{os.environ.get('CUSTOMER_PORT', '50052')}"
ORDERS = f"127.0.0.1:{os.environ.get('ORDER_PORT', '50053')}"
STATE = {v: k.removeprefix("ORDER_STATE_") for k, v in opb.OrderState.items()}
GROUP = "customer_svc.orders"  # customer_svc's consumer group on order events
T = TypeVar("T")


@contextlib.contextmanager
def system() -> Iterator[None]:
    if all(health_status(a) == 1 for a in (STORE, CUSTOMERS, ORDERS)):
        yield
        return
    print("starting the system (as `make run` does)...", flush=True)
    (ROOT / ".run").mkdir(exist_ok=True)
    log_path = ROOT / ".run" / "demo-system.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.run_local"], cwd=ROOT, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 60
        while not all(health_status(a) == 1 for a in (STORE, CUSTOMERS, ORDERS)):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
                raise SystemExit(
                    "the system did not start; what `make run` said:\n  " + "\n  ".join(tail)
                )
            time.sleep(0.2)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def _shown(key: str, value: object) -> object:
    """A field as a person reads it: times (seconds since the epoch) as times of day."""
    if key.endswith("_at") and isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value).strftime("%H:%M:%S.%f")[:-3]
    return value


async def print_events(store: EventStoreClient, after: int) -> None:
    async for response in store.subscribe(after_position=after):
        for e in response.events:
            try:
                fields = json.loads(e.data)
            except ValueError:
                fields = {"data": e.data[:40]}
            if not isinstance(fields, dict):
                fields = {"data": fields}
            shown = ", ".join(
                f"{k}={_shown(k, v)}" for k, v in fields.items() if not k.endswith("_id")
            )
            where = f"{e.stream[:22]:<22} v{e.version:<3}"
            print(f"    event {e.position:>6}  {where} {e.type:<20} {shown}", flush=True)


WAIT_S = 15.0  # for any one step of the saga; far above what it takes


async def waiting_for(what: str, ready: Callable[[], Awaitable[T | None]]) -> T:
    """`ready()`'s first answer that is not None; a clear exit naming `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while (found := await ready()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"\nthe demo gave up after {WAIT_S:.0f} s waiting for {what}.\n"
                "Are customer_svc and order_svc running and reacting? "
                "`eventstore groups` shows each group's lag and members, "
                "`eventstore parked GROUP` what was set aside."
            )
        await asyncio.sleep(0.02)
    return found


async def until_settled(orders: order_pb2_grpc.OrderServiceStub, order_id: str) -> opb.Order:
    async def answered() -> opb.Order | None:
        order = await orders.GetOrder(opb.GetOrderRequest(order_id=order_id))
        return None if order.state == opb.ORDER_STATE_PENDING else order

    return await waiting_for(f"order {order_id[:8]} to be approved or rejected", answered)


async def walk_through() -> None:
    async with (
        EventStoreClient(STORE) as store,
        grpc.aio.insecure_channel(CUSTOMERS) as c,
        grpc.aio.insecure_channel(ORDERS) as o,
    ):
        customers, orders = (
            customer_pb2_grpc.CustomerServiceStub(c),
            order_pb2_grpc.OrderServiceStub(o),
        )
        head = (await store.stats()).head_position
        printer = asyncio.create_task(print_events(store, head))

        print("\n1. A customer with a credit limit of 1000", flush=True)
        customer = await customers.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ada Lovelace", credit_limit=1000)
        )
        await asyncio.sleep(0.2)
        print("\n2. An order of 600: credit is reserved, the order approved", flush=True)
        first = await orders.CreateOrder(
            opb.CreateOrderRequest(customer_id=customer.customer_id, total=600)
        )
        first = await until_settled(orders, first.order_id)
        await asyncio.sleep(0.2)
        print(f"   -> order {first.order_id[:8]} {STATE[first.state]}", flush=True)
        print("\n3. Another order of 600: over the limit, the order rejected", flush=True)
        second = await orders.CreateOrder(
            opb.CreateOrderRequest(customer_id=customer.customer_id, total=600)
        )
        second = await until_settled(orders, second.order_id)
        await asyncio.sleep(0.2)
        print(
            f"   -> order {second.order_id[:8]} {STATE[second.state]} ({second.rejection_reason})",
            flush=True,
        )
        print(
            "\n4. The first order cancelled: its credit is released (a compensating event)",
            flush=True,
        )
        cancelled = await orders.CancelOrder(opb.CancelOrderRequest(order_id=first.order_id))
        request = cpb.GetCustomerRequest(customer_id=customer.customer_id)

        async def released() -> bool | None:
            return True if not (await customers.GetCustomer(request)).credit_reserved else None

        await waiting_for("the cancelled order's credit to be released", released)
        await asyncio.sleep(0.2)
        print(f"   -> order {cancelled.order_id[:8]} {STATE[cancelled.state]}", flush=True)
        final = await customers.GetCustomer(
            cpb.GetCustomerRequest(customer_id=customer.customer_id)
        )
        print(
            f"\n5. Customer: limit {final.credit_limit}, reserved {final.credit_reserved}, "
            f"available {final.available_credit}"
        )
        then = await orders.GetOrder(opb.GetOrderRequest(order_id=first.order_id, as_of_version=2))
        print(f"   The first order as of version 2 (a temporal query): {STATE[then.state]}")
        await poison(store, orders, customer.customer_id)
        listing = opb.ListCustomerOrdersRequest(customer_id=customer.customer_id)

        async def listed() -> list[str] | None:
            found = (await orders.ListCustomerOrders(listing)).orders
            states = sorted(STATE[x.state] for x in found)
            return states if states == ["APPROVED", "CANCELLED", "REJECTED"] else None

        states = await waiting_for("the read model to show the customer's three orders", listed)
        print(f"\n7. The customer's orders (read model): {states}")
        printer.cancel()


async def poison(
    store: EventStoreClient, orders: order_pb2_grpc.OrderServiceStub, customer_id: str
) -> None:
    """A malformed event (an OrderCreated without a customer): each group that handles it parks
    it, with the reason, and goes on."""
    print("\n6. A malformed OrderCreated (no customer, no order id) is appended", flush=True)
    bad = await store.append(f"order-{uuid.uuid4()}", [NewEvent.json("OrderCreated", {"total": 5})])
    third = await orders.CreateOrder(opb.CreateOrderRequest(customer_id=customer_id, total=100))
    third = await until_settled(orders, third.order_id)
    print(
        f"   -> the next order {third.order_id[:8]} is {STATE[third.state]} all the same",
        flush=True,
    )

    async def parked() -> pb.ParkedEvent | None:
        found = [p for p in await store.read_parked(GROUP) if p.event.position == bad.position]
        return found[0] if found else None

    aside = await waiting_for(f"the malformed event to be parked in {GROUP}", parked)
    print(f"   `eventstore parked {GROUP}`: position {aside.event.position}, {aside.reason}")


def main() -> None:
    with system():
        asyncio.run(walk_through())


if __name__ == "__main__":
    main()

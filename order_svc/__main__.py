"""`python -m order_svc --listen HOST:PORT --eventstore HOST:PORT --database-url URL`."""

from __future__ import annotations

import sys

import grpc

from contracts.order.v1 import order_pb2, order_pb2_grpc
from event_contracts.order import ORDER_EVENTS
from eventstore_client import EventStoreClient, Ordering
from eventstore_client.consumer import GroupConsumer, ensure_group
from eventstore_client.repository import Repository
from hosting import service as hosting
from hosting.database import connect_pool, store_ready
from hosting.service import dependency_away, serve
from hosting.settings import ServiceSettings
from order_svc.adapters.read_model import CustomerOrdersView
from order_svc.domain.order import ORDER
from order_svc.entrypoints.grpc_server import OrderServicer
from order_svc.service_layer.handlers import CREDIT_EVENTS, Orders

# Consumer groups shared by every replica: the saga's reaction to credit answers, and the
# customer-orders view. Each took over from a durable subscriber of the same name and starts
# where that one stopped.
SAGA_GROUP = "order_svc.credit"
VIEW_GROUP = "order_svc.customer_orders"


async def run(settings: ServiceSettings) -> None:
    if not settings.database_url:
        sys.exit("order_svc needs --database-url (or DATABASE_URL) for its read model")
    view = CustomerOrdersView()  # its pool comes once PostgreSQL answers (prepare, below)
    async with EventStoreClient(
        settings.eventstore,
        security=settings.eventstore_security,
        append_sessions=settings.append_sessions,
        # A request that comes while the store restarts waits for it (within its deadline).
        wait_for_ready=True,
    ) as client:
        orders = Orders(Repository(client, ORDER, snapshot_every=settings.snapshot_every))

        async def ensure_saga() -> None:
            await ensure_group(
                client,
                SAGA_GROUP,
                category="customer",
                event_types=CREDIT_EVENTS,
                start_after_position=await client.get_checkpoint(SAGA_GROUP) or 0,
                # An order's credit events in order; different orders' in parallel, even
                # when one customer's stream holds them all.
                ordering=Ordering.CORRELATION,
            )

        async def ensure_view() -> None:
            await ensure_group(
                client,
                VIEW_GROUP,
                category="order",
                event_types=ORDER_EVENTS.types,
                start_after_position=await view.legacy_checkpoint(VIEW_GROUP),
            )

        saga = GroupConsumer(
            client,
            SAGA_GROUP,
            orders.on_credit_event,
            ensure=ensure_saga,
            transient=dependency_away,
        )
        projection = GroupConsumer(
            client, VIEW_GROUP, view.apply, ensure=ensure_view, transient=dependency_away
        )

        def register(server: grpc.aio.Server) -> list[str]:
            order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(orders, view), server)
            return [order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name]

        async def prepare() -> None:
            pool = await connect_pool("order_svc", settings.database_url, min_size=1, max_size=5)
            await view.attach(pool)
            await store_ready("order_svc", client.channel)

        try:
            await serve(
                "order_svc", settings, register, [saga.run, projection.run], prepare=prepare
            )
        finally:
            await view.close()


def main() -> None:
    hosting.main("order_svc", "ORDER", "127.0.0.1:50053", run, asyncpg=True)


if __name__ == "__main__":
    main()

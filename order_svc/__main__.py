"""`python -m order_svc --listen HOST:PORT --eventstore HOST:PORT --database-url URL`."""

from __future__ import annotations

import sys

import asyncpg
import grpc

from contracts.order.v1 import order_pb2, order_pb2_grpc
from eventstore_client import EventStoreClient
from eventstore_client.client import RecordedEvent
from eventstore_client.repository import Repository
from eventstore_client.subscription import SubscriptionRunner
from hosting import service as hosting
from hosting.service import serve
from hosting.settings import ServiceSettings
from order_svc.adapters.read_model import CustomerOrdersView
from order_svc.domain.order import ORDER
from order_svc.entrypoints.grpc_server import OrderServicer
from order_svc.service_layer.handlers import CREDIT_EVENTS, Orders

SAGA_SUBSCRIBER = "order_svc.credit"
VIEW_SUBSCRIBER = "order_svc.customer_orders"


async def run(settings: ServiceSettings) -> None:
    if not settings.database_url:
        sys.exit("order_svc needs --database-url (or DATABASE_URL) for its read model")
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    view = CustomerOrdersView(pool)
    await view.setup()
    async with EventStoreClient(
        settings.eventstore, security=settings.eventstore_security
    ) as client:
        orders = Orders(Repository(client, ORDER, snapshot_every=settings.snapshot_every))
        saga = SubscriptionRunner(
            client,
            SAGA_SUBSCRIBER,
            orders.on_credit_event,
            category="customer",
            event_types=CREDIT_EVENTS,
        )

        async def project(event: RecordedEvent) -> None:
            await view.apply(VIEW_SUBSCRIBER, event)

        projection = SubscriptionRunner(
            client, VIEW_SUBSCRIBER, project, category="order", checkpoints=view
        )

        def register(server: grpc.aio.Server) -> list[str]:
            order_pb2_grpc.add_OrderServiceServicer_to_server(OrderServicer(orders, view), server)
            return [order_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name]

        try:
            await serve("order_svc", settings, register, [saga.run, projection.run])
        finally:
            await pool.close()


def main() -> None:
    hosting.main("order_svc", "ORDER", "127.0.0.1:50053", run, asyncpg=True)


if __name__ == "__main__":
    main()

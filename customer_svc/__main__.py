"""`python -m customer_svc --listen HOST:PORT --eventstore HOST:PORT` (see --help)."""

from __future__ import annotations

import grpc

from contracts.customer.v1 import customer_pb2, customer_pb2_grpc
from customer_svc.domain.customer import CUSTOMER
from customer_svc.entrypoints.grpc_server import CustomerServicer
from customer_svc.service_layer.handlers import ORDER_TYPES, Customers
from eventstore_client import EventStoreClient
from eventstore_client.consumer import GroupConsumer, ensure_group
from eventstore_client.repository import Repository
from hosting import service as hosting
from hosting.database import store_ready
from hosting.service import serve
from hosting.settings import ServiceSettings

# The consumer group of every replica's reaction to order events. It took over from the durable
# subscriber of the same name, and starts where that one stopped.
GROUP = "customer_svc.orders"


async def run(settings: ServiceSettings) -> None:
    async with EventStoreClient(
        settings.eventstore,
        security=settings.eventstore_security,
        append_sessions=settings.append_sessions,
    ) as client:
        customers = Customers(Repository(client, CUSTOMER, snapshot_every=settings.snapshot_every))

        async def ensure() -> None:
            await ensure_group(
                client,
                GROUP,
                category="order",
                event_types=ORDER_TYPES,
                start_after_position=await client.get_checkpoint(GROUP) or 0,
            )

        orders = GroupConsumer(client, GROUP, customers.on_order_event, ensure=ensure)

        def register(server: grpc.aio.Server) -> list[str]:
            customer_pb2_grpc.add_CustomerServiceServicer_to_server(
                CustomerServicer(customers), server
            )
            return [customer_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name]

        await serve(
            "customer_svc",
            settings,
            register,
            [orders.run],
            prepare=lambda: store_ready("customer_svc", client.channel),
        )


def main() -> None:
    hosting.main("customer_svc", "CUSTOMER", "127.0.0.1:50052", run)


if __name__ == "__main__":
    main()

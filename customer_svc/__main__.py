"""`python -m customer_svc --listen HOST:PORT --eventstore HOST:PORT --database-url URL`."""

from __future__ import annotations

import sys

import grpc

from contracts.customer.v1 import customer_pb2, customer_pb2_grpc
from customer_svc.adapters.keys import PostgresSubjectKeys
from customer_svc.domain.customer import CUSTOMER
from customer_svc.entrypoints.grpc_server import CustomerServicer
from customer_svc.service_layer.handlers import ORDER_TYPES, Customers
from event_contracts.customer import PERSONAL_FIELDS
from eventstore_client import EventStoreClient
from eventstore_client.consumer import GroupConsumer, ensure_group
from eventstore_client.personal import PersonalData
from eventstore_client.repository import Repository
from hosting import service as hosting
from hosting.database import connect_pool, store_ready
from hosting.service import dependency_away, serve
from hosting.settings import ServiceSettings

# The consumer group of every replica's reaction to order events. It took over from the durable
# subscriber of the same name, and starts where that one stopped.
GROUP = "customer_svc.orders"


async def run(settings: ServiceSettings) -> None:
    if not settings.database_url:
        sys.exit("customer_svc needs --database-url (or DATABASE_URL) for its customers' keys")
    keys = PostgresSubjectKeys()  # its pool comes once PostgreSQL answers (prepare, below)
    async with EventStoreClient(
        settings.eventstore,
        security=settings.eventstore_security,
        append_sessions=settings.append_sessions,
        # A request that comes while the store restarts waits for it (within its deadline).
        wait_for_ready=True,
    ) as client:
        personal = PersonalData(keys, PERSONAL_FIELDS, snapshot=("name",))
        repository = Repository(
            client, CUSTOMER, snapshot_every=settings.snapshot_every, personal=personal
        )
        customers = Customers(repository, keys)

        async def ensure() -> None:
            await ensure_group(
                client,
                GROUP,
                category="order",
                event_types=ORDER_TYPES,
                start_after_position=await client.get_checkpoint(GROUP) or 0,
            )

        orders = GroupConsumer(
            client, GROUP, customers.on_order_event, ensure=ensure, transient=dependency_away
        )

        def register(server: grpc.aio.Server) -> list[str]:
            customer_pb2_grpc.add_CustomerServiceServicer_to_server(
                CustomerServicer(customers), server
            )
            return [customer_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name]

        async def prepare() -> None:
            pool = await connect_pool("customer_svc", settings.database_url, min_size=1, max_size=5)
            await keys.attach(pool)
            await store_ready("customer_svc", client.channel)

        try:
            await serve("customer_svc", settings, register, [orders.run], prepare=prepare)
        finally:
            await keys.close()


def main() -> None:
    hosting.main("customer_svc", "CUSTOMER", "127.0.0.1:50052", run, asyncpg=True)


if __name__ == "__main__":
    main()

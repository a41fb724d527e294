"""Erasing a person (GDPR) from an append-only store: ForgetCustomer, then a search of every
row of every table in PostgreSQL for the customer's name."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import grpc
import pytest

from contracts.customer.v1 import customer_pb2 as cpb
from contracts.order.v1 import order_pb2 as opb
from eventstore_client import EventStoreClient
from tests.e2e.saga import connect, new_customer, place, quiet_invariant, settled
from tests.e2e.system import local_only, start_system

pytestmark = local_only


async def rows_holding(database_url: str, text: str) -> list[str]:
    """Every `schema.table.column` of a user table with a row whose value holds `text`: text
    and JSON as they read, bytes (event records, snapshot data) as raw bytes."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            """SELECT c.table_schema, c.table_name, c.column_name, c.data_type
                 FROM information_schema.columns c
                 JOIN information_schema.tables t USING (table_schema, table_name)
                WHERE t.table_type = 'BASE TABLE'
                  AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"""
        )
        found = []
        for col in columns:
            where = f'"{col["table_schema"]}"."{col["table_name"]}"'
            column = f'"{col["column_name"]}"'
            if col["data_type"] == "bytea":
                test = f"position(convert_to($1, 'UTF8') in {column}) > 0"
            else:
                test = f"strpos({column}::text, $1) > 0"
            if await conn.fetchval(f"SELECT count(*) FROM {where} WHERE {test}", text):
                found.append(f"{col['table_schema']}.{col['table_name']}.{col['column_name']}")
        return found
    finally:
        await conn.close()


async def test_a_forgotten_customer_s_name_is_nowhere_and_the_saga_goes_on(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    system = start_system(url, env={"SNAPSHOT_EVERY": "2"})  # snapshots hold the name too
    name = f"Zelda {uuid.uuid4().hex}"
    try:
        async with connect(system.customers[0].address, system.orders[0].address) as stubs:
            customer_id = await new_customer(stubs, 1000, name=name)
            placed = await place(stubs.orders, customer_id, 3, 100)
            for order_id in placed:
                await settled(stubs.orders, order_id)
            await quiet_invariant(stubs.customers, stubs.orders, customer_id, placed)
            shown = await stubs.customers.GetCustomer(
                cpb.GetCustomerRequest(customer_id=customer_id)
            )
            assert shown.name == name and not shown.forgotten
            # Sealed from the start: the store never had the name in plaintext, only its key
            # table (in customer_svc's schema) knows how to read it.
            assert await rows_holding(url, name) == []
            assert "public.es_events.record" in await rows_holding(url, customer_id)  # it looks
            async with EventStoreClient(system.store.address) as store:
                snapshot = await store.read_snapshot(f"customer-{customer_id}")
            assert snapshot is not None and b"sealed:v1:" in snapshot.data

            forgotten = await stubs.customers.ForgetCustomer(
                cpb.ForgetCustomerRequest(customer_id=customer_id)
            )
            assert forgotten.forgotten and forgotten.name == ""
            assert (forgotten.credit_limit, forgotten.credit_reserved) == (1000, 300)
            again = await stubs.customers.ForgetCustomer(
                cpb.ForgetCustomerRequest(customer_id=customer_id)
            )
            assert again.version == forgotten.version  # idempotent: nothing more appended

            # A fresh replica (no cache) reads the old events with the key gone.
            system.customers[0].stop()
            system.customers[0].start()
            reread = await stubs.customers.GetCustomer(
                cpb.GetCustomerRequest(customer_id=customer_id)
            )
            assert (reread.name, reread.forgotten, reread.credit_reserved) == ("", True, 300)
            [then] = [
                await stubs.customers.GetCustomer(
                    cpb.GetCustomerRequest(customer_id=customer_id, as_of_time=snapshot.recorded_at)
                )
            ]
            assert then.name == "" and then.credit_reserved > 0  # the past forgot it too

            # The saga goes on for a forgotten customer; a cancel still releases.
            [late] = await place(stubs.orders, customer_id, 1, 100)
            assert (await settled(stubs.orders, late)).state == opb.ORDER_STATE_APPROVED
            await stubs.orders.CancelOrder(opb.CancelOrderRequest(order_id=placed[0]))
            await quiet_invariant(stubs.customers, stubs.orders, customer_id, [*placed, late])

            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stubs.customers.ForgetCustomer(
                    cpb.ForgetCustomerRequest(customer_id=str(uuid.uuid4()))
                )
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert await rows_holding(url, name) == []
    finally:
        system.stop()

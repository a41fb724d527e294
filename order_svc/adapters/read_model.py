"""The customer-orders read model: one row per order, in the service's own PostgreSQL schema.

Kept by a consumer group on the `order` category, shared by every replica of order_svc. The
group delivers an order's events one at a time, in version order; each row keeps the version of
the last event applied to it, and an event at or below that version changes nothing. So a
redelivered event (after a crash, a timeout) changes the view once, whichever replica gets it.
(`checkpoints` is what the durable subscriber that kept the view before groups left behind.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from contracts.order.v1 import events_pb2 as events
from event_contracts.order import ORDER_EVENTS
from eventstore_client.client import RecordedEvent
from hosting.advisory_locks import AdvisoryLock
from hosting.database import AttachedPool


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    customer_id: str
    total: int
    state: str
    rejection_reason: str
    version: int


class CustomerOrdersView(AttachedPool):
    what = "the read model's database"

    def __init__(self, pool: asyncpg.Pool | None = None, schema: str = "order_svc") -> None:
        super().__init__(pool)
        self._schema = schema

    async def setup(self) -> None:
        s = self._schema
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", int(AdvisoryLock.ORDER_VIEW_SETUP)
            )
            await conn.execute(
                f"""CREATE SCHEMA IF NOT EXISTS {s};
                CREATE TABLE IF NOT EXISTS {s}.customer_orders (
                    order_id text PRIMARY KEY, customer_id text NOT NULL, total bigint NOT NULL,
                    state text NOT NULL, rejection_reason text NOT NULL DEFAULT '',
                    version bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
                CREATE INDEX IF NOT EXISTS customer_orders_customer
                    ON {s}.customer_orders (customer_id, order_id);
                CREATE TABLE IF NOT EXISTS {s}.checkpoints (
                    name text PRIMARY KEY, position bigint NOT NULL)"""  # read once, see above
            )

    async def legacy_checkpoint(self, name: str) -> int:
        """Where the durable subscriber that kept this view before consumer groups stopped
        (0: there was none): the view's group starts there."""
        value = await self._pool.fetchval(
            f"SELECT position FROM {self._schema}.checkpoints WHERE name = $1", name
        )
        return int(value or 0)

    async def apply(self, event: RecordedEvent) -> None:
        """Apply one order event. Idempotent per row: an order's row keeps the version of the
        last event applied to it, and an event at or below it changes nothing. With the
        group's per-stream order, that makes a redelivery, or several replicas, harmless."""
        message = ORDER_EVENTS.decode(event.type, event.data, event.metadata)
        change = _CHANGES.get(type(message))
        if change is not None:
            async with self._pool.acquire() as conn:
                await change(conn, self._schema, message, event.version)

    async def customer_orders(self, customer_id: str) -> list[OrderRow]:
        rows = await self._pool.fetch(
            f"""SELECT order_id, customer_id, total, state, rejection_reason, version
                FROM {self._schema}.customer_orders WHERE customer_id = $1 ORDER BY order_id""",
            customer_id,
        )
        return [OrderRow(**dict(r)) for r in rows]


async def _created(
    conn: asyncpg.Connection, s: str, created: events.OrderCreated, version: int
) -> None:
    await conn.execute(
        f"""INSERT INTO {s}.customer_orders (order_id, customer_id, total, state, version)
            VALUES ($1, $2, $3, 'PENDING', $4) ON CONFLICT (order_id) DO NOTHING""",
        created.order_id,
        created.customer_id,
        created.total,
        version,
    )


def _moved_to(state: str) -> Callable[..., Awaitable[None]]:
    """An event that moves the order to `state` (with the rejection's reason, if it has one)."""

    async def change(conn: asyncpg.Connection, s: str, message: Any, version: int) -> None:
        await conn.execute(
            f"""UPDATE {s}.customer_orders
                SET state = $2, rejection_reason = $3, version = $4, updated_at = now()
                WHERE order_id = $1 AND version < $4""",
            message.order_id,
            state,
            getattr(message, "reason", ""),
            version,
        )

    return change


# How each order event changes the view: a handler table, by contract message.
_CHANGES: dict[type[Any], Callable[..., Awaitable[None]]] = {
    events.OrderCreated: _created,
    events.OrderApproved: _moved_to("APPROVED"),
    events.OrderRejected: _moved_to("REJECTED"),
    events.OrderCancelled: _moved_to("CANCELLED"),
}

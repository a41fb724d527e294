"""The OrderService gRPC servicer: requests in, domain calls, messages or errors out."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from contracts.order.v1 import order_pb2 as pb
from contracts.order.v1 import order_pb2_grpc as pb_grpc
from eventstore_client.errors import EventStoreError
from eventstore_client.hosting import is_uuid
from eventstore_client.repository import ConcurrencyError, Loaded
from order_svc.adapters.read_model import CustomerOrdersView, OrderRow
from order_svc.domain.order import Order, OrderError, OrderNotFound, State
from order_svc.service_layer.handlers import Orders

Context = grpc.aio.ServicerContext[Any, Any]

STATES = {
    State.PENDING: pb.ORDER_STATE_PENDING,
    State.APPROVED: pb.ORDER_STATE_APPROVED,
    State.REJECTED: pb.ORDER_STATE_REJECTED,
    State.CANCELLED: pb.ORDER_STATE_CANCELLED,
}


def to_message(loaded: Loaded[Order]) -> pb.Order:
    o = loaded.state
    return pb.Order(
        order_id=o.order_id,
        customer_id=o.customer_id,
        total=o.total,
        state=STATES[o.state],
        rejection_reason=o.rejection_reason,
        version=loaded.version,
    )


def row_message(row: OrderRow) -> pb.Order:
    return pb.Order(
        order_id=row.order_id,
        customer_id=row.customer_id,
        total=row.total,
        state=STATES[State(row.state)],
        rejection_reason=row.rejection_reason,
        version=row.version,
    )


async def _fail(context: Context, error: Exception) -> None:
    if isinstance(error, OrderNotFound):
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no order {error}")
    if isinstance(error, OrderError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    if isinstance(error, ConcurrencyError):
        await context.abort(grpc.StatusCode.ABORTED, str(error))
    if isinstance(error, EventStoreError):
        await context.abort(error.code, f"event store: {error.message}")
    raise error


class OrderServicer(pb_grpc.OrderServiceServicer):
    def __init__(self, orders: Orders, view: CustomerOrdersView) -> None:
        self._orders = orders
        self._view = view

    async def CreateOrder(self, request: pb.CreateOrderRequest, context: Context) -> pb.Order:
        order_id = request.order_id or str(uuid.uuid4())
        if not is_uuid(order_id) or not is_uuid(request.customer_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "order_id and customer_id must be UUIDs"
            )
        if request.total <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "total must be positive")
        try:
            loaded = await self._orders.create(order_id, request.customer_id, request.total)
        except (OrderError, ConcurrencyError, EventStoreError) as error:
            await _fail(context, error)
            raise
        if (loaded.state.customer_id, loaded.state.total) != (request.customer_id, request.total):
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"order {order_id} exists with other details"
            )
        return to_message(loaded)

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.Order:
        if not is_uuid(request.order_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "order_id must be a UUID")
        try:
            loaded = await self._orders.get(request.order_id, request.as_of_version)
        except EventStoreError as error:
            await _fail(context, error)
            raise
        if not loaded.state.exists:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no order {request.order_id}")
        if request.as_of_version and loaded.version < request.as_of_version:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"order {request.order_id} is at version {loaded.version}, "
                f"before {request.as_of_version}",
            )
        return to_message(loaded)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.Order:
        if not is_uuid(request.order_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "order_id must be a UUID")
        try:
            return to_message(await self._orders.cancel(request.order_id))
        except (OrderError, ConcurrencyError, EventStoreError) as error:
            await _fail(context, error)
            raise

    async def ListCustomerOrders(
        self, request: pb.ListCustomerOrdersRequest, context: Context
    ) -> pb.ListCustomerOrdersResponse:
        if not is_uuid(request.customer_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "customer_id must be a UUID")
        rows = await self._view.customer_orders(request.customer_id)
        return pb.ListCustomerOrdersResponse(orders=[row_message(r) for r in rows])

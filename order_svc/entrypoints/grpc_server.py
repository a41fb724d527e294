"""The OrderService gRPC servicer: requests in, domain calls, messages or errors out."""

from __future__ import annotations

import uuid

import grpc

from contracts.order.v1 import order_pb2 as pb
from contracts.order.v1 import order_pb2_grpc as pb_grpc
from eventstore_client.repository import ConcurrencyError, Loaded
from hosting.errors import Context, Refused, answers, invalid
from hosting.validation import optional_time, require_uuid
from order_svc.adapters.read_model import CustomerOrdersView, OrderRow
from order_svc.domain.order import Order, OrderError, OrderNotFound, State
from order_svc.service_layer.handlers import Orders

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


ERRORS = {
    OrderNotFound: grpc.StatusCode.NOT_FOUND,
    OrderError: grpc.StatusCode.FAILED_PRECONDITION,
    ConcurrencyError: grpc.StatusCode.ABORTED,
}


class OrderServicer(pb_grpc.OrderServiceServicer):
    def __init__(self, orders: Orders, view: CustomerOrdersView) -> None:
        self._orders = orders
        self._view = view

    @answers(ERRORS)
    async def CreateOrder(self, request: pb.CreateOrderRequest, context: Context) -> pb.Order:
        order_id = request.order_id or str(uuid.uuid4())
        require_uuid(("order_id", order_id), ("customer_id", request.customer_id))
        if request.total <= 0:
            invalid("total must be positive")
        loaded = await self._orders.create(order_id, request.customer_id, request.total)
        if (loaded.state.customer_id, loaded.state.total) != (request.customer_id, request.total):
            raise Refused(
                grpc.StatusCode.ALREADY_EXISTS, f"order {order_id} exists with other details"
            )
        return to_message(loaded)

    @answers(ERRORS)
    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.Order:
        require_uuid(("order_id", request.order_id))
        as_of = optional_time(request, "as_of_time")
        loaded = await self._orders.get(request.order_id, request.as_of_version, as_of)
        if not loaded.state.exists:
            raise OrderNotFound(request.order_id)
        if request.as_of_version and loaded.version < request.as_of_version:
            raise Refused(
                grpc.StatusCode.OUT_OF_RANGE,
                f"order {request.order_id} is at version {loaded.version}, "
                f"before {request.as_of_version}",
            )
        return to_message(loaded)

    @answers(ERRORS)
    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.Order:
        require_uuid(("order_id", request.order_id))
        return to_message(await self._orders.cancel(request.order_id))

    @answers(ERRORS)
    async def ListCustomerOrders(
        self, request: pb.ListCustomerOrdersRequest, context: Context
    ) -> pb.ListCustomerOrdersResponse:
        require_uuid(("customer_id", request.customer_id))
        rows = await self._view.customer_orders(request.customer_id)
        return pb.ListCustomerOrdersResponse(orders=[row_message(r) for r in rows])

"""The CustomerService gRPC servicer: requests in, domain calls, messages or errors out."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from contracts.customer.v1 import customer_pb2 as pb
from contracts.customer.v1 import customer_pb2_grpc as pb_grpc
from customer_svc.domain.customer import Customer, DomainError
from customer_svc.service_layer.handlers import Customers
from eventstore_client.errors import EventStoreError
from eventstore_client.hosting import is_uuid
from eventstore_client.repository import ConcurrencyError, Loaded

Context = grpc.aio.ServicerContext[Any, Any]


def to_message(loaded: Loaded[Customer]) -> pb.Customer:
    c = loaded.state
    return pb.Customer(
        customer_id=c.customer_id,
        name=c.name,
        credit_limit=c.credit_limit,
        credit_reserved=c.credit_reserved,
        available_credit=c.available_credit,
        version=loaded.version,
    )


async def _fail(context: Context, error: Exception) -> None:
    if isinstance(error, DomainError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    if isinstance(error, ConcurrencyError):
        await context.abort(grpc.StatusCode.ABORTED, str(error))
    if isinstance(error, EventStoreError):
        await context.abort(error.code, f"event store: {error.message}")
    raise error


class CustomerServicer(pb_grpc.CustomerServiceServicer):
    def __init__(self, customers: Customers) -> None:
        self._customers = customers

    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: Context
    ) -> pb.Customer:
        customer_id = request.customer_id or str(uuid.uuid4())
        if not is_uuid(customer_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "customer_id must be a UUID")
        try:
            return to_message(
                await self._customers.create(customer_id, request.name, request.credit_limit)
            )
        except (DomainError, ConcurrencyError, EventStoreError) as error:
            await _fail(context, error)
            raise

    async def GetCustomer(self, request: pb.GetCustomerRequest, context: Context) -> pb.Customer:
        if not is_uuid(request.customer_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "customer_id must be a UUID")
        try:
            loaded = await self._customers.get(request.customer_id)
        except EventStoreError as error:
            await _fail(context, error)
            raise
        if not loaded.state.exists:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no customer {request.customer_id}")
        return to_message(loaded)

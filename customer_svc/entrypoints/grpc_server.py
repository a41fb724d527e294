"""The CustomerService gRPC servicer: requests in, domain calls, messages or errors out."""

from __future__ import annotations

import uuid

import grpc

from contracts.customer.v1 import customer_pb2 as pb
from contracts.customer.v1 import customer_pb2_grpc as pb_grpc
from customer_svc.domain.customer import Customer, DomainError
from customer_svc.service_layer.handlers import Customers
from eventstore_client.repository import ConcurrencyError, Loaded
from hosting.errors import Context, Refused, answers
from hosting.validation import optional_time, require_uuid


def to_message(loaded: Loaded[Customer]) -> pb.Customer:
    c = loaded.state
    return pb.Customer(
        customer_id=c.customer_id,
        name=c.name,
        credit_limit=c.credit_limit,
        credit_reserved=c.credit_reserved,
        available_credit=c.available_credit,
        version=loaded.version,
        forgotten=c.forgotten,
    )


ERRORS = {DomainError: grpc.StatusCode.INVALID_ARGUMENT, ConcurrencyError: grpc.StatusCode.ABORTED}


class CustomerServicer(pb_grpc.CustomerServiceServicer):
    def __init__(self, customers: Customers) -> None:
        self._customers = customers

    @answers(ERRORS)
    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: Context
    ) -> pb.Customer:
        customer_id = request.customer_id or str(uuid.uuid4())
        require_uuid(("customer_id", customer_id))
        return to_message(
            await self._customers.create(customer_id, request.name, request.credit_limit)
        )

    @answers(ERRORS)
    async def GetCustomer(self, request: pb.GetCustomerRequest, context: Context) -> pb.Customer:
        require_uuid(("customer_id", request.customer_id))
        loaded = await self._customers.get(
            request.customer_id, optional_time(request, "as_of_time")
        )
        if not loaded.state.exists:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no customer {request.customer_id}")
        return to_message(loaded)

    @answers(ERRORS)
    async def ForgetCustomer(
        self, request: pb.ForgetCustomerRequest, context: Context
    ) -> pb.Customer:
        require_uuid(("customer_id", request.customer_id))
        if not (await self._customers.get(request.customer_id)).state.exists:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no customer {request.customer_id}")
        return to_message(await self._customers.forget(request.customer_id))

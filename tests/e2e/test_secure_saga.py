"""The saga with security on everywhere, as the secure deployment runs it: TLS on every port,
each service known to the store by its own token and held to the deployment's policy, callers
of the services with a token of their own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from contracts.customer.v1 import customer_pb2_grpc
from contracts.order.v1 import order_pb2 as opb
from contracts.order.v1 import order_pb2_grpc
from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.errors import EventStoreError
from eventstore_client.security import ChannelSecurity
from tests.e2e.saga import Stubs, one_approved_one_rejected, quiet_invariant
from tests.e2e.system import local_only
from tests.integration.test_security import POLICY
from tests.tls import Authority
from tools.processes import ServerProcess, store_process

pytestmark = local_only


def _token_file(path: Path, token: str) -> str:
    path.write_text(token + "\n")
    return str(path)


async def test_the_saga_runs_with_tls_tokens_and_the_deployment_policy(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    authority = Authority(tmp_path)
    server = authority.server()
    tokens = {p: f"{p}-{uuid.uuid4().hex}" for p in ("order_svc", "customer_svc", "operator")}
    api_token = f"api-{uuid.uuid4().hex}"
    (tmp_path / "store-tokens").write_text("".join(f"{p} {t}\n" for p, t in tokens.items()))
    (tmp_path / "api-tokens").write_text(f"frontend {api_token}\n")
    tls = ["--tls-cert", server.cert, "--tls-key", server.key]
    database_url = new_database()

    store = (
        store_process(
            database_url,
            *tls,
            *["--tokens-file", str(tmp_path / "store-tokens"), "--policy-file", str(POLICY)],
        )
        .with_health_port()
        .start()
    )
    processes = [store]
    try:
        for module, principal in [("customer_svc", "customer_svc"), ("order_svc", "order_svc")]:
            args = [
                *["--eventstore", store.address, "--database-url", database_url],
                *["--eventstore-ca", authority.ca],
                *["--eventstore-token-file", _token_file(tmp_path / principal, tokens[principal])],
                *tls,
                *["--tokens-file", str(tmp_path / "api-tokens")],
            ]
            processes.append(ServerProcess(module, args).with_health_port().start())
        customers_address, orders_address = processes[1].address, processes[2].address

        caller = ChannelSecurity(ca_file=authority.ca, token=api_token)
        async with (
            caller.channel(customers_address) as c,
            caller.channel(orders_address) as o,
        ):
            stubs = Stubs(
                customer_pb2_grpc.CustomerServiceStub(c), order_pb2_grpc.OrderServiceStub(o)
            )
            customer_id, final = await one_approved_one_rejected(stubs)
            states = sorted(f.state for f in final)
            assert states == [opb.ORDER_STATE_APPROVED, opb.ORDER_STATE_REJECTED]
            ids = [f.order_id for f in final]
            assert (
                await quiet_invariant(stubs.customers, stubs.orders, customer_id, ids)
            ).credit_reserved == 0

        # A caller of the services without a token is refused.
        async with ChannelSecurity(ca_file=authority.ca).channel(orders_address) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await order_pb2_grpc.OrderServiceStub(anonymous).GetOrder(
                    opb.GetOrderRequest(order_id=ids[0])
                )
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # order_svc's own credentials cannot write a customer's stream.
        order_svc = ChannelSecurity(ca_file=authority.ca, token=tokens["order_svc"])
        async with EventStoreClient(store.address, security=order_svc, retries=0) as store_client:
            with pytest.raises(EventStoreError) as denied:
                await store_client.append(f"customer-{customer_id}", [NewEvent("CreditReserved")])
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        for process in reversed(processes):
            process.stop()

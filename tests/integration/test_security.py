"""TLS, mutual TLS, bearer tokens and the per-category policy, against real store processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eventstore_client import EventStoreClient, NewEvent
from eventstore_client.errors import EventStoreError
from eventstore_client.security import ChannelSecurity
from tests.tls import Authority
from tools.processes import ROOT, ServerProcess, store_process, unique

POLICY = ROOT / "k8s" / "components" / "secure" / "access-policy.json"
T = TypeVar("T")
TOKENS = {
    "order_svc": "order-token-" + uuid.uuid4().hex,
    "customer_svc": "customer-token-" + uuid.uuid4().hex,
    "operator": "operator-token-" + uuid.uuid4().hex,
}


@dataclass
class SecureStore:
    process: ServerProcess
    authority: Authority
    health_address: str

    def client(self, principal: str | None = None, **overrides: str) -> EventStoreClient:
        security = ChannelSecurity(
            ca_file=overrides.get("ca_file", self.authority.ca),
            token=TOKENS[principal] if principal else overrides.get("token", ""),
        )
        return EventStoreClient(self.process.address, security=security, retries=0, timeout=10)


def write_tokens(directory: Path) -> Path:
    path = directory / "tokens"
    path.write_text("# principal token\n" + "".join(f"{p} {t}\n" for p, t in TOKENS.items()))
    return path


@pytest.fixture(scope="module")
def secure_store(
    new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureStore]:
    directory = tmp_path_factory.mktemp("tls")
    authority = Authority(directory)
    server = authority.server()
    process = store_process(
        new_database(),
        "--tls-cert",
        server.cert,
        "--tls-key",
        server.key,
        "--tokens-file",
        str(write_tokens(directory)),
        "--policy-file",
        str(POLICY),
        "--max-subscriptions-per-principal",
        "2",
    ).with_health_port()
    process.start()
    yield SecureStore(process, authority, process.health_address)
    process.stop()


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    with pytest.raises(EventStoreError) as raised:
        await call
    return raised.value.code


async def stream_events(store: SecureStore, stream: str) -> int:
    async with store.client("operator") as operator:
        return len(await operator.read_stream_list(stream))


async def test_a_plaintext_client_cannot_talk_to_the_tls_port(secure_store: SecureStore) -> None:
    async with EventStoreClient(secure_store.process.address, retries=0, timeout=5) as plain:
        assert await code_of(plain.stats()) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_server_is_refused(
    secure_store: SecureStore, tmp_path: Path
) -> None:
    stranger = Authority(tmp_path, "other CA")
    async with secure_store.client("operator", ca_file=stranger.ca) as client:
        assert await code_of(client.stats()) == grpc.StatusCode.UNAVAILABLE


async def test_without_a_valid_token_calls_are_unauthenticated_and_write_nothing(
    secure_store: SecureStore,
) -> None:
    stream = f"order-{uuid.uuid4()}"
    for token in ["", "not-a-token-of-ours-at-all", TOKENS["operator"] + "x"]:
        async with secure_store.client(token=token) as client:
            code = await code_of(client.append(stream, [NewEvent("OrderCreated")]))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert await code_of(client.read_stream_list(stream)) == code
    assert await stream_events(secure_store, stream) == 0


async def test_each_service_appends_only_to_its_own_category(secure_store: SecureStore) -> None:
    order, customer = f"order-{uuid.uuid4()}", f"customer-{uuid.uuid4()}"
    async with secure_store.client("order_svc") as orders:
        assert (await orders.append(order, [NewEvent("OrderCreated")])).version == 1
        denied = await code_of(orders.append(customer, [NewEvent("CreditReserved")]))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        snapshot = orders.save_snapshot(customer, 1, "Customer", b"{}")
        assert await code_of(snapshot) == grpc.StatusCode.PERMISSION_DENIED
    async with secure_store.client("customer_svc") as customers:
        assert (await customers.append(customer, [NewEvent("CreditReserved")])).version == 1
        denied = await code_of(customers.append(order, [NewEvent("OrderApproved")]))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        # Each may read what it follows.
        assert [e.type for e in await customers.read_stream_list(order)] == ["OrderCreated"]
    assert await stream_events(secure_store, order) == 1
    assert await stream_events(secure_store, customer) == 1


async def test_reads_subscriptions_checkpoints_and_stats_follow_the_policy(
    secure_store: SecureStore,
) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    async with secure_store.client("customer_svc") as customers:
        assert await code_of(customers.read_stream_list(f"payment-{uuid.uuid4()}")) == denied
        assert await code_of(_first(customers.read_all())) == denied  # all streams
        assert await code_of(_first(customers.read_all(category="payment"))) == denied
        assert await code_of(_first(customers.subscribe(category="customer"))) == denied
        assert await code_of(_first(customers.subscribe())) == denied
        assert await code_of(customers.stats()) == denied
        assert await code_of(customers.commit_checkpoint("order_svc.credit", 1)) == denied
        assert await customers.commit_checkpoint(f"customer_svc.{unique()}", 1) == 1
        response = await _first(customers.subscribe(category="order", after_position=0))
        assert response is not None
    async with secure_store.client("operator") as operator:
        assert (await operator.stats()).head_position >= 0


async def _first(source: AsyncGenerator[T]) -> T | None:
    """The first item, and the call closed."""
    async with contextlib.aclosing(source):
        async for item in source:
            return item
    return None


async def test_subscriptions_per_principal_are_limited(secure_store: SecureStore) -> None:
    async with secure_store.client("order_svc") as orders:
        opened = [orders.subscribe(category="order") for _ in range(2)]
        for subscription in opened:
            await _first_message(subscription)
        third = orders.subscribe(category="order")
        assert await code_of(_first(third)) == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another principal has its own allowance.
        async with secure_store.client("customer_svc") as customers:
            assert await _first(customers.subscribe(category="order")) is not None
        await opened[0].aclose()

        async def a_slot_is_free() -> bool:
            try:
                await _first(orders.subscribe(category="order"))
            except EventStoreError as error:
                assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            return True

        deadline = asyncio.get_running_loop().time() + 10
        while not await a_slot_is_free():  # the server learns of the cancel asynchronously
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await opened[1].aclose()


async def _first_message(subscription: AsyncGenerator[object]) -> None:
    await anext(subscription)


def test_health_stays_open(secure_store: SecureStore) -> None:
    # On the TLS port without a token, and on the plaintext health port.
    ca = Path(secure_store.authority.ca).read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    with grpc.secure_channel(secure_store.process.address, credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(secure_store.health_address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as raised:  # and nothing else there
            stats: Any = channel.unary_unary("/eventstore.v1.EventStore/GetStats")
            stats(b"")
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_cli_takes_a_ca_and_a_token(secure_store: SecureStore, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKENS["order_svc"] + "\n")
    base = [
        sys.executable,
        "-m",
        "eventstore_client.cli",
        "--address",
        secure_store.process.address,
    ]
    secure = [*base, "--eventstore-ca", secure_store.authority.ca]
    stream = f"order-{uuid.uuid4()}"
    done = subprocess.run(
        [*secure, "--eventstore-token-file", str(token), "append", stream, "OrderCreated", "{}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    refused = subprocess.run(
        [*secure, "read", stream], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr


async def test_mutual_tls_names_the_principal_by_its_certificate(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    authority = Authority(tmp_path)
    server = authority.server()
    process = store_process(
        new_database(),
        *["--tls-cert", server.cert, "--tls-key", server.key, "--tls-client-ca", authority.ca],
        *["--policy-file", str(POLICY)],
    ).with_health_port()
    process.start()
    main = process.address
    try:
        customer = authority.client("customer_svc")
        security = ChannelSecurity(authority.ca, customer.cert, customer.key)
        async with EventStoreClient(main, security=security, retries=0, timeout=10) as client:
            stream = f"customer-{uuid.uuid4()}"
            assert (await client.append(stream, [NewEvent("CustomerCreated")])).version == 1
            denied = await code_of(client.append(f"order-{uuid.uuid4()}", [NewEvent("X")]))
            assert denied == grpc.StatusCode.PERMISSION_DENIED
        # Without a client certificate, or with one from another CA, no connection at all.
        (tmp_path / "other").mkdir()
        forged = Authority(tmp_path / "other", "other CA").client("operator")
        for attempt in [
            ChannelSecurity(authority.ca),
            ChannelSecurity(authority.ca, forged.cert, forged.key),
        ]:
            async with EventStoreClient(main, security=attempt, retries=0, timeout=5) as client:
                assert await code_of(client.stats()) == grpc.StatusCode.UNAVAILABLE
    finally:
        process.stop()


def test_policy_files_are_checked_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps({"order_svc": {"write": ["order"]}}))
    tokens = write_tokens(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventstore_server",
            *["--database-url", "postgresql://127.0.0.1:1/none"],
            *["--tokens-file", str(tokens), "--policy-file", str(bad)],
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown operations" in done.stderr
    assert "Traceback" not in done.stderr


async def test_consumer_groups_need_admin_to_manage_and_subscribe_to_consume(
    secure_store: SecureStore,
) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    group = f"customer_svc.{uuid.uuid4().hex[:8]}"
    async with secure_store.client("order_svc") as orders:  # not its group name
        assert await code_of(orders.create_group(group, category="order")) == denied
    async with secure_store.client("customer_svc") as customers:
        assert await customers.create_group(group, category="order")
        assert await code_of(customers.create_group("order_svc.x", category="order")) == denied
        assert await code_of(customers.list_groups()) == denied  # that is `stats`
        assert await customers.replay_parked(group) == 0
    async with secure_store.client("order_svc") as orders:
        assert await code_of(orders.replay_parked(group)) == denied
        assert await code_of(orders.delete_group(group)) == denied
    async with secure_store.client("operator") as operator:
        other = f"operator.{uuid.uuid4().hex[:8]}"
        await operator.create_group(other, category="operatoronly")
        assert group in {g.group for g in await operator.list_groups()}
    async with secure_store.client("customer_svc") as customers:
        # customer_svc may subscribe to `order` only: joining a group on another category fails.
        with pytest.raises(EventStoreError) as refused:
            async with customers.consume(other) as session:
                async for _ in session.deliveries():
                    pass
        assert refused.value.code == denied
        await customers.delete_group(group)


async def test_deleting_and_retention_need_delete_and_reading_metadata_needs_read(
    secure_store: SecureStore,
) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    stream = f"order-{uuid.uuid4()}"
    async with secure_store.client("order_svc") as orders:
        await orders.append(stream, [NewEvent("OrderCreated")])
        assert await code_of(orders.delete_stream(stream)) == denied
        assert await code_of(orders.delete_stream(stream, tombstone=True)) == denied
        assert await code_of(orders.set_stream_metadata(stream, max_count=1)) == denied
        assert await orders.get_stream_metadata(stream) is None  # `read` on order
    async with secure_store.client("customer_svc") as customers:
        assert await code_of(customers.get_stream_metadata("operatoronly-1")) == denied
    assert await stream_events(secure_store, stream) == 1  # nothing changed
    async with secure_store.client("operator") as operator:
        assert await operator.set_stream_metadata(stream, max_count=1) == 1
        await operator.delete_stream(stream)
    assert await stream_events(secure_store, stream) == 0


async def test_an_append_session_checks_each_append_against_the_policy(
    secure_store: SecureStore,
) -> None:
    mine, theirs = f"customer-{uuid.uuid4()}", f"order-{uuid.uuid4()}"
    async with secure_store.client("customer_svc") as customers:  # appends over a session
        assert (await customers.append(mine, [NewEvent("CustomerCreated")])).version == 1
        denied = await code_of(customers.append(theirs, [NewEvent("OrderCreated")]))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        assert (await customers.append(mine, [NewEvent("CreditReserved")])).version == 2
    assert await stream_events(secure_store, theirs) == 0

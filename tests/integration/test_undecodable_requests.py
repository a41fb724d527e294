"""Every method of every service the store serves, on both of its ports, answers a request
message that does not decode with INVALID_ARGUMENT naming the message type, and writes nothing;
whatever the call's shape (unary, server-, client- or bidirectional streaming). The methods are
found from the descriptors the servers are built from, so a new RPC is covered the day it is
added."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from localpg import free_port
from tools.processes import ROOT, ServerProcess, store_process

# Bytes no message decodes: field 1 with wire type 7 (there is none), a truncated varint, and a
# length-delimited field longer than what follows.
UNDECODABLE = [b"\x0f", b"\x08\xff", b"\x0a\x7f\x01"]
COUNTS = """SELECT (SELECT count(*) FROM es_events), (SELECT count(*) FROM es_streams),
                   (SELECT count(*) FROM es_group_events), (SELECT count(*) FROM es_checkpoints)"""

# The KurrentDB port's services, listed in a process of its own: a test process may not import
# the store's copy of KurrentDB's messages beside kurrentdbclient's (tests/kurrentdb/conftest.py).
LIST_KURRENTDB = """
import json
from eventstore_server.kurrentdb.serve import GOSSIP, PERSISTENT, STREAMS
print(json.dumps([
    [f"/{s.full_name}/{m.name}", m.input_type.full_name, m.client_streaming, m.server_streaming]
    for s in (STREAMS, PERSISTENT, GOSSIP) for m in s.methods
]))
"""


@dataclass(frozen=True)
class Method:
    path: str
    request_type: str
    client_streaming: bool
    server_streaming: bool


@dataclass
class Store:
    process: ServerProcess
    kurrentdb: str
    counts: Callable[[], asyncio.Future[tuple[int, ...]]]


@pytest.fixture(scope="module")
def store(new_database: Callable[[], str]) -> Iterator[Store]:
    database_url = new_database()
    kurrentdb = f"127.0.0.1:{free_port()}"
    process = store_process(database_url, "--kurrentdb-listen", kurrentdb).start()

    async def counts() -> tuple[int, ...]:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(COUNTS)
            assert row is not None
            return tuple(row)
        finally:
            await conn.close()

    yield Store(process, kurrentdb, counts)  # type: ignore[arg-type]
    process.stop()


async def served_on_our_port(address: str) -> list[Method]:
    """Every method of every service the store's reflection lists (our API, health,
    reflection), from the descriptors this process has for them."""
    from google.protobuf import descriptor_pool
    from grpc_health.v1 import health_pb2  # noqa: F401 - its descriptors into the pool

    from contracts.eventstore.v1 import eventstore_pb2  # noqa: F401 - likewise

    async with grpc.aio.insecure_channel(address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await call.read()
        call.cancel()
    names = [s.name for s in response.list_services_response.service]
    assert "eventstore.v1.EventStore" in names, names
    pool = descriptor_pool.Default()
    return [
        Method(f"/{name}/{m.name}", m.input_type.full_name, m.client_streaming, m.server_streaming)
        for name in names
        for m in pool.FindServiceByName(name).methods
    ]


def served_on_the_kurrentdb_port() -> list[Method]:
    listed = subprocess.run(
        [sys.executable, "-c", LIST_KURRENTDB], cwd=ROOT, check=True, capture_output=True
    )
    return [Method(*row) for row in json.loads(listed.stdout)]


async def call_with(channel: grpc.aio.Channel, method: Method, payload: bytes) -> None:
    """The call with its request `payload` sent (raw bytes), its answers read to the end."""
    call: Any
    if method.client_streaming:
        shape = channel.stream_stream if method.server_streaming else channel.stream_unary
        call = shape(method.path)(timeout=10)
        await call.write(payload)
        if method.server_streaming:
            while await call.read() is not grpc.aio.EOF:
                pass
        else:
            await call
    elif method.server_streaming:
        call = channel.unary_stream(method.path)
        async for _ in call(payload, timeout=10):
            pass
    else:
        call = channel.unary_unary(method.path)
        await call(payload, timeout=10)


async def answers(address: str, methods: list[Method], store: Store) -> dict[str, str]:
    """For each method and undecodable payload, what was wrong (empty when all is right)."""
    wrong: dict[str, str] = {}
    before = await store.counts()
    async with grpc.aio.insecure_channel(address) as channel:
        for method in methods:
            for payload in UNDECODABLE:
                try:
                    await call_with(channel, method, payload)
                    wrong[method.path] = f"{payload!r}: answered OK"
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        wrong[method.path] = f"{payload!r}: {error.code().name} {error.details()}"
                    elif method.request_type not in (error.details() or ""):
                        wrong[method.path] = (
                            f"{payload!r}: the type is not named: {error.details()}"
                        )
    assert await store.counts() == before, "an undecodable request wrote something"
    return wrong


async def test_every_method_of_our_port_refuses_undecodable_requests(store: Store) -> None:
    methods = await served_on_our_port(store.process.address)
    shapes = {(m.client_streaming, m.server_streaming) for m in methods}
    assert shapes == {(False, False), (False, True), (True, True)}, shapes  # Consume, sessions
    assert await answers(store.process.address, methods, store) == {}


async def test_every_method_of_the_kurrentdb_port_refuses_undecodable_requests(
    store: Store,
) -> None:
    methods = served_on_the_kurrentdb_port()
    assert {(m.client_streaming, m.server_streaming) for m in methods} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }
    assert await answers(store.kurrentdb, methods, store) == {}

"""The store as a process: health, reflection, replicas on one database, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

import asyncpg
import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eventstore_client import (
    EventStoreClient,
    EventStoreError,
    NewEvent,
    UnavailableError,
    WrongExpectedVersionError,
)
from eventstore_server import schema
from tools.processes import ServerProcess, health_status, store_process, unique


def test_health_is_serving_for_the_store_and_overall(store: ServerProcess) -> None:
    assert health_status(store.address) == health_pb2.HealthCheckResponse.SERVING
    assert (
        health_status(store.address, "eventstore.v1.EventStore")
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_reflection_lists_the_store(store: ServerProcess) -> None:
    with grpc.insecure_channel(store.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert "eventstore.v1.EventStore" in names
    assert "grpc.health.v1.Health" in names


async def test_several_replicas_migrate_the_same_new_database_at_once(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    servers = [store_process(url) for _ in range(3)]
    try:
        for s in servers:
            s.start(wait=False)
        for s in servers:
            s.wait_serving()
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT version FROM es_schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [r["version"] for r in rows] == [version for version, _, _ in schema.available()]
        for n, s in enumerate(servers, 1):  # every replica serves the one schema
            async with EventStoreClient(s.address) as client:
                assert (await client.append("migrated-1", [NewEvent("E")])).version == n
    finally:
        for s in servers:
            s.stop()


async def test_two_replicas_on_one_database_share_one_order(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    a, b = store_process(url).start(), store_process(url).start()
    try:
        async with EventStoreClient(a.address) as ca, EventStoreClient(b.address) as cb:
            stream = f"{unique()}-shared"
            won: list[int] = []

            async def writer(client: EventStoreClient) -> None:
                version = 0
                for _ in range(10):
                    while True:
                        try:
                            won.append(
                                (
                                    await client.append(
                                        stream, [NewEvent("E")], expected_version=version
                                    )
                                ).version
                            )
                            version = won[-1]
                            break
                        except WrongExpectedVersionError as error:
                            version = error.actual

            other = unique()
            await asyncio.gather(
                *(writer(c) for c in (ca, cb) for _ in range(8)),
                *(c.append(f"{other}-{i}", [NewEvent("X")]) for i in range(100) for c in (ca, cb)),
            )
            assert sorted(won) == list(range(1, 161))
            for client in (ca, cb):
                events = await client.read_stream_list(stream)
                assert [e.version for e in events] == list(range(1, 161))
                positions = [e.position for e in events]
                assert positions == sorted(positions)
            every = [e async for e in ca.read_all()]
            positions = [e.position for e in every]
            assert positions == list(range(1, len(every) + 1))  # gap-free and in order
    finally:
        a.stop()
        b.stop()


async def test_sigterm_under_load_loses_no_acknowledged_append(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    server = store_process(url).start()
    acknowledged: dict[str, int] = {}  # event id -> version
    refused = 0
    stream_prefix = unique()
    stop, enough = asyncio.Event(), asyncio.Event()

    async def writer(n: int) -> None:
        nonlocal refused
        async with EventStoreClient(server.address, retries=0) as client:
            i = 0
            while not stop.is_set():
                event = NewEvent("Load", str(i).encode())
                try:
                    result = await client.append(f"{stream_prefix}-{n}", [event])
                    acknowledged[event.id] = result.version
                    if len(acknowledged) >= 300:
                        enough.set()
                except EventStoreError:  # refused once the server is stopping
                    refused += 1
                    return
                i += 1

    tasks = [asyncio.create_task(writer(n)) for n in range(16)]
    await enough.wait()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 30)
    stop.set()
    for t in tasks:
        with contextlib.suppress(Exception):
            await t
    assert code == 0, server.log()

    again = store_process(url).start()
    try:
        async with EventStoreClient(again.address) as client:
            stored = {e.id: e.version for e in [e async for e in client.read_all()]}
        missing = {i for i in acknowledged if i not in stored}
        assert not missing, f"{len(missing)} acknowledged events lost"
        assert all(stored[i] == v for i, v in acknowledged.items())
        assert len(acknowledged) >= 300
    finally:
        again.stop()


async def test_sigterm_waits_for_in_flight_appends(new_database: Callable[[], str]) -> None:
    """Appends already accepted when SIGTERM arrives complete with success."""
    url = new_database()
    server = store_process(url).start()
    async with EventStoreClient(server.address, retries=0) as client:
        stream = f"{unique()}-1"
        calls = [
            asyncio.create_task(client.append(stream, [NewEvent("E", b"x" * 500_000)]))
            for _ in range(8)
        ]
        await asyncio.sleep(0.05)  # the calls are on the wire; let them reach the server
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGTERM)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert await asyncio.to_thread(server.process.wait, 30) == 0
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(f, UnavailableError) for f in failed), failed
    assert sorted(r.version for r in done) == list(range(1, len(done) + 1))

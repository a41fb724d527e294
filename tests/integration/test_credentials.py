"""Rotating the database password the way the README tells an operator to (the role's password
in PostgreSQL first, then the Secret, then a rolling restart), against a real PostgreSQL that
asks TCP clients for their password."""

from __future__ import annotations

import asyncpg
import pytest

from eventstore_client import EventStoreClient, NewEvent
from localpg.server import LocalPostgres
from tools.processes import store_process, unique

# The superuser keeps trust (the test's own administration); everyone else needs a password.
PG_HBA = """local all all trust
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


async def test_a_rotated_password_serves_after_a_rolling_restart() -> None:
    with LocalPostgres() as pg:
        (pg.data_dir / "pg_hba.conf").write_text(PG_HBA)
        admin = await asyncpg.connect(pg.dsn)
        try:
            await admin.execute("SELECT pg_reload_conf()")
            await admin.execute("CREATE ROLE eventstore LOGIN PASSWORD 'first'")
            await admin.execute("CREATE DATABASE eventstore OWNER eventstore")

            def url(password: str) -> str:
                return f"postgresql://eventstore:{password}@127.0.0.1:{pg.port}/eventstore"

            stream = unique("rotation")
            old = store_process(url("first")).start()
            try:
                async with EventStoreClient(old.address) as client:
                    await client.append(stream, [NewEvent("BeforeRotation")])
                    # 1. The database's password: running replicas keep their sessions.
                    await admin.execute("ALTER ROLE eventstore PASSWORD 'second'")
                    await client.append(stream, [NewEvent("DuringRotation")])
                # 2. The Secret, 3. the rolling restart: a replica with the new password
                # serves everything, then the old one goes.
                new = store_process(url("second")).start()
            finally:
                old.stop()
            try:
                async with EventStoreClient(new.address) as client:
                    await client.append(stream, [NewEvent("AfterRotation")])
                    events = [e.type for e in await client.read_stream_list(stream)]
                assert events == ["BeforeRotation", "DuringRotation", "AfterRotation"]
            finally:
                new.stop()
            with pytest.raises(asyncpg.InvalidPasswordError):  # the old password is over
                await asyncpg.connect(url("first"))
        finally:
            await admin.close()

"""The group-commit writer on its own, against a real PostgreSQL: how it forms batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from contracts.eventstore.v1 import eventstore_pb2 as pb
from eventstore_server import schema
from eventstore_server.config import Limits
from eventstore_server.validation import AppendCommand, append_command
from eventstore_server.writer import AMORTIZED_EVENTS, GroupCommitWriter
from tests.support import until
from tools.processes import unique

LONG = 3600.0  # a commit delay no test could sit out


@pytest.fixture
async def database(new_database: Callable[[], str]) -> AsyncIterator[str]:
    url = new_database()
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    yield url


def command(stream: str, events: int = 1) -> AppendCommand:
    request = pb.AppendRequest(
        stream=stream,
        events=[pb.EventData(id=str(uuid.uuid4()), type="Tested") for _ in range(events)],
    )
    return append_command(request, Limits())


async def test_a_lone_append_never_waits_for_the_commit_delay(database: str) -> None:
    writer = GroupCommitWriter(database, commit_delay=LONG, commit_siblings=2)
    writer.start()
    try:
        for _ in range(3):  # each alone: the last batch had one append, the queue holds one
            result = await asyncio.wait_for(writer.append(command(f"{unique()}-1")), 30)
            assert result.written and result.version == 1
        assert writer.delayed_batches == 0
    finally:
        await writer.close()


async def test_under_sustained_load_a_batch_waits_for_more_appends(database: str) -> None:
    writer = GroupCommitWriter(database, commit_delay=1.0, commit_siblings=2)
    writer.start()
    stream = unique()
    try:
        # Three at once: one batch, taken without delay (nothing came before it).
        await asyncio.gather(*(writer.append(command(f"{stream}-{n}")) for n in range(3)))
        assert (writer.batches, writer.delayed_batches) == (1, 0)
        # Two more: the last batch and the queue both reach commit_siblings, so the writer
        # holds the batch open...
        first = [asyncio.create_task(writer.append(command(f"{stream}-{n}"))) for n in range(2)]
        await until(lambda: writer.delayed_batches == 1, what="a delayed batch")
        # ...and appends arriving meanwhile join it instead of waiting for a commit of their own.
        later = [writer.append(command(f"{stream}-{n}")) for n in range(2, 5)]
        results = await asyncio.gather(*first, *later)
        assert all(r.written for r in results)
        assert writer.batches == 2
        assert sorted(r.position for r in results) == [4, 5, 6, 7, 8]
    finally:
        await writer.close()


async def test_without_a_commit_delay_appends_that_come_later_commit_on_their_own(
    database: str,
) -> None:
    # The counterpart of the test above: what the delay changes.
    writer = GroupCommitWriter(database, commit_delay=0.0, commit_siblings=2)
    writer.start()
    stream = unique()
    try:
        await asyncio.gather(*(writer.append(command(f"{stream}-{n}")) for n in range(3)))
        first = [asyncio.create_task(writer.append(command(f"{stream}-{n}"))) for n in range(2)]
        await until(lambda: writer.batches == 2, what="the second batch")
        await asyncio.gather(
            *first, *(writer.append(command(f"{stream}-{n}")) for n in range(2, 5))
        )
        assert writer.batches == 3 and writer.delayed_batches == 0
    finally:
        await writer.close()


async def test_appends_carrying_many_events_do_not_wait_for_more(database: str) -> None:
    writer = GroupCommitWriter(database, commit_delay=LONG, commit_siblings=2)
    writer.start()
    stream = unique()
    try:
        await asyncio.gather(*(writer.append(command(f"{stream}-{n}")) for n in range(3)))
        # Load as in the test above, but the two queued appends carry AMORTIZED_EVENTS events.
        size = AMORTIZED_EVENTS // 2
        big = [writer.append(command(f"{stream}-big{n}", size)) for n in range(2)]
        results = await asyncio.wait_for(asyncio.gather(*big), 30)
        assert [r.version for r in results] == [size, size]
        assert writer.delayed_batches == 0
    finally:
        await writer.close()

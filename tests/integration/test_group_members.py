"""Consumer-group members as real processes, killed with SIGKILL while two store replicas serve
them: each stream's events are still handled one at a time, in version order, and every event
is acked in the end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from eventstore_client import EventStoreClient, NewEvent
from tests.support import until
from tools.processes import ROOT, store_process, unique

STREAMS, PER_STREAM = 40, 10


def records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def acked(log: Path) -> set[tuple[object, object]]:
    if not log.exists():
        return set()
    return {(r["stream"], r["version"]) for r in records(log) if r["op"] == "ack"}


def order_violations(lines: list[dict[str, object]]) -> list[str]:
    """Starts of version v before some earlier version of the stream had been acked."""
    acks: dict[tuple[object, object], list[int]] = defaultdict(list)
    for r in lines:
        if r["op"] == "ack":
            acks[(r["stream"], r["version"])].append(int(str(r["t"])))
    found = []
    for r in lines:
        if r["op"] != "start":
            continue
        version = int(str(r["version"]))
        for earlier in range(1, version):
            times = acks.get((r["stream"], earlier), [])
            if not times or min(times) > int(str(r["t"])):
                found.append(f"{r['stream']} v{version} started before v{earlier} was acked")
    return found


async def test_killed_members_on_two_replicas_keep_every_stream_in_order(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    replicas = [store_process(url).start(), store_process(url).start()]
    group, category = unique("g"), unique()
    log = tmp_path / "members.log"
    members: list[subprocess.Popen[bytes]] = []

    def spawn(n: int) -> None:
        address = replicas[n % 2].address
        members.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.group_member",
                    address,
                    group,
                    f"m{n}",
                    str(log),
                ],
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
            )
        )

    try:
        async with EventStoreClient(replicas[0].address) as client:
            await client.create_group(group, category=category)

            async def write() -> None:
                for version in range(PER_STREAM):
                    for s in range(STREAMS):
                        await client.append(f"{category}-{s}", [NewEvent(f"V{version}")])
                    await asyncio.sleep(0.05)

            writer = asyncio.create_task(write())
            for n in range(3):
                spawn(n)
            for victim in range(2):  # kill -9 a member mid-run, twice; a new one joins
                goal = 80 * (victim + 1)

                def progressed(goal: int = goal) -> bool:
                    return len(acked(log)) >= goal

                await until(progressed, 60, "progress")
                members[victim].kill()
                members[victim].wait()
                spawn(3 + victim)
            await writer
            await until(lambda: len(acked(log)) == STREAMS * PER_STREAM, 60, "every event acked")
            [info] = [g for g in await client.list_groups() if g.group == group]
            assert info.parked == 0
        lines = records(log)
        assert not order_violations(lines), order_violations(lines)[:5]
        starts: dict[object, int] = defaultdict(int)
        for r in lines:
            if r["op"] == "start":
                starts[r["member"]] += 1
        assert len(starts) == 5 and all(count > 0 for count in starts.values()), dict(starts)
    finally:
        for process in members:
            process.kill()
            process.wait()
        for replica in replicas:
            replica.stop()

"""The `eventstore` command as a user runs it (a subprocess) against a real store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from eventstore_client import EventStoreClient
from tools.processes import ServerProcess, unique


def cli(
    store: ServerProcess, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTSTORE_ADDRESS": store.address, "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "eventstore_client.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_append_then_read_back(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    first = cli(
        store, "--json", "append", stream, "Opened", '{"owner": "Ada"}', "--expected-version", "0"
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["version"] == 1
    second = cli(
        store,
        "append",
        stream,
        "Noted",
        "--metadata",
        "by=cli",
        "--content-type",
        "text/plain",
        stdin="plain text from stdin",
    )
    assert second.returncode == 0, second.stderr
    assert "version: 2" in second.stdout
    read = cli(store, "--json", "read", stream)
    events = [json.loads(line) for line in read.stdout.splitlines()]
    assert [(e["version"], e["type"]) for e in events] == [(1, "Opened"), (2, "Noted")]
    assert events[0]["data"] == {"owner": "Ada"}
    assert events[1]["data"] == "plain text from stdin" and events[1]["metadata"] == {"by": "cli"}
    backwards = cli(store, "read", stream, "--backwards", "--count", "1")
    assert "Noted" in backwards.stdout and "Opened" not in backwards.stdout
    category = cli(
        store, "--json", "read-all", "--category", stream.split("-")[0], "--type", "Opened"
    )
    assert [json.loads(line)["type"] for line in category.stdout.splitlines()] == ["Opened"]


def test_tail_receives_a_new_event(store: ServerProcess) -> None:
    category = unique("tail")
    env = {**os.environ, "EVENTSTORE_ADDRESS": store.address, "NO_COLOR": "1"}
    tail = subprocess.Popen(
        [sys.executable, "-m", "eventstore_client.cli", "--json", "tail", "--category", category],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # The tail starts at the head; append until it has subscribed and shows the event.
        assert tail.stdout is not None
        deadline = time.monotonic() + 30
        appended = cli(store, "--json", "append", f"{category}-1", "Seen", '{"n": 1}')
        assert appended.returncode == 0
        while time.monotonic() < deadline:
            cli(store, "append", f"{category}-1", "Seen", '{"n": 2}')
            line = tail.stdout.readline()
            if line:
                event = json.loads(line)
                assert event["stream"] == f"{category}-1" and event["type"] == "Seen"
                break
        else:
            raise AssertionError("tail printed nothing")
    finally:
        tail.terminate()
        tail.wait(10)


def test_stats_and_subscribers(store: ServerProcess) -> None:
    stats = cli(store, "--json", "stats")
    assert stats.returncode == 0
    values = json.loads(stats.stdout)
    assert values["head_position"] >= 0 and values["streams"] >= 0
    assert cli(store, "subscribers").returncode == 0


def test_bad_input_exits_non_zero_with_a_message(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    cli(store, "append", stream, "A", "{}")
    conflict = cli(store, "append", stream, "A", "{}", "--expected-version", "0")
    assert conflict.returncode == 3 and "expected 0" in conflict.stderr
    invalid = cli(store, "append", "bad stream", "A", "{}")
    assert invalid.returncode == 1 and "INVALID_ARGUMENT" in invalid.stderr
    usage = cli(store, "append", stream, "A", "{}", "--metadata", "novalue")
    assert usage.returncode == 2 and "KEY=VALUE" in usage.stderr
    unknown = cli(store, "frobnicate")
    assert unknown.returncode == 2
    unreachable = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventstore_client.cli",
            "--address",
            "127.0.0.1:1",
            "--timeout",
            "2",
            "stats",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 4 and "cannot reach" in unreachable.stderr


def test_groups_parked_and_replay_from_the_command_line(store: ServerProcess) -> None:
    group, category = unique("g"), unique()
    created = cli(store, "--json", "create-group", group, "--category", category)
    assert json.loads(created.stdout) == {"group": group, "created": True}, created.stderr
    assert cli(store, "append", f"{category}-1", "Bad", "{}").returncode == 0

    async def park() -> None:
        async with EventStoreClient(store.address) as client, client.consume(group) as session:
            delivery = await anext(aiter(session.deliveries()))
            session.nack(delivery.event.position, park=True, reason="field 'x' is missing")

    asyncio.run(park())
    deadline = time.monotonic() + 10
    while True:
        [row] = [
            json.loads(line)
            for line in cli(store, "--json", "groups").stdout.splitlines()
            if json.loads(line)["group"] == group
        ]
        if row["parked"] == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (row["category"], row["parked"], row["lag"]) == (category, 1, 0)
    assert group in cli(store, "groups").stdout
    parked = cli(store, "parked", group)
    assert "Bad" in parked.stdout and "field 'x' is missing" in parked.stdout, parked.stderr
    replayed = cli(store, "--json", "replay-parked", group)
    assert json.loads(replayed.stdout) == {"group": group, "replayed": 1}
    assert cli(store, "parked", "no-such-group").returncode == 1
    assert cli(store, "delete-group", group).returncode == 0


def test_delete_metadata_and_as_of(store: ServerProcess) -> None:
    stream = f"{unique()}-1"
    for kind in ("Opened", "Noted", "Closed"):
        assert cli(store, "append", stream, kind, "{}").returncode == 0
    [_, second, _] = [
        json.loads(line) for line in cli(store, "--json", "read", stream).stdout.splitlines()
    ]
    as_of = cli(store, "--json", "read", stream, "--as-of", second["recorded_at"])
    assert [json.loads(line)["type"] for line in as_of.stdout.splitlines()] == ["Opened", "Noted"]
    assert cli(store, "read", stream, "--as-of", "yesterday").returncode == 2

    set_ = cli(store, "--json", "metadata", stream, "--max-count", "1", "--set", "owner=ops")
    assert json.loads(set_.stdout) == {"stream": stream, "metadata_version": 1}, set_.stderr
    shown = json.loads(cli(store, "--json", "metadata", stream).stdout)
    assert shown["max_count"] == 1 and shown["custom"] == {"owner": "ops"}
    stale = cli(store, "metadata", stream, "--max-count", "2", "--expected-version", "0")
    assert stale.returncode == 3, stale.stderr
    assert [
        json.loads(line)["type"]
        for line in cli(store, "--json", "read", stream).stdout.splitlines()
    ] == ["Closed"]

    assert cli(store, "delete", stream, "--expected-version", "1").returncode == 3
    deleted = cli(store, "--json", "delete", stream, "--tombstone")
    assert json.loads(deleted.stdout)["tombstoned"] is True, deleted.stderr
    gone = cli(store, "read", stream)
    assert gone.returncode == 5 and "tombstoned" in gone.stderr
    refused = cli(store, "append", stream, "Reopened", "{}")
    assert refused.returncode == 1 and "tombstoned" in refused.stderr

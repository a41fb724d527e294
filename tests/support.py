"""Helpers only the tests use: awaiting a condition, a TCP proxy that can cut connections, npm
packages for the tests that run a Node.js client."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localpg import free_port


async def until(
    condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Return once `condition()` holds; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(0.02)


class TcpProxy:
    """A TCP forwarder to `target` on a local port, in a thread of its own (so the test's own
    blocking calls never stall it). `cut()` drops every connection and refuses new ones until
    `restore()`: a network partition between a client and a server that resets connections.
    `stall()` forwards nothing either way, and closes nothing, until `heal()`: a partition
    without a reset (packets no longer arrive; both ends see a silent peer)."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._cut = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        await self._flowing.wait()  # stalled: a new connection hangs, unanswered
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await self._flowing.wait()
                    data = await source.read(65536)
                    await self._flowing.wait()  # what arrives while stalled is held, not lost
                    if not data:
                        break
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()
                self._writers.discard(sink)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        def drop() -> None:
            self._cut = True
            for writer in list(self._writers):
                writer.transport.abort()  # a reset, as a failed network shows it
            self._writers.clear()

        self._loop.call_soon_threadsafe(drop)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_cut", False)

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def npm_installed(source: Path, into: Path) -> Path:
    """`source`'s files (its package.json and scripts) copied into `into`, and the packages its
    package.json pins installed there unless they already are; `into`. Skips the test, saying
    why, where Node.js or npm is missing or npm cannot install them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed here")
    into.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copy(path, into / path.name)
    wanted = json.loads((source / "package.json").read_text())["dependencies"]
    for package, version in wanted.items():
        found = into / "node_modules" / package / "package.json"
        if not found.exists() or json.loads(found.read_text())["version"] != version:
            run = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=into,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if run.returncode != 0:
                pytest.skip(f"npm could not install {package}: {run.stderr.strip()[-500:]}")
            break
    return into

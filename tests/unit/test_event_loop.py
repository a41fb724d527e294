"""Which event loop the servers run on (EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from hosting import event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # run() froze this test process's heap


async def _frozen() -> int:
    return gc.get_freeze_count()


def test_run_hides_the_startup_heap_from_the_collector() -> None:
    gc.unfreeze()
    assert event_loop.run(_frozen()) > 0


def test_uvloop_is_the_default_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed here (it is not on Windows)")
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert event_loop.chosen() == "uvloop"
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_event_loop_asyncio_runs_on_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "asyncio")
    assert event_loop.chosen() == "asyncio"
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_an_unknown_event_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(SystemExit, match="EVENT_LOOP must be one of"):
        event_loop.chosen()

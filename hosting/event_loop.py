"""Which asyncio event loop the servers run on.

uvloop by default where it is installed (it is a dependency except on Windows): measured in
`make bench`, the store spends about 10% less CPU per append on it, and asyncpg, the database
driver, is built for it. `EVENT_LOOP=asyncio` runs on the standard library's loop instead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

CHOICES = ("uvloop", "asyncio")


def chosen() -> str:
    """The loop `run` uses: EVENT_LOOP if set, else uvloop when it can be imported."""
    wanted = os.environ.get("EVENT_LOOP", "").strip().lower()
    if wanted and wanted not in CHOICES:
        raise SystemExit(f"EVENT_LOOP must be one of {', '.join(CHOICES)}, not {wanted!r}")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise SystemExit("EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the chosen loop, after moving everything alive so far (modules, protobuf
    descriptors: most of the heap) out of the garbage collector's sight. Full collections then
    walk only what the server makes while it runs: measured in the store under load, their
    pauses went from 16-39 ms to under 10 ms, and each such pause holds up every call."""
    gc.collect()
    gc.freeze()
    loop = chosen()
    log.info("event loop: %s", loop)
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)

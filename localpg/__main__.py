"""Run a local PostgreSQL in the foreground: `python -m localpg --data-dir DIR --port N`."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from localpg.server import LocalPostgres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("LOCALPG_DATA", ".run/pgdata"))
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCALPG_PORT", "5433")))
    args = parser.parse_args()
    pg = LocalPostgres(args.data_dir, args.port, ephemeral=False)
    pg.start()
    print(f"PostgreSQL ready at {pg.dsn}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    pg.stop()


if __name__ == "__main__":
    main()

"""`python -m eventstore_server --listen HOST:PORT --database-url URL` (see --help)."""

from __future__ import annotations

import logging
import os

from eventstore_server.config import parse
from eventstore_server.server import serve
from hosting import event_loop, telemetry
from hosting.security import CannotListen


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = parse()
    telemetry.setup("eventstore", grpc_client=False, asyncpg=True)
    try:
        event_loop.run(serve(settings))
    except CannotListen as error:
        raise SystemExit(f"eventstore: {error}") from None
    finally:
        telemetry.shutdown()  # spans flushed before the process exits


if __name__ == "__main__":
    main()

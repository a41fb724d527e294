"""The server's settings: command-line flags, each with an environment-variable equivalent."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from eventstore_server.access import Access
from hosting.flags import add_flags
from hosting.security import server_tls

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may carry. Larger requests are refused with INVALID_ARGUMENT."""

    max_name_length: int = 200
    max_type_length: int = 200
    max_events_per_append: int = 1000
    max_event_size: int = 1 * MiB  # data plus metadata of one event
    max_append_size: int = 4 * MiB  # all events of one append
    max_metadata_entries: int = 64
    max_metadata_value_length: int = 4096
    read_page_size: int = 1000  # events per ReadStream / ReadAll / Subscribe message, at most
    read_page_bytes: int = 1 * MiB  # and bytes per message, roughly
    max_subscriptions_per_principal: int = 256  # open Subscribe calls at once


@dataclass(frozen=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    database_url: str = ""
    pool_size: int = 10
    # A session idle inside a transaction this long (a frozen replica's) is ended by PostgreSQL,
    # freeing its locks; 0: never (see session_bounds.py).
    db_idle_transaction_timeout: float = 5.0
    max_message_bytes: int = 8 * MiB  # gRPC's own receive limit: RESOURCE_EXHAUSTED above it
    max_batch_events: int = 2000  # events per group-commit transaction
    shutdown_grace: float = 10.0  # seconds in-flight calls get to finish on SIGTERM
    health_interval: float = 2.0
    keepalive_time_ms: int = 30_000
    keepalive_timeout_ms: int = 10_000
    tail_events: int = 10_000  # recent events kept in memory for live subscribers
    writer_pipeline: int = 1  # group-commit batches in flight at once (one connection each)
    # Like PostgreSQL's commit_delay / commit_siblings: when the last batch had and the queue
    # has at least commit_siblings (>= 2) appends, the writer waits commit_delay_ms for more to
    # join the batch. A lone append never waits.
    commit_delay_ms: float = 2.0
    commit_siblings: int = 3
    metrics_listen: str = ""  # HOST:PORT for Prometheus metrics; empty: off
    health_listen: str = ""  # HOST:PORT for plaintext health only (probes, when TLS is on)
    tls_cert: str = ""  # PEM certificate chain: serve TLS
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM CA: require client certificates it signed (mutual TLS)
    tokens_file: str = ""  # lines `principal token`: require a bearer token
    policy_file: str = ""  # JSON grants per principal (see eventstore_server/access.py)
    console_listen: str = ""  # HOST:PORT of the web console (empty: off)
    console_trace_link: str = ""  # a trace id's URL, with {trace_id} (Jaeger's, say)
    kurrentdb_listen: str = ""  # HOST:PORT of KurrentDB's client protocol (empty: off)
    kurrentdb_advertise_host: str = ""  # HOST or HOST:PORT that gossip tells clients to dial
    scavenge_interval: float = 30.0  # seconds between scavenge rounds with nothing left (0: off)
    scavenge_batch: int = 2000  # events removed per scavenge round, at most
    limits: Limits = field(default_factory=Limits)


# flag, environment variable, type, help; the default comes from Settings / Limits.
_FLAGS: list[tuple[str, str, type, str]] = [
    ("listen", "EVENTSTORE_LISTEN", str, "HOST:PORT to serve gRPC on"),
    ("database_url", "DATABASE_URL", str, "PostgreSQL URL (postgresql://user:pass@host:port/db)"),
    ("pool_size", "EVENTSTORE_POOL_SIZE", int, "PostgreSQL connections for reads"),
    (
        "db_idle_transaction_timeout",
        "EVENTSTORE_DB_IDLE_TRANSACTION_TIMEOUT",
        float,
        "seconds a session may sit idle in a transaction before PostgreSQL ends it (0: never)",
    ),
    ("max_message_bytes", "EVENTSTORE_MAX_MESSAGE_BYTES", int, "largest gRPC message accepted"),
    ("max_batch_events", "EVENTSTORE_MAX_BATCH_EVENTS", int, "events per group commit, at most"),
    ("shutdown_grace", "EVENTSTORE_SHUTDOWN_GRACE", float, "seconds to drain calls on SIGTERM"),
    ("health_interval", "EVENTSTORE_HEALTH_INTERVAL", float, "seconds between database checks"),
    ("keepalive_time_ms", "EVENTSTORE_KEEPALIVE_TIME_MS", int, "HTTP/2 ping interval"),
    ("keepalive_timeout_ms", "EVENTSTORE_KEEPALIVE_TIMEOUT_MS", int, "ping answer timeout"),
    ("tail_events", "EVENTSTORE_TAIL_EVENTS", int, "recent events kept in memory"),
    ("writer_pipeline", "EVENTSTORE_WRITER_PIPELINE", int, "group commits in flight at once"),
    ("commit_delay_ms", "EVENTSTORE_COMMIT_DELAY_MS", float, "wait for more appends, under load"),
    ("commit_siblings", "EVENTSTORE_COMMIT_SIBLINGS", int, "appends meaning sustained load"),
    ("metrics_listen", "EVENTSTORE_METRICS_LISTEN", str, "HOST:PORT for /metrics (empty: off)"),
    ("health_listen", "EVENTSTORE_HEALTH_LISTEN", str, "HOST:PORT for plaintext health only"),
    ("tls_cert", "EVENTSTORE_TLS_CERT", str, "PEM certificate chain: serve TLS"),
    ("tls_key", "EVENTSTORE_TLS_KEY", str, "PEM private key of the certificate"),
    ("tls_client_ca", "EVENTSTORE_TLS_CLIENT_CA", str, "PEM CA: require client certificates"),
    ("tokens_file", "EVENTSTORE_TOKENS_FILE", str, "file of `principal token` lines"),
    ("policy_file", "EVENTSTORE_POLICY_FILE", str, "JSON grants per principal"),
    ("console_listen", "EVENTSTORE_CONSOLE_LISTEN", str, "HOST:PORT of the web console"),
    ("console_trace_link", "EVENTSTORE_CONSOLE_TRACE_LINK", str, "trace URL with {trace_id}"),
    ("kurrentdb_listen", "EVENTSTORE_KURRENTDB_LISTEN", str, "HOST:PORT of KurrentDB's protocol"),
    (
        "kurrentdb_advertise_host",
        "EVENTSTORE_KURRENTDB_ADVERTISE_HOST",
        str,
        "HOST[:PORT] gossip advertises to KurrentDB clients (default: the listen host; this "
        "machine's address when that is a wildcard)",
    ),
    ("scavenge_interval", "EVENTSTORE_SCAVENGE_INTERVAL", float, "seconds between scavenges"),
    ("scavenge_batch", "EVENTSTORE_SCAVENGE_BATCH", int, "events removed per round, at most"),
]
_LIMIT_FLAGS: list[tuple[str, str, str]] = [
    ("max_name_length", "EVENTSTORE_MAX_NAME_LENGTH", "characters in a stream name, at most"),
    ("max_type_length", "EVENTSTORE_MAX_TYPE_LENGTH", "characters in an event type, at most"),
    ("max_events_per_append", "EVENTSTORE_MAX_EVENTS_PER_APPEND", "events in one append"),
    ("max_event_size", "EVENTSTORE_MAX_EVENT_SIZE", "bytes of one event's data and metadata"),
    ("max_append_size", "EVENTSTORE_MAX_APPEND_SIZE", "bytes of one append's events"),
    ("max_metadata_entries", "EVENTSTORE_MAX_METADATA_ENTRIES", "metadata entries per event"),
    (
        "max_metadata_value_length",
        "EVENTSTORE_MAX_METADATA_VALUE_LENGTH",
        "bytes per metadata value",
    ),
    ("read_page_size", "EVENTSTORE_READ_PAGE_SIZE", "events per read message"),
    ("read_page_bytes", "EVENTSTORE_READ_PAGE_BYTES", "bytes per read message, roughly"),
    (
        "max_subscriptions_per_principal",
        "EVENTSTORE_MAX_SUBSCRIPTIONS_PER_PRINCIPAL",
        "open subscriptions per principal",
    ),
]

# Every setting as (flag, variable), for the README's configuration table and its test.
ENVIRONMENT = [(f"--{n.replace('_', '-')}", env) for n, env, _, _ in _FLAGS] + [
    (f"--{n.replace('_', '-')}", env) for n, env, _ in _LIMIT_FLAGS
]


def parse(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from flags, falling back to environment variables, then to the defaults."""
    env = os.environ if environ is None else environ
    defaults, limit_defaults = Settings(), Limits()
    parser = argparse.ArgumentParser(
        prog="python -m eventstore_server",
        description="The event store: a gRPC server over PostgreSQL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_flags(parser, _FLAGS, env, defaults)
    add_flags(parser, [(n, var, int, text) for n, var, text in _LIMIT_FLAGS], env, limit_defaults)
    ns = vars(parser.parse_args(argv))
    limits = Limits(**{name: ns.pop(name) for name, _, _ in _LIMIT_FLAGS})
    settings = Settings(**ns, limits=limits)
    if not settings.database_url:
        parser.error("a database is required: --database-url or DATABASE_URL")
    if settings.policy_file and not (settings.tokens_file or settings.tls_client_ca):
        parser.error("a policy needs principals: --tokens-file or --tls-client-ca")
    _check_files(settings, parser)
    return settings


def _check_files(settings: Settings, parser: argparse.ArgumentParser) -> None:
    """A half-given certificate, or unreadable or malformed certificates, tokens or policy: a
    usage error now, not a traceback later."""
    try:
        tls = server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        if tls is not None:
            tls.credentials()
        Access.from_files(settings.tokens_file, settings.tls_client_ca, settings.policy_file)
    except (OSError, ValueError) as error:
        parser.error(str(error))

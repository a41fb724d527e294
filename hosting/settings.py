"""A service's settings: command-line flags, each with an environment-variable equivalent.

Table-driven like the store's (`eventstore_server.config`): one row per setting, its default
in the dataclass, so the flags, the variables and the README's table cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from eventstore_client.security import (
    PLAINTEXT,
    ChannelSecurity,
    add_client_flags,
    client_flags,
    client_security,
)
from hosting.flags import add_flags
from hosting.security import ServerTLS, server_tls


@dataclass(frozen=True)
class ServiceSettings:
    listen: str
    eventstore: str = "127.0.0.1:50051"
    database_url: str = ""
    snapshot_every: int = 100
    append_sessions: int = 1  # appends over this many AppendSession calls (0: unary Append)
    shutdown_grace: float = 10.0
    metrics_listen: str = ""
    health_listen: str = ""  # plaintext health only, for probes when the API is on TLS
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tokens_file: str = ""  # callers of the service's API must bring one of these tokens
    tls: ServerTLS | None = None  # the service's own port (from the three tls_* files)
    eventstore_security: ChannelSecurity = PLAINTEXT  # how the service reaches the store


# field, environment variable ({prefix}: the service's own, CUSTOMER or ORDER), type, help.
SETTINGS: list[tuple[str, str, type, str]] = [
    ("listen", "{prefix}_LISTEN", str, "HOST:PORT to serve gRPC on"),
    ("eventstore", "EVENTSTORE_ADDRESS", str, "the event store's HOST:PORT"),
    ("database_url", "DATABASE_URL", str, "PostgreSQL for the service's read model, if any"),
    ("snapshot_every", "SNAPSHOT_EVERY", int, "save an aggregate snapshot every N events"),
    ("append_sessions", "APPEND_SESSIONS", int, "AppendSession calls for appends (0: unary)"),
    ("shutdown_grace", "{prefix}_SHUTDOWN_GRACE", float, "seconds to finish calls on SIGTERM"),
    ("metrics_listen", "{prefix}_METRICS_LISTEN", str, "HOST:PORT for /metrics; empty: off"),
    ("health_listen", "{prefix}_HEALTH_LISTEN", str, "HOST:PORT for plaintext health only"),
    ("tls_cert", "{prefix}_TLS_CERT", str, "PEM certificate chain: serve TLS"),
    ("tls_key", "{prefix}_TLS_KEY", str, "PEM private key of the certificate"),
    ("tls_client_ca", "{prefix}_TLS_CLIENT_CA", str, "PEM CA: require client certificates"),
    ("tokens_file", "{prefix}_TOKENS_FILE", str, "file of `principal token` lines"),
]


def environment(prefix: str) -> list[tuple[str, str]]:
    """Every setting of the service with this prefix as (flag, variable), for the README."""
    own = [
        (f"--{name.replace('_', '-')}", var.format(prefix=prefix)) for name, var, _, _ in SETTINGS
    ]
    return own + client_flags()


def parse_settings(
    prog: str,
    env_prefix: str,
    default_listen: str,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceSettings:
    """Settings from flags, falling back to environment variables, then to the defaults."""
    env = os.environ if environ is None else environ
    defaults = ServiceSettings(listen=default_listen)
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    rows = [(name, var.format(prefix=env_prefix), kind, text) for name, var, kind, text in SETTINGS]
    add_flags(parser, rows, env, defaults)
    add_client_flags(parser, env)
    args = parser.parse_args(argv)
    try:
        tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
        security = client_security(args)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    own = {f.name for f in fields(ServiceSettings)} - {"tls", "eventstore_security"}
    return ServiceSettings(
        **{name: getattr(args, name) for name in own}, tls=tls, eventstore_security=security
    )

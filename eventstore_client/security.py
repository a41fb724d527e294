"""What a client brings to the store: the CA of the server's certificate, optionally its own
certificate (mutual TLS), optionally a bearer token.

Plaintext is what you get when nothing is configured, which is right on one machine and
nowhere else. With a CA file the client connects over TLS; with a token it sends
`authorization: Bearer <token>` on every call (only over TLS: gRPC refuses to send call
credentials in the clear). What a server offers is `hosting.security`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class ChannelSecurity:
    """What a client brings: the CA that signed the server's certificate, optionally its own
    certificate and key (mutual TLS), optionally a bearer token."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    token: str = ""
    server_name: str = ""  # expected name in the server's certificate, when not the host's

    @classmethod
    def from_files(
        cls,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        token_file: str = "",
        server_name: str = "",
    ) -> ChannelSecurity:
        token = Path(token_file).read_text().strip() if token_file else ""
        return cls(ca_file, cert_file, key_file, token, server_name)

    @property
    def tls(self) -> bool:
        return bool(self.ca_file)

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A channel to `address` with these credentials (plaintext without a CA)."""
        if not self.tls:
            if self.token or self.cert_file:
                raise ValueError("a token or client certificate needs TLS: give the CA file too")
            return grpc.aio.insecure_channel(address, options=list(options))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file) if self.key_file else None,
            certificate_chain=_read(self.cert_file) if self.cert_file else None,
        )
        if self.token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.token)
            )
        all_options = list(options)
        if self.server_name:
            all_options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(address, credentials, options=all_options)


PLAINTEXT = ChannelSecurity()


# Flags for a connection to the store, shared by the CLI and the services.
_CLIENT_FLAGS = [
    ("--eventstore-ca", "EVENTSTORE_CA_FILE", "CA (PEM) of the store's certificate: use TLS"),
    ("--eventstore-cert", "EVENTSTORE_CLIENT_CERT", "client certificate (PEM), mutual TLS"),
    ("--eventstore-key", "EVENTSTORE_CLIENT_KEY", "the client certificate's key (PEM)"),
    ("--eventstore-token-file", "EVENTSTORE_TOKEN_FILE", "file holding a bearer token"),
    ("--eventstore-server-name", "EVENTSTORE_SERVER_NAME", "name in the store's certificate"),
]


def add_client_flags(parser: Any, environ: Mapping[str, str]) -> None:
    """Add the store-connection flags to an argparse parser, defaults from the environment."""
    for flag, env, text in _CLIENT_FLAGS:
        parser.add_argument(flag, default=environ.get(env, ""), help=f"{text} [${env}]")


def client_flags() -> list[tuple[str, str]]:
    """The store-connection settings as (flag, variable), for the README's tables."""
    return [(flag, env) for flag, env, _ in _CLIENT_FLAGS]


def client_security(args: Any) -> ChannelSecurity:
    """The ChannelSecurity those flags describe."""
    return ChannelSecurity.from_files(
        args.eventstore_ca,
        args.eventstore_cert,
        args.eventstore_key,
        args.eventstore_token_file,
        args.eventstore_server_name,
    )

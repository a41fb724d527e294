"""What a server offers: TLS (mutual with a client CA) and bearer tokens.

A server with a certificate serves TLS; with a client CA as well it requires client
certificates (mutual TLS). Tokens name principals; `RequireToken` refuses calls without one.
What a client brings is `eventstore_client.security`.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from hosting.ports import busy_message, in_use

AUTHORIZATION = "authorization"
BEARER = "bearer "
BASIC = "basic "


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate chain and key (PEM files); with `client_ca_file`, clients must
    present a certificate signed by that CA."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(_read(self.key_file), _read(self.cert_file))],
            root_certificates=_read(self.client_ca_file) if self.client_ca_file else None,
            require_client_auth=bool(self.client_ca_file),
        )


def server_tls(cert_file: str, key_file: str, client_ca_file: str = "") -> ServerTLS | None:
    """None (plaintext) when no certificate is given; an error when only half of one is."""
    if not cert_file and not key_file:
        if client_ca_file:
            raise ValueError("a client CA needs the server's own certificate and key as well")
        return None
    if not (cert_file and key_file):
        raise ValueError("TLS needs both a certificate and its key")
    return ServerTLS(cert_file, key_file, client_ca_file)


class CannotListen(Exception):
    """The address to serve on is taken (the message names it, and who holds it) or invalid."""


def add_port(server: grpc.aio.Server, address: str, tls: ServerTLS | None) -> int:
    """Listen on `address`, over TLS when configured; the bound port. The servers are made
    without SO_REUSEPORT (`NO_PORT_SHARING`), so a second server on a port fails here."""
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.credentials())
    except RuntimeError:
        port = 0
    if port == 0:
        host, _, wanted = address.rpartition(":")
        taken = wanted.isdigit() and in_use(host.strip("[]") or "0.0.0.0", int(wanted))
        raise CannotListen(busy_message(address) if taken else f"cannot listen on {address}")
    return port


# gRPC servers share ports by default (SO_REUSEPORT): a second store on the same port would start
# silently beside the first. Every server of ours is made with this option instead.
NO_PORT_SHARING = ("grpc.so_reuseport", 0)


class Tokens:
    """Bearer tokens and the principals they stand for, read from a file of lines
    `principal token` (blank lines and `#` comments ignored). A presented token is compared
    with every known one in constant time, so timing tells nothing about how close it was."""

    def __init__(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            raise ValueError("no tokens")
        self._entries = [(principal, token.encode()) for principal, token in entries]

    @classmethod
    def from_file(cls, path: str) -> Tokens:
        entries = []
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or len(parts[1]) < 16:
                raise ValueError(f"{path}:{number}: expected `principal token` (16+ characters)")
            entries.append((parts[0], parts[1]))
        return cls(entries)

    def principal(self, token: str) -> str | None:
        presented = token.encode()
        found = None
        for principal, known in self._entries:  # no early exit: same work for every token
            if hmac.compare_digest(known, presented):
                found = principal
        return found


def _authorization(metadata: Iterable[tuple[str, Any]] | None, scheme: str) -> str | None:
    """What follows `scheme` (lower case, with its space) in an `authorization` header."""
    for key, value in metadata or ():
        if key == AUTHORIZATION and isinstance(value, str) and value.lower().startswith(scheme):
            return value[len(scheme) :].strip()
    return None


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an `authorization: Bearer ...` header, if any."""
    return _authorization(metadata, BEARER)


def basic_credentials(metadata: Iterable[tuple[str, Any]] | None) -> tuple[str, str] | None:
    """The user and password of an `authorization: Basic ...` header (KurrentDB's clients
    send one), if any; None too for one that is not base64 of `user:password`."""
    encoded = _authorization(metadata, BASIC)
    if encoded is None:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


# Calls that stay open without credentials: probes and service discovery.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class RequireToken(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for every call without a known bearer token, except health and
    reflection. For servers that need to know that a caller is someone, not who."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Any,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        if method.startswith(OPEN_SERVICES):
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None and self._tokens.principal(token) is not None:
            return await continuation(handler_call_details)
        return _refuse


async def _refuse_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")


_refuse: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_refuse_call)

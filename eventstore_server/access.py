"""Who is calling (authentication) and what they may do (authorization).

A caller is known by a bearer token (`--tokens-file`) or by the common name of its verified
client certificate (`--tls-client-ca`). The policy (`--policy-file`, JSON) grants each
principal operations on stream categories:

    {"order_svc": {"append": ["order"], "read": ["order", "customer"],
                   "subscribe": ["customer"], "checkpoint": ["order_svc*"]},
     "admin":     {"append": ["*"], "read": ["*"], "subscribe": ["*"],
                   "checkpoint": ["*"], "stats": ["*"]}}

Patterns are shell-style (`*`, `?`, `[...]`). Append and snapshot saves need `append` on the
stream's category; ReadStream, ReadAll and snapshot reads need `read`; Subscribe needs
`subscribe`; checkpoints need `checkpoint` on the subscriber's name; GetStats needs `stats`.
Consumer groups: Consume needs `subscribe` on the group's category, ReadParked `read` on it,
ListGroups `stats`; creating, deleting and replaying a group's parked events need `admin` on
the group's name. DeleteStream and SetStreamMetadata need `delete` on the stream's category
(GetStreamMetadata: `read`).
Reading or following all streams at once needs the pattern `*` itself. With neither tokens nor
client certificates configured, everyone is the anonymous principal and may do everything;
with them but without a policy, every authenticated principal may.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import grpc

from eventstore_server.errors import PermissionDenied, Unauthenticated
from hosting.security import Tokens, basic_credentials, bearer_token

OPERATIONS = ("append", "read", "subscribe", "checkpoint", "stats", "admin", "delete")
ANONYMOUS = "anonymous"
ALL_STREAMS = ""  # the "name" of a read or subscription over every category


@dataclass(frozen=True)
class Policy:
    """Principal -> operation -> patterns of the names it may touch."""

    grants: Mapping[str, Mapping[str, tuple[str, ...]]]

    @classmethod
    def from_json(cls, text: str, source: str = "policy") -> Policy:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected an object of principals")
        grants: dict[str, dict[str, tuple[str, ...]]] = {}
        for principal, operations in raw.items():
            if not isinstance(operations, dict):
                raise ValueError(f"{source}: {principal}: expected an object of operations")
            unknown = set(operations) - set(OPERATIONS)
            if unknown:
                raise ValueError(f"{source}: {principal}: unknown operations {sorted(unknown)}")
            grants[principal] = {}
            for operation, patterns in operations.items():
                if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                    raise ValueError(f"{source}: {principal}.{operation}: expected a list of names")
                grants[principal][operation] = tuple(patterns)
        return cls(grants)

    @classmethod
    def from_file(cls, path: str) -> Policy:
        return cls.from_json(Path(path).read_text(), path)

    def allows(self, principal: str, operation: str, name: str) -> bool:
        patterns = self.grants.get(principal, {}).get(operation, ())
        if name == ALL_STREAMS:
            return "*" in patterns
        return any(fnmatchcase(name, pattern) for pattern in patterns)


class Access:
    """Authentication and authorization for the store's handlers."""

    def __init__(
        self,
        tokens: Tokens | None = None,
        client_certificates: bool = False,
        policy: Policy | None = None,
    ) -> None:
        self._tokens = tokens
        self._certificates = client_certificates
        self._policy = policy
        self.enabled = tokens is not None or client_certificates

    @classmethod
    def from_files(
        cls, tokens_file: str = "", client_ca_file: str = "", policy_file: str = ""
    ) -> Access:
        """As configured by --tokens-file, --tls-client-ca and --policy-file (empty: not
        given); OSError or ValueError for an unreadable or malformed file."""
        return cls(
            tokens=Tokens.from_file(tokens_file) if tokens_file else None,
            client_certificates=bool(client_ca_file),
            policy=Policy.from_file(policy_file) if policy_file else None,
        )

    def principal(self, context: grpc.aio.ServicerContext[Any, Any], basic: bool = False) -> str:
        """Who is calling; Unauthenticated when credentials are required and missing.
        `basic`: HTTP Basic credentials count too (KurrentDB's port), the user being the
        principal and the password its token."""
        if not self.enabled:
            return ANONYMOUS
        if self._tokens is not None and basic:
            given = basic_credentials(context.invocation_metadata())
            if given is not None:
                if self._tokens.principal(given[1]) != given[0]:
                    raise Unauthenticated("the user name and password are not valid")
                return given[0]
        if self._tokens is not None:
            token = bearer_token(context.invocation_metadata())
            if token is not None:
                principal = self._tokens.principal(token)
                if principal is None:
                    raise Unauthenticated("the bearer token is not valid")
                return principal
        if self._certificates:
            # With a client CA the TLS handshake has already verified the certificate.
            names = list(context.auth_context().get("x509_common_name", []))
            if names:
                return names[0].decode()
        raise Unauthenticated("credentials are required: a bearer token or a client certificate")

    def principal_of_token(self, token: str | None) -> str:
        """Who presents `token` (the web console's sign-in); Unauthenticated when tokens are
        required and it is missing or unknown. With client certificates alone, nobody: the
        console has no certificate to check."""
        if not self.enabled:
            return ANONYMOUS
        principal = self._tokens.principal(token) if self._tokens and token else None
        if principal is None:
            raise Unauthenticated("a valid token is required")
        return principal

    def allows(self, principal: str, operation: str, name: str) -> bool:
        return self._policy is None or self._policy.allows(principal, operation, name)

    def authorize(self, principal: str, operation: str, name: str) -> None:
        """PermissionDenied unless `principal` may perform `operation` on `name` (a category,
        a subscriber name, or ALL_STREAMS)."""
        if self._policy is None or self._policy.allows(principal, operation, name):
            return
        what = "all streams" if name == ALL_STREAMS else repr(name)
        raise PermissionDenied(f"{principal} may not {operation} {what}", principal=principal)

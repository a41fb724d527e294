"""The database credentials the manifests refer to and never contain.

A Secret inside a kustomization is put back by every later `kubectl apply -k`, silently undoing
a rotation, so `k8s/` only names it (`postgres-credentials`: POSTGRES_USER, POSTGRES_PASSWORD,
POSTGRES_DB). On kind, `make kind-deploy` runs this module, which creates it once, with a random
password, and leaves an existing one alone; elsewhere the operator creates it (README)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from typing import Any

from tools.processes import ROOT

NAMESPACE = "eventstore"
SECRET = "postgres-credentials"
KEYS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")


def values(password: str, user: str = "eventstore", database: str = "eventstore") -> dict[str, str]:
    """What the Secret holds (the role and database that the manifests' DATABASE_URLs name)."""
    return {"POSTGRES_USER": user, "POSTGRES_PASSWORD": password, "POSTGRES_DB": database}


def secret(password: str) -> dict[str, Any]:
    """The Secret as an object, as `make kind-deploy` creates it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": values(password),
    }


def main() -> None:
    kubectl = shlex.split(os.environ.get("KUBECTL", "kubectl"))
    found = subprocess.run(
        [*kubectl, "-n", NAMESPACE, "get", "secret", SECRET], capture_output=True, check=False
    )
    if found.returncode == 0:
        print(f"secret/{SECRET} exists: kept (rotate it as the README says)")
        return
    namespace = ROOT / "k8s" / "base" / "namespace.yaml"
    subprocess.run([*kubectl, "apply", "-f", str(namespace)], check=True)
    created = subprocess.run(
        [*kubectl, "create", "-f", "-"],
        input=json.dumps(secret(secrets.token_hex(24))),
        text=True,
        check=False,
    )
    sys.exit(created.returncode)


if __name__ == "__main__":
    main()

"""Just enough of the Kubernetes API for the cluster tests, from inside a pod: its service
account's token and CA, the pods of its namespace, and deleting one."""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ and (ACCOUNT / "token").exists()


@dataclass(frozen=True)
class Pod:
    name: str
    ready: bool
    deleting: bool


class Kubernetes:
    """The API server as this pod's service account sees it (RBAC in k8s/e2e/e2e.yaml)."""

    def __init__(self) -> None:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self._base = f"https://{host}:{port}"
        self._context = ssl.create_default_context(cafile=str(ACCOUNT / "ca.crt"))
        self.namespace = (ACCOUNT / "namespace").read_text().strip()

    def _call(self, method: str, path: str) -> Any:
        token = (ACCOUNT / "token").read_text().strip()  # projected tokens are rotated
        request = urllib.request.Request(
            self._base + path, method=method, headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, context=self._context, timeout=10) as answer:
            return json.load(answer)

    def pods(self, component: str) -> list[Pod]:
        """The pods of one component (its `app.kubernetes.io/name`)."""
        selector = urllib.parse.quote(f"app.kubernetes.io/name={component}")
        path = f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={selector}"
        found = self._call("GET", path)
        return [
            Pod(
                item["metadata"]["name"],
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in item.get("status", {}).get("conditions", [])
                ),
                "deletionTimestamp" in item["metadata"],
            )
            for item in found["items"]
        ]

    def delete_pod(self, name: str, grace_seconds: int = 0) -> None:
        """Gone at once with grace 0: the container is killed, as a node failure would."""
        self._call(
            "DELETE",
            f"/api/v1/namespaces/{self.namespace}/pods/{name}?gracePeriodSeconds={grace_seconds}",
        )

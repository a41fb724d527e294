"""The rendered Kubernetes manifests, for the tests that hold them to our conventions and for
the local end-to-end run that takes its commands and environment from them."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

import yaml

from tools import credentials
from tools.processes import ROOT

KUBECTL = shutil.which("kubectl")
OVERLAYS = {
    "base": ROOT / "k8s" / "base",
    "kind": ROOT / "k8s" / "overlays" / "kind",
    "secure": ROOT / "k8s" / "overlays" / "secure",
    "kind-secure": ROOT / "k8s" / "overlays" / "kind-secure",
}
# Not a deployment of the system: the in-cluster test Job (`make kind-test`), applied after one.
KUSTOMIZATIONS = {**OVERLAYS, "e2e": ROOT / "k8s" / "e2e"}
APPS = {"eventstore": "eventstore_server", "customer": "customer_svc", "order": "order_svc"}


@functools.cache
def render(name: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of one kustomization, as objects."""
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(KUSTOMIZATIONS[name])],
        check=True,
        capture_output=True,
        text=True,
    )
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(name) if o["kind"] == kind]


def workload(name: str, component: str) -> dict[str, Any]:
    [found] = [
        o
        for o in render(name)
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == component
    ]
    return found


def local_process(
    component: str,
    ports: dict[str, int],
    database_url: str,
    extra_env: dict[str, str] | None = None,
    overlay: str = "kind",
) -> tuple[list[str], dict[str, str]]:
    """The component's container command, arguments and environment from an overlay,
    with in-cluster addresses mapped to local ones: `ports` maps a component (or
    "<component>-metrics") to its local port; the database is `database_url`. The OTEL_*
    variables are kept only where `ports` has an "otel-collector" to send spans to."""
    manifest = workload(overlay, component)
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    configmaps = {c["metadata"]["name"]: c["data"] for c in objects(overlay, "ConfigMap")}
    # The database credentials live outside the manifests (tools/credentials.py); the URL is
    # `database_url` here anyway.
    secrets = {credentials.SECRET: credentials.values("local")}
    secrets |= {s["metadata"]["name"]: s.get("stringData", {}) for s in objects(overlay, "Secret")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= configmaps[source["configMapRef"]["name"]]
        if "secretRef" in source:
            env |= secrets[source["secretRef"]["name"]]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]

    def local(text: str) -> str:
        text = re.sub(r"0\.0\.0\.0:9100", f"127.0.0.1:{ports.get(component + '-metrics', 0)}", text)
        text = re.sub(r"0\.0\.0\.0:8080", f"127.0.0.1:{ports.get(component + '-console', 0)}", text)
        text = re.sub(
            r"0\.0\.0\.0:2113", f"127.0.0.1:{ports.get(component + '-kurrentdb', 0)}", text
        )
        text = re.sub(r"0\.0\.0\.0:(\d+)", f"127.0.0.1:{ports[component]}", text)
        for name, port in ports.items():
            text = re.sub(rf"\b{re.escape(name)}:\d+\b", f"127.0.0.1:{port}", text)
        return text

    env = {k: local(v) for k, v in env.items()}
    if "DATABASE_URL" in env:
        env["DATABASE_URL"] = database_url
    if "otel-collector" not in ports:
        for key in [k for k in env if k.startswith("OTEL_")]:
            del env[key]  # no collector here; tracing has its own end-to-end test
    argv = [local(_expand(a, env)) for a in [*container["command"], *container.get("args", [])]]
    return argv, env | (extra_env or {})


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)

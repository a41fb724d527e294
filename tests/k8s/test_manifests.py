"""The Kubernetes manifests: valid against the 1.31 schemas, and held to our conventions.
Needs `kubectl` (for kustomize); without it these tests are skipped, and say why."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest

from tests.k8s.manifests import APPS, KUBECTL, OVERLAYS, objects, render, workload
from tests.support import ROOT

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is needed to render the kustomizations"
)

COMPONENTS = ["postgres", "eventstore", "customer", "order", "otel-collector", "jaeger"]
# Every connection the system makes: (from, to, port).
CONNECTIONS = {
    ("customer", "eventstore", 50051),
    ("order", "eventstore", 50051),
    ("eventstore", "postgres", 5432),
    ("order", "postgres", 5432),
    ("eventstore", "otel-collector", 4317),
    ("customer", "otel-collector", 4317),
    ("order", "otel-collector", 4317),
    ("otel-collector", "jaeger", 4317),
}
SHUTDOWN_GRACE = 10  # seconds the servers take to drain (their *_SHUTDOWN_GRACE)


def pod_specs(name: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(component, pod template metadata, pod spec) of every workload."""
    return [
        (w["metadata"]["name"], w["spec"]["template"]["metadata"], w["spec"]["template"]["spec"])
        for w in render(name)
        if w["kind"] in ("Deployment", "StatefulSet")
    ]


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_every_object_is_valid_kubernetes_1_31(name: str) -> None:
    for obj in render(name):
        kubernetes_validate.validate(obj, "1.31.0", strict=True)


def test_the_system_is_all_there() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render("kind")}
    for component in COMPONENTS:
        assert ("Service", component) in kinds and ("ServiceAccount", component) in kinds
    assert ("StatefulSet", "postgres") in kinds
    assert workload("kind", "eventstore")["spec"]["replicas"] == 2
    [pdb] = objects("kind", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "eventstore"}


@pytest.mark.parametrize("component", COMPONENTS)
def test_pods_follow_the_conventions(component: str) -> None:
    _, _, spec = next(p for p in pod_specs("kind") if p[0] == component)
    accounts = {o["metadata"]["name"] for o in objects("kind", "ServiceAccount")}
    assert spec["serviceAccountName"] == component and component in accounts
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["terminationGracePeriodSeconds"] > SHUTDOWN_GRACE
    for container in spec["containers"]:
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
        assert "readinessProbe" in container and "livenessProbe" in container
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        if component in APPS:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"]["port"] == ports["grpc"]  # the health service
            assert container["command"] == ["python", "-m", APPS[component]]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the one writable place


def test_services_select_pods_and_target_declared_ports() -> None:
    pods = pod_specs("kind")
    for service in objects("kind", "Service"):
        selector = service["spec"]["selector"]
        matching = [
            (meta, spec) for _, meta, spec in pods if selector.items() <= meta["labels"].items()
        ]
        assert matching, f"service {service['metadata']['name']} selects no pod"
        declared = {
            p["name"]
            for _, spec in matching
            for c in spec["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, (service["metadata"]["name"], port)
        if service["metadata"]["name"] in APPS:
            assert "grpc" in {p["name"] for p in service["spec"]["ports"]}


def test_config_and_secret_references_exist() -> None:
    configmaps = {c["metadata"]["name"]: c["data"] for c in objects("kind", "ConfigMap")}
    secrets = {
        s["metadata"]["name"]: s.get("stringData", s.get("data", {}))
        for s in objects("kind", "Secret")
    }
    for _, _, spec in pod_specs("kind"):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]
    assert any(k.startswith("OTEL_") for k in configmaps["pg-eventstore-config"])


def _allows(policy: dict[str, Any], direction: str, peer: str, port: int) -> bool:
    for rule in policy["spec"].get(direction, []):
        ports = {p["port"] for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        peers = rule.get("from" if direction == "ingress" else "to")
        if peers is None:
            return True
        for p in peers:
            if "namespaceSelector" in p:
                continue  # other namespaces (DNS): not one of our components
            if (
                p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                == peer
            ):
                return True
    return False


def _selects(policy: dict[str, Any], component: str) -> bool:
    labels: dict[str, str] = policy["spec"]["podSelector"].get("matchLabels", {})
    return labels.items() <= {"app.kubernetes.io/name": component}.items()


def allowed(source: str, target: str, port: int) -> bool:
    policies = objects("kind", "NetworkPolicy")
    egress = any(_selects(p, source) and _allows(p, "egress", target, port) for p in policies)
    ingress = any(_selects(p, target) and _allows(p, "ingress", source, port) for p in policies)
    return egress and ingress


def test_network_policies_allow_exactly_the_system_s_connections() -> None:
    policies = objects("kind", "NetworkPolicy")
    [deny] = [p for p in policies if p["metadata"]["name"] == "default-deny"]
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {
        "Ingress",
        "Egress",
    }
    for connection in CONNECTIONS:
        assert allowed(*connection), f"blocked: {connection}"
    ports = {port for _, _, port in CONNECTIONS} | {50052, 50053, 9100, 16686}
    for source, target in itertools.permutations(COMPONENTS, 2):
        for port in ports:
            if (source, target, port) not in CONNECTIONS:
                assert not allowed(source, target, port), (
                    f"allowed but unused: {source} -> {target}:{port}"
                )


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

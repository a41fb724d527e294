"""The Kubernetes manifests: valid against the 1.31 schemas, and held to our conventions.
Needs `kubectl` (for kustomize); without it these tests are skipped, and say why."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from eventstore_server import config
from hosting import settings as hosting
from tests.tls import Authority
from tools import credentials
from tools.manifests import APPS, KUBECTL, OVERLAYS, local_process, objects, render, workload
from tools.processes import ROOT

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
    ("customer", "postgres", 5432),
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
    # Consumer groups share the saga's work between replicas of each service.
    assert workload("kind", "customer")["spec"]["replicas"] == 2
    assert workload("kind", "order")["spec"]["replicas"] == 2
    [pdb] = objects("kind", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "eventstore"}


DEPLOYED = ["kind", "secure", "kind-secure"]  # the overlays that are applied as they are
# Secrets the secure overlay expects the operator to create (README, "Security on Kubernetes").
OPERATOR_SECRETS = {
    "eventstore-tls": {"tls.crt", "tls.key", "ca.crt"},
    "customer-tls": {"tls.crt", "tls.key", "ca.crt"},
    "order-tls": {"tls.crt", "tls.key", "ca.crt"},
    "eventstore-tokens": {"tokens"},
    "customer-credentials": {"token"},
    "order-credentials": {"token"},
    "api-tokens": {"tokens"},
}


@pytest.mark.parametrize("overlay", DEPLOYED)
@pytest.mark.parametrize("component", COMPONENTS)
def test_pods_follow_the_conventions(overlay: str, component: str) -> None:
    _, _, spec = next(p for p in pod_specs(overlay) if p[0] == component)
    accounts = {o["metadata"]["name"] for o in objects(overlay, "ServiceAccount")}
    assert spec["serviceAccountName"] == component and component in accounts
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsGroup"] > 0  # not gid 0, whatever the image says
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
                # The health service: on the gRPC port, or on its own plaintext port with TLS.
                assert container[probe]["grpc"]["port"] == ports.get("health", ports["grpc"])
            assert container["command"] == ["python", "-m", APPS[component]]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the one writable place
            secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
            for mount in mounts.values():
                if mount["name"] in secret_volumes:
                    assert mount.get("readOnly") is True, mount


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_services_select_pods_and_target_declared_ports(overlay: str) -> None:
    pods = pod_specs(overlay)
    for service in objects(overlay, "Service"):
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


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_config_and_secret_references_exist(overlay: str) -> None:
    configmaps = {c["metadata"]["name"]: c["data"] for c in objects(overlay, "ConfigMap")}
    secrets = {
        s["metadata"]["name"]: s.get("stringData", s.get("data", {}))
        for s in objects(overlay, "Secret")
    }
    secrets[credentials.SECRET] = dict.fromkeys(credentials.KEYS, "")  # made outside k8s/
    if overlay in ("secure", "kind-secure"):
        secrets |= {name: dict.fromkeys(keys, "") for name, keys in OPERATOR_SECRETS.items()}
    for _, _, spec in pod_specs(overlay):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
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


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_no_kustomization_carries_a_secret(overlay: str) -> None:
    """A Secret in the manifests would be put back by every later apply, undoing a rotation."""
    assert objects(overlay, "Secret") == []
    readme = (ROOT / "README.md").read_text()
    assert credentials.SECRET in readme and all(key in readme for key in credentials.KEYS)
    assert "make kind-deploy" in readme and "ALTER ROLE" in readme


def test_the_operator_s_secrets_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, keys in OPERATOR_SECRETS.items():
        assert name in readme and all(key in readme for key in keys), name
    referenced = {
        v["secret"]["secretName"]
        for _, _, spec in pod_specs("secure")
        for v in spec["volumes"]
        if "secret" in v
    }
    assert referenced == set(OPERATOR_SECRETS)


def test_the_secure_overlay_configures_settings_the_programs_read(tmp_path: Path) -> None:
    """Its variables name real settings, and its files (mounted where the variables say, with
    the keys the Secrets are documented to have) are accepted by the programs' own checks."""
    authority = Authority(tmp_path)
    server = authority.server()
    policy = (ROOT / "k8s" / "components" / "secure" / "access-policy.json").read_text()
    files = {
        "tls/tls.crt": Path(server.cert).read_text(),
        "tls/tls.key": Path(server.key).read_text(),
        "tls/ca.crt": Path(authority.ca).read_text(),
        "tokens/tokens": "order_svc 0123456789abcdef0123\n",
        "policy/access-policy.json": policy,
        "credentials/token": "0123456789abcdef0123\n",
        "api-tokens/tokens": "frontend 0123456789abcdef0123\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    ports = {name: 1 for name in APPS} | {"postgres": 5432}

    def environment(component: str) -> dict[str, str]:
        _, env = local_process(component, ports, "postgresql://db/x", overlay="secure")
        return {k: v.replace("/etc/pg-eventstore", str(tmp_path)) for k, v in env.items()}

    store = config.parse([], environ=environment("eventstore"))
    assert store.tls_cert and store.tls_key and store.tokens_file and store.policy_file
    assert store.health_listen
    for component, prefix in [("customer", "CUSTOMER"), ("order", "ORDER")]:
        service = hosting.parse_settings("svc", prefix, "", [], environment(component))
        assert service.tls is not None and service.tokens_file and service.health_listen
        assert service.eventstore_security.tls and service.eventstore_security.token


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


@pytest.mark.parametrize("overlay", ["base", *DEPLOYED])
def test_every_namespaced_object_is_in_the_namespace(overlay: str) -> None:
    """What components generate too: the secure overlay's policy ConfigMap once landed in
    `default`, and the store's pods waited for it for ever."""
    cluster_wide = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    strays = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in render(overlay)
        if o["kind"] not in cluster_wide and o["metadata"].get("namespace") != "eventstore"
    ]
    assert not strays


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_the_statefulset_is_governed_by_a_headless_service(overlay: str) -> None:
    governing = workload(overlay, "postgres")["spec"]["serviceName"]
    [service] = [s for s in objects(overlay, "Service") if s["metadata"]["name"] == governing]
    assert service["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("overlay", DEPLOYED)
def test_network_policies_admit_the_probes(overlay: str) -> None:
    """Where probes use a port of their own (the secure overlay's health port), a policy
    admits it; on the API port they come with the connections the system already allows."""
    policies = objects(overlay, "NetworkPolicy")
    for component, _, spec in pod_specs(overlay):
        if component not in APPS:
            continue
        container = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if "health" not in ports:
            continue
        admitting = [
            p
            for p in policies
            if _selects_expression(p, component)
            and any(
                {q["port"] for q in rule.get("ports", [])} >= {ports["health"]}
                and "from" not in rule
                for rule in p["spec"].get("ingress", [])
            )
        ]
        assert admitting, f"{overlay}: nothing admits {component}'s probes on {ports['health']}"


def _selects_expression(policy: dict[str, Any], component: str) -> bool:
    selector = policy["spec"]["podSelector"]
    if _selects(policy, component) and selector.get("matchLabels"):
        return True
    return any(
        e["key"] == "app.kubernetes.io/name" and e["operator"] == "In" and component in e["values"]
        for e in selector.get("matchExpressions", [])
    )


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "e2e.Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, str(ROOT / dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_in_cluster_test_job_is_valid_and_held_to_the_conventions() -> None:
    rendered = render("e2e")
    for obj in rendered:
        kubernetes_validate.validate(obj, "1.31.0", strict=True)
        assert obj["metadata"].get("namespace") == "eventstore", obj["metadata"]["name"]
    [job] = [o for o in rendered if o["kind"] == "Job"]
    spec = job["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsGroup"]
    [container] = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    targets = {e["name"]: e["value"] for e in container["env"]}
    assert targets["E2E_EVENTSTORE"] == "eventstore:50051"  # by Service name, not port-forward
    # Its Role: the namespace's pods, to find and delete them, and nothing else.
    [role] = [o for o in rendered if o["kind"] == "Role"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]}
    ]
    [binding] = [o for o in rendered if o["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"]


def test_the_test_job_is_admitted_where_a_client_is_and_never_to_postgres() -> None:
    policies = [*objects("kind", "NetworkPolicy"), *objects("e2e", "NetworkPolicy")]
    job = {"app.kubernetes.io/name": "e2e"}

    def admitted(component: str, port: int) -> bool:
        for policy in policies:
            if not _selects_expression(policy, component):
                continue
            for rule in policy["spec"].get("ingress", []):
                ports = {p["port"] for p in rule.get("ports", [])}
                sources = [
                    f.get("podSelector", {}).get("matchLabels") for f in rule.get("from", [])
                ]
                if port in ports and job in sources:
                    return True
        return False

    for component, port in [
        ("eventstore", 50051),
        ("customer", 50052),
        ("order", 50053),
        ("jaeger", 16686),
    ]:
        assert admitted(component, port), component
    assert not admitted("postgres", 5432)


def test_the_secure_overlay_on_kind_is_the_kind_overlay_with_security_on() -> None:
    """Same workloads, with the locally built image (the secure overlay names a registry's)."""
    kind, secure = render("kind"), render("kind-secure")
    assert {(o["kind"], o["metadata"]["name"]) for o in kind} <= {
        (o["kind"], o["metadata"]["name"]) for o in secure
    }
    for component in APPS:
        [container] = workload("kind-secure", component)["spec"]["template"]["spec"]["containers"]
        [on_kind] = workload("kind", component)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == on_kind["image"] == "pg-eventstore:dev"
        assert "health" in {p["name"] for p in container["ports"]}  # the secure probes' port

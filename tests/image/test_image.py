"""The container image itself, built and run with podman: who it runs as, what it carries, how
fast each process starts and how cleanly it stops, and the event store's Deployment played from
the rendered kind overlay. `make image-test` builds the image and sets E2E_IMAGE."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from localpg import free_port
from tools import credentials, podman_image
from tools.manifests import APPS, local_process, render, workload
from tools.processes import health_status, wait_until

pytestmark = pytest.mark.skipif(
    "E2E_IMAGE" not in os.environ, reason="needs the image built by podman: make image-test"
)

IMAGE = os.environ.get("E2E_IMAGE", "")
SERVING = 1


def podman(*args: str) -> str:
    return podman_image.podman(*args)


def test_runs_as_a_non_root_user() -> None:
    assert podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).strip() == (
        "10001:10001"
    )
    assert podman("run", "--rm", IMAGE, "id", "-u").strip() == "10001"


def test_carries_no_compilers() -> None:
    tools = "gcc cc c++ g++ clang tcc ld as make"
    found = podman(
        "run", "--rm", IMAGE, "sh", "-c", f"for t in {tools}; do command -v $t; done; true"
    )
    assert found.strip() == ""


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"pg-eventstore-image-test-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    podman_image.remove(name)


@pytest.mark.parametrize("component", list(APPS))
def test_each_process_starts_quickly_and_stops_cleanly_on_sigterm(
    component: str, container_name: str
) -> None:
    """A second replica of each component, configured by its manifest, beside the running
    system: serving after `podman run`, and gone with exit code 0 after SIGTERM (`podman stop`:
    had SIGTERM not ended it, podman's SIGKILL at the grace period would give 137). The times
    are printed; bounds on them belong in a benchmark, not in a test on a busy machine."""
    store_port = int(os.environ["E2E_EVENTSTORE"].rpartition(":")[2])
    ports = {"eventstore": store_port, component: free_port(), f"{component}-metrics": free_port()}
    argv, env = local_process(component, ports, os.environ["E2E_DATABASE_URL"])
    grace = workload("kind", component)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    began = time.monotonic()
    podman_image.run(container_name, IMAGE, argv, env)
    wait_until(lambda: health_status(f"127.0.0.1:{ports[component]}") == SERVING, timeout=30)
    started = time.monotonic() - began

    began = time.monotonic()
    podman("stop", "--time", str(grace), container_name)
    stopped = time.monotonic() - began
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container_name).strip()

    print(f"{component}: serving after {started:.2f} s, stopped in {stopped:.2f} s")
    assert exit_code == "0", podman_image.logs(container_name)


def _kube_play_objects(database_port: int, otlp: str) -> tuple[list[dict[str, Any]], Any]:
    """The event store's Deployment, and its ConfigMap, from the rendered kind overlay, with
    the only changes a single machine needs: one replica, this run's image, the database's and
    collector's addresses mapped to local ones, and no port declarations (with the host's
    network there is nothing to map, and podman refuses them). The manifests name the database
    Secret without containing it (tools/credentials.py): it is made here and returned apart, as
    podman takes it as a podman secret (a JSON object of base64 values), not from the file."""
    deployment = copy.deepcopy(workload("kind", "eventstore"))
    spec = deployment["spec"]
    spec["replicas"] = 1
    [container] = spec["template"]["spec"]["containers"]
    container["image"] = IMAGE
    container.pop("ports")
    for item in container["env"]:
        if item["name"] == "DATABASE_URL":
            item["value"] = item["value"].replace("@postgres:5432/", f"@127.0.0.1:{database_port}/")
        if item["name"] == "EVENTSTORE_CONSOLE_LISTEN":  # the host's network: any free port
            item["value"] = "127.0.0.1:0"
    [config] = [
        copy.deepcopy(o)
        for o in render("kind")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "pg-eventstore-config"
    ]
    config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{otlp}"
    return [config, deployment], credentials.secret("image-test")


async def _database_for_the_manifest(server_url: str, secret: dict[str, Any]) -> None:
    """The role and database the manifest's DATABASE_URL names, as the StatefulSet makes them."""
    values = secret["stringData"]
    conn = await asyncpg.connect(server_url)
    try:
        user, database = values["POSTGRES_USER"], values["POSTGRES_DB"]
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
            password = values["POSTGRES_PASSWORD"].replace("'", "''")
            await conn.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
    finally:
        await conn.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_kube_play_runs_the_event_store_deployment_from_the_overlay() -> None:
    """The manifest's own command, arguments, environment and security context."""
    server_url = os.environ["E2E_POSTGRES_URL"]
    database_port = int(server_url.rpartition(":")[2].partition("/")[0])
    objects, secret = _kube_play_objects(database_port, os.environ["E2E_OTLP_LISTEN"])
    assert _port_free(50051), "the manifest's gRPC port 50051 is taken on this machine"
    asyncio.run(_database_for_the_manifest(server_url, secret))

    secret_name = secret["metadata"]["name"]
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        secret_file, kube_file = Path(tmp, "secret.json"), Path(tmp, "kube.yaml")
        secret_file.write_text(json.dumps(encoded))
        kube_file.write_text(yaml.safe_dump_all(objects))
        podman_image.podman("secret", "rm", secret_name, check=False)  # a run cut short
        podman("secret", "create", secret_name, str(secret_file))
        try:
            podman("kube", "play", "--network", "host", str(kube_file))
            [name] = [
                n
                for n in podman("ps", "--format", "{{.Names}}").split()
                if n.startswith("eventstore-pod-") and n.endswith("-eventstore")
            ]
            # SERVING means the store reached the database through the manifest's URL.
            wait_until(lambda: health_status("127.0.0.1:50051") == SERVING, timeout=30)
            user, read_only, caps = podman(
                "inspect",
                "--format",
                "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{len .HostConfig.CapDrop}}",
                name,
            ).split()
            assert user == "10001:10001" and read_only == "true" and int(caps) > 0
        finally:
            podman("kube", "down", str(kube_file))
            podman("secret", "rm", secret_name)

"""`make image-test`: build the image with podman (on a local Debian base), run the store,
customer_svc and order_svc from it, each in its own container configured exactly as the kind
overlay configures it, and run the end-to-end suite and the image's own tests against them.
Arguments are passed on to pytest (`python -m tools.image_test -k image -s`).

PostgreSQL is the embedded one (or DATABASE_URL's server), on the host; the containers use the
host's network, so in-cluster addresses become local ports as in the local end-to-end run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from localpg import free_port
from tools import podman_image
from tools.manifests import APPS, local_process
from tools.processes import ROOT, create_database, health_status, postgres_server

CONTAINER_PREFIX = "pg-eventstore-e2e-"


def wait_serving(name: str, address: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while health_status(address) != 1:
        state = podman_image.podman("inspect", "--format", "{{.State.Status}}", name).strip()
        if state != "running" or time.monotonic() > deadline:
            sys.exit(f"{name} is not serving ({state}):\n{podman_image.logs(name)}")
        time.sleep(0.2)


def main() -> None:
    if missing := podman_image.missing_tools():
        sys.exit(f"missing {' '.join(missing)}: python -m tools.podman_image install")
    print("building the base image and the project's image ...", flush=True)
    image = podman_image.build_image(base=podman_image.build_base())
    print(f"{image}: {podman_image.image_size(image) / 1e6:.0f} MB", flush=True)

    ports = {name: free_port() for name in APPS} | {f"{name}-metrics": free_port() for name in APPS}
    ports["otel-collector"] = otlp = free_port()  # the tracing test's receiver listens there
    names = [f"{CONTAINER_PREFIX}{component}" for component in APPS]
    code = 1
    with postgres_server() as server_url:
        database_url = create_database(server_url)
        try:
            for component, name in zip(APPS, names, strict=True):
                argv, env = local_process(component, ports, database_url)
                podman_image.run(name, image, argv, env)
                wait_serving(name, f"127.0.0.1:{ports[component]}")
            env = {
                **os.environ,
                "E2E_EVENTSTORE": f"127.0.0.1:{ports['eventstore']}",
                "E2E_CUSTOMER": f"127.0.0.1:{ports['customer']}",
                "E2E_ORDER": f"127.0.0.1:{ports['order']}",
                "E2E_OTLP_LISTEN": f"127.0.0.1:{otlp}",
                "E2E_IMAGE": image,
                "E2E_POSTGRES_URL": server_url,
                "E2E_DATABASE_URL": database_url,
            }
            code = subprocess.call(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "tests/e2e",
                    "tests/image",
                    "-v",
                    "-rs",
                    *sys.argv[1:],
                ],
                cwd=ROOT,
                env=env,
            )
        finally:
            for name in names:
                if code != 0:
                    print(f"--- {name} ---\n{podman_image.logs(name)[-3000:]}")
                podman_image.remove(name)
    sys.exit(code)


if __name__ == "__main__":
    main()

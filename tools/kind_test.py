"""`make kind-test`: port-forward the cluster's services and run the end-to-end suite against
them (the same tests that run against local processes in `make test`; those that start or
kill processes of their own say they are skipped)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from localpg import free_port
from tools.processes import ROOT, health_status

SERVICES = {"eventstore": 50051, "customer": 50052, "order": 50053}


def main() -> None:
    kubectl = shlex.split(os.environ.get("KUBECTL", "kubectl"))
    local = {name: free_port() for name in SERVICES}
    forwards = [
        subprocess.Popen(
            [*kubectl, "-n", "eventstore", "port-forward", f"svc/{name}", f"{local[name]}:{port}"],
            stdout=subprocess.DEVNULL,
        )
        for name, port in SERVICES.items()
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(health_status(f"127.0.0.1:{p}") == 1 for p in local.values()):
            if time.monotonic() > deadline:
                sys.exit("the cluster's services are not reachable through port-forward")
            time.sleep(0.5)
        env = {
            **os.environ,
            **{f"E2E_{name.upper()}": f"127.0.0.1:{p}" for name, p in local.items()},
        }
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "tests/e2e", "-v", "-rs"], cwd=ROOT, env=env
        )
    finally:
        for forward in forwards:
            forward.terminate()
    sys.exit(code)


if __name__ == "__main__":
    main()

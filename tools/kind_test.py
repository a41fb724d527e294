"""`make kind-test`: the end-to-end suite as a Job inside the cluster (k8s/e2e). It reaches the
Services by their DNS names, so pod churn is met as a real client meets it, and it runs the
cluster tests (tests/cluster) that delete pods through the Kubernetes API, read the trace from
Jaeger and probe the network policies. Its log is streamed here; the exit code is the Job's."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from tools.processes import ROOT

NAMESPACE = "eventstore"
TIMEOUT_S = 1500


def main() -> None:
    kubectl = [*shlex.split(os.environ.get("KUBECTL", "kubectl")), "-n", NAMESPACE]
    # A Job's pod template cannot change: the last run's Job goes first.
    subprocess.run([*kubectl, "delete", "job", "e2e", "--ignore-not-found", "--wait"], check=True)
    subprocess.run([*kubectl, "apply", "-k", str(ROOT / "k8s" / "e2e")], check=True)
    subprocess.call([*kubectl, "logs", "-f", "job/e2e", "--pod-running-timeout=5m"])
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        status = subprocess.run(
            [*kubectl, "get", "job", "e2e", "-o", "jsonpath={.status.succeeded}/{.status.failed}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        succeeded, _, failed = status.partition("/")
        if succeeded == "1":
            sys.exit(0)
        if failed and failed != "0":
            sys.exit("the in-cluster end-to-end Job failed (its log is above)")
        time.sleep(2)
    sys.exit("the in-cluster end-to-end Job did not finish")


if __name__ == "__main__":
    main()

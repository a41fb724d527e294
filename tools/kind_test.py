"""`make kind-test`: the end-to-end suite as a Job inside the cluster (k8s/e2e). It reaches the
Services by their DNS names, so pod churn is met as a real client meets it, and it runs the
cluster tests (tests/cluster) that delete pods through the Kubernetes API, read the trace from
Jaeger and probe the network policies.

It waits for the Job's pod to start (an image that cannot be pulled, or a pod that cannot be
scheduled, is reported by name with the pod's events), streams the pod's log, prints the log's
end again when the stream broke before the Job finished, and exits with the Job's result."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any

from tools.processes import ROOT

NAMESPACE = "eventstore"
TIMEOUT_S = 1500
START_TIMEOUT_S = 600  # for the pod to leave Pending: image pulls on a cold node take a while
# Waiting reasons that will not go away by waiting.
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"}


class Kubectl:
    def __init__(self) -> None:
        self.base = [*shlex.split(os.environ.get("KUBECTL", "kubectl")), "-n", NAMESPACE]

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def job_pod(self) -> dict[str, Any] | None:
        pods = json.loads(self.run("get", "pods", "-l", "job-name=e2e", "-o", "json"))["items"]
        return max(pods, key=lambda p: p["metadata"]["creationTimestamp"]) if pods else None

    def job_result(self) -> str:
        """'succeeded', 'failed' or '' (still running)."""
        status = self.run(
            "get", "job", "e2e", "-o", "jsonpath={.status.succeeded}/{.status.failed}"
        )
        succeeded, _, failed = status.partition("/")
        if succeeded == "1":
            return "succeeded"
        return "failed" if failed and failed != "0" else ""


def wait_for_start(kubectl: Kubectl) -> str:
    """The Job's pod name once its container runs or ended; SystemExit, with the pod's
    events, when it cannot start."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pod = kubectl.job_pod()
        if pod is not None:
            name = str(pod["metadata"]["name"])
            status = pod.get("status", {})
            for container in status.get("containerStatuses") or []:
                state = container.get("state", {})
                if "running" in state or "terminated" in state:
                    return name
                reason = state.get("waiting", {}).get("reason", "")
                if reason in STUCK:
                    message = state["waiting"].get("message", "")
                    events = kubectl.run(
                        "get",
                        "events",
                        "--field-selector",
                        f"involvedObject.name={name}",
                        check=False,
                    )
                    raise SystemExit(
                        f"the e2e pod {name} cannot start: {reason} for image "
                        f"{container.get('image')}: {message}\n{events}"
                    )
            if status.get("phase") in ("Succeeded", "Failed"):
                return name
        time.sleep(2)
    raise SystemExit(f"the e2e pod did not start within {START_TIMEOUT_S} s")


def main() -> None:
    kubectl = Kubectl()
    # A Job's pod template cannot change: the last run's Job goes first.
    kubectl.run("delete", "job", "e2e", "--ignore-not-found", "--wait")
    print(kubectl.run("apply", "-k", str(ROOT / "k8s" / "e2e")), end="", flush=True)
    pod = wait_for_start(kubectl)
    streamed = subprocess.call([*kubectl.base, "logs", "-f", f"pod/{pod}"])
    deadline = time.monotonic() + TIMEOUT_S
    result = kubectl.job_result()
    while not result and time.monotonic() < deadline:
        time.sleep(2)
        result = kubectl.job_result()
    if streamed != 0 or not result:
        print("--- the log stream broke; the end of the pod's log:", flush=True)
        print(kubectl.run("logs", f"pod/{pod}", "--tail=200", check=False), flush=True)
    if result == "succeeded":
        sys.exit(0)
    if result == "failed":
        sys.exit("the in-cluster end-to-end Job failed (its log is above)")
    sys.exit("the in-cluster end-to-end Job did not finish")


if __name__ == "__main__":
    main()

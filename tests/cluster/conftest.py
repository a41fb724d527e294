"""The cluster tests run inside a Kubernetes cluster, as the Job of `make kind-test`."""

from __future__ import annotations

import pytest

from tests.cluster.kube import Kubernetes, in_cluster


@pytest.fixture(scope="session")
def kube() -> Kubernetes:
    if not in_cluster():
        pytest.skip("runs inside a Kubernetes cluster, as the Job of make kind-test")
    return Kubernetes()

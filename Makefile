# Every target bootstraps .venv itself: a fresh clone needs only Python 3.11+.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run demo traces test lint proto bench bench-smoke soak clean image image-test kind-up kind-load kind-deploy kind-test kind-down

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

install: $(STAMP)  ## create .venv and install the project with its dev and bench tools

run: $(STAMP)  ## start PostgreSQL (embedded unless DATABASE_URL is set) and the store
	$(BIN)/python -m tools.run_local

demo: $(STAMP)  ## walk through the credit saga (starts the system unless `make run` is up)
	$(BIN)/python -m tools.demo

traces: $(STAMP)  ## the last traces `make run` recorded, as waterfalls in the terminal
	$(BIN)/python -m tools.traces

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy eventstore_server eventstore_client event_contracts hosting customer_svc order_svc localpg tools tests bench

proto: $(STAMP)  ## regenerate contracts/ from protos/
	$(BIN)/python tools/gen_protos.py

test: $(STAMP) lint  ## lint, then every test (bench smoke included) over real PostgreSQL and processes
	$(BIN)/python -m pytest

bench: $(STAMP)  ## the benchmarks, with baselines from the same run
	$(BIN)/python -m bench

bench-smoke: $(STAMP)  ## each benchmark scenario for a moment, no thresholds
	$(BIN)/python -m bench --smoke

soak: $(STAMP)  ## faults at random under load, then the history checked (SOAK_MINUTES=5, SOAK_SEED)
	$(BIN)/python -m tools.soak

# The image with podman (Debian's podman, runc and debootstrap; `python -m tools.podman_image
# install` gets them, as root). Not needed by make test.
image: $(STAMP)  ## build the image with podman on a local Debian base
	$(BIN)/python -m tools.podman_image build

image-test: $(STAMP)  ## build the image, run the system from it, run the end-to-end suite against it
	$(BIN)/python -m tools.image_test

# Kubernetes on kind (needs docker, kind and kubectl; none of them is needed by make test).
IMAGE ?= pg-eventstore:dev
E2E_IMAGE ?= pg-eventstore-e2e:dev
KIND_CLUSTER ?= pg-eventstore
KUBECTL ?= kubectl --context kind-$(KIND_CLUSTER)

kind-up:  ## create the kind cluster
	kind create cluster --config k8s/kind/cluster.yaml

kind-load:  ## build the image and the e2e test image, and load them into the cluster
	docker build -t $(IMAGE) .
	docker build -f e2e.Dockerfile -t $(E2E_IMAGE) .
	kind load docker-image $(IMAGE) $(E2E_IMAGE) --name $(KIND_CLUSTER)

kind-deploy: $(STAMP)  ## the database credentials once, the kind overlay (SECURE=1: with security on), every rollout
	KUBECTL="$(KUBECTL)" $(BIN)/python -m tools.credentials
	$(KUBECTL) apply -k k8s/overlays/$(if $(SECURE),kind-secure,kind)
	$(KUBECTL) -n eventstore rollout status statefulset/postgres --timeout=180s
	for d in eventstore customer order otel-collector jaeger; do \
		$(KUBECTL) -n eventstore rollout status deployment/$$d --timeout=180s || exit 1; done

kind-test: $(STAMP)  ## the end-to-end and cluster tests as a Job inside the cluster
	KUBECTL="$(KUBECTL)" $(BIN)/python -m tools.kind_test

kind-down:  ## delete the cluster
	kind delete cluster --name $(KIND_CLUSTER)

clean:  ## remove .venv and .run (with PostgreSQL's data, also where .run/pgdata links to)
	if [ -L .run/pgdata ]; then rm -rf "$$(readlink .run/pgdata)"; fi
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache

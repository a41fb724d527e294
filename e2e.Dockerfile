# The end-to-end suite as an image, for the in-cluster Job (k8s/e2e, `make kind-test`):
#   docker build -f e2e.Dockerfile -t pg-eventstore-e2e:dev .
# Its context is the checkout with the tests (e2e.Dockerfile.dockerignore), unlike the
# project image's.
ARG BASE_IMAGE=python:3.12.8-slim-bookworm
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY . .
# The checkout with its test extras, as `make test` installs it (hadolint takes `.[dev]` for a
# package name without a version).
# hadolint ignore=DL3013
RUN python3 -m pip install --no-compile '.[dev]' \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001
CMD ["python", "-m", "pytest", "tests/e2e", "tests/cluster", "-v", "-rs", "-p", "no:cacheprovider"]

# One image for every process: the command picks it.
#   docker build -t pg-eventstore:dev .
#   docker run pg-eventstore:dev python -m eventstore_server --listen 0.0.0.0:50051 ...
ARG BASE_IMAGE=python:3.12.8-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY eventstore_server ./eventstore_server
COPY eventstore_client ./eventstore_client
COPY hosting ./hosting
COPY event_contracts ./event_contracts
COPY customer_svc ./customer_svc
COPY order_svc ./order_svc
RUN /opt/venv/bin/pip install --no-compile .

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 50052 50053
CMD ["python", "-m", "eventstore_server"]

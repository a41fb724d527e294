"""OpenTelemetry set-up for every process (servers and services), from the standard OTEL_*
variables. What travels with events (trace context in metadata, CONSUMER spans) is
`eventstore_client.tracing`.

Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; otherwise nothing is installed
and the instrumentation costs nothing. `OTEL_SDK_DISABLED=true` turns it off regardless.
Sampling, resource attributes and exporter settings come from the SDK's own variables
(`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, ...).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link

log = logging.getLogger(__name__)

_provider: Any = None


def _exporter_names() -> list[str]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if names:
        return [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return ["otlp"] if endpoint else []


def setup(
    default_service_name: str,
    *,
    grpc_server: bool = True,
    grpc_client: bool = True,
    asyncpg: bool = False,
) -> bool:
    """Install the SDK and the gRPC / asyncpg instrumentation; False when tracing is off."""
    global _provider
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    names = _exporter_names()
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    trace.set_tracer_provider(provider)
    _provider = provider

    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
        filters,
    )

    # The aio server interceptor breaks handlers that write with context.write() (the health
    # service's Watch among them), and probes would flood the traces: leave both services out.
    # Calls that live as long as a process (an AppendSession, a group member's Consume) carry
    # many traces' work: one span for all of it would be wrong in each; each append and each
    # handled event gets spans of its own instead.
    quiet = filters.negate(
        filters.any_of(
            filters.service_name("grpc.health.v1.Health"),
            filters.service_prefix("grpc.reflection"),
            filters.method_name("AppendSession"),
            filters.method_name("Consume"),
        )
    )
    if grpc_server:
        GrpcAioInstrumentorServer(filter_=quiet).instrument()
    if grpc_client:
        GrpcAioInstrumentorClient(filter_=quiet).instrument()
    if asyncpg:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor(capture_parameters=False).instrument()
    log.info("tracing on: exporting with %s", ", ".join(names))
    return True


def shutdown() -> None:
    """Flush and stop the exporter (on SIGTERM, before the process exits)."""
    if _provider is not None:
        _provider.shutdown()


def current_link() -> Link | None:
    """A link to the current span, for work done later on its behalf (a group commit)."""
    span_context = trace.get_current_span().get_span_context()
    return Link(span_context) if span_context.is_valid else None

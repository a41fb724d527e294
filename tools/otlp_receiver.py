"""A small OTLP/gRPC trace receiver that keeps recent spans: for tests, and for `make run`,
where it writes them to .run/spans.jsonl for `make traces` to draw.

`python -m tools.otlp_receiver --listen 127.0.0.1:4317 --out .run/spans.jsonl`
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import threading
from concurrent import futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)  # linked span ids


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps the last `capacity` spans in memory and, optionally, appends them to a file."""

    def __init__(self, capacity: int = 100_000, out: Path | None = None) -> None:
        self.spans: collections.deque[Span] = collections.deque(maxlen=capacity)
        self._out = out
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        received = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(attrs.get("service.name", "?"))
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    received.append(
                        Span(
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.name,
                            s.kind,
                            service,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            {a.key: _value(a.value) for a in s.attributes},
                            [link.span_id.hex() for link in s.links],
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            if self._out is not None:
                with self._out.open("a") as f:
                    for span in received:
                        f.write(json.dumps(asdict(span)) + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)


def start(listen: str, receiver: Receiver) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port(listen)
    server.start()
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:4317")
    parser.add_argument("--out", type=Path, default=Path(".run/spans.jsonl"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server, port = start(args.listen, Receiver(out=args.out))
    print(
        f"OTLP receiver on {args.listen.rsplit(':', 1)[0]}:{port}, spans to {args.out}", flush=True
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1)


if __name__ == "__main__":
    main()

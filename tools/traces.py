"""`make traces`: the last traces `make run` recorded (.run/spans.jsonl), as waterfalls.

python -m tools.traces [--rpc CreateOrder] [--last 1] [--all] [--file .run/spans.jsonl]

By default the last CreateOrder: the saga across all three services and the database, as the
README shows it. `--rpc ''` shows the last requests of any kind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from eventstore_client.cli import end_of_output
from tools.otlp_receiver import Span

KIND = {1: "", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
WIDTH = 50


def load(path: Path) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            span = Span(**json.loads(line))
            traces[span.trace_id].append(span)
    return traces


def draw(spans: list[Span]) -> list[str]:
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    scale = WIDTH / max(end - start, 1)
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        children[s.parent_span_id if s.parent_span_id in ids else ""].append(s)
    header = f"trace {spans[0].trace_id}  {(end - start) / 1e6:.1f} ms, {len(spans)} spans"
    rows: list[tuple[str, Span]] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(children[parent], key=lambda x: x.start_ns):
            rows.append((f"{'  ' * depth}{s.service}: {s.name} {KIND.get(s.kind, '')}".rstrip(), s))
            walk(s.span_id, depth + 1)

    walk("", 0)
    width = max(len(label) for label, _ in rows)  # names in full, however long
    lines = [header]
    for label, s in rows:
        left = int((s.start_ns - start) * scale)
        bar = " " * left + "█" * max(1, int((s.end_ns - s.start_ns) * scale))
        lines.append(f"{label:<{width}} {bar:<{WIDTH}} {(s.end_ns - s.start_ns) / 1e6:7.2f} ms")
    return lines


def _calls(span: Span, rpc: str) -> bool:
    """A server span of the method `rpc` (its name ends with `/rpc`)."""
    return span.kind == 2 and span.name.rsplit("/", 1)[-1] == rpc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--file", type=Path, default=Path(".run/spans.jsonl"))
    parser.add_argument("--last", type=int, default=1, help="how many traces")
    parser.add_argument(
        "--rpc", default="CreateOrder", help="traces of calls to this method ('': any request)"
    )
    parser.add_argument(
        "--all", action="store_true", help="also background traces (checkpoints, polling)"
    )
    args = parser.parse_args()
    traces = load(args.file)
    if not args.all:  # requests only: traces whose root is a server span
        traces = {
            t: spans
            for t, spans in traces.items()
            if any(
                s.kind == 2 and s.parent_span_id not in {x.span_id for x in spans} for s in spans
            )
        }
    if args.rpc:
        traces = {
            t: spans for t, spans in traces.items() if any(_calls(s, args.rpc) for s in spans)
        }
    if not traces:
        wanted = f" of {args.rpc}" if args.rpc else ""
        raise SystemExit(
            f"no traces{wanted} in {args.file}: is `make run` up, and has `make demo` run?"
        )
    latest = sorted(traces.values(), key=lambda spans: min(s.start_ns for s in spans))[-args.last :]
    try:
        for spans in latest:
            print("\n".join(draw(spans)), end="\n\n", flush=True)
    except BrokenPipeError:  # `make traces | head`: the reader has all it wanted
        end_of_output()
        sys.exit(0)


if __name__ == "__main__":
    main()

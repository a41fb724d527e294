"""PNG plots of a benchmark run, beside the JSON and markdown results."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.harness import RESULTS, Result


def draw(results: list[Result], path: Path = RESULTS) -> None:
    path.mkdir(parents=True, exist_ok=True)
    appends = [r for r in results if r.scenario == "append 1 event" and "callers" in r.params]
    if appends:
        fig, ax = plt.subplots(figsize=(7, 4))
        for variant in sorted({r.variant for r in appends}):
            points = sorted((r.params["callers"], r.value) for r in appends if r.variant == variant)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
        for r in results:
            if r.scenario == "append 1 event" and "callers" not in r.params:
                label = f"{r.variant} ({next(iter(r.params.values()))} workers)"
            elif r.scenario == "append 1 event vs library" and r.variant != "ours":
                label = r.variant
            else:
                continue
            ax.axhline(
                r.value,
                linestyle="--",
                linewidth=1,
                label=label,
                color="grey" if "naive" in r.variant else "tab:red",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent callers")
        ax.set_ylabel("single-event appends per second")
        ax.set_title("Append throughput")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path / "append_throughput.png", dpi=110)
        plt.close(fig)
    loads = [r for r in results if r.scenario == "aggregate load"]
    if loads:
        fig, ax = plt.subplots(figsize=(7, 4))
        for variant in sorted({r.variant for r in loads}):
            points = sorted((r.params["events"], r.value) for r in loads if r.variant == variant)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events in the aggregate's stream")
        ax.set_ylabel("load time (ms)")
        ax.set_title("Aggregate load time")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path / "aggregate_load.png", dpi=110)
        plt.close(fig)
    live = [r for r in results if r.scenario == "live latency"]
    if live:
        fig, ax = plt.subplots(figsize=(7, 4))
        for variant, style in (("ours", "-"), ("bare gRPC", ":")):
            for label in ("p50 ms", "p99 ms", "max ms"):
                points = sorted(
                    (r.params["events/s"], r.value)
                    for r in live
                    if r.metric == label and r.variant == variant
                )
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    marker="o",
                    label=f"{variant} {label.split()[0]}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("events per second")
        ax.set_ylabel("Append → subscriber latency (ms)")
        ax.set_title("Live delivery latency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path / "live_latency.png", dpi=110)
        plt.close(fig)

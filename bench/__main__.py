"""`python -m bench [--smoke] [--only NAME,...]`: every scenario against its baseline, one run.

Writes bench/results/latest.json and latest.md and PNG plots; smoke.* with --smoke, partial.*
(and no plots) with --only, so that a partial run never replaces the full table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench import plots
from bench.harness import Bench, Config
from bench.scenarios import append, fanout, groups, kurrentdb, live, read, scavenge, services

SCENARIOS = {
    "append": append.run,
    "read": read.run,
    "live": live.run,
    "fanout": fanout.run,
    "services": services.run,
    "groups": groups.run,
    "scavenge": scavenge.run,
    "kurrentdb": kurrentdb.run,
}


async def main_async(config: Config, only: list[str]) -> None:
    with Bench(config) as bench:
        await bench.describe_machine()
        print(f"machine: {bench.machine}", flush=True)
        ratios: list[dict[str, Any]] = []
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            start = time.monotonic()
            print(f"{name}:", flush=True)
            ratios += await scenario(bench)
            print(f"  ({time.monotonic() - start:.0f} s)", flush=True)
        bench.write(ratios, name="partial" if only else None)
        if not config.smoke and not only:
            plots.draw(bench.results)
        for r in [] if config.smoke else ratios:
            if r["target"] is not None:
                state = "met" if r["met"] else "MISSED"
                shown = f"{r['scenario']} {r['params']}"
                if r.get("kind") in ("absolute", "absolute_min"):
                    bound = "at most" if r["kind"] == "absolute" else "at least"
                    measured = f"{r['ours']:.2f} {r['metric']}"
                    print(f"target {state}: {shown} {measured} ({bound} {r['target']})")
                else:
                    print(f"target {state}: {shown} {r['ratio']:.2f}x (target {r['target']}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="each scenario briefly, no targets")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args()
    config = Config.for_smoke() if args.smoke else Config()
    asyncio.run(main_async(config, [s for s in args.only.split(",") if s]))


if __name__ == "__main__":
    main()

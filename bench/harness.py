"""What every benchmark shares: the processes under test, timing, results and the report.

Every scenario measures our store and its baseline in the same run, on the same PostgreSQL, so
the ratios hold on a noisy shared machine even when the absolute numbers do not.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from eventstore_server.config import Limits
from localpg import LocalPostgres
from tools.processes import ServerProcess, create_database, store_process

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    scenario: str
    variant: str  # "ours" or the baseline's name
    metric: str  # e.g. "appends/s", "p99 ms"
    value: float
    params: dict[str, Any] = field(default_factory=dict)
    runs: list[float] = field(default_factory=list)


@dataclass
class Config:
    smoke: bool = False
    repeat: int = 5
    duration: float = 2.0  # seconds per timed run

    @classmethod
    def for_smoke(cls) -> Config:
        return cls(smoke=True, repeat=1, duration=0.3)


class Bench:
    """The environment of one `make bench` run and the results collected in it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.results: list[Result] = []
        self.pg: LocalPostgres | None = None
        self.server_url = os.environ.get("DATABASE_URL", "")
        self._processes: list[ServerProcess] = []
        self.machine: dict[str, Any] = {}

    def __enter__(self) -> Bench:
        if not self.server_url:
            self.pg = LocalPostgres()
            self.pg.start()
            self.server_url = self.pg.dsn
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self._processes:
            p.stop()
        if self.pg is not None:
            self.pg.close()

    def database(self) -> str:
        """A new, empty database for one scenario."""
        return create_database(self.server_url)

    def store(self, database_url: str, *args: str) -> ServerProcess:
        server = store_process(database_url, *args).start()
        self._processes.append(server)
        return server

    def service(self, module: str, store: ServerProcess, database_url: str) -> ServerProcess:
        server = ServerProcess(
            module, ["--eventstore", store.address, "--database-url", database_url]
        )
        server.start()
        self._processes.append(server)
        return server

    def bare_server(self, page: int = Limits().read_page_size) -> ServerProcess:
        """The bare server, streaming `page` events a message (by default as many as the
        store's default page)."""
        server = ServerProcess("bench.bare_server", ["--page", str(page)])
        server.start(wait=False)
        self._processes.append(server)
        return server

    async def describe_machine(self) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            self.machine = {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "postgresql": await conn.fetchval("SHOW server_version"),
                "fsync": await conn.fetchval("SHOW fsync"),
                "synchronous_commit": await conn.fetchval("SHOW synchronous_commit"),
                "smoke": self.config.smoke,
                "repeat": self.config.repeat,
                "duration_s": self.config.duration,
            }
        finally:
            await conn.close()

    async def measure(
        self,
        scenario: str,
        variant: str,
        metric: str,
        run: Callable[[], Awaitable[float]],
        **params: Any,
    ) -> Result:
        """Run `run` once to warm up (connections, caches), then config.repeat times; record
        the median."""
        if not self.config.smoke:
            await run()
        runs = [await run() for _ in range(self.config.repeat)]
        return self._record(scenario, variant, metric, runs, params)

    def _record(
        self, scenario: str, variant: str, metric: str, runs: list[float], params: dict[str, Any]
    ) -> Result:
        """Keep the median of `runs` as a result, and show it."""
        result = Result(scenario, variant, metric, statistics.median(runs), params, runs)
        self.results.append(result)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        print(
            f"  {scenario:<28} {variant:<22} {shown:<24} {result.value:>12.1f} {metric}", flush=True
        )
        return result

    async def compare(
        self,
        scenario: str,
        metric: str,
        ours: tuple[str, Callable[[], Awaitable[float]]],
        baseline: tuple[str, Callable[[], Awaitable[float]]],
        **params: Any,
    ) -> tuple[Result, Result]:
        """Like two `measure` calls, but the runs alternate (ours, baseline, baseline, ours,
        ...): the load of a shared machine drifts within seconds, and measuring one side
        first and the other after would put that drift into the ratio."""
        pairs = (ours, baseline)
        if not self.config.smoke:
            for _, run in pairs:
                await run()
        runs: list[list[float]] = [[], []]
        for i in range(self.config.repeat):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for side in order:
                runs[side].append(await pairs[side][1]())
        return (
            self._record(scenario, ours[0], metric, runs[0], params),
            self._record(scenario, baseline[0], metric, runs[1], params),
        )

    def write(
        self, ratios: list[dict[str, Any]], path: Path = RESULTS, name: str | None = None
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        name = name or ("smoke" if self.config.smoke else "latest")
        document = {
            "machine": self.machine,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": [asdict(r) for r in self.results],
            "ratios": ratios,
        }
        (path / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
        (path / f"{name}.md").write_text(markdown(document))


def markdown(document: dict[str, Any]) -> str:
    m = document["machine"]
    lines = [
        f"Measured {document['when']} on {m['cores']} cores, PostgreSQL {m['postgresql']} "
        f"(fsync={m['fsync']}, synchronous_commit={m['synchronous_commit']}), "
        f"Python {m['python']}; "
        f"median of {m['repeat']} runs of {m['duration_s']} s each.",
        "",
        "| scenario | parameters | ours | baseline | baseline value | ratio | target | met |",
        "|---|---|---:|---|---:|---:|---:|:-:|",
    ]
    for r in document["ratios"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        target = r.get("target")
        met = "" if target is None else ("yes" if r["met"] else "**no**")
        if r.get("kind") in ("absolute", "absolute_min"):
            bound = "≤" if r["kind"] == "absolute" else "≥"
            shown_ratio, shown_target = "", f"{bound} {target} {r['metric']}"
        else:
            shown_ratio = f"{r['ratio']:.2f}x"
            shown_target = "" if target is None else f"≥ {target}x"
        lines.append(
            f"| {r['scenario']} | {params} | {r['ours']:.1f} {r['metric']} | {r['baseline']} | "
            f"{r['baseline_value']:.1f} | {shown_ratio} | {shown_target} | {met} |"
        )
    lines += [
        "",
        "All measurements:",
        "",
        "| scenario | variant | parameters | value | runs |",
        "|---|---|---|---:|---|",
    ]
    for r in document["results"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        runs = ", ".join(f"{x:.1f}" for x in r["runs"])
        value = f"{r['value']:.1f} {r['metric']}"
        lines.append(f"| {r['scenario']} | {r['variant']} | {params} | {value} | {runs} |")
    return "\n".join(lines) + "\n"


def ratio(
    ours: Result, baseline: Result, target: float | None = None, higher_is_better: bool = True
) -> dict[str, Any]:
    value = ours.value / baseline.value if higher_is_better else baseline.value / ours.value
    return {
        "scenario": ours.scenario,
        "params": ours.params,
        "metric": ours.metric,
        "ours": ours.value,
        "baseline": baseline.variant,
        "baseline_value": baseline.value,
        "ratio": value,
        "target": target,
        "met": None if target is None else value >= target,
    }


def absolute(
    ours: Result, at_most: float | None = None, at_least: float | None = None
) -> dict[str, Any]:
    """A target on an absolute value: at most (a latency) or at least (a rate) this."""
    target = at_most if at_most is not None else at_least
    assert target is not None, "a target: at_most or at_least"
    return {
        "kind": "absolute" if at_most is not None else "absolute_min",
        "scenario": ours.scenario,
        "params": ours.params,
        "metric": ours.metric,
        "ours": ours.value,
        "baseline": "target",
        "baseline_value": target,
        "ratio": ours.value / target if target else None,  # none to a target of zero
        "target": target,
        "met": ours.value <= target if at_most is not None else ours.value >= target,
    }


async def timed_rate(duration: float, workers: int, work: Callable[[int], Awaitable[int]]) -> float:
    """Items per second done by `workers` concurrent loops of `work(worker)` for `duration`."""
    done = 0
    deadline = time.monotonic() + duration

    async def loop(n: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            # Not `done += await ...`: that reads `done` before the await and loses the updates
            # other workers make meanwhile.
            finished = await work(n)
            done += finished

    start = time.monotonic()
    await asyncio.gather(*(loop(n) for n in range(workers)))
    return done / (time.monotonic() - start)

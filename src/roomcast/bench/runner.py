"""A benchmark suite: every scenario against every target, interleaved, in one run.

Each scenario runs on a freshly started server (so one scenario's memory does not
flatter the next), and the targets take turns within a scenario and repetition, so
that a noisy neighbour hurts both alike. A cluster (nodes and its own redis-server) is
started afresh the same way; it runs the fan-out scenarios only, as do targets read over
SSE (``--transport sse``: roomcast read over SSE next to roomcast read over WebSocket).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from roomcast.bench.pool import WorkerPool
from roomcast.bench.procstat import cpu_model
from roomcast.bench.scenarios import (
    FanoutConfig,
    FanoutResult,
    IdleResult,
    Report,
    run_fanout,
    run_idle,
)
from roomcast.bench.targets import Target, transport_of

Result = FanoutResult | IdleResult
Announce = Callable[[str, int, int], None]  # (scenario, repetition, repetitions)


@dataclass(frozen=True)
class SuiteConfig:
    subscribers: int = 1000
    rate: float = 20.0  # 0: no fixed-rate scenario
    full_speed: bool = True
    duration: float = 10.0
    warmup: float = 2.0
    idle: int = 10000  # 0: no idle scenario
    processes: int = 2
    repeat: int = 1
    window: int = 64
    max_lag: int = 40
    read_interval: float = 0.1  # full speed only: batched reads keep the load generator cheap
    nodes: int = 1  # >= 2: a cluster of that many nodes is a target too
    broker: str | None = None  # the cluster's redis:// URL (None: a redis-server of its own)
    placement: str = "remote"  # cluster: subscribers on nodes 2..N ("remote") or all ("spread")
    transport: str = "websocket"  # "sse": roomcast's subscribers over SSE, and over WebSocket

    def fanout(self, mode: str) -> FanoutConfig:
        return FanoutConfig(
            subscribers=self.subscribers,
            mode=mode,
            rate=self.rate,
            duration=self.duration,
            warmup=self.warmup,
            window=self.window,
            max_lag=self.max_lag,
            read_interval=self.read_interval if mode == "full" else 0.0,
        )

    @property
    def scenarios(self) -> list[str]:
        chosen = ["rate"] if self.rate > 0 else []
        chosen += ["full"] if self.full_speed else []
        return chosen + (["idle"] if self.idle > 0 else [])


@dataclass
class Suite:
    config: SuiteConfig
    targets: list[str]
    runs: dict[str, dict[str, list[Result]]] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def add(self, scenario: str, result: Result) -> None:
        self.runs.setdefault(scenario, {}).setdefault(result.target, []).append(result)

    def median(self, scenario: str, target: str, name: str) -> float | None:
        """The median of a numeric field over the repetitions (None if never measured)."""
        return self.median_of(scenario, target, lambda run: getattr(run, name))

    def median_of(
        self, scenario: str, target: str, value: Callable[[Any], float | None]
    ) -> float | None:
        """The median of ``value(run)`` over the repetitions (None if never measured)."""
        values = [value(run) for run in self.runs.get(scenario, {}).get(target, [])]
        numbers = [number for number in values if number is not None]
        return statistics.median(numbers) if numbers else None

    def process_names(self, scenario: str, target: str) -> list[str]:
        """The server processes measured separately (a cluster's nodes and redis)."""
        names: dict[str, None] = {}
        for run in self.runs.get(scenario, {}).get(target, []):
            names.update(dict.fromkeys(getattr(run, "process_cpu_percent", {})))
        return list(names)

    def total(self, scenario: str, target: str, name: str) -> int:
        return sum(getattr(run, name) for run in self.runs.get(scenario, {}).get(target, []))

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "config": asdict(self.config),
            "targets": self.targets,
            "runs": {
                scenario: {target: [asdict(run) for run in runs] for target, runs in by.items()}
                for scenario, by in self.runs.items()
            },
        }


async def run_suite(
    config: SuiteConfig, targets: Sequence[Target], report: Report, announce: Announce
) -> Suite:
    suite = Suite(config, [target.name for target in targets], machine=machine_info())
    pool = WorkerPool(config.processes).start()
    try:
        for scenario in config.scenarios:
            for repetition in range(config.repeat):
                for target in runs_scenario(targets, scenario):
                    announce(f"{target.name}: {scenario}", repetition + 1, config.repeat)
                    suite.add(scenario, await _run_one(scenario, target, pool, config, report))
    finally:
        pool.close()
    suite.machine["load_average_end"] = os.getloadavg()
    return suite


async def _run_one(
    scenario: str, target: Target, pool: WorkerPool, config: SuiteConfig, report: Report
) -> Result:
    await asyncio.to_thread(target.start)
    try:
        if scenario == "idle":
            return await run_idle(target, pool, config.idle, report)
        return await run_fanout(target, pool, config.fanout(scenario), report)
    finally:
        await asyncio.to_thread(target.stop)


def runs_scenario(targets: Sequence[Target], scenario: str) -> list[Target]:
    """The targets that run ``scenario``: a cluster runs no idle-connection scenario
    (memory per connection is a property of one node, measured on the one-node target),
    nor does an SSE target (an idle connection is a WebSocket that only said hello)."""
    return [t for t in targets if scenario != "idle" or _runs_idle(t)]


def _runs_idle(target: Target) -> bool:
    return not target.name.startswith("cluster") and transport_of(target) == "websocket"


def machine_info() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _node_version(),
        "roomcast": _source(),
        "load_average_start": os.getloadavg(),
    }


def _source() -> dict[str, Any]:
    """Where the measured roomcast comes from, and its commit if that is a git work tree
    (``dirty``: src/ differs from the commit)."""
    import roomcast

    where = Path(roomcast.__file__).resolve().parents[2]
    found: dict[str, Any] = {"path": str(where)}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(where), *args],
                check=False, capture_output=True, text=True, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is not None:
        found["commit"] = commit
        found["dirty"] = bool(git("status", "--porcelain", "--", "src"))
    return found


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        done = subprocess.run(
            [node, "--version"], check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None

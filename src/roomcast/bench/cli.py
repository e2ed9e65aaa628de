"""``roomcast bench``: fan-out and idle-connection benchmarks, roomcast against Node.js ws,
a cluster of roomcast nodes sharing Redis against one node, or roomcast's SSE fan-out
against its WebSocket fan-out."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from roomcast.bench.cluster import PLACEMENTS, ClusterTarget
from roomcast.bench.pool import BenchError
from roomcast.bench.procstat import raise_nofile
from roomcast.bench.report import render, sse_comparison
from roomcast.bench.runner import Suite, SuiteConfig, run_suite, runs_scenario
from roomcast.bench.targets import TRANSPORTS, NodeTarget, RoomcastTarget, Target, UrlTarget


@click.command()
@click.option(
    "--target",
    type=click.Choice(["roomcast", "node", "cluster", "both"]),
    default="both",
    show_default=True,
    help="Which server(s) to start and measure, one after the other, in the same run. "
    "both: roomcast and node; with --nodes 2 or more, one roomcast node and the cluster.",
)
@click.option(
    "--nodes",
    default=1,
    show_default=True,
    help="Nodes of the cluster target (roomcast serve --broker redis://...); 2 or more adds it.",
)
@click.option(
    "--broker",
    default=None,
    help="The cluster's redis:// URL (default: start a redis-server of its own, AOF on).",
)
@click.option(
    "--placement",
    type=click.Choice(PLACEMENTS),
    default="remote",
    show_default=True,
    help="Cluster: subscribers on nodes 2..N only, so that every delivery crosses nodes "
    "(remote), or spread over all nodes (spread); the publisher is on node 1.",
)
@click.option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default="websocket",
    show_default=True,
    help="How the subscribers read. sse: roomcast read over GET /sse and roomcast read over "
    "WebSocket take turns in the same run (the publisher uses WebSocket; no Node baseline).",
)
@click.option("--subscribers", default=1000, show_default=True, help="Subscribers of the room.")
@click.option(
    "--rate",
    default=20.0,
    show_default=True,
    help="Fixed-rate scenario: messages/s (deliveries/s = rate x subscribers); 0: skip it.",
)
@click.option(
    "--full-speed/--no-full-speed",
    default=True,
    show_default=True,
    help="Full-speed scenario: publish as fast as acks and the slowest subscriber allow.",
)
@click.option("--duration", default=10.0, show_default=True, help="Measured seconds per run.")
@click.option("--warmup", default=2.0, show_default=True, help="Unmeasured seconds before.")
@click.option("--idle", default=10000, show_default=True, help="Idle connections to open; 0: skip.")
@click.option(
    "--processes",
    default=max(2, os.cpu_count() or 2),
    show_default="number of CPUs, at least 2",
    help="Load generator processes sharing the connections.",
)
@click.option("--repeat", default=1, show_default=True, help="Runs of each scenario (medians).")
@click.option("--window", default=64, show_default=True, help="Full speed: publishes in flight.")
@click.option(
    "--max-lag",
    default=40,
    show_default=True,
    help="Full speed: messages the publisher may be ahead of the slowest subscriber.",
)
@click.option(
    "--read-interval",
    default=0.1,
    show_default=True,
    help="Full speed: subscribers read their sockets every this many seconds, many frames "
    "per read, so that the load generator costs less than the server (adds latency).",
)
@click.option("--url", default=None, help="Bench this running server (ws://host:port/ws).")
@click.option("--pid", type=int, default=None, help="With --url: the server's pid, to measure.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Also write every run's numbers as JSON to this file ('-': stdout).",
)
@click.option("--check", is_flag=True, help="Exit with status 1 if a target is missed.")
def bench(
    target: str,
    url: str | None,
    pid: int | None,
    json_path: Path | None,
    check: bool,
    **options: Any,
) -> None:
    """Measure fan-out (fixed rate and full speed) and idle connections.

    By default starts roomcast (--history memory --publish-rate 0) and the Node.js ws
    baseline (benchmarks/node_ws_server.js; run `npm install` first) on free ports,
    runs every scenario against each, and prints roomcast/node ratios. With --transport
    sse, roomcast read over SSE takes turns with roomcast read over WebSocket instead,
    and the report gives SSE/WebSocket ratios.
    """
    config = SuiteConfig(**options)
    try:
        targets = _targets(target, url, pid, config)
    except BenchError as exc:
        raise click.UsageError(str(exc)) from exc
    raise_nofile()  # the servers started from here inherit it
    console = Console(stderr=True)
    try:
        suite = _run(config, targets, console)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    goals = render(suite, Console(stderr=json_path == Path("-")))
    if json_path is not None:
        document = {**suite.to_json(), "goals": [goal.as_dict() for goal in goals]}
        if suite.config.transport == "sse":
            document["sse_vs_websocket"] = sse_comparison(suite)
        document["command"] = sys.argv
        text = json.dumps(document, indent=2)
        if json_path == Path("-"):
            click.echo(text)
        else:
            json_path.write_text(text + "\n")
    if check and any(goal.met is False for goal in goals):
        sys.exit(1)


def _targets(name: str, url: str | None, pid: int | None, config: SuiteConfig) -> list[Target]:
    if config.transport == "sse":
        return _sse_targets(name, url, pid, config)
    if url is not None:
        return [UrlTarget(url, pid, name if name != "both" else "url")]
    if name == "cluster" or (name == "both" and config.nodes >= 2):
        cluster = ClusterTarget(config.nodes, config.broker, config.placement)
        return [RoomcastTarget(), cluster] if name == "both" else [cluster]
    chosen: list[Target] = []
    if name in {"roomcast", "both"}:
        chosen.append(RoomcastTarget())
    if name in {"node", "both"}:
        chosen.append(NodeTarget())
    return chosen


def _sse_targets(name: str, url: str | None, pid: int | None, config: SuiteConfig) -> list[Target]:
    """roomcast read over WebSocket, then over SSE (the same server, if it is ``url``)."""
    if name in {"node", "cluster"} or config.nodes >= 2:
        raise BenchError(
            "--transport sse compares roomcast's SSE with its WebSocket on one node: "
            "it takes no Node.js baseline (--target node) and no cluster (--nodes)"
        )
    if url is not None:
        label = name if name != "both" else "url"
        return [UrlTarget(url, pid, label), UrlTarget(url, pid, label, transport="sse")]
    return [RoomcastTarget(), RoomcastTarget(transport="sse")]


def _run(config: SuiteConfig, targets: list[Target], console: Console) -> Suite:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, refresh_per_second=4) as progress:
        overall = progress.add_task("suite", total=_steps(config, targets))
        current: TaskID = progress.add_task("", total=1)
        label = [""]

        def announce(what: str, repetition: int, repetitions: int) -> None:
            if label[0]:
                progress.advance(overall)
            label[0] = f"{what} ({repetition}/{repetitions})"

        def report(what: str, done: float, total: float) -> None:
            progress.update(current, description=f"{label[0]}: {what}", completed=done, total=total)

        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            return asyncio.run(run_suite(config, targets, report, announce))
        suite = uvloop.run(run_suite(config, targets, report, announce))
        progress.update(overall, completed=_steps(config, targets))
        return suite


def _steps(config: SuiteConfig, targets: list[Target]) -> int:
    runs = sum(len(runs_scenario(targets, scenario)) for scenario in config.scenarios)
    return runs * config.repeat

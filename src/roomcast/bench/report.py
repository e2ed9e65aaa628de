"""The suite's tables (roomcast, node, a cluster, roomcast over SSE, their ratios) and the
targets of the issues."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from roomcast.bench.runner import Suite

# (field, label, digits) of the rows of each scenario's table; medians over repetitions.
FANOUT_ROWS = [
    ("deliveries_per_s", "deliveries/s", 0),
    ("latency_p50_ms", "latency p50 (ms)", 2),
    ("latency_p99_ms", "latency p99 (ms)", 2),
    ("server_cpu_us_per_delivery", "server CPU per delivery (µs)", 2),
    ("server_user_us_per_delivery", "  of which user (µs)", 2),
    ("server_system_us_per_delivery", "  of which system (µs)", 2),
    ("server_cpu_percent", "server CPU (% of a core)", 0),
    ("server_rss_mib", "server RSS (MiB)", 1),
    ("server_wait_percent", "server waiting for a CPU (% of time)", 0),
    ("loadgen_cpu_percent", "load generator CPU (% of a core)", 0),
    ("cpu_pressure_percent", "machine CPU pressure (% of time)", 0),
]
IDLE_ROWS = [
    ("connections", "connections open", 0),
    ("rss_before_mib", "server RSS before (MiB)", 1),
    ("rss_after_mib", "server RSS after (MiB)", 1),
    ("kib_per_connection", "server RSS per connection (KiB)", 2),
    ("connect_seconds", "time to connect (s)", 1),
]
COUNTED = ["lost", "duplicated", "out_of_order", "publish_errors"]
TITLES = {"rate": "fixed rate", "full": "full speed", "idle": "idle connections"}
RATIOS = [("roomcast", "node"), ("cluster", "roomcast")]  # columns, when both ran
SSE_SUFFIX = "-sse"  # an SSE target is named after its WebSocket twin: roomcast-sse
# (scenario, field, label) of the SSE/WebSocket comparison
SSE_ROWS = [
    ("full", "deliveries_per_s", "deliveries/s at full speed"),
    ("full", "server_cpu_us_per_delivery", "server CPU per delivery at full speed (µs)"),
    ("rate", "server_cpu_us_per_delivery", "server CPU per delivery at {rate} msg/s (µs)"),
    ("rate", "latency_p50_ms", "latency p50 at {rate} msg/s (ms)"),
    ("rate", "latency_p99_ms", "latency p99 at {rate} msg/s (ms)"),
]
CLUSTER_P99_MS = 50.0
CLUSTER_SPEED = 0.50  # cluster deliveries/s at full speed, at least this share of one node's


@dataclass
class Goal:
    name: str
    measured: float | None
    goal: str
    met: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "goal": self.goal, "met": self.met}


def ratio(
    suite: Suite, scenario: str, name: str, mine: str = "roomcast", theirs: str = "node"
) -> float | None:
    numerator = suite.median(scenario, mine, name)
    denominator = suite.median(scenario, theirs, name)
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def goals(suite: Suite) -> list[Goal]:
    """The targets of the issues that this run measured."""
    config = suite.config
    result: list[Goal] = []
    cpu = ratio(suite, "rate", "server_cpu_us_per_delivery")
    versus_node = {"roomcast", "node"} <= set(suite.targets)
    if "rate" in suite.runs and versus_node:
        result.append(
            _goal(
                f"server CPU per delivery at {config.rate:g} msg/s x {config.subscribers}, "
                "roomcast/node",
                cpu,
                "<= 0.70",
                lambda value: value <= 0.70,
            )
        )
    if "full" in suite.runs and versus_node:
        speed = ratio(suite, "full", "deliveries_per_s")
        result.append(
            _goal("deliveries/s at full speed, roomcast/node", speed, ">= 1.50", lambda v: v >= 1.5)
        )
    if "roomcast" in suite.runs.get("idle", {}):
        idle = suite.median("idle", "roomcast", "kib_per_connection")
        result.append(
            _goal(
                f"roomcast RSS per idle connection ({config.idle} open), KiB",
                idle,
                "< 16",
                lambda value: value < 16,
            )
        )
    if "cluster" in suite.targets:
        result += _cluster_goals(suite)
    result.append(_correctness(suite))
    return result


def _cluster_goals(suite: Suite) -> list[Goal]:
    config = suite.config
    result: list[Goal] = []
    if "full" in suite.runs:
        speed = ratio(suite, "full", "deliveries_per_s", "cluster", "roomcast")
        result.append(
            _goal(
                f"deliveries/s at full speed, cluster of {config.nodes} "
                f"({cluster_placement(suite, 'full')}) "
                "/ one node",
                speed,
                f">= {CLUSTER_SPEED:.2f}",
                lambda value: value >= CLUSTER_SPEED,
            )
        )
    if "rate" in suite.runs:
        p99 = suite.median("rate", "cluster", "latency_p99_ms")
        result.append(
            _goal(
                f"latency p99 at {config.rate:g} msg/s x {config.subscribers}, cluster of "
                f"{config.nodes} ({cluster_placement(suite, 'rate')}), ms",
                p99,
                f"< {CLUSTER_P99_MS:g}",
                lambda value: value < CLUSTER_P99_MS,
            )
        )
    return result


def _goal(name: str, value: float | None, goal: str, test: Callable[[float], bool]) -> Goal:
    return Goal(name, value, goal, None if value is None else test(value))


def _correctness(suite: Suite) -> Goal:
    bad = sum(_bad_deliveries(suite, target) for target in suite.targets)
    measured = any(scenario in suite.runs for scenario in ("rate", "full"))
    return Goal(
        "lost + duplicated + out of order + undrained, every run",
        float(bad) if measured else None,
        "== 0",
        (bad == 0) if measured else None,
    )


def _fanout_runs(suite: Suite, scenario: str, target: str) -> list[Any]:
    return list(suite.runs.get(scenario, {}).get(target, []))


def scenario_table(suite: Suite, scenario: str) -> Table:
    config = suite.config
    targets = [target for target in suite.targets if target in suite.runs.get(scenario, {})]
    ratios = [(a, b) for a, b in [*RATIOS, *sse_pairs(targets)] if {a, b} <= set(targets)]
    if scenario == "idle":
        title = f"{TITLES[scenario]}: {config.idle}"
    else:
        detail = (
            f"{config.rate:g} msg/s"
            if scenario == "rate"
            else f"window {config.window}, max lag {config.max_lag}, "
            f"reads every {config.read_interval:g} s"
        )
        title = f"{TITLES[scenario]} ({detail}), {config.subscribers} subscribers, one room"
        if "cluster" in targets:
            placement = cluster_placement(suite, scenario)
            title += f"; cluster: {config.nodes} nodes, {placement_text(placement)}"
        for sse, _ in sse_pairs(targets):
            title += f"; {sse}: subscribers read GET /sse (the publisher uses WebSocket)"
    table = Table(title=title + f", median of {config.repeat}")
    table.add_column("metric")
    for target in targets:
        table.add_column(target, justify="right")
    for mine, theirs in ratios:
        table.add_column(f"{mine}/{theirs}", justify="right")
    rows = IDLE_ROWS if scenario == "idle" else FANOUT_ROWS
    for name, label, digits in rows:
        cells = [_number(suite.median(scenario, target, name), digits) for target in targets]
        cells += [_number(ratio(suite, scenario, name, *pair), 2) for pair in ratios]
        table.add_row(label, *cells)
    if scenario == "idle":
        return table
    for process in _processes(suite, scenario, targets):
        cells = [
            _number(suite.median_of(scenario, target, _process_cpu(process)), 0)
            for target in targets
        ]
        table.add_row(f"  CPU of {process} (% of a core)", *cells, *([""] * len(ratios)))
    for name in COUNTED:
        cells = [str(suite.total(scenario, target, name)) for target in targets]
        table.add_row(name.replace("_", " ") + " (sum)", *cells, *([""] * len(ratios)))
    return table


def sse_pairs(targets: list[str]) -> list[tuple[str, str]]:
    """(SSE target, its WebSocket twin) for every SSE target whose twin ran too."""
    return [
        (name, name.removesuffix(SSE_SUFFIX))
        for name in targets
        if name.endswith(SSE_SUFFIX) and name.removesuffix(SSE_SUFFIX) in targets
    ]


def sse_comparison(suite: Suite) -> list[dict[str, Any]]:
    """roomcast's SSE figures next to its WebSocket figures of the same run, and their
    ratios (SSE/WebSocket, of the medians); with each one's lost + duplicated + out of
    order + undrained runs."""
    rows: list[dict[str, Any]] = []
    for sse, websocket in sse_pairs(suite.targets):
        for scenario, name, label in SSE_ROWS:
            if scenario in suite.runs:
                rows.append(
                    {
                        "name": label.format(rate=f"{suite.config.rate:g}"),
                        "websocket": suite.median(scenario, websocket, name),
                        "sse": suite.median(scenario, sse, name),
                        "ratio": ratio(suite, scenario, name, sse, websocket),
                    }
                )
        bad = [_bad_deliveries(suite, target) for target in (websocket, sse)]
        rows.append(
            {"name": "lost + duplicated + out of order + undrained, every run",
             "websocket": bad[0], "sse": bad[1], "ratio": None}
        )  # fmt: skip
    return rows


def sse_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="SSE next to WebSocket (roomcast, same run)")
    for column in ("metric", "websocket", "sse", "sse/websocket"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        digits = 0 if row["name"].startswith(("deliveries", "lost")) else 2
        cells = [_number(row[key], digits) for key in ("websocket", "sse")]
        table.add_row(row["name"], *cells, _number(row["ratio"], 2))
    return table


def _bad_deliveries(suite: Suite, target: str) -> int:
    bad = 0
    for scenario in ("rate", "full"):
        for field in ("lost", "duplicated", "out_of_order"):
            bad += suite.total(scenario, target, field)
        bad += sum(not run.drained for run in _fanout_runs(suite, scenario, target))
    return bad


def cluster_placement(suite: Suite, scenario: str) -> str:
    """Where the cluster's subscribers were ("remote" or "spread"), as its runs record."""
    runs = suite.runs.get(scenario, {}).get("cluster", [])
    return str(getattr(runs[0], "placement", "")) if runs else suite.config.placement


def placement_text(placement: str) -> str:
    if placement == "remote":
        return "publisher on node 1, every subscriber on nodes 2..N (all deliveries cross nodes)"
    return "publisher on node 1, subscribers spread over all nodes"


def _processes(suite: Suite, scenario: str, targets: list[str]) -> list[str]:
    """Processes to show one by one: those of targets with more than one."""
    names: dict[str, None] = {}
    for target in targets:
        found = suite.process_names(scenario, target)
        if len(found) > 1:
            names.update(dict.fromkeys(found))
    return list(names)


def _process_cpu(name: str) -> Callable[[Any], float | None]:
    def value(run: Any) -> float | None:
        found: float | None = getattr(run, "process_cpu_percent", {}).get(name)
        return found

    return value


def goals_table(items: list[Goal]) -> Table:
    table = Table(title="targets")
    for column in ("target", "measured", "goal", "met"):
        table.add_column(column)
    for item in items:
        met = "n/a" if item.met is None else ("yes" if item.met else "NO")
        table.add_row(item.name, _number(item.measured, 2), item.goal, met)
    return table


def render(suite: Suite, console: Console) -> list[Goal]:
    machine = suite.machine
    console.print(
        f"machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), "
        f"node {machine.get('node')}, Python {machine.get('python')}, load average "
        f"{_load(machine.get('load_average_start'))} -> {_load(machine.get('load_average_end'))}"
    )
    for scenario in suite.runs:
        console.print(scenario_table(suite, scenario))
    comparison = sse_comparison(suite)
    if comparison:
        console.print(sse_table(comparison))
    items = goals(suite)
    console.print(goals_table(items))
    return items


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _load(value: Any) -> str:
    if not value:
        return "?"
    return "/".join(f"{number:.1f}" for number in value)

"""Render the JSON of ``roomcast bench --json FILE`` as the Markdown tables of
docs/performance.md.

    python benchmarks/markdown.py results.json > tables.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

FANOUT = [
    ("deliveries_per_s", "deliveries/s", 0),
    ("latency_p50_ms", "latency p50 (ms)", 2),
    ("latency_p99_ms", "latency p99 (ms)", 2),
    ("server_cpu_us_per_delivery", "server CPU per delivery (µs)", 2),
    ("server_user_us_per_delivery", "&nbsp;&nbsp;of which user (µs)", 2),
    ("server_system_us_per_delivery", "&nbsp;&nbsp;of which system (µs)", 2),
    ("server_cpu_percent", "server CPU (% of a core)", 0),
    ("server_wait_percent", "server waiting for a CPU (% of time)", 0),
    ("server_rss_mib", "server RSS (MiB)", 1),
    ("loadgen_cpu_percent", "load generator CPU (% of a core)", 0),
    ("cpu_pressure_percent", "machine CPU pressure (% of time)", 0),
]
COUNTS = ["lost", "duplicated", "out_of_order", "publish_errors"]
IDLE = [
    ("connections", "connections open", 0),
    ("rss_before_mib", "server RSS before (MiB)", 1),
    ("rss_after_mib", "server RSS after (MiB)", 1),
    ("kib_per_connection", "server RSS per connection (KiB)", 2),
    ("connect_seconds", "time to connect them (s)", 1),
]
TITLES = {"rate": "Fixed rate", "full": "Full speed", "idle": "Idle connections"}
RATIOS = [("roomcast", "node"), ("cluster", "roomcast")]  # columns, when both ran
PLACEMENTS = {
    "remote": "the publisher on node 1, every subscriber on nodes 2..N",
    "spread": "the publisher on node 1, the subscribers spread over all nodes",
}


def median(runs: list[dict[str, Any]], name: str) -> float | None:
    values = [run[name] for run in runs if run.get(name) is not None]
    return statistics.median(values) if values else None


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def load(value: list[float] | None) -> str:
    return "?" if not value else " / ".join(f"{number:.2f}" for number in value)


def source(machine: dict[str, Any]) -> str:
    found = machine.get("roomcast") or {}
    if "commit" not in found:
        return ""
    return f", roomcast {found['commit']}{' (modified)' if found.get('dirty') else ''}"


def scenario_table(document: dict[str, Any], scenario: str) -> list[str]:
    by_target: dict[str, list[dict[str, Any]]] = document["runs"][scenario]
    targets = [target for target in document["targets"] if target in by_target]
    ratios = [(a, b) for a, b in RATIOS if {a, b} <= set(targets)]
    header = ["metric", *targets, *(f"{a}/{b}" for a, b in ratios)]
    lines = [f"### {TITLES[scenario]}", ""]
    if "cluster" in targets:
        run = by_target["cluster"][0]
        lines += [f"Cluster: {run['nodes']} nodes, {PLACEMENTS[run['placement']]}.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for name, label, digits in IDLE if scenario == "idle" else FANOUT:
        values = {target: median(by_target[target], name) for target in targets}
        cells = [number(values[target], digits) for target in targets]
        for mine, theirs in ratios:
            top, bottom = values[mine], values[theirs]
            cells.append(number(top / bottom if top is not None and bottom else None, 2))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if scenario == "idle":
        return [*lines, ""]
    blanks = [""] * len(ratios)
    for process in processes(by_target, targets):
        cells = [number(process_median(by_target[target], process), 0) for target in targets]
        label = f"&nbsp;&nbsp;CPU of {process} (% of a core)"
        lines.append(f"| {label} | " + " | ".join([*cells, *blanks]) + " |")
    for name in COUNTS:
        totals = [str(sum(run[name] for run in by_target[target])) for target in targets]
        label = name.replace("_", " ") + " (sum of runs)"
        lines.append(f"| {label} | " + " | ".join([*totals, *blanks]) + " |")
    return [*lines, ""]


def processes(by_target: dict[str, list[dict[str, Any]]], targets: list[str]) -> list[str]:
    """The server processes of targets that have more than one (a cluster)."""
    names: dict[str, None] = {}
    for target in targets:
        found: dict[str, None] = {}
        for run in by_target[target]:
            found.update(dict.fromkeys(run.get("process_cpu_percent", {})))
        if len(found) > 1:
            names.update(found)
    return list(names)


def process_median(runs: list[dict[str, Any]], name: str) -> float | None:
    values = [run.get("process_cpu_percent", {}).get(name) for run in runs]
    numbers = [value for value in values if value is not None]
    return statistics.median(numbers) if numbers else None


def goals_table(document: dict[str, Any]) -> list[str]:
    lines = ["### Targets", "", "| target | measured | goal | met |", "|---|---:|---|---|"]
    for goal in document.get("goals", []):
        met = "n/a" if goal["met"] is None else ("yes" if goal["met"] else "**no**")
        lines.append(f"| {goal['name']} | {number(goal['measured'], 2)} | {goal['goal']} | {met} |")
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    config, machine = document["config"], document["machine"]
    lines = [
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), kernel {machine['kernel']}, "
        f"Python {machine['python']}, Node.js {machine['node']}{source(machine)}; load average "
        f"{load(machine.get('load_average_start'))} at the start, "
        f"{load(machine.get('load_average_end'))} at the end. {config['subscribers']} subscribers, "
        f"{config['duration']:g} s measured after {config['warmup']:g} s of warm-up, "
        f"median of {config['repeat']} run(s).",
        "",
    ]
    for scenario in document["runs"]:
        lines += scenario_table(document, scenario)
    return "\n".join(lines + goals_table(document))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(json.loads(Path(argv[1]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

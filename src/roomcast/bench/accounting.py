"""Loss, duplicates and latency percentiles, from what the subscribers recorded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Run = tuple[int, int]  # first and last offset of consecutive offsets received in order
SKETCH_POINTS = 4000


@dataclass
class Tally:
    """Deliveries of offsets ``first..last`` (the published ones) to some subscribers."""

    received: int = 0  # deliveries of an offset in the range, duplicates included
    lost: int = 0  # (subscriber, offset) pairs never delivered
    duplicated: int = 0  # deliveries beyond the first of the same offset
    out_of_order: int = 0  # times an offset arrived after a higher one
    foreign: int = 0  # deliveries of offsets outside the range

    def add(self, other: Tally) -> None:
        self.received += other.received
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.out_of_order += other.out_of_order
        self.foreign += other.foreign


def tally(runs: Sequence[Run], first: int, last: int) -> Tally:
    """Account for one subscriber, whose offsets arrived as ``runs`` in this order:
    every offset of ``first..last`` is expected exactly once."""
    result = Tally()
    previous_last = 0
    clipped: list[Run] = []
    for start, end in runs:
        if start <= previous_last:
            result.out_of_order += 1
        previous_last = end
        low, high = max(start, first), min(end, last)
        result.foreign += (end - start + 1) - max(0, high - low + 1)
        if low <= high:
            clipped.append((low, high))
            result.received += high - low + 1
    covered = _union_size(clipped)
    result.lost = (last - first + 1) - covered if last >= first else 0
    result.duplicated = result.received - covered
    return result


def _union_size(runs: list[Run]) -> int:
    size, reach = 0, None
    for start, end in sorted(runs):
        if reach is None or start > reach:
            size += end - start + 1
            reach = end
        elif end > reach:
            size += end - reach
            reach = end
    return size


def sketch(values: Iterable[int], points: int = SKETCH_POINTS) -> tuple[int, list[int]]:
    """(count, values at ``points`` evenly spaced ranks) of ``values``: mergeable quantiles."""
    ordered = sorted(values)
    count = len(ordered)
    if count <= points:
        return count, ordered
    step = (count - 1) / (points - 1)
    return count, [ordered[round(index * step)] for index in range(points)]


def merged_percentiles(
    sketches: Sequence[tuple[int, list[int]]], quantiles: Sequence[float]
) -> list[float | None]:
    """Percentiles of the union of the sketched samples (each point weighs count/len)."""
    weighted = sorted(
        (value, count / len(points)) for count, points in sketches if points for value in points
    )
    total = sum(weight for _, weight in weighted)
    if total == 0:
        return [None for _ in quantiles]
    results: list[float | None] = []
    for quantile in quantiles:
        goal, seen = quantile * total, 0.0
        chosen = weighted[-1][0]
        for value, weight in weighted:
            seen += weight
            if seen >= goal:
                chosen = value
                break
        results.append(float(chosen))
    return results

"""The bench machinery against real servers, small and short: correctness, not speed.

No timing is asserted: only that every published message reached every subscriber
exactly once and in order, and that the report holds sane numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from roomcast.bench.accounting import merged_percentiles, sketch, tally
from roomcast.bench.cluster import ClusterTarget
from roomcast.bench.pool import WorkerPool
from roomcast.bench.scenarios import FanoutConfig, FanoutResult, run_fanout, run_idle
from roomcast.bench.targets import NodeTarget, RoomcastTarget, Target, default_node_script

SUBSCRIBERS = 20


def quiet(what: str, done: float, total: float) -> None:
    return None


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(2).start()
    yield workers
    workers.close()


def node_available() -> bool:
    script = default_node_script()
    return shutil.which("node") is not None and (script.parents[1] / "node_modules/ws").exists()


TARGETS = [
    pytest.param(RoomcastTarget, id="roomcast"),
    pytest.param(
        NodeTarget,
        id="node",
        marks=pytest.mark.skipif(not node_available(), reason="node or `npm install` missing"),
    ),
]


def check_fanout(result: FanoutResult, config: FanoutConfig) -> None:
    assert result.lost == 0
    assert result.duplicated == 0
    assert result.out_of_order == 0
    assert result.foreign == 0
    assert result.publish_errors == 0
    assert result.drained
    assert result.published > 0
    assert result.deliveries_per_s > 0
    assert result.latency_p50_ms is not None and result.latency_p99_ms is not None
    assert 0 < result.latency_p50_ms <= result.latency_p99_ms
    assert result.server_cpu_us_per_delivery is not None and result.server_cpu_percent is not None
    assert result.server_rss_mib is not None and result.server_rss_mib > 1
    assert result.subscribers == config.subscribers


@pytest.mark.parametrize("factory", TARGETS)
async def test_fanout_delivers_everything_once(
    pool: WorkerPool, factory: type[RoomcastTarget | NodeTarget]
) -> None:
    target: Target = factory()
    target.start()
    try:
        for mode in ("rate", "full"):
            config = FanoutConfig(
                subscribers=SUBSCRIBERS, mode=mode, rate=50, duration=0.6, warmup=0.2
            )
            result = await run_fanout(target, pool, config, quiet)
            check_fanout(result, config)
            assert result.target == target.name
        idle = await run_idle(target, pool, 40, quiet)
    finally:
        target.stop()
    assert idle.connections == 40 and idle.failed == 0
    assert idle.kib_per_connection is not None


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_two_node_cluster_delivers_everything_once(pool: WorkerPool) -> None:
    """Two nodes and a redis-server of the bench's own; subscribers on both nodes, so
    deliveries are both local to the publisher's node and across nodes."""
    target = ClusterTarget(nodes=2, placement="spread")
    target.start()
    try:
        assert len(set(target.subscriber_urls)) == 2
        assert target.ws_url == target.subscriber_urls[0]
        for mode in ("rate", "full"):
            config = FanoutConfig(
                subscribers=SUBSCRIBERS, mode=mode, rate=50, duration=0.6, warmup=0.2
            )
            result = await run_fanout(target, pool, config, quiet)
            check_fanout(result, config)
            assert (result.target, result.nodes, result.placement) == ("cluster", 2, "spread")
            assert set(result.process_cpu_percent) == {"node1", "node2", "redis"}
    finally:
        target.stop()
    assert target.processes == {}


def test_tally_counts_gaps_repeats_and_reordering() -> None:
    assert tally([(1, 10)], 1, 10).lost == 0
    broken = tally([(1, 4), (6, 10), (3, 3), (11, 12)], 1, 10)
    assert broken.lost == 1  # 5
    assert broken.duplicated == 1  # 3 twice
    assert broken.out_of_order == 1  # 3 after 10
    assert broken.foreign == 2  # 11, 12
    assert tally([], 5, 7).lost == 3


def test_merged_percentiles() -> None:
    halves = [sketch(range(0, 500), points=100), sketch(range(500, 1000), points=100)]
    p50, p99 = merged_percentiles(halves, [0.5, 0.99])
    assert p50 is not None and 480 <= p50 <= 520
    assert p99 is not None and 975 <= p99 <= 999
    assert merged_percentiles([], [0.5]) == [None]


def test_cluster_options_choose_the_targets() -> None:
    from roomcast.bench.cli import _targets
    from roomcast.bench.runner import SuiteConfig, runs_scenario

    config = SuiteConfig(nodes=2, placement="spread")
    both = _targets("both", None, None, config)
    assert [target.name for target in both] == ["roomcast", "cluster"]
    cluster = both[1]
    assert isinstance(cluster, ClusterTarget)
    assert (cluster.nodes, cluster.placement, cluster.broker) == (2, "spread", None)
    assert [t.name for t in _targets("both", None, None, SuiteConfig())] == ["roomcast", "node"]
    assert [t.name for t in _targets("cluster", None, None, config)] == ["cluster"]
    assert [t.name for t in runs_scenario(both, "idle")] == ["roomcast"]
    assert ClusterTarget(nodes=1).placement == "spread"  # one node: nothing is remote

"""``roomcast bench --transport sse``: the lean SSE client, and the whole command, small
and short (a few subscribers, under a second of publishing per run): correctness and the
shape of the report, not speed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from roomcast.bench.cli import bench
from roomcast.bench.sseclient import Dechunker, SseSubscriber, sse_url
from roomcast.bench.wsclient import Recorder

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
WELCOME = b'event: welcome\ndata: {"type":"welcome","session":"s1"}\nid: \n\n'
OK = b'event: ok\ndata: {"type":"ok","room":"r","epoch":"e1","offset":4}\nid: r~e1~4\n\n'


def message(offset: int, sent: int, cursor_offset: int | None = None) -> bytes:
    data = (
        b'{"type":"message","room":"r","epoch":"e1","offset":%d,"data":{"t":%d,"seq":%d},'
        b'"from":null,"ts":1}' % (offset, sent, offset)
    )
    at = offset if cursor_offset is None else cursor_offset
    return b"event: message\ndata: %b\nid: r~e1~%d\n\n" % (data, at)


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


def stream() -> bytes:
    """Head, welcome and ok in one chunk, then offsets 5..9 (8 twice, its second copy
    with a cursor that does not match: not a delivery), a ping, and the last chunk."""
    events = [message(5, 1), message(6, 2) + message(7, 3), b": ping\n\n"]
    events += [message(8, 4) + message(8, 4, cursor_offset=3), message(9, 5)]
    return HEAD + chunk(WELCOME + OK) + b"".join(map(chunk, events)) + b"0\r\n\r\n"


async def test_sse_subscriber_reads_a_stream_cut_anywhere() -> None:
    data = stream()
    splits = [[data[:cut], data[cut:]] for cut in range(len(data))]  # cut anywhere
    splits.append([data[at : at + 1] for at in range(len(data))])  # byte by byte
    for pieces in splits:
        recorder = Recorder()
        recorder.recording = True
        subscriber = SseSubscriber("http://127.0.0.1:1/sse?rooms=r", recorder)
        for piece in pieces:
            subscriber.data_received(piece)
        assert subscriber.opened.done() and subscriber.joined.done()
        assert recorder.delivered == 5, pieces
        assert subscriber.all_runs() == [(5, 9)], pieces
        assert len(recorder.latencies) == 5


def test_dechunker_and_urls() -> None:
    dechunker = Dechunker()
    assert dechunker.feed(b"3;ext=1\r\nabc\r\n2\r") == b"abc"
    assert dechunker.feed(b"\nde\r\n0\r\n\r\n") == b"de"
    assert dechunker.ended
    assert sse_url("ws://127.0.0.1:8000/ws", "bench-1") == "http://127.0.0.1:8000/sse?rooms=bench-1"


def test_bench_transport_sse_end_to_end(tmp_path: Path) -> None:
    """The command as a user runs it: roomcast read over WebSocket and over SSE, both
    scenarios, the report's SSE/WebSocket figures, and zero loss."""
    out = tmp_path / "sse.json"
    options = "--transport sse --subscribers 6 --rate 50 --duration 0.6 --warmup 0.2"
    args = [*options.split(), "--idle", "0", "--processes", "2", "--json", str(out)]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["targets"] == ["roomcast", "roomcast-sse"]
    for scenario in ("rate", "full"):
        runs = document["runs"][scenario]
        assert [run["transport"] for run in runs["roomcast-sse"]] == ["sse"]
        assert [run["transport"] for run in runs["roomcast"]] == ["websocket"]
        for run in (*runs["roomcast"], *runs["roomcast-sse"]):
            assert run["published"] > 0 and run["drained"] and run["publish_errors"] == 0
            assert (run["lost"], run["duplicated"], run["out_of_order"]) == (0, 0, 0)
    rows = {row["name"]: row for row in document["sse_vs_websocket"]}
    for name in ("full speed", "50 msg/s"):  # CPU is in 10 ms ticks: maybe 0 in 0.6 s
        cpu = rows[f"server CPU per delivery at {name} (µs)"]
        assert cpu["websocket"] is not None and cpu["sse"] is not None
    for name in (
        "deliveries/s at full speed",
        "latency p50 at 50 msg/s (ms)",
        "latency p99 at 50 msg/s (ms)",
    ):
        assert rows[name]["websocket"] > 0 and rows[name]["sse"] > 0, name
        assert rows[name]["ratio"] > 0, name
    lost = rows["lost + duplicated + out of order + undrained, every run"]
    assert (lost["websocket"], lost["sse"]) == (0, 0)
    assert [goal["met"] for goal in document["goals"]] == [True]  # zero loss; no node goals


def test_bench_transport_sse_takes_no_node_baseline() -> None:
    result = CliRunner().invoke(bench, ["--transport", "sse", "--target", "node"])
    assert result.exit_code == 2
    assert "no Node.js baseline" in result.output

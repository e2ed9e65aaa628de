"""``roomcast demo ticker``: the market it simulates, and its feed through the HTTP API of
a real server (published, refused, a server that is down for a while)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from conftest import ServerFactory

from roomcast.client.http import ApiError
from roomcast.demo import LEVELS, Ticker, run_ticker
from roomcast.testing import ServerProcess, free_port

AUTH = {"Authorization": "Bearer test-key"}


async def history(server: ServerProcess, room: str, limit: int = 100) -> list[dict[str, Any]]:
    url = f"{server.http_url}/api/rooms/{room}/history?limit={limit}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=AUTH) as answer:
        assert answer.status == 200
        body: dict[str, Any] = await answer.json()
    return [m["data"] for m in body["messages"]]


def test_a_tick_moves_the_price_and_rebuilds_the_book() -> None:
    ticker = Ticker(price=100.0, rng=random.Random(7))
    previous = 100.0
    for seq in range(1, 201):
        tick = ticker.tick()
        assert tick["seq"] == seq
        price = tick["price"]
        assert price == ticker.price == round(price, 2) > 0
        assert tick["change"] == round(price - previous, 2)
        assert abs(price - previous) < previous * 0.02  # a small step, never a jump
        bids = [level[0] for level in tick["bids"]]
        asks = [level[0] for level in tick["asks"]]
        assert len(bids) == len(asks) == LEVELS
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < price < asks[0]
        assert all(0 < size <= 4 for _, size in tick["bids"] + tick["asks"])
        assert tick["trade"]["price"] == price
        assert tick["trade"]["side"] == ("buy" if price >= previous else "sell")
        previous = price
    assert len({ticker.tick()["price"] for _ in range(50)}) > 10  # it moves


def test_the_same_seed_gives_the_same_market() -> None:
    one, two = Ticker(rng=random.Random(3)), Ticker(rng=random.Random(3))
    assert [one.tick() for _ in range(20)] == [two.tick() for _ in range(20)]


def test_a_price_near_zero_stays_positive() -> None:
    ticker = Ticker(price=0.01, rng=random.Random(1))
    for _ in range(100):
        tick = ticker.tick()
        assert tick["price"] >= 0.01
        assert all(price > 0 for price, _ in tick["bids"])


async def test_the_feed_publishes_each_tick_into_the_room(server: ServerProcess) -> None:
    expected = Ticker(rng=random.Random(5))
    sent = await run_ticker(
        server.http_url, "test-key", "ticker:T", 50.0, ticker=Ticker(rng=random.Random(5)),
        count=8, say=lambda _: None,
    )  # fmt: skip
    assert sent == 8
    assert await history(server, "ticker:T") == [expected.tick() for _ in range(8)]


async def test_a_wrong_key_stops_the_feed(server: ServerProcess) -> None:
    with pytest.raises(ApiError) as refused:
        await run_ticker(server.http_url, "wrong", "ticker:T", 50.0, count=3, say=print)
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with pytest.raises(ApiError) as bad_room:
        await run_ticker(server.http_url, "test-key", "bad room", 50.0, count=3, say=print)
    assert (bad_room.value.status, bad_room.value.code) == (400, "invalid_room")


async def test_the_feed_waits_out_a_server_that_is_down(server_factory: ServerFactory) -> None:
    port = free_port()
    said: list[str] = []
    down = asyncio.Event()

    def say(text: str) -> None:
        said.append(text)
        down.set()

    feed = asyncio.create_task(
        run_ticker(f"http://127.0.0.1:{port}", "test-key", "ticker:T", 20.0, count=3, say=say)
    )
    await asyncio.wait_for(down.wait(), 10)  # nobody listens yet: reported once
    server = await asyncio.to_thread(
        server_factory, "--history", "memory", "--api-key", "test-key", port=port
    )
    assert await asyncio.wait_for(feed, 20) == 3
    assert len(await history(server, "ticker:T")) == 3
    assert said[0].startswith("not published (cannot reach the server: ")
    assert said[1:] == ["publishing again into ticker:T"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "roomcast", "demo", "ticker", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


async def test_the_command_publishes_then_stops(server: ServerProcess) -> None:
    done = await asyncio.to_thread(
        run_cli, "--url", server.http_url, "--api-key", "test-key", "--room", "ticker:ETH",
        "--rate", "40", "--count", "4", "--seed", "9", "--price", "2500",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"publishing into ticker:ETH at 40/s through {server.http_url} (Ctrl-C to stop)",
        "published 4 messages",
    ]
    expected = Ticker(price=2500.0, rng=random.Random(9))
    assert await history(server, "ticker:ETH") == [expected.tick() for _ in range(4)]


async def test_the_command_reports_a_refusal_and_bad_options(server: ServerProcess) -> None:
    refused = await asyncio.to_thread(run_cli, "--url", server.http_url, "--count", "1")
    assert refused.returncode == 1
    assert refused.stderr == "roomcast: unauthorized: missing or wrong API key (HTTP 401)\n"
    for args, error in [
        (("--rate", "0"), "Invalid value for '--rate': 0.0 is not in the range 0.1<=x<=50."),
        (("--url", "ftp://x"), "Invalid value for --url: not an http(s) or ws(s) URL: 'ftp://x'"),
    ]:
        bad = await asyncio.to_thread(run_cli, *args)
        assert bad.returncode == 2
        assert error in bad.stderr

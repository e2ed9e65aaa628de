"""``roomcast demo``: the publishers behind the demos under ``/demo/`` (docs/demos.md).

``roomcast demo ticker`` publishes a random-walk price, a small order book and the last
trade into a room (``ticker:BTC``) several times a second through the HTTP API
(``POST /api/publish``), as an exchange's market-data feed would; the page
``/demo/ticker`` shows them live.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import click
from yarl import URL

from roomcast.client.http import ApiError, api_base, api_error

LEVELS: Final = 6  # order-book levels on each side
VOLATILITY: Final = 0.0008  # standard deviation of a tick's relative price move
FATAL: Final = frozenset({400, 401, 403, 404, 413})  # refusals that retrying will not fix


@dataclass
class Ticker:
    """A market: a price that moves by a random walk, an order book around it."""

    price: float = 100.0
    rng: random.Random = field(default_factory=random.Random)
    levels: int = LEVELS
    seq: int = 0

    def tick(self) -> dict[str, Any]:
        """Move the price one step; the message to publish."""
        previous = self.price
        move = self.rng.gauss(0.0, VOLATILITY) * previous
        self.price = max(0.01, round(previous + move, 2))
        self.seq += 1
        return {
            "seq": self.seq,
            "price": self.price,
            "change": round(self.price - previous, 2),
            "trade": self._trade(previous),
            **self.book(),
        }

    def book(self) -> dict[str, list[list[float]]]:
        """Bids (best first, below the price) and asks (best first, above): [price, size]."""
        tick = max(0.01, round(self.price * 0.0005, 2))  # the distance between levels
        bids = [self._level(self.price - tick * (n + 1)) for n in range(self.levels)]
        asks = [self._level(self.price + tick * (n + 1)) for n in range(self.levels)]
        return {"bids": [b for b in bids if b[0] > 0], "asks": asks}

    def _level(self, price: float) -> list[float]:
        return [round(price, 2), round(self.rng.uniform(0.05, 4.0), 3)]

    def _trade(self, previous: float) -> dict[str, Any]:
        side = "buy" if self.price >= previous else "sell"
        return {"price": self.price, "size": round(self.rng.uniform(0.001, 1.5), 3), "side": side}


class Publisher:
    """``POST /api/publish`` over one HTTP connection pool (one session for the feed)."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 10.0) -> None:
        base = api_base(url)
        self.endpoint: URL = base.with_path(base.path.rstrip("/") + "/api/publish")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def publish(self, room: str, data: Any) -> dict[str, Any]:
        """The answer (``{"room", "epoch", "offset"}``) or :class:`ApiError`."""
        body = json.dumps({"room": room, "data": data}, separators=(",", ":"))
        async with self.session.post(self.endpoint, data=body, headers=self.headers) as answer:
            text = await answer.text()
            if answer.status >= 400:
                raise api_error(answer.status, text)
        value: dict[str, Any] = json.loads(text)
        return value

    async def close(self) -> None:
        await self.session.close()




@dataclass
class Feed:
    """Publishes a :class:`Ticker` into ``room`` ``rate`` times a second, ``count`` times
    (0: until cancelled). A server that is down or refuses for a while (429, 503) is
    reported once and retried on the next tick; a refusal retrying cannot fix (a wrong API
    key, a bad room) raises :class:`ApiError`."""

    publisher: Publisher
    room: str
    ticker: Ticker
    rate: float
    say: Callable[[str], None] = print
    published: int = 0
    failing: bool = False

    async def run(self, count: int = 0) -> int:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        due = loop.time()
        while count == 0 or self.published < count:
            await self._publish_one(self.ticker.tick())
            due = max(due + interval, loop.time())  # after an outage: no burst to catch up
            await asyncio.sleep(due - loop.time())
        return self.published

    async def _publish_one(self, data: dict[str, Any]) -> None:
        try:
            await self.publisher.publish(self.room, data)
        except ApiError as exc:
            if exc.status in FATAL:
                raise
            self._failed(f"{exc.code}: {exc.message} (HTTP {exc.status})")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._failed(f"cannot reach the server: {exc or type(exc).__name__}")
        else:
            self.published += 1
            if self.failing:
                self.failing = False
                self.say(f"publishing again into {self.room}")

    def _failed(self, reason: str) -> None:
        if not self.failing:
            self.failing = True
            self.say(f"not published ({reason}); retrying at every tick")


async def run_ticker(
    url: str,
    api_key: str | None,
    room: str,
    rate: float,
    *,
    ticker: Ticker | None = None,
    count: int = 0,
    say: Callable[[str], None] = print,
) -> int:
    """Run the ticker feed; the number of messages published."""
    publisher = Publisher(url, api_key)
    try:
        feed = Feed(publisher, room, ticker or Ticker(), rate, say)
        return await feed.run(count)
    finally:
        await publisher.close()


@click.group()
def demo() -> None:
    """Publishers of the demos served under /demo/ (docs/demos.md)."""


@demo.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The server (http://HOST:PORT).")  # fmt: skip
@click.option("--api-key", envvar="ROOMCAST_API_KEY", show_envvar=True, default=None,
              help="The server's --api-key.")  # fmt: skip
@click.option("--room", default="ticker:BTC", show_default=True, help="The room to publish to.")
@click.option("--rate", type=click.FloatRange(0.1, 50), default=5.0, show_default=True,
              help="Messages per second.")  # fmt: skip
@click.option("--price", type=click.FloatRange(0.01, 1e9), default=100.0, show_default=True,
              help="The starting price.")  # fmt: skip
@click.option("--count", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop after this many messages (0: run until interrupted).")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed of the random walk (repeatable runs).")
def ticker(
    url: str,
    api_key: str | None,
    room: str,
    rate: float,
    price: float,
    count: int,
    seed: int | None,
) -> None:
    """Publish a live price, order book and trades into --room through the HTTP API."""
    try:
        api_base(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    market = Ticker(price=price, rng=random.Random(seed))
    say = click.echo
    say(f"publishing into {room} at {rate:g}/s through {url} (Ctrl-C to stop)")
    try:
        published = asyncio.run(
            run_ticker(url, api_key, room, rate, ticker=market, count=count, say=say)
        )
    except ApiError as exc:
        click.echo(f"roomcast: {exc.code}: {exc.message} (HTTP {exc.status})", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        return
    say(f"published {published} messages")

"""The demos under /demo/ in Chromium: the ticker fed by a real `roomcast demo ticker`
process, a job's progress bar (also across a reload), multiplayer cursors. Every page
must get its updates over its one WebSocket: no request after load is repeated, and none
goes to /poll, /sse, /send or the HTTP API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from roomcast.testing import ServerProcess

from .conftest import API_KEY, DESKTOP

pytestmark = pytest.mark.browser

ServerFactory = Callable[..., ServerProcess]
POLLING = ("/poll", "/sse", "/send", "/api/")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "demos.md"
STEP = re.compile(r"step (\d+)/(\d+): \w+ \d+ \w+")


@dataclass
class Demo:
    """One demo page in a context of its own, with what it asked of the network."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    sockets: list[str] = field(default_factory=list)  # paths of the WebSockets opened
    published: list[dict[str, Any]] = field(default_factory=list)  # publish frames sent

    def record(self, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme in {"http", "https"}:
            self.requests.append((request.method, url.path))

    def on_socket(self, ws: Any) -> None:
        self.sockets.append(urlsplit(ws.url).path)

        def sent(payload: str | bytes) -> None:
            frame = json.loads(payload) if isinstance(payload, str) else None
            if isinstance(frame, dict) and frame.get("type") == "publish":
                self.published.append(frame)

        ws.on("framesent", sent)

    def assert_no_polling(self, posts: list[str] | None = None) -> None:
        """One WebSocket; every GET once (the page and its files); only ``posts``."""
        assert self.sockets == ["/ws"]
        assert [p for _, p in self.requests if p.startswith(POLLING)] == []
        gets = [p for m, p in self.requests if m == "GET" and p != "/ws"]
        assert len(gets) == len(set(gets)), f"repeated requests: {gets}"
        assert [p for m, p in self.requests if m != "GET"] == (posts or [])

    def forget_requests(self) -> None:
        self.requests.clear()
        self.sockets.clear()

    def dataset(self, selector: str, key: str) -> str:
        value = self.page.locator(selector).get_attribute(f"data-{key}")
        assert value is not None, f"{selector} has no data-{key}"
        return value


OpenDemo = Callable[..., Demo]


@pytest.fixture
def open_demo(browser: Browser) -> Iterator[OpenDemo]:
    """Open ``url`` in a fresh context; fails the test if a page throws."""
    opened: list[Demo] = []

    def open_page(url: str) -> Demo:
        context = browser.new_context(viewport=DESKTOP)
        demo = Demo(context, context.new_page())
        opened.append(demo)
        demo.page.on("pageerror", lambda error: demo.errors.append(str(error)))
        demo.page.on("request", demo.record)
        demo.page.on("websocket", demo.on_socket)
        demo.page.goto(url)
        return demo

    yield open_page
    for demo in opened:
        demo.context.close()
    for demo in opened:
        assert demo.errors == [], f"errors in the page: {demo.errors}"


def api_history(server: ServerProcess, room: str, query: str = "limit=1") -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.http_url}/api/rooms/{room}/history?{query}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        body: dict[str, Any] = json.load(answer)
    return body


@contextmanager
def ticker_feed(server: ServerProcess, room: str, rate: float) -> Iterator[subprocess.Popen[bytes]]:
    """The real `roomcast demo ticker` publisher, in a child process."""
    command = [
        sys.executable, "-m", "roomcast", "demo", "ticker", "--url", server.http_url,
        "--api-key", API_KEY, "--room", room, "--rate", str(rate),
    ]  # fmt: skip
    log = (server.data_dir / "ticker.log").open("wb")
    feed = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield feed
    finally:
        feed.terminate()
        feed.wait(10)
        log.close()


def wait_number(
    demo: Demo, selector: str, key: str, at_least: int, timeout: float = 15_000
) -> None:
    demo.page.wait_for_function(
        "([selector, key, n]) => Number(document.querySelector(selector)?.dataset[key]) >= n",
        arg=[selector, key, at_least],
        timeout=timeout,
    )


# ------------------------------------------------------------------------------ ticker


def test_the_ticker_updates_live(server_factory: ServerFactory, open_demo: OpenDemo) -> None:
    server = server_factory("--history", "memory", "--api-key", API_KEY)
    room = "ticker:TEST"
    with ticker_feed(server, room, rate=10):
        first = open_demo(f"{server.http_url}/demo/ticker?room={room}")
        expect(first.page.locator("#status")).to_have_attribute("data-transport", "websocket")
        expect(first.page.locator("#symbol")).to_have_text(room)
        wait_number(first, "#price", "changes", 1)
        points = int(first.dataset("#line", "points"))
        top_bid = first.page.locator("#bids tr").first.inner_text()
        newest_trade = first.dataset("#trades li:first-child", "offset")

        wait_number(first, "#price", "changes", 4)  # the price changed at least 3 more times
        wait_number(first, "#line", "points", points + 3)  # the chart grew
        first.page.wait_for_function(  # the order book and the trades moved on
            "([bid, trade]) => document.querySelector('#bids tr').innerText !== bid"
            " && document.querySelector('#trades li').dataset.offset !== trade",
            arg=[top_bid, newest_trade],
        )
        expect(first.page.locator("#asks tr")).to_have_count(6)
        expect(first.page.locator("#bids tr")).to_have_count(6)
        shown = first.page.evaluate(
            "() => { const p = document.querySelector('#price');"
            " return [p.textContent, Number(p.dataset.offset)]; }"
        )
        stored = api_history(server, room, f"limit=1&before={shown[1] + 1}")["messages"]
        assert shown[0] == f"{stored[0]['data']['price']:.2f}"  # the price of that message

        # A page opened now starts with the chart drawn from history.
        newest = api_history(server, room)["offset"]
        second = open_demo(f"{server.http_url}/demo/ticker?room={room}")
        expect(second.page.locator("body")).to_have_attribute("data-state", "live")
        assert int(second.dataset("body", "history")) >= newest
        assert int(second.dataset("#line", "points")) >= newest
        wait_number(second, "#price", "changes", 2)
    first.assert_no_polling()
    second.assert_no_polling()


# ------------------------------------------------------------------------------ jobs


def log_lines(demo: Demo) -> list[str]:
    lines: list[str] = demo.page.locator("#log li").all_inner_texts()
    return lines


def assert_job_log(lines: list[str], steps: int) -> None:
    """Line 0 says the job started, line n is step n: each once, in order."""
    assert lines[0] == f"job started: {steps} steps"
    numbers = []
    for line in lines[1:]:
        match = STEP.fullmatch(line)
        assert match is not None, line
        assert int(match[2]) == steps
        numbers.append(int(match[1]))
    assert numbers == list(range(1, len(lines)))


def test_a_job_streams_its_progress_to_100_percent(
    server: ServerProcess, open_demo: OpenDemo
) -> None:
    demo = open_demo(f"{server.http_url}/demo/jobs?steps=6&delay=0.15")
    expect(demo.page.locator("#status")).to_have_attribute("data-transport", "websocket")
    demo.page.evaluate(
        "() => { window.seen = []; const p = document.querySelector('#percent');"
        " new MutationObserver(() => window.seen.push(p.textContent))"
        ".observe(p, {childList: true, characterData: true, subtree: true}); }"
    )
    demo.page.locator("#start").click()
    expect(demo.page.locator("#percent")).to_have_text("100%", timeout=15_000)

    bar = demo.page.locator("#bar")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(bar).to_have_attribute("data-done", "true")
    expect(demo.page.locator("#step")).to_have_text("step 6 of 6: done")
    lines = log_lines(demo)
    assert len(lines) == 7
    assert_job_log(lines, 6)
    job = demo.page.locator("#job-id").inner_text()
    assert demo.page.url.endswith(f"#job={job}")
    seen = [int(text.rstrip("%")) for text in demo.page.evaluate("window.seen")]
    assert seen == sorted(seen) and seen[-1] == 100
    assert len(set(seen)) >= 4, seen  # it streamed, step by step
    demo.assert_no_polling(posts=["/demo/jobs"])


def test_a_reloaded_page_resumes_the_job_where_it_is(
    server: ServerProcess, open_demo: OpenDemo
) -> None:
    demo = open_demo(f"{server.http_url}/demo/jobs?steps=20&delay=0.25")
    demo.page.locator("#start").click()
    wait_number(demo, "#bar", "step", 4)
    job = demo.page.locator("#job-id").inner_text()
    before = int(demo.dataset("#bar", "step"))
    demo.assert_no_polling(posts=["/demo/jobs"])

    demo.forget_requests()
    demo.page.reload()
    expect(demo.page.locator("body")).to_have_attribute("data-state", "live")
    state = demo.page.evaluate(
        "() => [Number(document.querySelector('#bar').dataset.step),"
        " [...document.querySelectorAll('#log li')].map((li) => li.textContent)]"
    )
    step, lines = state
    assert demo.page.locator("#job-id").inner_text() == job
    assert step >= before  # the bar is where the job is, not back at 0...
    assert len(lines) == step + 1  # ...and the log has every line up to it, once
    assert_job_log(lines, 20)
    assert api_history(server, f"job:{job}")["messages"][0]["data"]["step"] >= step

    expect(demo.page.locator("#percent")).to_have_text("100%", timeout=20_000)
    lines = log_lines(demo)
    assert len(lines) == 21
    assert_job_log(lines, 20)
    demo.assert_no_polling()  # no new job: the reloaded page only follows it


# ------------------------------------------------------------------------------ cursors


def test_cursors_follow_the_pointer_and_leave_with_their_owner(
    server: ServerProcess, open_demo: OpenDemo
) -> None:
    url = f"{server.http_url}/demo/cursors?room=cursors:test&name="
    alice, bob = open_demo(url + "alice"), open_demo(url + "bob")
    for demo in (alice, bob):
        expect(demo.page.locator("#status")).to_have_attribute("data-transport", "websocket")
        expect(demo.page.locator("#members [data-testid=member]")).to_have_count(2)
    expect(bob.page.locator("#members .member-name")).to_have_text(["bob (you)", "alice"])
    session = alice.dataset("body", "session")

    box = alice.page.locator("#board").bounding_box()
    assert box is not None
    border = alice.page.evaluate("() => document.querySelector('#board').clientLeft")
    target = (box["x"] + 0.3 * box["width"], box["y"] + 0.4 * box["height"])
    started = time.monotonic()
    alice.page.mouse.move(box["x"] + 20, box["y"] + 20)
    alice.page.mouse.move(*target, steps=40)
    cursor = f"#board .cursor[data-session='{session}']"
    bob.page.wait_for_function(  # drawn where alice's pointer is, within a pixel or two
        """([selector, dx, dy]) => {
            const cursor = document.querySelector(selector);
            const board = document.querySelector('#board');
            if (!cursor || cursor.hidden) return false;
            const c = cursor.getBoundingClientRect(), b = board.getBoundingClientRect();
            return Math.abs(c.left - b.left - board.clientLeft - dx) <= 2
                && Math.abs(c.top - b.top - board.clientTop - dy) <= 2;
        }""",
        arg=[cursor, target[0] - box["x"] - border, target[1] - box["y"] - border],
    )
    elapsed = time.monotonic() - started
    expect(bob.page.locator(f"{cursor} .label")).to_have_text("alice")
    sent = int(alice.dataset("#board", "sent"))
    assert len(alice.published) == sent
    assert 1 <= sent <= elapsed / 0.05 + 2  # at most one publish per 50 ms
    assert all(f["room"] == "cursors:test" for f in alice.published)
    expect(alice.page.locator("#board .cursor")).to_have_count(0)  # no cursor of its own
    alice.assert_no_polling()
    bob.assert_no_polling()

    alice.context.close()
    expect(bob.page.locator("#board .cursor")).to_have_count(0)
    expect(bob.page.locator("#members .member-name")).to_have_text(["bob (you)"])


# ------------------------------------------------------------------------------ auth


def test_the_documented_config_opens_the_demos_with_auth_optional(
    server_factory: ServerFactory, open_demo: OpenDemo, tmp_path: Path
) -> None:
    """docs/demos.md's namespaces let the pages in without a token under --auth optional."""
    config = re.search(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert config is not None
    (tmp_path / "demos.toml").write_text(config[1], encoding="utf-8")
    server = server_factory(
        "--history", "memory", "--api-key", API_KEY, "--auth", "optional",
        "--token-secret", "k" * 32, "--config", str(tmp_path / "demos.toml"),
    )  # fmt: skip
    jobs = open_demo(f"{server.http_url}/demo/jobs?steps=3&delay=0.05")
    jobs.page.locator("#start").click()
    expect(jobs.page.locator("#percent")).to_have_text("100%")
    assert_job_log(log_lines(jobs), 3)
    url = f"{server.http_url}/demo/cursors?name="
    alice, bob = open_demo(url + "alice"), open_demo(url + "bob")
    for demo in (alice, bob):
        expect(demo.page.locator("#members [data-testid=member]")).to_have_count(2)
    with ticker_feed(server, "ticker:BTC", rate=10):
        ticker = open_demo(f"{server.http_url}/demo/ticker")
        wait_number(ticker, "#price", "changes", 2)

"""Browser tests: the chat page driven by Debian's Chromium through Playwright.

Never downloads a browser: Chromium is the system one at /usr/bin/chromium. Every test
waits on conditions (Playwright's ``expect`` / ``wait_for``), never on fixed sleeps.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)
from websockets.sync.client import connect as ws_connect

from roomcast.testing import ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "test-key"
DESKTOP: ViewportSize = {"width": 1200, "height": 800}
# Reconnecting after a restart takes a server start plus a backoff step or two.
RECONNECT_TIMEOUT_MS = 30_000

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class ChatPage:
    """One browser context with the chat page open; records what went wrong in it."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)  # WebSocket frames sent
    sockets: list[str] = field(default_factory=list)  # URLs of the WebSockets opened
    posted: list[dict[str, Any]] = field(default_factory=list)  # commands sent by POST /send

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages [data-testid=message]")

    @property
    def texts(self) -> Locator:
        return self.page.locator("#messages [data-testid=message-text]")

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    @property
    def transport(self) -> Locator:
        """The badge of the transport in use (``data-transport``: websocket, sse, poll)."""
        return self.page.locator("[data-testid=transport]")

    def joins(self, room: str) -> list[dict[str, Any]]:
        """The join commands this page sent for ``room``, oldest first."""
        return [f for f in self.sent if f.get("type") == "join" and f.get("room") == room]

    def wait_joined(self, room: str, timeout: float | None = None) -> None:
        """Connected, ``room`` active and joined (the send button is enabled then)."""
        expect(self.status).to_have_attribute("data-state", "connected", timeout=timeout)
        expect(self.page.locator("#room-title")).to_have_text(f"#{room}")
        expect(self.page.locator("#send")).to_be_enabled(timeout=timeout)

    def say(self, text: str) -> None:
        self.page.locator("#message-input").fill(text)
        self.page.locator("#message-input").press("Enter")


OpenChat = Callable[..., ChatPage]


@pytest.fixture
def open_chat(browser: Browser) -> Iterator[OpenChat]:
    """Open the chat page of ``server`` in a fresh context, pick ``nick``, join ``room``."""
    opened: list[ChatPage] = []

    def open_page(
        server: ServerProcess,
        nick: str,
        room: str,
        viewport: ViewportSize | None = None,
        *,
        query: str = "",
        base_url: str | None = None,
        setup: Callable[[Page], None] | None = None,
        timeout: float | None = None,
    ) -> ChatPage:
        """``query`` goes in the page's URL (``?transport=sse``); ``base_url`` serves the
        page instead of ``server`` (a proxy in front of it); ``setup`` runs before it loads;
        ``timeout`` (ms) is how long joining may take."""
        context = browser.new_context(viewport=viewport or DESKTOP)
        page = context.new_page()
        chat = ChatPage(context, page)
        opened.append(chat)
        page.on("pageerror", lambda error: chat.errors.append(str(error)))
        page.on("websocket", lambda ws: _record_frames(ws, chat.sent, chat.sockets))
        page.on("request", lambda request: _record_post(request, chat.posted))
        if setup is not None:
            setup(page)
        page.goto(f"{base_url or server.http_url}/{query}#{room}")
        expect(page.locator("#nick-dialog")).to_be_visible()
        page.locator("#nick").fill(nick)
        page.locator("#nick-save").click()
        expect(page.locator("#me-name")).to_have_text(nick)
        chat.wait_joined(room, timeout)
        return chat

    yield open_page
    for chat in opened:
        chat.context.close()
    for chat in opened:
        assert chat.errors == [], f"errors in the page: {chat.errors}"


def _record_frames(ws: Any, sent: list[dict[str, Any]], sockets: list[str]) -> None:
    sockets.append(ws.url)

    def on_sent(payload: str | bytes) -> None:
        if isinstance(payload, str):
            sent.append(json.loads(payload))

    ws.on("framesent", on_sent)


def _record_post(request: Any, posted: list[dict[str, Any]]) -> None:
    if request.method == "POST" and request.url.split("?")[0].endswith("/send"):
        posted.append(json.loads(request.post_data or "null"))


def api_publish(server: ServerProcess, room: str, text: str) -> dict[str, Any]:
    """Publish ``{"text": text}`` to ``room`` through the HTTP API."""
    body = json.dumps({"room": room, "data": {"text": text}}).encode()
    request = urllib.request.Request(
        server.http_url + "/api/publish",
        data=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        reply: dict[str, Any] = json.load(answer)
    return reply


def ws_publish(server: ServerProcess, user: str, room: str, texts: list[str]) -> None:
    """Publish as a named WebSocket client (the independent ``websockets`` library)."""
    with ws_connect(f"{server.ws_url}?name={user}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        ws.send(json.dumps({"type": "join", "room": room, "id": "join"}))
        commands = [
            {"type": "publish", "room": room, "data": {"text": text}, "id": n}
            for n, text in enumerate(texts)
        ]
        for command in commands:
            ws.send(json.dumps(command))
        waiting = {"join", *range(len(texts))}
        while waiting:
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] in {"ok", "error"}:
                assert frame["type"] == "ok", frame
                waiting.discard(frame["id"])

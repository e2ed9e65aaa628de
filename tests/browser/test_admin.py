"""The admin page in Chromium: a wrong password refused, then the live view of the node
(its connections counted, the busiest room, the plot), a message published from the form
arriving in a chat page, a session disconnected from the form (its WebSocket closed with
4004); and on two nodes sharing a Redis, the page of one node lists both and disconnects
a session of the other."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from roomcast.exceptions import CloseCode
from roomcast.testing import RedisProcess, ServerProcess

from .conftest import API_KEY, DESKTOP, OpenChat

pytestmark = pytest.mark.browser

ServerFactory = Callable[..., ServerProcess]
PASSWORD = "browser-admin-password"
SECRET = "browser-admin-cluster-secret"
LIVE_MS = 15_000  # a snapshot comes every 2 s; a sample of the plot every 5 s


@dataclass
class AdminPage:
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)

    def node(self, node: str) -> Locator:
        return self.page.locator(f'#nodes tbody tr[data-node="{node}"]')

    def cell(self, node: str, name: str) -> Locator:
        return self.node(node).locator(f'[data-field="{name}"]')

    def log_in(self, password: str) -> None:
        self.page.get_by_test_id("password").fill(password)
        self.page.get_by_test_id("login-submit").click()

    def disconnect(self, session: str) -> None:
        self.page.get_by_test_id("disconnect-session").fill(session)
        self.page.get_by_test_id("disconnect-submit").click()


OpenAdmin = Callable[[ServerProcess], AdminPage]


@pytest.fixture
def open_admin(browser: Browser) -> Iterator[OpenAdmin]:
    opened: list[AdminPage] = []

    def open_page(server: ServerProcess) -> AdminPage:
        context = browser.new_context(viewport=DESKTOP)
        admin = AdminPage(context, context.new_page())
        opened.append(admin)
        admin.page.on("pageerror", lambda error: admin.errors.append(str(error)))
        admin.page.goto(server.http_url + "/admin")
        return admin

    yield open_page
    for admin in opened:
        admin.context.close()
    for admin in opened:
        assert admin.errors == [], f"errors in the page: {admin.errors}"


@dataclass
class Peer:
    """A WebSocket client of the ``websockets`` library, and its session id."""

    ws: ClientConnection
    session: str

    def closed(self) -> tuple[int, str]:
        """Read until the server closes the connection: its close code and reason."""
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                self.ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason


@contextmanager
def connected(server: ServerProcess, name: str, room: str | None = None) -> Iterator[Peer]:
    """A client named ``name``, in ``room`` if given."""
    with ws_connect(f"{server.ws_url}?name={name}", open_timeout=10) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome"
        if room is not None:
            ws.send(json.dumps({"type": "join", "room": room, "id": 1}))
            assert json.loads(ws.recv(timeout=10))["type"] == "ok"
        yield Peer(ws, welcome["session"])


def test_log_in_watch_publish_and_disconnect(
    server_factory: ServerFactory, open_admin: OpenAdmin, open_chat: OpenChat
) -> None:
    server = server_factory("--history", "memory", "--api-key", API_KEY,
                            "--admin-password", PASSWORD, "--node-id", "solo")  # fmt: skip
    chat = open_chat(server, "carol", "lobby")
    with connected(server, "bob", "lobby") as bob, connected(server, "dave") as dave:
        admin = open_admin(server)
        page = admin.page
        expect(page.get_by_test_id("password")).to_be_visible()
        admin.log_in("wrong-password")
        expect(page.get_by_test_id("login-error")).to_have_text("Wrong password.")
        expect(page.locator("#dashboard")).to_be_hidden()
        admin.log_in(PASSWORD)
        expect(page.locator("#dashboard")).to_be_visible()
        expect(page.get_by_test_id("status")).to_have_attribute("data-state", "connected")
        # chat, bob, dave and the admin page itself
        expect(admin.cell("solo", "websocket")).to_have_text("4", timeout=LIVE_MS)
        expect(admin.cell("solo", "connections")).to_have_text("4")
        expect(admin.cell("solo", "state")).to_have_text("ready")
        lobby = page.locator('#rooms tbody tr[data-room="lobby"]')
        expect(lobby.locator('[data-field="members"]')).to_have_text("2")  # carol and bob
        plot = page.get_by_test_id("plot-connections")
        expect(plot).to_have_attribute("data-points", re.compile(r"[1-9]\d*"), timeout=LIVE_MS)
        expect(page.get_by_test_id("max-connections")).to_have_text("max 4")

        lobby.click()  # its members, with their session ids
        members = page.locator("#members tbody tr")
        expect(members).to_have_count(2)
        bob_row = page.locator(f'#members tbody tr[data-session="{bob.session}"]')
        expect(bob_row.locator('[data-field="user"]')).to_have_text("bob")

        page.get_by_test_id("publish-room").fill("lobby")
        page.get_by_test_id("publish-data").fill('{"text": "hello from the admin page"}')
        page.get_by_test_id("publish-submit").click()
        expect(page.get_by_test_id("publish-result")).to_have_text(
            re.compile(r"^Published to lobby at offset \d+\.$")
        )
        expect(chat.texts.last).to_have_text("hello from the admin page")

        admin.disconnect(dave.session)
        expect(page.get_by_test_id("disconnect-result")).to_have_text(
            f"Session {dave.session} closed on node solo."
        )
        assert dave.closed() == (CloseCode.ADMIN_DISCONNECT, "disconnected by an administrator")
        expect(admin.cell("solo", "websocket")).to_have_text("3", timeout=LIVE_MS)
        admin.disconnect("no-such-session")
        expect(page.get_by_test_id("disconnect-result")).to_have_text(
            "Not disconnected: no node has session 'no-such-session'"
        )


def test_one_nodes_page_shows_both_nodes_and_disconnects_on_the_other(
    server_factory: ServerFactory, open_admin: OpenAdmin, redis_server: RedisProcess
) -> None:
    args = ("--history", "memory", "--api-key", API_KEY, "--broker", redis_server.url,
            "--secret", SECRET)  # fmt: skip
    first = server_factory(*args, "--node-id", "node-a")
    second = server_factory(*args, "--node-id", "node-b")
    with connected(second, "erin", "lobby") as erin:
        admin = open_admin(first)
        admin.log_in(API_KEY)
        expect(admin.page.locator("#nodes tbody tr")).to_have_count(2, timeout=LIVE_MS)
        expect(admin.cell("node-a", "websocket")).to_have_text("1", timeout=LIVE_MS)  # the page
        expect(admin.cell("node-b", "websocket")).to_have_text("1", timeout=LIVE_MS)  # erin
        expect(admin.page.get_by_test_id("summary")).to_have_text("2 live, 2 connections")
        admin.disconnect(erin.session)
        expect(admin.page.get_by_test_id("disconnect-result")).to_have_text(
            f"Session {erin.session} closed on node node-b."
        )
        assert erin.closed() == (CloseCode.ADMIN_DISCONNECT, "disconnected by an administrator")

"""The browser client ``/roomcast.js`` in Chromium, under the chat page and on its own.

Each transport forced (``?transport=``), pages on different transports in one room, the
fallback when a proxy blocks WebSocket (and buffers SSE), and server restarts under a
page on SSE and on long polling: every message shown once, in order.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from roomcast.testing import ServerProcess

from .conftest import (
    API_KEY,
    RECONNECT_TIMEOUT_MS,
    ChatPage,
    OpenChat,
    api_publish,
    ws_publish,
)
from .proxy import HostileProxy

pytestmark = pytest.mark.browser

ServerFactory = Callable[..., ServerProcess]
TRANSPORTS = ["websocket", "sse", "poll"]
BADGES = {"websocket": "WS", "sse": "SSE", "poll": "Poll"}
# Falling back waits for a transport's first event: up to 6 s each (connectTimeout).
FALLBACK_TIMEOUT_MS = 30_000


def member_names(chat: ChatPage) -> Locator:
    return chat.page.locator("#members [data-testid=member] .member-name")


def offsets(chat: ChatPage) -> list[int]:
    values = chat.messages.evaluate_all("items => items.map(item => item.dataset.offset)")
    return [int(value) for value in values]


def senders(chat: ChatPage) -> Locator:
    return chat.page.locator("#messages [data-testid=message-from]")


def expect_transport(chat: ChatPage, transport: str, timeout: float | None = None) -> None:
    expect(chat.transport).to_have_attribute("data-transport", transport, timeout=timeout)
    expect(chat.transport).to_have_text(BADGES[transport])
    expect(chat.transport).to_be_visible()


def publishes(chat: ChatPage) -> list[Any]:
    """The texts this page published over POST /send."""
    return [c["data"]["text"] for c in chat.posted if c and c.get("type") == "publish"]


# ---------------------------------------------------------------------------- the module


CLIENT_API_SCRIPT = """
async ([transport]) => {
  const roomcast = await import("/roomcast.js");
  const deadline = (promise, what) => Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`no ${what} in 20 s`)), 20000))]);
  const rc = roomcast.connect(location.origin, { name: "eve", transport });
  const events = [];
  const opened = new Promise((resolve) => rc.on("open", resolve));
  const texts = [];
  const both = new Promise((resolve) => rc.on("message", (m) => {
    texts.push(m.data.text);
    if (texts.length === 2) resolve();
  }));
  rc.on("subscribed", (info) => events.push(["subscribed", info.room, info.recovered]));
  const joined = await deadline(rc.join("api"), "join");
  const open = await deadline(opened, "open");
  const first = await rc.publish("api", { text: "one" });
  const second = await rc.publish("api", { text: "two" });
  await deadline(both, "messages");
  const members = await rc.presence("api");
  const history = await rc.history("api", { limit: 10 });
  let refused = null;
  try {
    await rc.publish("elsewhere", "x");
  } catch (err) {
    refused = err.code;
  }
  await rc.leave("api");
  rc.close();
  return {
    namespace: typeof roomcast.connect, fallback: typeof roomcast.default.connect,
    transport: rc.transport, open: open.transport, joined: [joined.room, joined.offset],
    offsets: [first.offset, second.offset], texts, members: members.map((m) => m.user),
    history: history.map((m) => m.data.text), refused, events,
  };
}
"""


def test_client_module_is_served(server: ServerProcess) -> None:
    with urllib.request.urlopen(server.http_url + "/roomcast.js", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/javascript; charset=utf-8"
        source = answer.read().decode()
    assert "export function connect(" in source
    assert not re.search(r"^\s*import\s", source, re.MULTILINE)  # no dependencies


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_api_on_its_own(server: ServerProcess, browser: Browser, transport: str) -> None:
    """``import * as roomcast from "/roomcast.js"`` from any page of the server."""
    api_publish(server, "api", "zero")
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.http_url + "/health")
        result = page.evaluate(CLIENT_API_SCRIPT, [transport])
        assert errors == []
    finally:
        context.close()
    assert result == {
        "namespace": "function", "fallback": "function",
        "transport": transport, "open": transport, "joined": ["api", 1],
        "offsets": [2, 3], "texts": ["one", "two"], "members": ["eve"],
        "history": ["zero", "one", "two"], "refused": "not_joined",
        "events": [["subscribed", "api", None]],
    }  # fmt: skip


# ---------------------------------------------------------------------------- forced


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_chat_page_over_each_transport(
    server: ServerProcess, open_chat: OpenChat, transport: str
) -> None:
    query = f"?transport={transport}"
    alice = open_chat(server, "alice", "lobby", query=query)
    bob = open_chat(server, "bob", "lobby", query=query)
    for chat in (alice, bob):
        expect_transport(chat, transport)
    expect(member_names(alice)).to_have_text(["alice", "bob"])
    expect(member_names(bob)).to_have_text(["bob", "alice"])

    alice.say("hello from alice")
    for chat in (alice, bob):
        expect(chat.texts).to_have_text(["hello from alice"])
    bob.say("hi alice")
    expect(bob.texts).to_have_text(["hello from alice", "hi alice"])  # before the next one
    api_publish(server, "lobby", "from the api")
    expected = ["hello from alice", "hi alice", "from the api"]
    for chat in (alice, bob):
        expect(chat.texts).to_have_text(expected)
        expect(senders(chat)).to_have_text(["alice", "bob", "server"])
        assert offsets(chat) == [1, 2, 3]

    # Forced means forced: no WebSocket at all on SSE and long polling.
    if transport == "websocket":
        assert alice.posted == []
        assert len(alice.sockets) == 1
    else:
        assert alice.sockets == []
        assert publishes(alice) == ["hello from alice"]

    # Another room: on SSE and long polling a join changes the session token.
    page = alice.page
    page.locator("#room-input").fill("second")
    page.locator("#join").click()
    alice.wait_joined("second")
    api_publish(server, "second", "in second")
    expect(alice.texts).to_have_text(["in second"])
    alice.say("alice in second")
    expect(alice.texts).to_have_text(["in second", "alice in second"])
    bob.say("while alice is away")
    expect(page.locator("#rooms [data-room=lobby] [data-testid=unread]")).to_have_text("1")

    # Leaving it: the lobby still gets everything, once.
    page.locator("#rooms [data-room=second] [data-testid=leave]").click()
    expect(page.locator("#rooms [data-testid=room-item]")).to_have_count(1)
    alice.wait_joined("lobby")
    api_publish(server, "lobby", "after the leave")
    expected += ["while alice is away", "after the leave"]
    expect(alice.texts).to_have_text(expected)
    assert offsets(alice) == [1, 2, 3, 4, 5]
    api_publish(server, "second", "not for alice any more")
    ws_publish(server, "carol", "lobby", ["last"])
    expect(alice.texts).to_have_text([*expected, "last"])

    # Bob closes the tab: he is gone at once, on long polling too (he says he leaves).
    bob.page.close()
    expect(member_names(alice)).to_have_text(["alice"])


def test_sse_websocket_and_poll_pages_in_one_room(
    server: ServerProcess, open_chat: OpenChat
) -> None:
    alice = open_chat(server, "alice", "mixed", query="?transport=sse")
    bob = open_chat(server, "bob", "mixed", query="?transport=websocket")
    carol = open_chat(server, "carol", "mixed", query="?transport=poll")
    expect_transport(alice, "sse")
    expect_transport(bob, "websocket")
    expect_transport(carol, "poll")
    expect(member_names(alice)).to_have_text(["alice", "bob", "carol"])
    expect(member_names(bob)).to_have_text(["bob", "alice", "carol"])
    expect(member_names(carol)).to_have_text(["carol", "alice", "bob"])

    alice.say("from sse")
    bob.say("from websocket")
    carol.say("from poll")
    for chat in (alice, bob, carol):
        expect(chat.texts).to_have_count(3)
    order = alice.texts.all_inner_texts()
    assert sorted(order) == ["from poll", "from sse", "from websocket"]
    for chat in (bob, carol):  # one order for everybody: the room's offsets
        expect(chat.texts).to_have_text(order)
        assert offsets(chat) == [1, 2, 3]
    alice.say("sse again")
    expect(bob.texts).to_have_text([*order, "sse again"])
    bob.say("websocket again")
    for chat in (alice, bob, carol):
        expect(chat.texts).to_have_text([*order, "sse again", "websocket again"])


# ---------------------------------------------------------------------------- fallback


def test_falls_back_to_sse_when_a_proxy_refuses_websocket(
    server: ServerProcess, open_chat: OpenChat
) -> None:
    with HostileProxy(server.http_url) as proxy:
        alice = open_chat(server, "alice", "office", base_url=proxy.url)
        expect_transport(alice, "sse")
        assert proxy.refused_upgrades >= 1
        bob = open_chat(server, "bob", "office")  # straight to the server
        expect_transport(bob, "websocket")
        expect(member_names(alice)).to_have_text(["alice", "bob"])

        alice.say("through the proxy")
        expect(bob.texts).to_have_text(["through the proxy"])
        bob.say("not through the proxy")
        for chat in (alice, bob):
            expect(chat.texts).to_have_text(["through the proxy", "not through the proxy"])
        assert publishes(alice) == ["through the proxy"]
        # Once SSE has worked the page stays on it: one refused upgrade, not one per event.
        assert proxy.refused_upgrades == 1
        expect_transport(alice, "sse")


def test_falls_back_to_polling_when_a_proxy_also_buffers_sse(
    server: ServerProcess, open_chat: OpenChat
) -> None:
    with HostileProxy(server.http_url, buffer_sse=True) as proxy:
        alice = open_chat(
            server, "alice", "office", base_url=proxy.url, timeout=FALLBACK_TIMEOUT_MS
        )
        expect_transport(alice, "poll")
        assert proxy.refused_upgrades == 1
        assert proxy.buffered_streams == 1
        bob = open_chat(server, "bob", "office")
        expect(member_names(alice)).to_have_text(["alice", "bob"])
        bob.say("one")
        expect(alice.texts).to_have_text(["one"])
        alice.say("two")
        expect(alice.texts).to_have_text(["one", "two"])
        api_publish(server, "office", "three")
        for chat in (alice, bob):
            expect(chat.texts).to_have_text(["one", "two", "three"])
        assert alice.sockets == [f"ws://127.0.0.1:{proxy.port}/ws?name=alice"]


def test_falls_back_when_the_websocket_never_says_welcome(
    server: ServerProcess, open_chat: OpenChat
) -> None:
    """A WebSocket that opens but carries nothing (a half-broken proxy): Playwright
    answers the upgrade itself and never talks to the server."""

    def swallow_websockets(page: Page) -> None:
        page.route_web_socket(re.compile(r"/ws"), lambda ws: None)

    alice = open_chat(
        server, "alice", "quiet", setup=swallow_websockets, timeout=FALLBACK_TIMEOUT_MS
    )
    expect_transport(alice, "sse")
    api_publish(server, "quiet", "heard anyway")
    expect(alice.texts).to_have_text(["heard anyway"])
    alice.say("and said")
    expect(alice.texts).to_have_text(["heard anyway", "and said"])


def test_transport_badge_on_a_small_screen(server: ServerProcess, open_chat: OpenChat) -> None:
    chat = open_chat(
        server, "erin-on-a-small-phone", "phone", query="?transport=poll",
        viewport={"width": 375, "height": 740},
    )  # fmt: skip
    expect_transport(chat, "poll")
    expect(chat.transport).to_be_in_viewport(ratio=1)
    expect(chat.page.locator("#me")).to_be_in_viewport(ratio=1)
    width = chat.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"horizontal overflow: {width}"


# ---------------------------------------------------------------------------- restarts


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_restart_shows_missed_messages_exactly_once(
    server_factory: ServerFactory, open_chat: OpenChat, transport: str
) -> None:
    # SQLite history survives the restart; the session tokens do not (no --secret: each
    # start signs with a new random one), so the page also starts a new session.
    server = server_factory("--api-key", API_KEY)
    chat = open_chat(server, "alice", "ops", query=f"?transport={transport}")
    for n in (1, 2, 3):
        api_publish(server, "ops", f"before {n}")
    chat.say("before 4 (alice)")
    expect(chat.texts).to_have_text(["before 1", "before 2", "before 3", "before 4 (alice)"])

    # Off the network, the page cannot come back before the others have published.
    chat.context.set_offline(True)
    server.restart()
    expect(chat.status).not_to_have_attribute("data-state", "connected")
    api_publish(server, "ops", "missed 1")
    ws_publish(server, "bob", "ops", ["missed 2 (bob)", "missed 3 (bob)"])
    api_publish(server, "ops", "missed 4")
    expect(chat.messages).to_have_count(4)

    chat.context.set_offline(False)
    expect(chat.status).to_have_attribute("data-state", "connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(chat.page.locator("#send")).to_be_enabled()
    api_publish(server, "ops", "after")
    chat.say("after (alice)")
    expected = [
        "before 1", "before 2", "before 3", "before 4 (alice)",
        "missed 1", "missed 2 (bob)", "missed 3 (bob)", "missed 4",
        "after", "after (alice)",
    ]  # fmt: skip
    expect(chat.texts).to_have_text(expected)
    assert offsets(chat) == list(range(1, len(expected) + 1))
    expect(senders(chat)).to_have_text(
        ["server"] * 3 + ["alice", "server", "bob", "bob", "server", "server", "alice"]
    )
    expect(chat.page.locator("#messages [data-testid=notice]")).to_have_count(0)
    expect_transport(chat, transport)
    assert chat.sockets == []


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_restart_without_network_tricks(
    server_factory: ServerFactory, open_chat: OpenChat, transport: str
) -> None:
    """The page notices the server is gone and comes back on its own backoff timer."""
    server = server_factory("--api-key", API_KEY, "--secret", "a-secret-of-16-chars")
    chat = open_chat(server, "frank", "ops", query=f"?transport={transport}")
    api_publish(server, "ops", "one")
    expect(chat.texts).to_have_text(["one"])

    server.stop()
    expect(chat.status).to_have_attribute("data-state", "reconnecting")
    expect(chat.page.locator("#send")).to_be_disabled()
    server.start()
    api_publish(server, "ops", "two")  # before or after the page is back: either way once
    expect(chat.status).to_have_attribute("data-state", "connected", timeout=RECONNECT_TIMEOUT_MS)
    api_publish(server, "ops", "three")
    chat.say("four")
    expect(chat.texts).to_have_text(["one", "two", "three", "four"])
    assert offsets(chat) == [1, 2, 3, 4]


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_history_lost_on_restart_is_reported(
    server: ServerProcess, open_chat: OpenChat, transport: str
) -> None:
    """Memory history: a restart starts a new epoch, the cursor is refused with 409
    cursor_expired, and the page says so and shows the room's new messages."""
    chat = open_chat(server, "alice", "news", query=f"?transport={transport}")
    api_publish(server, "news", "old 1")
    api_publish(server, "news", "old 2")
    expect(chat.texts).to_have_text(["old 1", "old 2"])
    old_epoch = chat.messages.first.get_attribute("data-epoch")

    chat.context.set_offline(True)
    server.restart()
    expect(chat.status).not_to_have_attribute("data-state", "connected")
    api_publish(server, "news", "new 1")
    api_publish(server, "news", "new 2")
    chat.context.set_offline(False)

    expect(chat.status).to_have_attribute("data-state", "connected", timeout=RECONNECT_TIMEOUT_MS)
    notice = chat.page.locator("#messages [data-testid=notice]")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text("lost")
    api_publish(server, "news", "new 3")
    expect(chat.texts).to_have_text(["old 1", "old 2", "new 1", "new 2", "new 3"])
    assert offsets(chat) == [1, 2, 1, 2, 3]
    epochs = chat.messages.evaluate_all("items => items.map(item => item.dataset.epoch)")
    assert epochs[:2] == [old_epoch, old_epoch]
    assert len(set(epochs[2:])) == 1
    assert epochs[2] != old_epoch


START_SCRIPT = """
async ([transport]) => {
  const roomcast = await import("/roomcast.js");
  window.log = [];
  const rc = roomcast.connect(location.origin, { rooms: ["a", "b"], name: "eve", transport });
  window.rc = rc;
  rc.on("open", (e) => window.log.push(["open", e.transport]));
  rc.on("close", () => window.log.push(["close"]));
  rc.on("subscribed", (e) => window.log.push(["subscribed", e.room]));
  rc.on("message", (m) => window.log.push(["message", m.room, m.offset, m.data]));
  rc.on("lost", (e) => window.log.push(["lost", e.room, e.since.offset, e.offset, e.reason]));
}
"""


@pytest.mark.parametrize(
    ("transport", "reason"),
    [("websocket", "not_recovered"), ("sse", "cursor_expired"), ("poll", "cursor_expired")],
)
def test_client_resumes_each_room_on_its_own(
    server_factory: ServerFactory, browser: Browser, transport: str, reason: str
) -> None:
    """Two rooms, a restart, then more messages than history keeps in one of them: that
    room is reported lost, the other one gets its missed message replayed, once."""
    server = server_factory("--api-key", API_KEY, "--history-size", "2")
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.http_url + "/health")
        page.evaluate(START_SCRIPT, [transport])
        page.wait_for_function("window.log.filter((e) => e[0] === 'subscribed').length === 2")

        context.set_offline(True)
        server.restart()
        page.wait_for_function("!window.rc.connected")
        for n in range(1, 6):
            api_publish(server, "a", f"a{n}")  # history keeps a4 and a5: a1-a3 are lost
        api_publish(server, "b", "b1")
        context.set_offline(False)
        page.evaluate("window.rc.reconnect()")
        page.wait_for_function("window.rc.connected", timeout=RECONNECT_TIMEOUT_MS)
        page.wait_for_function("window.log.some((e) => e[0] === 'message' && e[1] === 'b')")
        api_publish(server, "a", "a6")
        page.wait_for_function("window.log.some((e) => e[0] === 'message' && e[1] === 'a')")
        log = page.evaluate("window.log")
        page.evaluate("window.rc.close()")
        assert errors == []
    finally:
        context.close()
    assert [e for e in log if e[0] in {"message", "lost"}] == [
        ["lost", "a", 0, 5, reason],
        ["message", "b", 1, {"text": "b1"}],
        ["message", "a", 6, {"text": "a6"}],
    ]
    assert [e for e in log if e[0] in {"open", "close"}] == [
        ["open", transport], ["close"], ["open", transport]
    ]  # fmt: skip

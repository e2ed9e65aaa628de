"""Connection tokens in the browser client ``/roomcast.js``, in Chromium.

A server with ``--auth required`` and a one-second grace; the page's token function mints
tokens of 7 seconds through Python. On each transport the page stays connected well past
the first token's expiry (refreshing it), sees every message once, in order; a refused
token is an ``error`` event, retried on the same transport; a room outside the token's
grants is a ``forbidden`` join.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from playwright.sync_api import Browser, Page, Request, Response

from roomcast.auth import mint
from roomcast.testing import ServerProcess

from .conftest import API_KEY, api_publish

pytestmark = pytest.mark.browser

ServerFactory = Callable[..., ServerProcess]
SECRET = "browser-token-test-secret-0123456789"
GRACE = 1.0
TTL = 7.0  # seconds: the client refreshes 5 s before the expiry, so about every 2 s
TRANSPORTS = ["websocket", "sse", "poll"]
PATHS = {"websocket": "/ws", "sse": "/sse", "poll": "/poll"}
WAIT_MS = 15_000


def token(
    user: str = "alice",
    ttl: float = TTL,
    join: tuple[str, ...] = ("lobby",),
    publish: tuple[str, ...] = ("lobby",),
    key: str = SECRET,
) -> str:
    return mint(user, key=key.encode(), join=join, publish=publish, ttl=ttl)


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(
        "--history", "memory", "--api-key", API_KEY, "--auth", "required",
        "--token-secret", SECRET, "--token-grace", str(GRACE),
    )  # fmt: skip


@dataclass
class Traffic:
    """What the page sent and got: its HTTP requests, statuses, WebSockets and frames."""

    requests: list[Request] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)  # (path, status)
    sockets: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)  # WebSocket frames sent

    def paths(self, path: str) -> list[Request]:
        return [r for r in self.requests if urlsplit(r.url).path == path]

    def refreshes(self) -> list[str]:
        """The tokens of the ``refresh`` commands sent (over WebSocket or POST /send)."""
        commands = [json.loads(frame) for frame in self.frames]
        commands += [r.post_data_json for r in self.paths("/send")]
        return [c["token"] for c in commands if c and c.get("type") == "refresh"]

    def on_request(self, request: Request) -> None:
        self.requests.append(request)

    def on_response(self, response: Response) -> None:
        self.statuses.append((urlsplit(response.url).path, response.status))


@dataclass
class Tab:
    page: Page
    traffic: Traffic
    errors: list[str]
    minted: list[tuple[str, int]]  # each token the token function gave, and its exp
    refuse: bool = False  # the token function fails (the page's backend is down)


@pytest.fixture
def open_tab(server: ServerProcess, browser: Browser) -> Iterator[Callable[[], Tab]]:
    """A page of ``server`` whose ``window.mintToken()`` mints a token of TTL seconds."""
    contexts = []

    def open_page() -> Tab:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        tab = Tab(page, Traffic(), [], [])
        page.on("pageerror", lambda error: tab.errors.append(str(error)))
        page.on("request", tab.traffic.on_request)
        page.on("response", tab.traffic.on_response)
        page.on("websocket", lambda ws: _record_socket(ws, tab.traffic))

        def mint_token() -> str:
            if tab.refuse:
                raise RuntimeError("the token service is down")
            value = token()
            claims = jwt.decode(value, options={"verify_signature": False})
            tab.minted.append((value, claims["exp"]))
            return value

        page.expose_function("mintToken", mint_token)
        page.goto(server.http_url + "/health")
        return tab

    yield open_page
    for context in contexts:
        context.close()


def _record_socket(ws: Any, traffic: Traffic) -> None:
    traffic.sockets.append(ws.url)
    ws.on("framesent", lambda payload: traffic.frames.append(str(payload)))


START = """
async ([options]) => {
  const roomcast = await import("/roomcast.js");
  window.log = [];
  window.texts = [];
  window.calls = [];  // when the token function was called (unix seconds)
  const token = options.token ?? (() => {
    window.calls.push(Date.now() / 1000);
    return window.mintToken();
  });
  const rc = roomcast.connect(location.origin, {
    name: "mallory", backoffBase: 200, backoffMax: 400, ...options, token,
  });
  window.rc = rc;
  for (const name of ["open", "close", "transport", "subscribed", "lost"]) {
    rc.on(name, (e) => window.log.push([name, e.transport ?? e.room ?? null]));
  }
  rc.on("connecting", (e) => window.log.push(["connecting", e.transport]));
  rc.on("reconnecting", (e) => window.log.push(["reconnecting", e.delay]));
  rc.on("error", (e) => window.log.push(["error", e.name, e.code]));
  rc.on("message", (m) => window.texts.push([m.room, m.offset, m.data.text]));
}
"""


def log_of(page: Page, *names: str) -> list[list[Any]]:
    log: list[list[Any]] = page.evaluate("window.log")
    return [entry for entry in log if entry[0] in names]


# ---------------------------------------------------------------------------- refresh


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stays_connected_past_expiry_by_refreshing(
    server: ServerProcess, open_tab: Callable[[], Tab], transport: str
) -> None:
    tab = open_tab()
    page = tab.page
    page.evaluate(START, [{"rooms": ["lobby"], "transport": transport}])
    page.wait_for_function("window.log.some((e) => e[0] === 'subscribed')", timeout=WAIT_MS)
    first_expiry = tab.minted[0][1]

    # A message, then the next refresh, until two refreshes came after the first token
    # expired and its grace passed (about 11 s).
    sent: list[str] = []
    while True:
        sent.append(f"m{len(sent) + 1}")
        api_publish(server, "lobby", sent[-1])
        page.wait_for_function(f"window.texts.length === {len(sent)}", timeout=WAIT_MS)
        calls: list[float] = page.evaluate("window.calls")
        if sum(at > first_expiry + GRACE for at in calls[1:]) >= 2:
            break
        page.wait_for_function(f"window.calls.length > {len(calls)}", timeout=WAIT_MS)
    sent.append("last")
    api_publish(server, "lobby", "last")
    page.wait_for_function(f"window.texts.length === {len(sent)}", timeout=WAIT_MS)

    assert page.evaluate("window.texts") == [
        ["lobby", offset, text] for offset, text in enumerate(sent, start=1)
    ]
    assert page.evaluate("window.rc.connected") is True
    assert log_of(page, "open", "close", "lost", "error") == [["open", transport]]
    # The first token opened the connection, every other one refreshed it.
    first, *renewals = [value for value, _ in tab.minted]
    assert len(page.evaluate("window.calls")) == len(tab.minted)
    assert len(renewals) >= 3
    traffic = tab.traffic
    assert [status for _, status in traffic.statuses if status >= 400] == []
    if transport == "websocket":
        assert [parse_qs(urlsplit(url).query)["token"] for url in traffic.sockets] == [[first]]
        assert traffic.refreshes() == renewals
        assert traffic.paths("/send") == []
    else:
        assert traffic.sockets == []
        assert traffic.refreshes() == renewals
        opening, *later = traffic.paths(f"/{transport}")
        assert opening.headers["authorization"] == f"Bearer {first}"
        assert "token" not in parse_qs(urlsplit(opening.url).query)
        assert all("session" in parse_qs(urlsplit(r.url).query) for r in later)
    if transport == "sse":  # each refresh reopens the stream from the cursor
        assert len(traffic.paths("/sse")) == len(renewals) + 1
    assert tab.errors == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_expired_connection_comes_back_with_a_new_token(
    server: ServerProcess, open_tab: Callable[[], Tab], transport: str
) -> None:
    """The token function fails for a while: no refresh, the connection expires (4003,
    an SSE error event, a 401 poll), and comes back once the function works again."""
    tab = open_tab()
    page = tab.page
    page.evaluate(START, [{"rooms": ["lobby"], "transport": transport}])
    page.wait_for_function("window.log.some((e) => e[0] === 'subscribed')", timeout=WAIT_MS)
    api_publish(server, "lobby", "one")
    page.wait_for_function("window.texts.length === 1", timeout=WAIT_MS)

    tab.refuse = True
    page.wait_for_function("window.log.some((e) => e[0] === 'close')", timeout=WAIT_MS)
    assert time.time() > tab.minted[0][1] + GRACE  # not before the expiry and its grace
    api_publish(server, "lobby", "two")
    api_publish(server, "lobby", "three")
    page.wait_for_function(
        "window.log.filter((e) => e[0] === 'error' && e[2] === 'token_error').length >= 2",
        timeout=WAIT_MS,
    )  # the refreshes that failed, and a reconnection without a token
    assert page.evaluate("window.rc.connected") is False
    tab.refuse = False
    page.wait_for_function("window.texts.length === 3", timeout=WAIT_MS)
    api_publish(server, "lobby", "four")
    page.wait_for_function("window.texts.length === 4", timeout=WAIT_MS)

    assert page.evaluate("window.texts") == [
        ["lobby", 1, "one"], ["lobby", 2, "two"], ["lobby", 3, "three"], ["lobby", 4, "four"],
    ]  # fmt: skip
    assert log_of(page, "open", "close", "lost") == [
        ["open", transport], ["close", transport], ["open", transport],
    ]  # fmt: skip
    codes = {entry[2] for entry in log_of(page, "error")}
    assert codes == {"token_error", "token_expired"}
    assert tab.errors == []


def test_refresh_by_hand_resolves_with_the_expiry(
    open_tab: Callable[[], Tab],
) -> None:
    tab = open_tab()
    page = tab.page
    longer = token(ttl=600)
    page.evaluate(START, [{"rooms": ["lobby"], "transport": "websocket"}])
    page.wait_for_function("window.rc.connected", timeout=WAIT_MS)
    expires = page.evaluate("(t) => window.rc.refresh(t)", longer)
    assert time.time() + 590 < expires <= time.time() + 600
    refused = page.evaluate(
        "(t) => window.rc.refresh(t).then(() => null, (e) => [e.name, e.code])",
        token("bob", ttl=600),
    )
    assert refused == ["RoomcastError", "forbidden"]  # another user's token
    assert log_of(page, "open", "close", "error") == [["open", "websocket"]]


# ---------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("transport", "bad", "code", "used"),
    [
        ("auto", token(ttl=-60), "token_expired", "websocket"),
        ("auto", token(key="another-secret-0123456789abcdef!!"), "unauthorized", "websocket"),
        ("sse", token(ttl=-60), "token_expired", "sse"),
        ("poll", token(ttl=-60), "token_expired", "poll"),
    ],
)
def test_a_refused_token_is_an_error_and_no_fallback(
    open_tab: Callable[[], Tab], transport: str, bad: str, code: str, used: str
) -> None:
    tab = open_tab()
    page = tab.page
    options = {"rooms": ["lobby"], "transport": transport, "token": bad}
    page.evaluate(START, [options])
    page.wait_for_function(
        "window.log.filter((e) => e[0] === 'error').length >= 3", timeout=WAIT_MS
    )
    log = page.evaluate("window.log")
    errors = [entry for entry in log if entry[0] == "error"][:3]
    assert errors == [["error", "RoomcastError", code]] * 3
    # Retried on the same transport, with backoff (half to all of 200, 400, 400 ms).
    assert {e[1] for e in log if e[0] in {"connecting", "transport"}} == {used}
    assert [e for e in log if e[0] == "transport"] == [["transport", used]]
    delays = [entry[1] for entry in log if entry[0] == "reconnecting"]
    assert len(delays) >= 3
    assert all(100 <= delay <= 400 for delay in delays)
    assert [e for e in log if e[0] in {"open", "close", "subscribed"}] == []
    others = set(PATHS.values()) - {PATHS[used]}
    assert [r.url for r in tab.traffic.requests if urlsplit(r.url).path in others] == []
    if used == "websocket":
        assert tab.traffic.sockets != []  # and a plain GET /ws told why it was refused
        assert ("/ws", 401) in tab.traffic.statuses

    # A good token given by hand: the client reconnects at once and joins.
    page.evaluate("(t) => window.rc.refresh(t)", token(ttl=600))
    page.wait_for_function("window.log.some((e) => e[0] === 'subscribed')", timeout=WAIT_MS)
    offset = page.evaluate("window.rc.publish('lobby', {text: 'back'}).then((ok) => ok.offset)")
    assert offset == 1
    page.wait_for_function("window.texts.length === 1", timeout=WAIT_MS)
    assert page.evaluate("window.texts") == [["lobby", 1, "back"]]
    assert log_of(page, "open") == [["open", used]]
    assert tab.errors == []


# ---------------------------------------------------------------------------- grants


FORBIDDEN = """
async () => {
  const code = (promise) => promise.then(() => null, (e) => [e.name, e.code]);
  return {
    join: await code(window.rc.join("secret")),
    publish: await code(window.rc.publish("news", {text: "no"})),
    ok: (await window.rc.publish("lobby", {text: "yes"})).offset,
    rooms: window.rc.rooms,
  };
}
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rooms_outside_the_grants_are_forbidden(
    open_tab: Callable[[], Tab], transport: str
) -> None:
    tab = open_tab()
    page = tab.page
    grants = token(ttl=600, join=("lobby", "news"), publish=("lobby",))
    # "hidden" is refused as the connection starts, "secret" when joined later.
    options = {"rooms": ["lobby", "hidden", "news"], "transport": transport, "token": grants}
    page.evaluate(START, [options])
    page.wait_for_function(
        "window.log.filter((e) => e[0] === 'subscribed').length === 2", timeout=WAIT_MS
    )
    result = page.evaluate(FORBIDDEN)
    assert result == {
        "join": ["RoomcastError", "forbidden"],
        "publish": ["RoomcastError", "forbidden"],
        "ok": 1,
        "rooms": ["lobby", "news"],
    }
    page.wait_for_function("window.texts.length === 1", timeout=WAIT_MS)
    assert page.evaluate("window.texts") == [["lobby", 1, "yes"]]
    log = page.evaluate("window.log")
    assert [e for e in log if e[0] == "error"] == [["error", "RoomcastError", "forbidden"]]
    # (on SSE every reopened stream subscribes its rooms again: a join reopens it)
    assert {e[1] for e in log if e[0] == "subscribed"} == {"lobby", "news"}
    assert log_of(page, "open", "close") == [["open", transport]]
    assert tab.errors == []

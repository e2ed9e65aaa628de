"""The admin page's HTTP side against real servers: the page when it is off, the login
(its cookie, the rate limit, never logging the password), the header every admin
request needs, and the actions: publish, presence, disconnect (4004), also across two
nodes sharing a Redis or a NATS."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import websockets
from conftest import ServerFactory, WsClient
from oneway_client import OneWay
from test_tls import make_pki

from roomcast.admin import COOKIE_TTL, TOKEN_TTL
from roomcast.auth import ADMIN_KID, ADMIN_ROOM
from roomcast.exceptions import CloseCode
from roomcast.http.admin import COOKIE, LOGIN_BURST, OFF
from roomcast.testing import ServerProcess

Connect = Callable[..., Any]
KEY = "admin-test-api-key"
PASSWORD = "admin-test-password"
SECRET = "admin-test-cluster-secret"
HEADER = {"X-Roomcast-Admin": "1"}


class Admin:
    """The admin API of one server, as a browser would call it: the cookie kept by hand
    (aiohttp's jar ignores cookies of IP addresses)."""

    def __init__(self, http: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.http = http
        self.base = server.http_url
        self.cookie: str | None = None
        self.set_cookie: SimpleCookie = SimpleCookie()

    async def login(self, password: str, **headers: str) -> tuple[int, dict[str, Any]]:
        status, body, reply = await self._request("POST", "/admin/login", {"password": password},
                                                  {**HEADER, **headers})  # fmt: skip
        if status == 200:
            self.set_cookie = SimpleCookie(reply.headers["Set-Cookie"])
            self.cookie = self.set_cookie[COOKIE].value
        return status, body

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        status, answer, _ = await self._request(method, path, body, HEADER if headers is None
                                                else headers)  # fmt: skip
        return status, answer

    async def _request(
        self, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
        headers = dict(headers)
        if self.cookie is not None:
            headers["Cookie"] = f"{COOKIE}={self.cookie}"
        data = None if body is None else json.dumps(body)
        async with self.http.request(
            method, self.base + path, data=data, headers=headers, ssl=False
        ) as reply:
            assert reply.content_type == "application/json", await reply.text()
            return reply.status, await reply.json(), reply


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def admin_server(factory: ServerFactory, *args: str) -> ServerProcess:
    server: ServerProcess = factory("--history", "memory", "--api-key", KEY, *args)
    return server


async def logged_in(http: aiohttp.ClientSession, server: ServerProcess) -> Admin:
    admin = Admin(http, server)
    assert (await admin.login(KEY))[0] == 200
    return admin


# -- off, login, cookie -------------------------------------------------------------


async def test_without_a_password_or_api_key_the_admin_page_is_off(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory("--history", "memory")
    async with http.get(server.http_url + "/admin") as reply:
        assert (reply.status, reply.content_type) == (403, "text/html")
        assert f"403: {OFF}." in await reply.text()
    admin = Admin(http, server)
    off = (403, error("forbidden", OFF))
    assert await admin.login("anything") == off
    assert await admin.call("GET", "/admin/api/token") == off
    assert await admin.call("POST", "/admin/api/publish", {"room": "r", "data": 1}) == off
    assert await admin.call("POST", "/admin/api/disconnect", {"session": "s"}) == off


async def test_the_page_is_served_with_a_strict_content_security_policy(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = admin_server(server_factory)
    async with http.get(server.http_url + "/admin") as reply:
        assert (reply.status, reply.content_type) == (200, "text/html")
        assert '<script type="module" src="/static/admin.js">' in await reply.text()
        policy = reply.headers["Content-Security-Policy"]
        assert policy.startswith("default-src 'self';")
        assert "frame-ancestors 'none'" in policy
        assert reply.headers["Cache-Control"] == "no-store"


async def test_login_sets_a_short_lived_httponly_strict_cookie(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = admin_server(server_factory, "--admin-password", PASSWORD)
    admin = Admin(http, server)
    assert await admin.login(KEY) == (401, error("unauthorized", "wrong admin password"))
    assert admin.cookie is None
    node = (await admin.call("GET", "/admin/api/session"))[1]["node"]
    assert await admin.call("GET", "/admin/api/session") == (200, {"logged_in": False,
                                                                   "node": node})  # fmt: skip
    status, body = await admin.login(PASSWORD)
    assert (status, body) == (200, {"node": node})
    assert await admin.call("GET", "/admin/api/session") == (200, {"logged_in": True,
                                                                   "node": node})  # fmt: skip
    morsel = admin.set_cookie[COOKIE]
    assert (morsel["samesite"], morsel["path"], morsel["max-age"]) == (
        "Strict", "/admin", str(int(COOKIE_TTL)),
    )  # fmt: skip
    assert (bool(morsel["httponly"]), bool(morsel["secure"])) == (True, False)
    status, answer = await admin.call("GET", "/admin/api/token")
    assert status == 200
    assert (answer["room"], answer["node"]) == (ADMIN_ROOM, body["node"])
    assert jwt.get_unverified_header(answer["token"])["kid"] == ADMIN_KID
    claims = jwt.decode(answer["token"], options={"verify_signature": False})
    assert claims == {"sub": "admin", "exp": answer["expires"]}
    assert TOKEN_TTL - 5 < answer["expires"] - time.time() <= TOKEN_TTL
    renewed = (await admin._request("GET", "/admin/api/token", None, HEADER))[2]
    assert COOKIE in SimpleCookie(renewed.headers["Set-Cookie"])  # renewed while in use
    assert await admin.call("POST", "/admin/logout") == (200, {"node": body["node"]})


async def test_the_api_key_logs_in_without_an_admin_password(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    admin = Admin(http, admin_server(server_factory))
    assert (await admin.login(PASSWORD))[0] == 401
    assert (await admin.login(KEY))[0] == 200


async def test_the_cookie_is_secure_over_tls_and_behind_a_trusted_tls_proxy(
    server_factory: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    tls = admin_server(server_factory, "--tls-cert", str(pki.cert), "--tls-key", str(pki.key))
    admin = Admin(http, tls)
    assert (await admin.login(KEY))[0] == 200
    assert bool(admin.set_cookie[COOKIE]["secure"]) is True
    proxied = admin_server(server_factory, "--trusted-proxies", "127.0.0.1")
    admin = Admin(http, proxied)
    assert (await admin.login(KEY, **{"X-Forwarded-Proto": "https"}))[0] == 200
    assert bool(admin.set_cookie[COOKIE]["secure"]) is True
    assert (await admin.login(KEY))[0] == 200
    assert bool(admin.set_cookie[COOKIE]["secure"]) is False
    untrusted = Admin(http, admin_server(server_factory))  # the header of anyone: ignored
    assert (await untrusted.login(KEY, **{"X-Forwarded-Proto": "https"}))[0] == 200
    assert bool(untrusted.set_cookie[COOKIE]["secure"]) is False


async def test_login_attempts_are_rate_limited_per_client_address(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = admin_server(server_factory, "--trusted-proxies", "127.0.0.1")
    admin = Admin(http, server)
    alice = {"X-Forwarded-For": "198.51.100.7"}
    for _ in range(LOGIN_BURST):
        assert (await admin.login("wrong-password", **alice))[0] == 401
    too_many = error("rate_limited", "too many login attempts: try again later")
    status, body, reply = await admin._request(
        "POST", "/admin/login", {"password": KEY}, {**HEADER, **alice}
    )
    assert (status, body, reply.headers["Retry-After"]) == (429, too_many, "10")
    assert admin.cookie is None  # even the right password waits
    assert (await admin.login(KEY, **{"X-Forwarded-For": "198.51.100.8"}))[0] == 200


async def test_the_password_is_never_logged(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = admin_server(server_factory, "--admin-password", PASSWORD, "--log-format", "json")
    admin = Admin(http, server)
    assert (await admin.login("guess-" + PASSWORD))[0] == 401
    assert (await admin.login(PASSWORD))[0] == 200
    await admin.call("GET", "/admin/api/token")
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    events = {line.get("event"): line for line in lines}
    assert events["auth_failure"]["reason"] == "wrong admin password"
    assert events["auth_failure"]["path"] == "/admin/login"
    assert events["admin_login"]["client"] == "127.0.0.1"
    assert PASSWORD not in server.log()
    assert admin.cookie is not None and admin.cookie not in server.log()


# -- every admin request: the cookie and the header ------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/api/token", None),
        ("GET", "/admin/api/presence?room=lobby", None),
        ("POST", "/admin/api/publish", {"room": "lobby", "data": 1}),
        ("POST", "/admin/api/disconnect", {"session": "abc"}),
    ],
)
async def test_admin_requests_need_the_cookie_and_the_header(
    server_factory: ServerFactory, http: aiohttp.ClientSession, method: str, path: str,
    body: Any,
) -> None:  # fmt: skip
    server = admin_server(server_factory, "--secret", SECRET)
    admin = Admin(http, server)
    login_first = (401, error("unauthorized", "log in to the admin page first"))
    assert await admin.call(method, path, body) == login_first
    admin.cookie = "forged"
    assert await admin.call(method, path, body) == login_first
    other = Admin(http, admin_server(server_factory, "--secret", SECRET, "--admin-password",
                                     PASSWORD))  # fmt: skip
    assert (await other.login(PASSWORD))[0] == 200
    admin.cookie = other.cookie  # same secret, another password: not this node's admin
    assert await admin.call(method, path, body) == login_first
    assert (await admin.login(KEY))[0] == 200
    no_header = (403, error("forbidden", "the X-Roomcast-Admin header is required"))
    assert await admin.call(method, path, body, headers={}) == no_header
    evil = {**HEADER, "Origin": "https://evil.example"}
    assert await admin.call(method, path, body, headers=evil) == (
        403, error("forbidden", "origin 'https://evil.example' may not use the admin API"),
    )  # fmt: skip
    own = {**HEADER, "Origin": server.http_url}
    assert (await admin.call(method, path, body, headers=own))[0] in {200, 404}


async def test_a_cookie_of_one_node_works_on_another_with_the_same_secret(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    first = admin_server(server_factory, "--secret", SECRET)
    second = admin_server(server_factory, "--secret", SECRET)
    third = admin_server(server_factory)  # a random secret of its own
    admin = await logged_in(http, first)
    for server, status in ((second, 200), (third, 401)):
        other = Admin(http, server)
        other.cookie = admin.cookie
        assert (await other.call("GET", "/admin/api/token"))[0] == status


# -- actions ------------------------------------------------------------------------


async def test_publish_reaches_the_room_and_refuses_bad_input(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect
) -> None:
    server = admin_server(server_factory, "--max-data-size", "100")
    admin = await logged_in(http, server)
    member: WsClient = await ws_connect(server.ws_url)
    epoch = (await member.request(type="join", room="lobby", id=1))["epoch"]
    body = {"room": "lobby", "data": {"text": "from the admin"}}
    status, answer = await admin.call("POST", "/admin/api/publish", body)
    assert (status, answer) == (200, {"room": "lobby", "epoch": epoch, "offset": 1})
    message = await member.until("message")
    assert (message["data"], message["from"], message["offset"]) == (body["data"], None, 1)
    refused = {
        ADMIN_ROOM: (403, error("forbidden", "roomcast:* rooms are roomcast's own")),
        "roomcast:control": (403, error("forbidden", "roomcast:* rooms are roomcast's own")),
        "bad room": (400, "invalid_room"),
    }
    for room, expected in refused.items():
        status, answer = await admin.call("POST", "/admin/api/publish", {"room": room, "data": 1})
        assert (status, answer if isinstance(expected[1], dict) else answer["code"]) == expected
    big = {"room": "lobby", "data": "x" * 200}
    status, answer = await admin.call("POST", "/admin/api/publish", big)
    assert (status, answer) == (413, error("too_large", "data is larger than 100 bytes"))
    status, answer = await admin.call("POST", "/admin/api/publish", {"room": "lobby"})
    assert (status, answer["code"]) == (400, "bad_request")
    assert answer["message"].startswith("bad body: Object missing required field `data`")


async def test_presence_shows_session_ids_and_disconnect_closes_with_4004(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect
) -> None:
    server = admin_server(server_factory)
    admin = await logged_in(http, server)
    bob: WsClient = await ws_connect(server.ws_url + "?name=bob")
    assert (await bob.request(type="join", room="lobby", id=1))["type"] == "ok"
    session = bob.welcome["session"]
    status, answer = await admin.call("GET", "/admin/api/presence?room=lobby")
    assert (status, answer) == (200, {"room": "lobby", "members": [{"session": session,
                                                                    "user": "bob"}]})  # fmt: skip
    status, answer = await admin.call("POST", "/admin/api/disconnect", {"session": session})
    assert (status, answer) == (200, {"session": session, "node": bob.welcome["node"]})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(bob.ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        CloseCode.ADMIN_DISCONNECT, "disconnected by an administrator",
    )  # fmt: skip
    gone = (404, error("not_found", f"no node has session {session!r}"))
    assert await admin.call("POST", "/admin/api/disconnect", {"session": session}) == gone
    status, answer = await admin.call("POST", "/admin/api/disconnect", {"session": ""})
    assert (status, answer) == (400, error("bad_request", "session must be 1-64 characters"))
    async with http.get(server.http_url + "/metrics") as reply:
        assert 'roomcast_disconnects_total{reason="admin"} 1.0' in await reply.text()


async def test_disconnect_ends_an_sse_stream(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = admin_server(server_factory)
    admin = await logged_in(http, server)
    stream = await OneWay(http, server.http_url).sse(rooms="lobby")
    session = (await stream.until("welcome")).data["session"]
    status, answer = await admin.call("POST", "/admin/api/disconnect", {"session": session})
    assert (status, answer["session"]) == (200, session)
    assert await stream.ended(5)
    stream.close()


@pytest.mark.parametrize("broker", ["redis_server", "nats_server"])
async def test_any_node_disconnects_a_session_of_another_node(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect,
    request: pytest.FixtureRequest, broker: str,
) -> None:  # fmt: skip
    url: str = request.getfixturevalue(broker).url
    cluster = ("--broker", url, "--secret", SECRET)
    nodes = [admin_server(server_factory, *cluster, "--node-id", name) for name in "ab"]
    admin = await logged_in(http, nodes[0])
    on_b: WsClient = await ws_connect(nodes[1].ws_url)
    session = on_b.welcome["session"]
    status, answer = await admin.call("POST", "/admin/api/disconnect", {"session": session})
    assert (status, answer) == (200, {"session": session, "node": "b"})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(on_b.ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
    gone = (404, error("not_found", "no node has session 'nobody'"))
    assert await admin.call("POST", "/admin/api/disconnect", {"session": "nobody"}) == gone

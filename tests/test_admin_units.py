"""The admin page's parts in one process: the reserved namespace in the settings, the
decisions of the authenticator for admins and everyone else, the admin keys, and a
node's stats publisher and disconnect command."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import jwt
import msgspec
import pytest

from roomcast.admin import CONTROL_ROOM, PERIOD, REASON, AdminKeys
from roomcast.auth import ADMIN_KID, ADMIN_ROOM, Authenticator, Grants, Identity
from roomcast.config import RESERVED_NAMESPACE, Settings
from roomcast.exceptions import CloseCode, ConfigError, ProtocolError
from roomcast.node import Node
from roomcast.policy import Namespace
from roomcast.stats import Snapshot
from roomcast.testing import fake_session

TOKEN_SECRET = "admin-unit-token-secret-0123456789abcdef"
SECRET = "admin-unit-cluster-secret"


# -- settings -------------------------------------------------------------------------


def test_the_reserved_namespace_comes_first_whatever_the_config_says() -> None:
    opened = Namespace(pattern="roomcast:*", anonymous=True, publish="clients", presence=True)
    settings = Settings(namespaces=(opened, Namespace(pattern="*", history_size=5)))
    assert settings.namespaces[0] == RESERVED_NAMESPACE
    assert settings.namespace(ADMIN_ROOM) == Namespace(
        pattern="roomcast:*", anonymous=False, publish="api", presence=False, history_size=8,
        history_ttl=30.0,
    )  # fmt: skip
    assert settings.namespace("lobby").history_size == 5
    assert Settings().namespaces == (RESERVED_NAMESPACE,)
    again = Settings(namespaces=settings.namespaces)  # not added twice
    assert again.namespaces == settings.namespaces


def test_the_admin_password_falls_back_to_the_api_key() -> None:
    assert Settings().admin_secret is None
    assert Settings(api_key="key").admin_secret == "key"
    assert Settings(api_key="key", admin_password="password").admin_secret == "password"
    with pytest.raises(ConfigError, match="--admin-password must be at least 8 characters"):
        Settings(admin_password="short")


# -- decisions ------------------------------------------------------------------------


def authenticator(auth: str) -> Authenticator:
    settings = Settings(auth=auth, token_secret=TOKEN_SECRET)
    checker = Authenticator(settings)
    checker.admin_key = AdminKeys(SECRET, "password").connection
    return checker


@pytest.mark.parametrize("auth", ["off", "optional", "required"])
def test_only_an_admin_joins_the_admin_room_and_nobody_publishes_there(auth: str) -> None:
    checker = authenticator(auth)
    everything = Grants(join=("*",), publish=("*",))
    users = {
        "anonymous": Identity("guest", grants=None if auth == "off" else Grants()),
        "everything": Identity("mallory", anonymous=False, grants=everything),
        "admin": checker.verify(AdminKeys(SECRET, "password").connection_token()[0]),
    }
    decisions = {
        (name, room): (checker.may_join(user, room), checker.may_publish(user, room))
        for name, user in users.items()
        for room in (ADMIN_ROOM, CONTROL_ROOM, "roomcast:other")
    }
    assert decisions == {
        **{(name, room): (False, False) for name in users
           for room in (ADMIN_ROOM, CONTROL_ROOM, "roomcast:other")},
        ("admin", ADMIN_ROOM): (True, False),
    }  # fmt: skip
    with pytest.raises(ProtocolError, match="clients may not publish to this room"):
        checker.check_publish(users["admin"], ADMIN_ROOM)


def test_an_admin_token_names_an_admin_and_grants_nothing_else() -> None:
    token = AdminKeys(SECRET, "password").connection_token()[0]
    assert jwt.get_unverified_header(token)["kid"] == ADMIN_KID
    admin = authenticator("required").identify(token, "ignored")
    assert (admin.user, admin.anonymous, admin.admin, admin.grants) == (
        "admin", False, True, Grants(),
    )  # fmt: skip
    assert authenticator("off").identify(token, "ignored").grants is None
    assert not authenticator("required").may_join(admin, "lobby")


def test_bad_admin_tokens_are_refused() -> None:
    checker = authenticator("off")
    other = AdminKeys(SECRET, "another password").connection_token()[0]
    key = AdminKeys(SECRET, "password").connection
    claims = {"sub": "admin", "exp": int(time.time()) - 60}
    expired = jwt.encode(claims, key, headers={"kid": ADMIN_KID})
    cases = {other: "unauthorized", expired: "token_expired"}
    for token, code in cases.items():
        with pytest.raises(ProtocolError) as refused:
            checker.identify(token, "x")
        assert refused.value.code == code
    off = Authenticator(Settings())  # no admin page on this node
    with pytest.raises(ProtocolError, match="the admin page is off on this node"):
        off.identify(other, "x")
    # With --auth off a token that is not an admin's is ignored, as before.
    assert off.identify("not-a-jwt", "guest") == Identity("guest")


def test_admin_keys() -> None:
    keys = AdminKeys(SECRET, "password")
    assert keys.check_password("password")
    assert not keys.check_password("passwor")
    assert not keys.check_password("password ")
    assert keys.valid_cookie(keys.cookie())
    assert not keys.valid_cookie(AdminKeys(SECRET, "other password").cookie())
    assert not keys.valid_cookie(AdminKeys("another secret", "password").cookie())
    assert not keys.valid_cookie(keys.connection_token()[0])  # not a cookie
    assert not keys.valid_cookie(None)
    assert not keys.valid_cookie("garbage")


# -- a node ---------------------------------------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    instance = Node(Settings(history="memory", api_key="key", node_id="n1", publish_rate=0))
    await instance.start()
    yield instance
    await instance.drain()


async def test_the_node_publishes_its_snapshot_without_counting_it(node: Node) -> None:
    session, transport = await fake_session(node)
    session.identity = Identity("admin", anonymous=False, admin=True)
    await node.join(session, ADMIN_ROOM, None)
    async with asyncio.timeout(PERIOD * 3):
        frame = await transport.until("message")
    snapshot = msgspec.convert(frame["data"], Snapshot)
    assert (snapshot.node, snapshot.state, snapshot.connections) == ("n1", "ready", {"fake": 1})
    assert frame["from"] is None
    assert sum(node.meter.published.values()) == 0  # not a publish of anybody's
    assert node.meter.append_latency.count == 0
    await node.broker.flush()
    for _ in range(10):
        node.admin.publish_snapshot()
        await node.broker.flush()
    page = await node.broker.read(ADMIN_ROOM, limit=100)
    assert len(page.entries) == 8  # the reserved namespace's history size


async def test_a_draining_node_publishes_no_stats(node: Node) -> None:
    await node.broker.flush()
    before = (await node.broker.read(ADMIN_ROOM, limit=0)).position.offset
    node.state = "draining"
    node.admin.publish_snapshot()
    await node.broker.flush()
    assert (await node.broker.read(ADMIN_ROOM, limit=0)).position.offset == before
    node.state = "ready"


async def test_disconnect_closes_a_local_session_with_4004(node: Node) -> None:
    session, transport = await fake_session(node)
    assert await node.admin.disconnect(session.id) == "n1"
    assert transport.closed == (CloseCode.ADMIN_DISCONNECT, REASON)
    assert node.meter.disconnects["admin"] == 1
    assert await node.admin.disconnect(session.id) is None  # closed already
    assert await node.admin.disconnect("nobody") is None  # one node: nobody else to ask


async def test_control_events_are_the_admins_and_other_events_reach_members(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    session, transport = await fake_session(node)
    await node.join(session, "lobby", None)
    await node.broker.broadcast("lobby", b'{"type":"joined","room":"lobby"}', "")
    assert await transport.until("joined") == {"type": "joined", "room": "lobby"}
    with caplog.at_level(logging.WARNING, "roomcast.admin"):
        await node.broker.broadcast(CONTROL_ROOM, b'{"type":"nonsense"}', "")
    assert "ignoring a bad admin command" in caplog.text
    disconnect = {"type": "disconnect", "session": session.id, "request": "r1", "node": "n2"}
    await node.broker.broadcast(CONTROL_ROOM, msgspec.json.encode(disconnect), "")
    assert transport.closed == (CloseCode.ADMIN_DISCONNECT, REASON)

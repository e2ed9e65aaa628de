"""Connection tokens and the decisions of the Authenticator, without sockets."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from roomcast.auth import Authenticator, Grants, Identity, mint, signing_key
from roomcast.config import Settings
from roomcast.exceptions import ConfigError, ErrorCode, ProtocolError
from roomcast.policy import Namespace

SECRET = "s" * 32
OTHER = "o" * 32


def authenticator(auth: str = "required", **settings: object) -> Authenticator:
    options: dict[str, object] = {"auth": auth, "token_secret": SECRET, **settings}
    return Authenticator(Settings(**options))  # type: ignore[arg-type]


def refused(code: str, call: object, *args: object) -> str:
    with pytest.raises(ProtocolError) as info:
        call(*args)  # type: ignore[operator]
    assert info.value.code == code
    return info.value.message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict[str, object]) -> str:
    """A token with ``"alg": "none"`` and no signature."""
    header = json.dumps({"alg": "none", "typ": "JWT"}).encode()
    return f"{b64(header)}.{b64(json.dumps(payload).encode())}."


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def test_a_good_token_gives_its_user_grants_and_expiry() -> None:
    token = mint("alice", key=SECRET.encode(), join=("lobby",), publish=("chat:*",), ttl=60)
    identity = authenticator().verify(token)
    assert identity.user == "alice"
    assert identity.anonymous is False
    assert identity.grants == Grants(join=("lobby",), publish=("chat:*",))
    assert time.time() + 55 < identity.expires <= time.time() + 60


def test_a_token_without_exp_never_expires() -> None:
    identity = authenticator().verify(mint("bob", key=SECRET.encode(), ttl=None))
    assert identity.expires == 0.0
    assert identity.expired(grace=0, now=time.time() + 10**9) is False


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (mint("alice", key=OTHER.encode()), ErrorCode.UNAUTHORIZED),  # wrongly signed
        (mint("alice", key=SECRET.encode(), ttl=-60), ErrorCode.TOKEN_EXPIRED),
        ("not.a.token", ErrorCode.UNAUTHORIZED),
        ("", ErrorCode.UNAUTHORIZED),
        (unsigned({"sub": "alice"}), ErrorCode.UNAUTHORIZED),
        (jwt.encode({"sub": 7}, SECRET, algorithm="HS256"), ErrorCode.UNAUTHORIZED),
        (jwt.encode({"rooms": {}}, SECRET, algorithm="HS256"), ErrorCode.UNAUTHORIZED),
        (jwt.encode({"sub": "x" * 65}, SECRET, algorithm="HS256"), ErrorCode.UNAUTHORIZED),
        (jwt.encode({"sub": "a", "rooms": ["x"]}, SECRET, algorithm="HS256"),
         ErrorCode.UNAUTHORIZED),
        (jwt.encode({"sub": "a", "rooms": {"read": ["x"]}}, SECRET, algorithm="HS256"),
         ErrorCode.UNAUTHORIZED),
        (jwt.encode({"sub": "a"}, SECRET * 2, algorithm="HS384"), ErrorCode.UNAUTHORIZED),
    ],
)  # fmt: skip
def test_bad_tokens_are_refused(token: str, code: str) -> None:
    refused(code, authenticator().verify, token)


def test_rs256_and_es256_tokens_are_checked_with_the_public_key() -> None:
    keys: list[tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]] = [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ]
    for key, algorithm in keys:
        private, public = pem(key)
        auth = authenticator(token_secret=None, token_public_key=public)
        signer, found = signing_key(None, private)
        assert found == algorithm
        assert auth.verify(mint("carol", key=signer, algorithm=algorithm)).user == "carol"
        # an HS256 token made with the public key as its secret (algorithm confusion)
        forged = _hs256_with_key(public.encode(), {"sub": "mallory"})
        refused(ErrorCode.UNAUTHORIZED, auth.verify, forged)
        # with only a public key configured, HS256 tokens are not accepted at all
        refused(ErrorCode.UNAUTHORIZED, auth.verify, mint("eve", key=SECRET.encode()))


def _hs256_with_key(key: bytes, payload: dict[str, object]) -> str:
    """Sign by hand: PyJWT itself refuses to use a PEM key as an HMAC secret."""
    import hashlib
    import hmac

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    mac = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def test_other_public_keys_are_refused_at_start() -> None:
    _, public = pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError, match="P-256"):
        authenticator(token_secret=None, token_public_key=public)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        authenticator(token_secret=None, token_public_key="garbage")


def test_identify_by_mode() -> None:
    token = mint("alice", key=SECRET.encode(), join=("a",))
    assert refused(ErrorCode.UNAUTHORIZED, authenticator("required").identify, None, "x") == (
        "a connection token is required"
    )
    assert authenticator("required").identify(token, "ignored").user == "alice"
    anonymous = authenticator("optional").identify(None, "guest")
    assert anonymous == Identity("guest", anonymous=True, grants=Grants())
    assert authenticator("off").identify(None, "guest") == Identity("guest", grants=None)
    # a token is checked even when it is optional: a bad one is not "anonymous"
    refused(ErrorCode.UNAUTHORIZED, authenticator("optional").identify, "bad", "guest")


def test_joining_and_publishing_follow_the_grants() -> None:
    auth = authenticator()
    alice = Identity("alice", anonymous=False, grants=Grants(join=("lobby", "news:*"),
                                                              publish=("chat:*",)))  # fmt: skip
    assert [auth.may_join(alice, room) for room in ("lobby", "news:1", "chat:x", "dm:bob")] == [
        True, True, True, False,
    ]  # fmt: skip
    assert [auth.may_publish(alice, room) for room in ("lobby", "news:1", "chat:x")] == [
        False, False, True,
    ]  # fmt: skip
    assert "alice may not join room 'dm:bob'" in refused(
        ErrorCode.FORBIDDEN, auth.check_join, alice, "dm:bob"
    )
    refused(ErrorCode.FORBIDDEN, auth.check_publish, alice, "lobby")


def test_namespaces_open_rooms_to_anonymous_users_and_close_publishing() -> None:
    namespaces = (
        Namespace("public:*", anonymous=True),
        Namespace("feed:*", anonymous=True, publish="api"),
        Namespace("quiet:*", anonymous=True, presence=False),
    )
    auth = authenticator("optional", namespaces=namespaces)
    guest = Identity("guest", grants=Grants())
    assert auth.may_join(guest, "public:1") and auth.may_publish(guest, "public:1")
    assert auth.may_join(guest, "feed:1") and not auth.may_publish(guest, "feed:1")
    assert not auth.may_join(guest, "private")
    assert "clients may not publish" in refused(
        ErrorCode.FORBIDDEN, auth.check_publish, guest, "feed:1"
    )
    assert "presence is off" in refused(ErrorCode.FORBIDDEN, auth.check_presence, "quiet:1")
    auth.check_presence("public:1")


def test_with_auth_off_anyone_joins_but_api_only_rooms_stay_closed() -> None:
    auth = authenticator("off", token_secret=None, readonly_rooms=("news:*",))
    anyone = auth.identify(None, "x")
    assert auth.may_join(anyone, "anything") and auth.may_publish(anyone, "anything")
    assert auth.may_join(anyone, "news:1") and not auth.may_publish(anyone, "news:1")
    assert auth.checks_tokens is False


def test_signing_key_refuses_short_secrets_and_bad_keys() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        signing_key("short", None)
    with pytest.raises(ConfigError, match="PEM private key"):
        signing_key(None, b"nope")
    with pytest.raises(ConfigError, match="--token-secret must be at least 32"):
        Settings(auth="required", token_secret="short")
    with pytest.raises(ConfigError, match="needs --token-secret"):
        Settings(auth="optional")

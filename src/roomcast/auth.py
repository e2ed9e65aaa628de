"""Who a client is and what it may do: connection tokens, grants and room namespaces.

A client proves who it is with a connection token, a JWT its application's backend
signs (HS256 with ``--token-secret``, RS256 or ES256 with the private half of
``--token-public-key``)::

    {"sub": "alice", "exp": 1767225600,
     "rooms": {"join": ["lobby", "chat:*"], "publish": ["chat:*"]}}

``sub`` is the user shown in presence and in ``from``; ``exp`` (optional) is when the
token ends; ``rooms`` lists the rooms, exact names or ``*`` patterns, the user may join
and those it may publish to (a publish grant also grants joining). With ``--auth off``
nobody is checked; with ``optional`` a client without a token is anonymous and may join
only the namespaces that say ``anonymous = true``; with ``required`` every client needs a
token. docs/security.md has the whole model.
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any, Final

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from roomcast.config import MIN_TOKEN_SECRET, RESERVED_NAMESPACE, Settings
from roomcast.exceptions import ConfigError, ErrorCode, ProtocolError

MAX_USER_LENGTH: Final = 64
LEEWAY: Final = 5.0  # seconds of clock skew allowed when a token is first checked
RESERVED: Final = RESERVED_NAMESPACE.pattern.rstrip("*")  # "roomcast:"
ADMIN_ROOM: Final = RESERVED + "admin"
ADMIN_KID: Final = "roomcast-admin"  # the JWT header of admin connection tokens
ADMIN_USER: Final = "admin"


class Grants(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``rooms`` claim: patterns of the rooms a user may join, and publish to."""

    join: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()


class Identity(msgspec.Struct, frozen=True):
    """A connection's user: from a token, or anonymous. ``grants`` None: no limits (off)."""

    user: str
    anonymous: bool = True
    grants: Grants | None = None
    expires: float = 0.0  # unix time the token ends; 0: never
    admin: bool = False  # may join the admin room (an admin page's connection)

    def expired(self, grace: float, now: float | None = None) -> bool:
        return bool(self.expires) and (now or time.time()) > self.expires + grace


class _Claims(msgspec.Struct, frozen=True):
    sub: str
    exp: float | None = None
    rooms: Grants = Grants()


def _matches(patterns: tuple[str, ...], room: str) -> bool:
    return any(fnmatch.fnmatchcase(room, pattern) for pattern in patterns)


class Authenticator:
    """Checks connection tokens and decides every join and publish of a client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mode = settings.auth
        self.admin_key: bytes | None = None  # set by roomcast.admin when the page is on
        self._keys: dict[str, Any] = {}
        if settings.token_secret is not None:
            self._keys["HS256"] = settings.token_secret.encode()
        if settings.token_public_key is not None:
            key = _public_key(settings.token_public_key)
            self._keys["RS256" if isinstance(key, rsa.RSAPublicKey) else "ES256"] = key

    @property
    def checks_tokens(self) -> bool:
        return bool(self._keys)

    def identify(self, token: str | None, name: str) -> Identity:
        """The identity of a new connection: its token's, or anonymous named ``name``.

        ``unauthorized`` (HTTP 401) if a token is required and missing, or is not good."""
        if token and (self._keys or _is_admin_token(token)):
            return self.verify(token)
        if self.mode == "required":
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "a connection token is required")
        grants = None if self.mode == "off" else Grants()
        return Identity(name, anonymous=True, grants=grants)

    def verify(self, token: str) -> Identity:
        """The identity in ``token``; ``token_expired`` or ``unauthorized`` if not good."""
        if _is_admin_token(token):
            return self._verify_admin(token)
        try:
            algorithm = str(jwt.get_unverified_header(token).get("alg"))
            key = self._keys.get(algorithm)
            if key is None:
                raise jwt.InvalidAlgorithmError(f"tokens signed with {algorithm} are not accepted")
            payload = jwt.decode(token, key, algorithms=[algorithm], leeway=LEEWAY)
            claims = msgspec.convert(payload, _Claims)
        except jwt.ExpiredSignatureError:
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "the connection token expired") from None
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
        if not 1 <= len(claims.sub) <= MAX_USER_LENGTH:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, f"invalid token: sub must be 1-{MAX_USER_LENGTH} characters"
            )
        grants = None if self.mode == "off" else claims.rooms
        return Identity(claims.sub, anonymous=False, grants=grants, expires=claims.exp or 0.0)

    def _verify_admin(self, token: str) -> Identity:
        if self.admin_key is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "the admin page is off on this node")
        try:
            claims = jwt.decode(token, self.admin_key, algorithms=["HS256"], leeway=LEEWAY,
                                options={"require": ["exp", "sub"]})  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "the admin token expired") from None
        except jwt.InvalidTokenError as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid admin token: {exc}") from None
        grants = None if self.mode == "off" else Grants()
        return Identity(str(claims["sub"]), anonymous=False, grants=grants,
                        expires=float(claims["exp"]), admin=True)  # fmt: skip

    # -- decisions ---------------------------------------------------------------------

    def may_join(self, identity: Identity, room: str) -> bool:
        if room.startswith(RESERVED):  # roomcast's own rooms, whatever --auth says
            return identity.admin and room == ADMIN_ROOM
        grants = identity.grants
        if grants is None or self.settings.namespace(room).anonymous:
            return True
        return _matches(grants.join, room) or _matches(grants.publish, room)

    def may_publish(self, identity: Identity, room: str) -> bool:
        """Clients may publish to the room (the namespace allows it and so does the token).
        Publishing also needs membership, checked by the session."""
        if room.startswith(RESERVED):
            return False  # only the nodes publish there
        namespace = self.settings.namespace(room)
        if namespace.publish == "api":
            return False
        grants = identity.grants
        return grants is None or namespace.anonymous or _matches(grants.publish, room)

    def check_join(self, identity: Identity, room: str, command_id: Any = None) -> None:
        if not self.may_join(identity, room):
            message = f"{identity.user} may not join room {room!r}"
            raise ProtocolError(ErrorCode.FORBIDDEN, message, command_id, room)

    def check_publish(self, identity: Identity, room: str, command_id: Any = None) -> None:
        if self.settings.namespace(room).publish == "api":
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "clients may not publish to this room", command_id
            )
        if not self.may_publish(identity, room):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"{identity.user} may not publish to {room!r}", command_id
            )

    def check_presence(self, room: str, command_id: Any = None) -> None:
        if not self.settings.namespace(room).presence:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "presence is off in this room's namespace", command_id
            )


def _is_admin_token(token: str) -> bool:
    try:
        return jwt.get_unverified_header(token).get("kid") == ADMIN_KID
    except jwt.InvalidTokenError:
        return False


def _public_key(pem: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError(f"--token-public-key: not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return key
    raise ConfigError("--token-public-key must be an RSA key (RS256) or a P-256 key (ES256)")


def signing_key(secret: str | None, private_pem: bytes | None) -> tuple[Any, str]:
    """The key and algorithm that sign tokens: an HS256 secret, or an RSA/P-256 key."""
    if private_pem is None:
        assert secret is not None
        if len(secret.encode()) < MIN_TOKEN_SECRET:
            raise ConfigError(f"the secret must be at least {MIN_TOKEN_SECRET} bytes")
        return secret.encode(), "HS256"
    try:
        key = load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a PEM private key without a password: {exc}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return key, "ES256"
    raise ConfigError("the private key must be an RSA key (RS256) or a P-256 key (ES256)")


def mint(
    user: str,
    *,
    key: Any,
    join: tuple[str, ...] = (),
    publish: tuple[str, ...] = (),
    ttl: float | None = 3600.0,
    algorithm: str = "HS256",
) -> str:
    """A connection token for ``user`` (``roomcast token`` and tests)."""
    payload: dict[str, Any] = {"sub": user, "rooms": {"join": list(join), "publish": list(publish)}}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    return jwt.encode(payload, key, algorithm=algorithm)

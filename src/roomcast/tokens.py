"""Session tokens of one-way clients (SSE, long polling).

A client on a one-way transport sends its commands with ``POST /send`` and polls with
``GET /poll``, each request possibly to another node. The token it got in its
``welcome`` says who it is (session id, user name) and which rooms it is in, signed
with the cluster's secret (HS256 JWT), so any node of the cluster can trust it without
asking the node that issued it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Final

import jwt
import msgspec

from roomcast.auth import Grants, Identity
from roomcast.exceptions import ErrorCode, ProtocolError

ALGORITHM: Final = "HS256"
LIFETIME: Final = 24 * 3600.0  # seconds; every poll answer carries a fresh token


class SessionClaims(msgspec.Struct, frozen=True):
    """A one-way session: its id, rooms, and who it is (from its connection token)."""

    sid: str
    user: str
    rooms: tuple[str, ...]
    anonymous: bool = True
    grants: Grants | None = None  # None: no limits (--auth off)
    expires: float = 0.0  # when the connection token ends (unix time; 0: never)

    @classmethod
    def of(cls, sid: str, identity: Identity, rooms: tuple[str, ...]) -> SessionClaims:
        return cls(sid, identity.user, rooms, identity.anonymous, identity.grants,
                   identity.expires)  # fmt: skip

    @property
    def identity(self) -> Identity:
        return Identity(self.user, self.anonymous, self.grants, self.expires)

    def renamed(self, sid: str) -> SessionClaims:
        return msgspec.structs.replace(self, sid=sid)

    def with_rooms(self, rooms: tuple[str, ...]) -> SessionClaims:
        return msgspec.structs.replace(self, rooms=rooms)

    def with_identity(self, identity: Identity) -> SessionClaims:
        return SessionClaims.of(self.sid, identity, self.rooms)


class Signer:
    def __init__(self, secret: str, lifetime: float = LIFETIME) -> None:
        # Any secret becomes a 256-bit HMAC key (the length HS256 asks for).
        self._secret = hashlib.sha256(b"roomcast session:" + secret.encode()).digest()
        self._lifetime = lifetime

    def issue(self, claims: SessionClaims) -> str:
        payload: dict[str, Any] = msgspec.to_builtins(claims)
        payload["exp"] = int(time.time() + self._lifetime)
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> SessionClaims:
        """The claims of ``token``; ``unauthorized`` if it is forged, expired or garbage."""
        try:
            payload = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp"]}
            )
            return msgspec.convert(payload, SessionClaims)
        except jwt.ExpiredSignatureError as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "the session token expired") from exc
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "invalid session token") from exc

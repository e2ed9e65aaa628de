"""Connection tokens on the client side: where they come from and when to renew them.

A :class:`roomcast.Client` takes a token, or an async function that fetches a new one
from the application's backend. With a function the client asks it for a token on
every (re)connection and sends a ``refresh`` command with a new one shortly before the
current one expires, so a long connection is never closed for expiry (4003).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from typing import Final

TokenProvider = Callable[[], Awaitable[str]]
Token = str | TokenProvider
MIN_AHEAD: Final = 5.0  # refresh at least this long before the token expires


def claims_of(token: str) -> dict[str, object]:
    """The claims of a JWT, read without verifying it (the server verifies); {} if it
    cannot be read."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def expires_of(token: str) -> float:
    """The ``exp`` of a JWT (unix time; 0 if it has none or cannot be read)."""
    exp = claims_of(token).get("exp", 0)
    return float(exp) if isinstance(exp, int | float) else 0.0


def refresh_delay(token: str, now: float | None = None) -> float | None:
    """Seconds to wait before refreshing ``token``: a tenth of its remaining life before
    it expires (at least :data:`MIN_AHEAD`); None if it never expires."""
    expires = expires_of(token)
    if not expires:
        return None
    left = expires - (time.time() if now is None else now)
    return max(0.0, left - max(MIN_AHEAD, left / 10))


class TokenSource:
    """The client's current token, fetched again from the provider when asked."""

    def __init__(self, token: Token | None) -> None:
        self._provider = token if callable(token) else None
        self.current: str | None = token if isinstance(token, str) else None

    @property
    def renewable(self) -> bool:
        return self._provider is not None

    async def fresh(self) -> str | None:
        """A token for a new connection or a refresh (a new one from the provider)."""
        if self._provider is not None:
            self.current = await self._provider()
        return self.current

    def headers(self) -> dict[str, str]:
        return {} if self.current is None else {"Authorization": f"Bearer {self.current}"}

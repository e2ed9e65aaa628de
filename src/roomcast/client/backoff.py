"""How long the client waits before each reconnection attempt: exponential, capped, jittered."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_EXPONENT = 64  # base * factor**64 is far above any sane cap; avoids float overflow


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnection delays: attempt ``n`` (from 0) waits a random time in
    ``[0, min(cap, base * factor**n))`` ("full jitter"), or exactly that ceiling with
    ``jitter=False``. After ``max_attempts`` failed attempts in a row the client gives up
    (``None``: never)."""

    base: float = 0.1
    factor: float = 2.0
    cap: float = 5.0
    jitter: bool = True
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must not be negative")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of attempt ``attempt`` (0 for the first one)."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        return float(min(self.cap, self.base * self.factor**exponent))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before attempt ``attempt``; ``rand`` returns a float in [0, 1)."""
        ceiling = self.ceiling(attempt)
        return ceiling * rand() if self.jitter else ceiling

    def exhausted(self, attempts: int) -> bool:
        """True once ``attempts`` failed attempts in a row mean giving up."""
        return self.max_attempts is not None and attempts >= self.max_attempts

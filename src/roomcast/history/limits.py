"""How much history each room keeps: its namespace's ``history_size`` and ``history_ttl``.

Every backend shows a room the same window: its newest ``size`` offsets, and of those
only the messages newer than ``ttl`` seconds (0: no limit). The window is always one run
of consecutive offsets ending at the room's newest: a message older than the TTL hides
every message before it too (they differ only if the clocks of two nodes disagree), and
a hole in the stored offsets hides what is before it. So a reader that gets the message
right after its position knows it missed nothing, and one that does not knows it cannot
recover (``recovered: false``): a gap is never skipped silently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from roomcast.config import RESERVED_NAMESPACE, Settings

# A room's retention: (size, ttl), the newest ``size`` messages, none older than ``ttl``
# seconds (0: no limit).
Limits = Callable[[str], tuple[int, float]]


def fixed(size: int, ttl: float) -> Limits:
    """The same retention for every room."""
    both = (size, ttl)
    return lambda room: both


def of_settings(settings: Settings) -> Limits:
    """Each room's retention from its namespace (the server's defaults without one)."""
    if not settings.namespaces:
        return fixed(settings.history_size, settings.history_ttl)

    @functools.lru_cache(maxsize=1 << 16)
    def limits(room: str) -> tuple[int, float]:
        namespace = settings.namespace(room)
        size = namespace.history_size or settings.history_size
        ttl = settings.history_ttl if namespace.history_ttl is None else namespace.history_ttl
        return size, ttl

    return limits


def largest_size(settings: Settings) -> int:
    """The largest history size of any room: the default's or a namespace's (not the
    server's own ``roomcast:*`` rooms, which make do with what the others keep)."""
    sizes = [
        ns.history_size for ns in settings.namespaces
        if ns.history_size is not None and ns != RESERVED_NAMESPACE
    ]  # fmt: skip
    return max([settings.history_size, *sizes])


def oldest_ms(ttl: float, now: int) -> int:
    """Messages stamped before this (Unix ms) have expired; 0 without a TTL."""
    return now - int(ttl * 1000) if ttl > 0 else 0


def visible(rows: Iterable[tuple[int, int, bytes]], oldest: int) -> list[tuple[int, bytes]]:
    """The (offset, payload) of ``rows`` (offset, ts, payload; oldest first) that a
    reader may see: those after the newest one stamped before ``oldest`` and after the
    last hole in the offsets, so one run of consecutive offsets, none expired."""
    entries: list[tuple[int, bytes]] = []
    for offset, ts, payload in rows:
        if ts < oldest:
            entries.clear()
            continue
        if entries and offset != entries[-1][0] + 1:
            entries.clear()
        entries.append((offset, payload))
    return entries

"""How deeply arrays and objects nest in a JSON text, checked before decoding it.

``too_deep(frame, 32)`` is cheap for ordinary frames: a text with at most ``limit``
opening brackets cannot nest deeper than that, and two ``count`` calls say so. A text
with more brackets is scanned with no Python loop over its bytes:

1. Escapes go first (``\\\\``, then ``\\"``), so that every quote left opens or
   closes a string. ``translate`` keeps only the quotes and the brackets (``{}``
   written as ``[]``), and splitting at the quotes and keeping every other piece keeps
   what is outside strings (``"[[["`` counts for nothing). Brackets still open at the
   end are closed, so a text cut off deep inside counts as deep as it got.
2. A regular expression that matches brackets nested at most ``limit`` deep, with
   possessive loops (no backtracking: one pass), stops at the first bracket that opens
   one level too many. Above ``MAX_PATTERN`` levels the pattern would be too big to
   build: each ``replace(b"[]", b"")`` first removes every innermost pair, which
   lowers the nesting by exactly one, until the rest fits.

For valid JSON the answer is exact. For invalid JSON it is exact up to where the text
stops being a valid prefix, which is as far as a decoder reads before it fails. The
cost is linear: a few nanoseconds a byte, plus about 25 ns for each bracket outside
strings and each string that holds a bracket (a 64 KiB frame of nothing but brackets
takes about a millisecond).
"""

from __future__ import annotations

import functools
import re
from typing import Final

MAX_PATTERN: Final = 200  # levels of the largest pattern built
_NOISE: Final = bytes(b for b in range(256) if b not in b'[]{}"')  # all else goes
_AS_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_OPEN: Final = ord("[")


def too_deep(data: bytes | str, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` (>= 0) deep in ``data`` (a
    scalar is depth 0, ``[]`` and ``{}`` are 1, ``[{"a": []}]`` is 3)."""
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= limit:
            return False
        data = data.encode("utf-8", "surrogatepass")
    elif data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _brackets(data)
    while limit > MAX_PATTERN:
        if b"[]" not in brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
        limit -= 1
    found = _nesting(limit).match(brackets)  # always found: the pattern matches ""
    end = found.end() if found else 0
    return end < len(brackets) and brackets[end] == _OPEN


def _brackets(data: bytes) -> bytes:
    """The brackets of ``data`` outside strings, as ``[`` and ``]``, all closed."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    data = data.translate(_AS_SQUARE, _NOISE)
    if b'"' in data:
        # Two quotes side by side: a string without brackets, or the end of one and the
        # start of the next with nothing between them; either way they can go.
        data = data.replace(b'""', b"")
        data = b"".join(data.split(b'"')[::2])
    unclosed = 2 * data.count(b"[") - len(data)
    return data + b"]" * unclosed if unclosed > 0 else data


@functools.lru_cache(maxsize=8)
def _nesting(levels: int) -> re.Pattern[bytes]:
    """Balanced brackets nested at most ``levels`` deep (it matches the empty text)."""
    pattern = b""
    for _ in range(levels):
        pattern = rb"(?:\[" + pattern + rb"\])*+"
    return re.compile(pattern)

"""too_deep against a reference: json.loads and a recursive depth, on generated JSON
(strings full of brackets, quotes and backslashes; nesting deeper than any limit), and
on every cut-off prefix of it against a scanner that walks the text character by
character."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roomcast.jsondepth import MAX_PATTERN, too_deep

TRICKY = st.text(alphabet=st.sampled_from('[]{}"\\/ ,:ab\n\u00e9\u2028'), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY, inner, max_size=4),
    max_leaves=30,
)


def depth(value: Any) -> int:
    """The nesting of a decoded value: 0 for a scalar, 1 + its deepest child's else."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, above = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, above + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, above + 1) for child in children)
    return deepest


def wrap(value: Any, shells: list[bool]) -> Any:
    """``value`` inside one array (True) or object (False) per shell."""
    for array in shells:
        value = [value, "]]"] if array else {"[{": value}
    return value


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, int]:
    value = wrap(draw(VALUES), draw(st.lists(st.booleans(), max_size=40)))
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.none() | st.integers(0, 2)),
        separators=draw(st.sampled_from([None, (",", ":")])),
    )
    return text, depth(json.loads(text))


def scanned_depth(text: str) -> int:
    """The deepest point of ``text``, a valid JSON text or a prefix of one."""
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


@settings(max_examples=400)
@given(documents(), st.integers(0, 45))
@example(('["[[[", [[]]]', 3), 2)
@example(('{"a\\"[[": [{"\\\\": [[]]}]}', 5), 4)
@example(("[[], [[]], [[[]]], []]", 4), 3)
def test_too_deep_agrees_with_json_loads(document: tuple[str, int], limit: int) -> None:
    text, expected = document
    assert too_deep(text, limit) is (expected > limit)
    assert too_deep(text.encode(), limit) is (expected > limit)
    assert too_deep(text, expected) is False
    assert too_deep(text, max(expected - 1, 0)) is (expected > 0)


@settings(max_examples=300)
@given(documents(), st.data())
def test_a_cut_off_text_counts_as_deep_as_it_got(
    document: tuple[str, int], data: st.DataObject
) -> None:
    text, _ = document
    prefix = text[: data.draw(st.integers(0, len(text)))]
    deepest = scanned_depth(prefix)
    for limit in {0, max(deepest - 1, 0), deepest, deepest + 1}:
        assert too_deep(prefix, limit) is (deepest > limit), (prefix, limit)


@pytest.mark.parametrize("levels", [MAX_PATTERN - 1, MAX_PATTERN + 1, MAX_PATTERN + 57])
def test_limits_above_the_largest_pattern(levels: int) -> None:
    text = json.dumps(wrap([1, {"a": "[[["}, [[]]], ([True, False] * levels)[:levels]))
    nested = depth(json.loads(text))
    assert nested == levels + 3
    assert too_deep(text, nested) is False
    assert too_deep(text, nested - 1) is True
    assert too_deep("[" * (nested + 1), nested) is True
    siblings = "[" + ",".join([text] * 3) + "]"
    assert too_deep(siblings, nested + 1) is False
    assert too_deep(siblings, nested) is True


def test_scalars_and_empty_containers() -> None:
    assert too_deep("1", 0) is False
    assert too_deep('"[[[[["', 0) is False
    assert too_deep("[]", 0) is True
    assert too_deep("[]", 1) is False
    assert too_deep(b'{"a": {}}', 1) is True
    assert too_deep(b"", 0) is False


@pytest.mark.parametrize(
    "hostile",
    [
        b'"' + b'\\"' * 500_000,  # one string that never ends, all escaped quotes
        b'"[' * 500_000,  # quotes that never pair up
        b"[" * 1_000_000,  # nothing but openings
        b"[" + b",".join([b"[" * 31 + b"]" * 31] * 16_000) + b"]",  # just under the limit
        b"\\" * 1_000_001 + b'"[[[',
    ],
)
def test_hostile_megabytes_take_linear_time(hostile: bytes) -> None:
    started = time.perf_counter()
    too_deep(hostile, 32)
    assert time.perf_counter() - started < 2.0  # a quadratic scan would take minutes

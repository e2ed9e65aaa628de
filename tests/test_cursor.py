"""Cursors: text in, positions out, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.cursor import decode_cursor, encode_cursor
from roomcast.exceptions import ErrorCode, ProtocolError

rooms = st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True)
epochs = st.from_regex(r"[0-9a-f]{8}", fullmatch=True)
positions = st.dictionaries(rooms, st.tuples(epochs, st.integers(0, 10**15)), max_size=8)


def test_a_cursor_names_each_room_epoch_and_offset() -> None:
    text = encode_cursor({"lobby": ("3f2a91c0", 12), "news:eu": ("3f2a91c0", 0)})
    assert text == "lobby~3f2a91c0~12,news:eu~3f2a91c0~0"
    assert decode_cursor(text) == {"lobby": ("3f2a91c0", 12), "news:eu": ("3f2a91c0", 0)}
    assert decode_cursor("") == {}


@given(positions)
def test_any_positions_survive_the_round_trip(value: dict[str, tuple[str, int]]) -> None:
    assert decode_cursor(encode_cursor(value)) == value


@pytest.mark.parametrize(
    "text",
    ["x", "a~b", "a~b~c~d", "a~e~-1", "a~e~1.5", "bad room~e~1", "a~e!~1", "a~~1", "a~e~",
     ",", "a~e~1,", "a~e~" + "9" * 19, "a~e~1" + ",a~e~1" * 3000],
)  # fmt: skip
def test_anything_else_is_a_bad_request(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_cursor(text)
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert caught.value.message.startswith("invalid cursor: ")


@given(st.text(max_size=200))
def test_random_text_decodes_or_is_refused_cleanly(text: str) -> None:
    try:
        decode_cursor(text)
    except ProtocolError as error:
        assert error.code == ErrorCode.BAD_REQUEST

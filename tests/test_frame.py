from __future__ import annotations

import pytest

from roomcast.frame import Frame, websocket_text_frame


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frame_lengths(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert websocket_text_frame(payload) == header + payload


def test_frame_builds_its_websocket_form_once() -> None:
    frame = Frame(b'{"type":"pong"}')
    first = frame.websocket
    assert first == b"\x81\x0f" + b'{"type":"pong"}'
    assert frame.websocket is first

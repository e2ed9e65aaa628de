"""The HTTP API from the client side: publish into a room as a backend does."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from yarl import URL

from roomcast.exceptions import CommandError

_HTTP_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class ApiError(CommandError):
    """The HTTP API answered with an error status (4xx/5xx)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def api_base(url: str) -> URL:
    """The HTTP base of a server from its http(s) URL or its ws(s) URL (``.../ws``)."""
    parsed = URL(url)
    scheme = _HTTP_SCHEMES.get(parsed.scheme)
    if scheme is None or not parsed.host:
        raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
    path = parsed.path.rstrip("/")
    if parsed.scheme in {"ws", "wss"} and path.endswith("/ws"):
        path = path[: -len("/ws")]
    return parsed.with_scheme(scheme).with_path(path or "/").with_query(None).with_fragment(None)


async def api_publish(
    url: str,
    room: str,
    data: Any,
    api_key: str | None = None,
    *,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """POST ``data`` to ``room`` through ``/api/publish``; returns the answer
    (``{"room", "epoch", "offset"}``) or raises :class:`ApiError`."""
    base = api_base(url)
    endpoint = base.with_path(base.path.rstrip("/") + "/api/publish")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = json.dumps({"room": room, "data": data}, separators=(",", ":"))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as http,
        http.post(endpoint, data=body, headers=headers) as answer,
    ):
        text = await answer.text()
        if answer.status >= 400:
            raise api_error(answer.status, text, answer.reason or "")
    value: dict[str, Any] = json.loads(text)
    return value


def api_error(status: int, text: str, reason: str = "") -> ApiError:
    """The ApiError of an HTTP API answer: its JSON error's code, else ``http_<status>``."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return ApiError(status, body["code"], str(body.get("message", "")))
    return ApiError(status, f"http_{status}", text.strip() or reason)

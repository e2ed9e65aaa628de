"""Test clients for the one-way transports, on aiohttp's client: an SSE stream reader,
long polls and POST /send."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Event:
    event: str
    data: dict[str, Any]
    id: str | None


class SseStream:
    """``GET /sse`` read event by event (comments are counted, not returned)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0
        self.last_id: str | None = None

    @property
    def headers(self) -> Any:
        return self.response.headers

    async def next(self, timeout: float = 5.0) -> Event:
        async with asyncio.timeout(timeout):
            fields: dict[str, str] = {}
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments += 1
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                elif fields:
                    event = Event(fields["event"], json.loads(fields["data"]), fields.get("id"))
                    self.last_id = event.id if event.id is not None else self.last_id
                    return event

    async def until(self, kind: str, timeout: float = 5.0) -> Event:
        while True:
            event = await self.next(timeout)
            if event.event == kind:
                return event

    async def ended(self, timeout: float = 10.0) -> bool:
        """True once the server ends the stream (events meanwhile are skipped)."""
        async with asyncio.timeout(timeout):
            while await self.response.content.readline():
                pass
        return True

    async def comment(self, timeout: float = 5.0) -> None:
        """Wait for the next ``: ping`` comment."""
        seen = self.comments
        async with asyncio.timeout(timeout):
            while self.comments == seen:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                if raw.startswith(b":"):
                    self.comments += 1

    def close(self) -> None:
        self.response.close()


class OneWay:
    """One aiohttp session for SSE, polls and sends against a server's base URL."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.streams: list[SseStream] = []

    async def sse(self, **params: str) -> SseStream:
        """Open ``/sse?params``; ``last_event_id=`` is sent as the ``Last-Event-ID`` header."""
        headers = _last_event_id(params)
        response = await self.http.get(
            self.base + "/sse", params=params, headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )  # fmt: skip
        stream = SseStream(response)
        self.streams.append(stream)
        return stream

    async def sse_error(self, **params: str) -> Any:
        """(status, JSON body) of an SSE request the server refuses."""
        headers = _last_event_id(params)
        async with self.http.get(self.base + "/sse", params=params, headers=headers) as reply:
            assert reply.content_type == "application/json"
            return reply.status, await reply.json()

    async def poll(self, **params: Any) -> tuple[int, dict[str, Any]]:
        params = {k: str(v) for k, v in params.items()}
        async with self.http.get(self.base + "/poll", params=params) as reply:
            assert reply.content_type == "application/json"
            return reply.status, await reply.json()

    async def send(self, token: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        params = {} if token is None else {"session": token}
        async with self.http.post(self.base + "/send", params=params, data=data) as reply:
            assert reply.content_type == "application/json"
            return reply.status, await reply.json()

    async def publish(self, room: str, data: Any, key: str = "test-key") -> int:
        """Publish through the HTTP API; the offset."""
        headers = {"Authorization": f"Bearer {key}"}
        body = {"room": room, "data": data}
        async with self.http.post(self.base + "/api/publish", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            offset: int = (await r.json())["offset"]
            return offset

    def close(self) -> None:
        for stream in self.streams:
            stream.close()


def _last_event_id(params: dict[str, str]) -> dict[str, str]:
    value = params.pop("last_event_id", None)
    return {} if value is None else {"Last-Event-ID": value}

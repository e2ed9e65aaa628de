"""Readiness follows the node's state; the chat page is served."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from roomcast.config import Settings
from roomcast.http.app import create_app
from roomcast.node import Node


async def test_ready_is_503_while_starting_and_draining() -> None:
    node = Node(Settings(history="memory"))
    async with TestClient(TestServer(create_app(node))) as client:
        starting = await client.get("/ready")
        assert (starting.status, (await starting.json())["status"]) == (503, "starting")
        refused = await client.get("/ws")
        assert refused.status == 503
        await node.start()
        assert (await client.get("/ready")).status == 200
        await node.drain()
        stopped = await client.get("/ready")
        assert (stopped.status, (await stopped.json())["status"]) == (503, "stopped")
        assert (await client.get("/health")).status == 200


async def test_the_chat_page_is_served() -> None:
    node = Node(Settings(history="memory"))
    async with TestClient(TestServer(create_app(node))) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.content_type == "text/html"
        assert "roomcast" in await page.text()

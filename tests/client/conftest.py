"""Fixtures of the client tests: connected Clients and ``roomcast`` subprocesses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from roomcast.client import Client

from .helpers import FAST, Cli

ClientFactory = Callable[..., Awaitable[Client]]
CliFactory = Callable[..., Awaitable[Cli]]


@pytest.fixture
async def client_factory() -> AsyncIterator[ClientFactory]:
    """Connect Clients (fast reconnection, 5 s timeout unless told); closed after the test."""
    clients: list[Client] = []

    async def connect(url: str, **kwargs: Any) -> Client:
        kwargs.setdefault("backoff", FAST)
        kwargs.setdefault("timeout", 5.0)
        client = Client(url, **kwargs)
        clients.append(client)
        return await client.connect()

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
async def cli() -> AsyncIterator[CliFactory]:
    """Start ``roomcast`` subprocesses; killed after the test if still running."""
    started: list[Cli] = []

    async def start(*args: str) -> Cli:
        process = await Cli.start(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        await process.process.wait()

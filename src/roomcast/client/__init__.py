"""The asyncio client library of roomcast (see :class:`Client`) and its CLI commands."""

from __future__ import annotations

from roomcast.client.backoff import Backoff
from roomcast.client.client import Client, ConnectError
from roomcast.client.replies import Event
from roomcast.exceptions import ClientError, CommandError, ConnectionLost

__all__ = [
    "Backoff",
    "Client",
    "ClientError",
    "CommandError",
    "ConnectError",
    "ConnectionLost",
    "Event",
]

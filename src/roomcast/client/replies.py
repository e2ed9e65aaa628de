"""Frames as dicts, and the commands waiting for their reply, matched by id."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from roomcast.exceptions import ClientError, CommandError, ConnectionLost

Event = dict[str, Any]
OkHook = Callable[[Event], None]

REPLY_TYPES = frozenset({"ok", "error", "pong"})


def parse_frame(text: str) -> Event | None:
    """The frame as a dict, or None if it is not a JSON object with a string ``type``."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    return None


@dataclass(slots=True)
class _Waiting:
    future: asyncio.Future[Event]
    on_ok: OkHook | None


class Replies:
    """Commands sent and not answered yet. Ids are integers, unique per client.

    ``on_ok`` runs when the ``ok`` is read, before any later frame is handled, and even
    if the caller stopped waiting (the server did the command all the same).
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, _Waiting] = {}

    def expect(self, on_ok: OkHook | None = None) -> tuple[int, asyncio.Future[Event]]:
        """A new command id and the future of its reply."""
        command_id = next(self._ids)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = _Waiting(future, on_ok)
        return command_id, future

    def discard(self, command_id: int) -> None:
        self._waiting.pop(command_id, None)

    def resolve(self, frame: Event) -> bool:
        """Complete the command ``frame`` answers; False if it answers none of ours."""
        command_id = frame.get("id")
        if frame["type"] not in REPLY_TYPES or not isinstance(command_id, int):
            return False
        if isinstance(command_id, bool):
            return False
        waiting = self._waiting.pop(command_id, None)
        if waiting is None:
            return False
        outcome: Event | BaseException = frame
        if frame["type"] == "error":
            outcome = CommandError(str(frame.get("code")), str(frame.get("message")))
        elif waiting.on_ok is not None:
            try:
                waiting.on_ok(frame)
            except (KeyError, ValueError, TypeError) as exc:
                outcome = ClientError(f"malformed reply {frame!r}: {exc}")
        _settle(waiting.future, outcome)
        return True

    def fail_all(self, reason: str) -> None:
        """The connection is gone: every command still waiting raises ConnectionLost."""
        waiting, self._waiting = self._waiting, {}
        for entry in waiting.values():
            _settle(entry.future, ConnectionLost(reason))


def _settle(future: asyncio.Future[Event], outcome: Event | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

"""The interactive terminal client behind ``roomcast connect``.

Every event becomes one readable line on stdout (``[lobby] alice: hello``); with
``raw`` the protocol frames themselves are printed (by the Client's ``on_frame``) and
this module prints nothing else on stdout. Notes about the connection go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import click

from roomcast.client.client import Client
from roomcast.client.replies import Event
from roomcast.exceptions import ClientError, CommandError

HELP = "commands: /join ROOM, /leave ROOM, /who, /history [N], /quit"


def sender(message: Event) -> str:
    member = message.get("from")
    return str(member.get("user")) if isinstance(member, dict) else "(api)"


def message_text(data: Any) -> str:
    """A chat message's text, or the data as compact JSON."""
    text = data.get("text") if isinstance(data, dict) else None
    if isinstance(text, str):
        return text
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def format_event(event: Event) -> str | None:
    """The line shown for ``event`` on stdout, or None for events not shown there."""
    kind, room = event.get("type"), event.get("room")
    if kind == "message":
        return f"[{room}] {sender(event)}: {message_text(event.get('data'))}"
    if kind in {"joined", "left"}:
        member = event.get("member") or {}
        return f"[{room}] * {member.get('user')} {kind}"
    if kind == "error":
        return f"! {event.get('code')}: {event.get('message')}"
    if kind == "lost":
        return f"[{room}] ! messages were missed and cannot be recovered"
    if kind == "rejoin_failed":
        return f"[{room}] ! could not rejoin: {event.get('code')}: {event.get('message')}"
    return None


def format_note(event: Event) -> str | None:
    """The stderr line for the client's connection events."""
    if event.get("type") == "disconnected":
        return f"* disconnected (code {event.get('code')}), reconnecting"
    if event.get("type") == "reconnected":
        return "* reconnected"
    return None


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read by a daemon thread so the event loop never blocks (works
    for terminals, pipes and regular files alike)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        pending = b""
        try:
            while chunk := os.read(0, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    put(line.decode(errors="replace").rstrip("\r"))
            if pending:
                put(pending.decode(errors="replace").rstrip("\r"))
        except OSError:
            pass
        finally:
            put(None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


class Terminal:
    """One interactive session on a connected Client."""

    def __init__(self, client: Client, raw: bool = False) -> None:
        self.client = client
        self.raw = raw
        self.joined: list[str] = []  # in join order: the last one is the current room
        self.commands: dict[str, Callable[[list[str]], Awaitable[None]]] = {
            "/join": self._join_command,
            "/leave": self._leave_command,
            "/who": self._who,
            "/history": self._history,
        }

    @property
    def current(self) -> str | None:
        return self.joined[-1] if self.joined else None

    def out(self, line: str | None) -> None:
        if line is not None and not self.raw:
            click.echo(line)

    def note(self, line: str | None) -> None:
        if line is not None:
            click.echo(line, err=True)

    async def run(self, room: str, lines: AsyncIterator[str]) -> None:
        """Join ``room``, then handle input lines until /quit or the end of input."""
        await self.join(room)
        printer = asyncio.create_task(self.print_events())
        try:
            async for line in lines:
                if not await self.handle(line):
                    break
            await self._finish(printer)
        finally:
            printer.cancel()

    async def _finish(self, printer: asyncio.Task[None]) -> None:
        """Print what the server sent before quitting: a ping's round trip brings in the
        frames in flight (echoes of the last lines), then closing the client ends the
        event iterator after the events already received."""
        if self.client.connected:
            with contextlib.suppress(ClientError, TimeoutError):
                await self.client.request({"type": "ping"}, timeout=2.0)
        await self.client.close()
        with contextlib.suppress(ClientError):
            await printer

    async def print_events(self) -> None:
        async for event in self.client.events():
            self.out(format_event(event))
            self.note(format_note(event))

    async def handle(self, line: str) -> bool:
        """Handle one input line; False means quit."""
        words = line.split()
        if not words:
            return True
        if words[0] == "/quit":
            return False
        try:
            await self._dispatch(line, words)
        except CommandError as exc:
            if not self.raw:  # with --json the error frame itself was printed
                click.echo(f"! {exc.code}: {exc.message}")
        except (ClientError, TimeoutError) as exc:
            self.note(f"! {exc}")
        return True

    async def _dispatch(self, line: str, words: list[str]) -> None:
        command = self.commands.get(words[0])
        if command is not None:
            await command(words[1:])
        elif words[0].startswith("/"):
            self.note(f"! unknown command {words[0]}; {HELP}")
        else:
            await self._say(line)

    async def join(self, room: str) -> None:
        ok = await self.client.join(room)
        if room in self.joined:
            self.joined.remove(room)
        self.joined.append(room)
        self.out(f"[{room}] * joined at offset {ok['offset']}")

    async def _say(self, line: str) -> None:
        room = self.current
        if room is None:
            self.note("! not in any room: /join ROOM first")
            return
        await self.client.publish(room, {"text": line})

    async def _join_command(self, args: list[str]) -> None:
        if len(args) != 1:
            self.note("! usage: /join ROOM")
            return
        await self.join(args[0])

    async def _leave_command(self, args: list[str]) -> None:
        room = args[0] if args else self.current
        if room is None or len(args) > 1:
            self.note("! usage: /leave ROOM")
            return
        if room in self.joined:
            self.joined.remove(room)
        await self.client.leave(room)
        self.out(f"[{room}] * left")

    async def _who(self, args: list[str]) -> None:
        room = args[0] if args else self.current
        if room is None:
            self.note("! not in any room")
            return
        members = await self.client.presence(room)
        users = ", ".join(str(member["user"]) for member in members)
        self.out(f"[{room}] members: {users}")

    async def _history(self, args: list[str]) -> None:
        room = self.current
        if room is None or len(args) > 1 or (args and not args[0].isdigit()):
            self.note("! usage: /history [N] (in a room)")
            return
        limit = int(args[0]) if args else 10
        messages = await self.client.history(room, limit=max(limit, 1))
        if not messages:
            self.out(f"[{room}] (no history)")
        for message in messages:
            self.out(format_event(message))

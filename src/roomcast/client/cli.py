"""``roomcast connect`` (interactive client) and ``roomcast publish`` (HTTP API)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import click

from roomcast.client.client import Client
from roomcast.client.http import ApiError, api_base, api_publish
from roomcast.client.terminal import HELP, Terminal, stdin_lines
from roomcast.client.tokens import claims_of
from roomcast.exceptions import ClientError


@click.command()
@click.argument("url")
@click.option("--room", "-r", required=True, help="The room to join first.")
@click.option("--name", "-n", default=None, help="Your user name (default: anonymous).")
@click.option("--json", "raw", is_flag=True, help="Print every protocol frame as received.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for a reply.")
@click.option("--token", envvar="ROOMCAST_TOKEN", show_envvar=True, default=None,
              help="Connection token (roomcast token mints one).")  # fmt: skip
def connect(
    url: str, room: str, name: str | None, raw: bool, timeout: float, token: str | None
) -> None:
    """Chat in a room interactively: ws://HOST:PORT/ws.

    Each line typed is published to the current room as {"text": line}. Commands:
    /join ROOM, /leave ROOM, /who, /history [N] (default 10), /quit. The current room
    is the last one joined. Reconnects and recovers missed messages by itself.
    """
    try:
        asyncio.run(_connect(url, room, name, raw, timeout, token))
    except (ClientError, TimeoutError) as exc:
        click.echo(f"roomcast: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


async def _connect(
    url: str, room: str, name: str | None, raw: bool, timeout: float, token: str | None
) -> None:
    on_frame = click.echo if raw else None
    client = Client(url, name=name, timeout=timeout, on_frame=on_frame, token=token)
    await client.connect()
    try:
        if not raw:
            click.echo(f"* connected to {url} as {_user(client, name)}; {HELP}", err=True)
        await Terminal(client, raw).run(room, stdin_lines())
    finally:
        await client.close()


def _user(client: Client, name: str | None) -> str:
    token = client.tokens.current
    user = claims_of(token).get("sub") if token else None
    if isinstance(user, str):
        return user
    return name if name is not None else f"an anonymous user (session {client.session_id})"


@click.command()
@click.argument("url")
@click.option("--room", "-r", required=True, help="The room to publish to.")
@click.option("--data", "-d", required=True, help="The message: any JSON value.")
@click.option("--api-key", envvar="ROOMCAST_API_KEY", show_envvar=True, default=None,
              help="The server's API key.")  # fmt: skip
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait.")
def publish(url: str, room: str, data: str, api_key: str | None, timeout: float) -> None:
    """Publish a message through the HTTP API of http://HOST:PORT (or ws://HOST:PORT/ws)."""
    try:
        value: Any = json.loads(data)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    try:
        api_base(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    try:
        answer = asyncio.run(api_publish(url, room, value, api_key, timeout=timeout))
    except ApiError as exc:
        click.echo(f"roomcast: {exc.code}: {exc.message} (HTTP {exc.status})", err=True)
        sys.exit(1)
    except (OSError, TimeoutError, ValueError, aiohttp.ClientError, ClientError) as exc:
        click.echo(f"roomcast: cannot publish to {url}: {exc or type(exc).__name__}", err=True)
        sys.exit(1)
    click.echo(json.dumps(answer, separators=(",", ":")))

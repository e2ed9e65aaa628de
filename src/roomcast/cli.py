"""The ``roomcast`` command line: serve, connect, publish, bench."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from roomcast.config import Settings
from roomcast.exceptions import ConfigError

SERVE_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--host", {"default": "127.0.0.1", "show_default": True, "help": "Address to bind."}),
    ("--port", {"default": 8000, "type": int, "show_default": True, "help": "Port to bind."}),
    ("--node-id", {"default": "", "help": "This node's id (default: host-port-random)."}),
    (
        "--broker",
        {
            "default": "memory://",
            "show_default": True,
            "help": "memory:// (one node); a cluster of nodes through redis://HOST:PORT/DB, "
            "a Redis Cluster (redis+cluster://HOST:PORT[,HOST:PORT...]) or nats://HOST:PORT.",
        },
    ),
    (
        "--redis-sharded/--no-redis-sharded",
        {
            "default": False,
            "show_default": True,
            "help": "Use Redis 7 sharded pub/sub (SSUBSCRIBE/SPUBLISH) with redis:// (always "
            "on with redis+cluster://).",
        },
    ),
    (
        "--history",
        {
            "default": "sqlite",
            "type": click.Choice(["sqlite", "memory"]),
            "show_default": True,
            "help": "Where the single-node broker keeps history.",
        },
    ),
    (
        "--data-dir",
        {
            "default": "roomcast-data",
            "type": click.Path(file_okay=False, path_type=Path),
            "show_default": True,
            "help": "Directory of the SQLite history.",
        },
    ),
    (
        "--history-size",
        {"default": 1000, "type": int, "show_default": True, "help": "Messages kept per room."},
    ),
    (
        "--history-ttl",
        {
            "default": 0.0,
            "type": float,
            "show_default": True,
            "help": "Seconds a message is kept (0: no limit).",
        },
    ),
    ("--api-key", {"default": None, "help": "Key of the HTTP API (off without one)."}),
    (
        "--secret",
        {
            "default": None,
            "help": "Signs the session tokens of SSE and long-poll "
            "clients; every node of a cluster needs the same one (default: random).",
        },
    ),
    (
        "--poll-timeout",
        {
            "default": 25.0,
            "type": float,
            "show_default": True,
            "help": "Seconds a long poll waits for an event.",
        },
    ),
    (
        "--heartbeat",
        {
            "default": 25.0,
            "type": float,
            "show_default": True,
            "help": "Seconds between WebSocket pings and SSE comments.",
        },
    ),
    (
        "--presence-ttl",
        {
            "default": 30.0,
            "type": float,
            "show_default": True,
            "help": "Seconds a cluster member stays in presence without a refresh "
            "from its node (Redis broker).",
        },
    ),
    (
        "--max-message-size",
        {
            "default": 65536,
            "type": int,
            "show_default": True,
            "help": "Largest frame a client may send (bytes).",
        },
    ),
    (
        "--max-data-size",
        {
            "default": 32768,
            "type": int,
            "show_default": True,
            "help": "Largest published data (bytes).",
        },
    ),
    (
        "--max-buffer",
        {
            "default": 1048576,
            "type": int,
            "show_default": True,
            "help": "Outbound bytes buffered per client before it is cut off.",
        },
    ),
    (
        "--max-rooms",
        {
            "default": 100,
            "type": int,
            "show_default": True,
            "help": "Rooms one connection may be in.",
        },
    ),
    (
        "--publish-rate",
        {
            "default": 100.0,
            "type": float,
            "show_default": True,
            "help": "Publishes per second per connection (0: unlimited).",
        },
    ),
    (
        "--publish-burst",
        {
            "default": 200,
            "type": int,
            "show_default": True,
            "help": "Publishes a connection may save up.",
        },
    ),
    (
        "--readonly-rooms",
        {
            "default": "",
            "help": "Comma-separated room patterns (e.g. "
            "'news:*') where only the HTTP API may publish.",
        },
    ),
    (
        "--shutdown-timeout",
        {
            "default": 5.0,
            "type": float,
            "show_default": True,
            "help": "Seconds given to clients to close on shutdown.",
        },
    ),
    (
        "--log-level",
        {
            "default": "info",
            "show_default": True,
            "type": click.Choice(["debug", "info", "warning", "error"]),
        },
    ),
]


def serve_options(fn: Any) -> Any:
    for flag, kwargs in reversed(SERVE_OPTIONS):
        name = flag.split("/")[0].lstrip("-")
        envvar = "ROOMCAST_" + name.replace("-", "_").upper()
        fn = click.option(flag, envvar=envvar, show_envvar=True, **kwargs)(fn)
    return fn


@click.group()
@click.version_option(package_name="roomcast")
def main() -> None:
    """roomcast: a real-time messaging server (rooms over WebSocket)."""


@main.command()
@serve_options
def serve(log_level: str, readonly_rooms: str, **options: Any) -> None:
    """Run a server node."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    patterns = tuple(p.strip() for p in readonly_rooms.split(",") if p.strip())
    try:
        settings = Settings(readonly_rooms=patterns, **options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from roomcast.server import run

    try:
        run(settings)
    except OSError as exc:
        click.echo(f"roomcast: cannot serve on {settings.host}:{settings.port}: {exc}", err=True)
        sys.exit(1)


def _register_optional() -> None:
    """Commands whose modules are optional at import time (client, bench)."""
    from roomcast.client.cli import connect, publish

    main.add_command(connect)
    main.add_command(publish)
    try:
        from roomcast.bench.cli import bench
    except ImportError:  # pragma: no cover - bench ships with the package
        return
    main.add_command(bench)


_register_optional()

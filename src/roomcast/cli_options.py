"""The options of ``roomcast serve``: one table, each also read from ``ROOMCAST_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

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
        "--admin-password",
        {
            "default": None,
            "help": "Password of the admin page at /admin (default: the --api-key; "
            "off without either).",
        },
    ),
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
        "--auth",
        {
            "default": "off",
            "type": click.Choice(["off", "optional", "required"]),
            "show_default": True,
            "help": "Connection tokens: required (every client), optional (anonymous "
            "clients only in namespaces that allow them) or off (anyone joins any room).",
        },
    ),
    ("--token-secret", {"default": None, "help": "HS256 key of connection tokens."}),
    (
        "--token-public-key",
        {
            "default": None,
            "type": click.Path(dir_okay=False, exists=True, path_type=Path),
            "help": "PEM file of the RS256/ES256 public key of connection tokens.",
        },
    ),
    (
        "--token-grace",
        {
            "default": 30.0,
            "type": float,
            "show_default": True,
            "help": "Seconds a connection may stay past its token's expiry to send refresh.",
        },
    ),
    (
        "--config",
        {
            "default": None,
            "type": click.Path(dir_okay=False, exists=True, path_type=Path),
            "help": "TOML file of room namespaces and their rules (docs/security.md).",
        },
    ),
    (
        "--allowed-origins",
        {
            "default": "",
            "help": "Comma-separated browser origins allowed to connect, with * patterns "
            "(default: the server's own origin only; '*': any).",
        },
    ),
    (
        "--trusted-proxies",
        {
            "default": "",
            "help": "Comma-separated addresses or networks of proxies whose "
            "X-Forwarded-For names the client (for per-IP limits).",
        },
    ),
    (
        "--tls-cert",
        {
            "default": None,
            "type": click.Path(dir_okay=False, exists=True, path_type=Path),
            "help": "PEM certificate chain: serve https:// and wss:// (with --tls-key).",
        },
    ),
    (
        "--tls-key",
        {
            "default": None,
            "type": click.Path(dir_okay=False, exists=True, path_type=Path),
            "help": "PEM private key of --tls-cert.",
        },
    ),
    (
        "--max-connections",
        {"default": 0, "type": int, "show_default": True, "help": "Connections (0: no limit)."},
    ),
    (
        "--max-connections-per-ip",
        {"default": 0, "type": int, "show_default": True, "help": "Per client IP (0: no limit)."},
    ),
    (
        "--connect-rate",
        {
            "default": 0.0,
            "type": float,
            "show_default": True,
            "help": "New connections per second per client IP (0: no limit).",
        },
    ),
    (
        "--connect-burst",
        {
            "default": 20,
            "type": int,
            "show_default": True,
            "help": "New connections a client IP may open at once.",
        },
    ),
    (
        "--handshake-timeout",
        {
            "default": 10.0,
            "type": float,
            "show_default": True,
            "help": "Seconds a new connection has to send its request.",
        },
    ),
    (
        "--max-json-depth",
        {
            "default": 32,
            "type": int,
            "show_default": True,
            "help": "Deepest nesting of arrays and objects in a client's JSON.",
        },
    ),
    (
        "--max-presence",
        {
            "default": 1000,
            "type": int,
            "show_default": True,
            "help": "Members in one presence reply.",
        },
    ),
    (
        "--enable-echo",
        {
            "is_flag": True,
            "help": "Serve GET /echo, a WebSocket echo on the same stack as /ws "
            "(for conformance tests; keep it off in production).",
        },
    ),
    (
        "--log-format",
        {
            "default": "text",
            "show_default": True,
            "type": click.Choice(["text", "json"]),
            "help": "Log lines as text, or as JSON objects with their fields "
            "(docs/operations.md).",
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

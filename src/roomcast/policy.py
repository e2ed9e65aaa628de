"""Room namespaces: what each kind of room allows, read from ``--config roomcast.toml``.

A namespace is a room pattern (``public:*``, ``dm:*``, ``lobby``) with its rules; the
first namespace whose pattern matches a room rules it, in the order of the file. A room
that matches none gets the server's defaults (``--history-size``, ``--history-ttl``,
``--readonly-rooms``), and only users whose token grants it may join it when
``--auth`` is on (docs/security.md)::

    [namespaces."public:*"]
    anonymous = true        # anyone may join, even without a token
    publish = "clients"     # "clients": members may publish; "api": only the HTTP API
    presence = true         # joined/left events and the presence command
    history_size = 100      # messages kept per room
    history_ttl = 3600      # seconds a message is kept (0: no limit)
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from roomcast.exceptions import ConfigError


class Namespace(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The rules of the rooms that match ``pattern`` (None: the server's default)."""

    pattern: str = "*"
    anonymous: bool = False
    publish: Literal["clients", "api"] = "clients"
    presence: bool = True
    history_size: int | None = None
    history_ttl: float | None = None

    def matches(self, room: str) -> bool:
        return fnmatch.fnmatchcase(room, self.pattern)


class _File(msgspec.Struct, forbid_unknown_fields=True):
    namespaces: dict[str, dict[str, object]] = {}


def load_namespaces(path: Path) -> tuple[Namespace, ...]:
    """The namespaces of a TOML file, in the file's order; ``ConfigError`` if it is bad."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    return parse_namespaces(document, str(path))


def parse_namespaces(document: dict[str, object], source: str = "config") -> tuple[Namespace, ...]:
    try:
        tables = msgspec.convert(document, _File).namespaces
        namespaces = tuple(
            msgspec.convert({**rules, "pattern": pattern}, Namespace)
            for pattern, rules in tables.items()
        )
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for namespace in namespaces:
        if namespace.history_size is not None and namespace.history_size < 1:
            raise ConfigError(f"{source}: {namespace.pattern}: history_size must be >= 1")
        if namespace.history_ttl is not None and namespace.history_ttl < 0:
            raise ConfigError(f"{source}: {namespace.pattern}: history_ttl must be >= 0")
    return namespaces

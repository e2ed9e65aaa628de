"""Server settings: one frozen object, filled from the CLI or ``ROOMCAST_*`` variables."""

from __future__ import annotations

import fnmatch
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from roomcast.exceptions import ConfigError


def default_node_id(port: int) -> str:
    return f"{socket.gethostname()}-{port}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    node_id: str = ""
    broker: str = "memory://"
    redis_sharded: bool = False
    history: str = "sqlite"
    data_dir: Path = Path("roomcast-data")
    history_size: int = 1000
    history_ttl: float = 0.0
    api_key: str | None = None
    secret: str | None = None
    poll_timeout: float = 25.0
    heartbeat: float = 25.0
    presence_ttl: float = 30.0
    max_message_size: int = 64 * 1024
    max_data_size: int = 32 * 1024
    max_buffer: int = 1024 * 1024
    max_rooms: int = 100
    publish_rate: float = 100.0
    publish_burst: int = 200
    readonly_rooms: tuple[str, ...] = field(default_factory=tuple)
    shutdown_timeout: float = 5.0
    close_timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.history not in {"sqlite", "memory"}:
            raise ConfigError(f"--history must be 'sqlite' or 'memory', not {self.history!r}")
        positive = {
            "history_size": self.history_size,
            "heartbeat": self.heartbeat,
            "presence_ttl": self.presence_ttl,
            "poll_timeout": self.poll_timeout,
            "max_message_size": self.max_message_size,
            "max_data_size": self.max_data_size,
            "max_buffer": self.max_buffer,
            "max_rooms": self.max_rooms,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, not {value}")
        if self.publish_rate < 0 or self.publish_burst < 1:
            raise ConfigError("--publish-rate must be >= 0 (0: unlimited), --publish-burst >= 1")
        if self.secret is not None and len(self.secret) < 16:
            raise ConfigError("--secret must be at least 16 characters")
        if self.broker in {"memory", ""}:
            object.__setattr__(self, "broker", "memory://")
        if not self.node_id:
            object.__setattr__(self, "node_id", default_node_id(self.port))

    @property
    def history_path(self) -> Path:
        return self.data_dir / "history.sqlite3"

    def is_readonly(self, room: str) -> bool:
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.readonly_rooms)


def env_flag(name: str) -> str | None:
    """The value of ``ROOMCAST_<NAME>``, if set (used for options click does not own)."""
    return os.environ.get(f"ROOMCAST_{name.upper()}")

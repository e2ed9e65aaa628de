"""Server settings: one frozen object, filled from the CLI or ``ROOMCAST_*`` variables."""

from __future__ import annotations

import fnmatch
import functools
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from roomcast.exceptions import ConfigError
from roomcast.limits import TrustedProxies
from roomcast.policy import Namespace

MIN_TOKEN_SECRET = 32
MIN_ADMIN_PASSWORD = 8
# Rooms of roomcast's own (the admin page's): nobody publishes to them but the nodes, only
# an admin may join (roomcast.auth), and they keep a few seconds of history.
RESERVED_NAMESPACE = Namespace(
    pattern="roomcast:*", publish="api", presence=False, history_size=8, history_ttl=30.0
)


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
    admin_password: str | None = None  # the admin page's (default: the API key)
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
    # -- security (docs/security.md) --
    auth: str = "off"  # off | optional | required
    token_secret: str | None = None  # HS256 connection tokens
    token_public_key: str | None = None  # PEM of the RS256/ES256 key that signs them
    token_grace: float = 30.0  # seconds an expired connection may still send `refresh`
    namespaces: tuple[Namespace, ...] = field(default_factory=tuple)  # from --config
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)  # (): same origin
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)  # X-Forwarded-For
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = 0  # 0: no limit
    max_connections_per_ip: int = 0
    connect_rate: float = 0.0  # new connections per second per IP (0: no limit)
    connect_burst: int = 20
    handshake_timeout: float = 10.0
    max_json_depth: int = 32
    max_presence: int = 1000  # members in one presence reply
    enable_echo: bool = False  # GET /echo, for the Autobahn conformance suite

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
        self._check_security()
        if self.secret is not None and len(self.secret) < 16:
            raise ConfigError("--secret must be at least 16 characters")
        if self.broker in {"memory", ""}:
            object.__setattr__(self, "broker", "memory://")
        if not self.node_id:
            object.__setattr__(self, "node_id", default_node_id(self.port))
        if RESERVED_NAMESPACE not in self.namespaces:  # first: no --config rule overrides it
            object.__setattr__(self, "namespaces", (RESERVED_NAMESPACE, *self.namespaces))

    def _check_security(self) -> None:
        if self.auth not in {"off", "optional", "required"}:
            raise ConfigError(f"--auth must be off, optional or required, not {self.auth!r}")
        if self.auth != "off" and self.token_secret is None and self.token_public_key is None:
            raise ConfigError(f"--auth {self.auth} needs --token-secret or --token-public-key")
        if self.token_secret is not None and len(self.token_secret.encode()) < MIN_TOKEN_SECRET:
            raise ConfigError(
                f"--token-secret must be at least {MIN_TOKEN_SECRET} bytes (RFC 7518: an HS256 "
                "key is as long as the hash)"
            )
        if self.admin_password is not None and len(self.admin_password) < MIN_ADMIN_PASSWORD:
            raise ConfigError(f"--admin-password must be at least {MIN_ADMIN_PASSWORD} characters")
        TrustedProxies(self.trusted_proxies)  # a bad address is a ConfigError
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        limits = {
            "max_connections": self.max_connections,
            "max_connections_per_ip": self.max_connections_per_ip,
            "connect_rate": self.connect_rate,
            "token_grace": self.token_grace,
        }
        for name, value in limits.items():
            if value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, not {value}")
        positive = {
            "connect_burst": self.connect_burst,
            "handshake_timeout": self.handshake_timeout,
            "max_json_depth": self.max_json_depth,
            "max_presence": self.max_presence,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, not {value}")

    def namespace(self, room: str) -> Namespace:
        """The rules of ``room``: its namespace's, the server's defaults filled in."""
        return _resolve(self.namespaces, self.readonly_rooms, self.history_size,
                        self.history_ttl, room)  # fmt: skip

    @property
    def admin_secret(self) -> str | None:
        """What logs into the admin page: ``--admin-password``, else ``--api-key``."""
        return self.admin_password if self.admin_password is not None else self.api_key

    @property
    def history_path(self) -> Path:
        return self.data_dir / "history.sqlite3"

    def is_readonly(self, room: str) -> bool:
        return self.namespace(room).publish == "api"


@functools.lru_cache(maxsize=1 << 16)
def _resolve(
    namespaces: tuple[Namespace, ...],
    readonly: tuple[str, ...],
    history_size: int,
    history_ttl: float,
    room: str,
) -> Namespace:
    found = next((ns for ns in namespaces if ns.matches(room)), Namespace())
    api_only = any(fnmatch.fnmatchcase(room, pattern) for pattern in readonly)
    return msgspec.structs.replace(
        found,
        publish="api" if api_only else found.publish,
        history_size=found.history_size or history_size,
        history_ttl=history_ttl if found.history_ttl is None else found.history_ttl,
    )


def env_flag(name: str) -> str | None:
    """The value of ``ROOMCAST_<NAME>``, if set (used for options click does not own)."""
    return os.environ.get(f"ROOMCAST_{name.upper()}")

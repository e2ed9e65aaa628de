"""The ``roomcast`` command line: serve, connect, publish, bench."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from roomcast import logs
from roomcast.cli_options import serve_options
from roomcast.config import Settings
from roomcast.exceptions import ConfigError
from roomcast.policy import load_namespaces


@click.group()
@click.version_option(package_name="roomcast")
def main() -> None:
    """roomcast: a real-time messaging server (rooms over WebSocket)."""


@main.command()
@serve_options
def serve(log_level: str, log_format: str, **options: Any) -> None:
    """Run a server node."""
    logs.setup(log_level, log_format)
    try:
        settings = Settings(**settings_options(options))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from roomcast.server import run

    try:
        run(settings)
    except OSError as exc:
        click.echo(f"roomcast: cannot serve on {settings.host}:{settings.port}: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("--sub", required=True, help="The user: shown in presence and in `from`.")
@click.option("--rooms", "rooms", multiple=True, help="Rooms it may join and publish to "
              "(names or * patterns; repeat or separate with commas).")  # fmt: skip
@click.option("--read", "read", multiple=True, help="Rooms it may join but not publish to.")
@click.option("--ttl", default=3600.0, show_default=True, help="Seconds the token is good "
              "for (0: it never expires).")  # fmt: skip
@click.option("--secret", envvar="ROOMCAST_TOKEN_SECRET", show_envvar=True,
              help="The server's --token-secret (HS256).")  # fmt: skip
@click.option("--private-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="PEM private key matching the server's --token-public-key "
              "(RS256 for RSA, ES256 for P-256).")  # fmt: skip
def token(
    sub: str,
    rooms: tuple[str, ...],
    read: tuple[str, ...],
    ttl: float,
    secret: str | None,
    private_key: Path | None,
) -> None:
    """Mint a connection token (for development; backends sign their own)."""
    from roomcast.auth import mint, signing_key

    if (secret is None) == (private_key is None):
        raise click.UsageError("give exactly one of --secret and --private-key")
    try:
        key, algorithm = signing_key(secret, private_key.read_bytes() if private_key else None)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    publish = _patterns(rooms)
    click.echo(mint(sub, key=key, join=_patterns(read) + publish, publish=publish,
                    ttl=ttl or None, algorithm=algorithm))  # fmt: skip


def _patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.strip() for value in values for p in value.split(",") if p.strip())


def settings_options(options: dict[str, Any]) -> dict[str, Any]:
    """The CLI's options as :class:`Settings` fields: lists split, files read."""
    for name in ("readonly_rooms", "allowed_origins", "trusted_proxies"):
        options[name] = tuple(p.strip() for p in options[name].split(",") if p.strip())
    config: Path | None = options.pop("config")
    if config is not None:
        options["namespaces"] = load_namespaces(config)
    key: Path | None = options["token_public_key"]
    if key is not None:
        options["token_public_key"] = key.read_text(encoding="utf-8")
    return options


def _register_optional() -> None:
    """Commands whose modules are optional at import time (client, bench)."""
    from roomcast.client.cli import connect, publish

    main.add_command(connect)
    main.add_command(publish)
    from roomcast.demo import demo  # roomcast demo ticker (docs/demos.md)

    main.add_command(demo)
    try:
        from roomcast.bench.cli import bench
    except ImportError:  # pragma: no cover - bench ships with the package
        return
    main.add_command(bench)


_register_optional()

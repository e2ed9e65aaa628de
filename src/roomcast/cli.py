"""The ``roomcast`` command line: serve, connect, publish, bench."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

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
def serve(log_level: str, **options: Any) -> None:
    """Run a server node."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    try:
        from roomcast.bench.cli import bench
    except ImportError:  # pragma: no cover - bench ships with the package
        return
    main.add_command(bench)


_register_optional()

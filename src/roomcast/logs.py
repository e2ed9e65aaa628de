"""Logs: one line per event worth knowing, as text or as JSON lines.

Every event line carries its fields as ``extra`` (``log.info("...", extra=event("start",
host=...))``): the text format shows the message, the JSON format the message and the
fields. A log line never holds a secret, a token or a message body: URLs are shown
without their password (:func:`redact_url`). docs/operations.md lists the events.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec

from roomcast.ratelimit import TokenBucket

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The attributes every LogRecord has: anything else on a record came in ``extra``.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def event(name: str, **fields: Any) -> dict[str, Any]:
    """The ``extra`` of an event line: its name and its fields."""
    return {"event": name, **fields}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``,
    ``event`` and the event's fields when it has some, ``exc`` with a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return msgspec.json.encode(line, enc_hook=str).decode()


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def setup(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` (debug, info, warning, error) as ``text`` or ``json``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def redact_url(url: str) -> str:
    """``url`` without the password (or token) of its user part: ``redis://:***@host``.
    Each of several comma-separated hosts (a cluster) is redacted too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if "@" not in parts.netloc:
        return url
    hosts = [_redact_host(host) for host in parts.netloc.split(",")]
    return urlunsplit(parts._replace(netloc=",".join(hosts)))


def _redact_host(host: str) -> str:
    user, at, where = host.rpartition("@")
    if not at:
        return host
    name, colon, _ = user.partition(":")
    return f"{name}:***@{where}" if colon else f"***@{where}"


class Throttle:
    """At most ``rate`` lines a second (``burst`` at once) of one kind of event that
    clients can cause at will (auth failures): :meth:`allow` says whether to log this
    one, and how many were left out since the last one logged."""

    def __init__(self, rate: float = 5.0, burst: int = 20) -> None:
        self._bucket = TokenBucket(rate, burst)
        self.suppressed = 0

    def allow(self) -> int | None:
        """None: do not log it. Otherwise the number of lines left out before it."""
        if not self._bucket.take():
            self.suppressed += 1
            return None
        left_out, self.suppressed = self.suppressed, 0
        return left_out


_auth_failures = Throttle()


def auth_failure(logger: logging.Logger, reason: str, **fields: Any) -> None:
    """Log that a client was refused for its credentials: the reason and where it came
    from, never the token or key; at most a few lines a second (:class:`Throttle`)."""
    left_out = _auth_failures.allow()
    if left_out is None:
        return
    where = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.warning(
        "auth failure: %s (%s)",
        reason,
        where,
        extra=event("auth_failure", reason=reason, suppressed=left_out, **fields),
    )

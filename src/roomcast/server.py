"""Running a node: start, serve until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from aiohttp import web

from roomcast.config import Settings
from roomcast.http.app import create_app
from roomcast.http.guard import watch_handshakes
from roomcast.logs import event, redact_url
from roomcast.node import Node

log = logging.getLogger("roomcast.server")


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or the process gets SIGTERM/SIGINT, then shut down:
    stop accepting, store pending messages, close every client with 1012."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    context = tls_context(settings)  # before anything starts: a bad certificate exits
    node = Node(settings)
    runner = web.AppRunner(
        create_app(node),
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,
        handler_cancellation=True,  # a stream or poll ends when its client goes away
    )
    await runner.setup()
    watch_handshakes(runner)  # --handshake-timeout
    site = Site(runner, settings, context)
    await site.start()
    await node.start()
    log_start(settings, tls=context is not None)
    for warning in security_warnings(settings):
        log.warning("%s", warning, extra=event("config_warning"))
    try:
        await stop.wait()
    finally:
        log.info("shutting down", extra=event("stopping"))
        await node.drain()
        await runner.cleanup()
        log.info("stopped", extra=event("stop"))


def log_start(settings: Settings, tls: bool) -> None:
    """The start line: where, which broker (without its password), which auth mode."""
    scheme, ws_scheme = ("https", "wss") if tls else ("http", "ws")
    broker = redact_url(settings.broker)
    fields = event("start", host=settings.host, port=settings.port, node=settings.node_id,
                   broker=broker, history=settings.history, auth=settings.auth, tls=tls)
    log.info(
        "roomcast serving on %s://%s:%d (/ws over %s, /sse, /poll; broker %s, history %s, "
        "auth %s)", scheme, settings.host, settings.port, ws_scheme, broker, settings.history,
        settings.auth, extra=fields,
    )  # fmt: skip


class Site(web.TCPSite):
    """The node's listening socket: aiohttp's TCPSite, with TLS handshakes bounded by
    ``--handshake-timeout`` (asyncio's default is 60 s, which a slow-handshake flood
    would use to hold sockets open)."""

    def __init__(
        self, runner: web.AppRunner, settings: Settings, context: ssl.SSLContext | None
    ) -> None:
        super().__init__(runner, settings.host, settings.port, ssl_context=context,
                         backlog=4096, reuse_address=True)  # fmt: skip
        self._handshake_timeout = settings.handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # what TCPSite.start does, with the timeout
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )  # fmt: skip


def security_warnings(settings: Settings) -> list[str]:
    """What an operator should know about an open door (never a secret's value)."""
    warnings = []
    if settings.auth == "off":
        warnings.append(
            "--auth off: anyone may join and publish to any room; start with --auth required "
            "and --token-secret or --token-public-key in production (docs/security.md)"
        )
    if settings.secret is None and not settings.broker.startswith("memory"):
        warnings.append(
            "no --secret: SSE and long-poll session tokens are good on this node only; "
            "give every node of the cluster the same ROOMCAST_SECRET"
        )
    if settings.enable_echo:
        warnings.append("--enable-echo: GET /echo is open (diagnostics only, not for production)")
    if "*" in settings.allowed_origins:
        warnings.append("--allowed-origins '*': pages of any site may connect with users' cookies")
    return warnings


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (``--tls-cert``/``--tls-key``), or None to serve plain
    HTTP: TLS 1.2 or later, Python's secure defaults for ciphers and options, HTTP/1.1
    announced over ALPN. A certificate that cannot be loaded is an OSError."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key, password=_no_passphrase)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise OSError(f"cannot load --tls-cert/--tls-key: {exc}") from exc
    return context


def _no_passphrase() -> str:
    """Called for an encrypted key: refuse it rather than let OpenSSL ask on a terminal."""
    raise ValueError("the private key is encrypted; give one without a passphrase")


def raise_file_limit() -> int:
    """Raise the soft limit of open files to the hard one: every connection is a file."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def run(settings: Settings) -> None:
    """Run a server in this process, on uvloop when it is installed."""
    log.info("open files limit: %d", raise_file_limit())
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))

"""The use-case demos under ``/demo/`` (docs/demos.md): a live price ticker, a progress
bar fed by a job, multiplayer cursors. Each is a small page using ``/roomcast.js``.

``POST /demo/jobs`` starts a simulated long job in this server process: an asyncio task
that publishes its progress into the room ``job:<id>`` through the node's publish path
(the same one as the HTTP API), one message per step::

    {"step": 3, "of": 20, "percent": 15, "log": "step 3/20: ...", "done": false}

At most :data:`MAX_JOBS` jobs run at once on a node (429 over it), each at most
:data:`MAX_STEPS` steps of at most :data:`MAX_DELAY` seconds, so the route cannot be
used to load the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Final

import msgspec
from aiohttp import hdrs, web
from msgspec import Meta, Raw, Struct

from roomcast.exceptions import BrokerError, ErrorCode, ProtocolError
from roomcast.http.errors import error_response, json_body
from roomcast.node import Node
from roomcast.protocol import encode
from roomcast.transports.websocket import NODE_KEY

log = logging.getLogger("roomcast.demo")

PAGES_DIR: Final = Path(__file__).resolve().parent.parent / "static" / "demo"
PAGES: Final = {
    "/demo/": "index.html",
    "/demo/ticker": "ticker.html",
    "/demo/jobs": "jobs.html",
    "/demo/cursors": "cursors.html",
}
MAX_JOBS: Final = 10  # jobs running at once on one node
MAX_STEPS: Final = 100
MAX_DELAY: Final = 2.0  # seconds per step
DEFAULT_STEPS: Final = 20
DEFAULT_DELAY: Final = (0.2, 0.5)  # a random delay per step in this range
RETRY_AFTER: Final = "2"  # seconds, of a 429
WORK: Final = (
    "fetched {n} records",
    "parsed {n} rows",
    "resized {n} images",
    "indexed {n} documents",
    "compressed {n} files",
    "checked {n} signatures",
    "uploaded {n} chunks",
    "merged {n} segments",
)


class JobSpec(Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /demo/jobs`` (optional): how many steps, how long each takes
    (seconds; by default a random 0.2-0.5 s per step)."""

    steps: Annotated[int, Meta(ge=1, le=MAX_STEPS)] = DEFAULT_STEPS
    delay: Annotated[float, Meta(ge=0, le=MAX_DELAY)] | None = None


_spec_decoder = msgspec.json.Decoder(JobSpec)


class Jobs:
    """The demo jobs running on this node, at most ``limit`` at once."""

    def __init__(self, limit: int = MAX_JOBS, rng: random.Random | None = None) -> None:
        self.limit = limit
        self.rng = rng or random.Random()
        self.running: dict[str, asyncio.Task[None]] = {}

    def start(self, node: Node, spec: JobSpec) -> str:
        """Start a job; its id (the room is ``job:<id>``). ``rate_limited`` when full."""
        if len(self.running) >= self.limit:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"{self.limit} demo jobs are running: try again when one has finished",
            )
        job = secrets.token_hex(6)
        task = asyncio.create_task(run_job(node, job_room(job), spec, self.rng))
        self.running[job] = task
        task.add_done_callback(lambda _: self.running.pop(job, None))
        return job

    async def stop(self) -> None:
        """Cancel every running job (the server shuts down)."""
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


JOBS_KEY: Final = web.AppKey("demo_jobs", Jobs)


def job_room(job: str) -> str:
    return f"job:{job}"


def progress(step: int, steps: int, text: str) -> dict[str, object]:
    """One progress message of a job of ``steps`` steps."""
    return {
        "step": step,
        "of": steps,
        "percent": step * 100 // steps,
        "log": text,
        "done": step == steps,
    }


async def run_job(node: Node, room: str, spec: JobSpec, rng: random.Random) -> None:
    """Simulate a job: step 0 (started), then each step after its delay, published into
    ``room``. A publish that fails (the server is shutting down) ends the job."""
    steps = spec.steps
    try:
        await _report(node, room, progress(0, steps, f"job started: {steps} steps"))
        for step in range(1, steps + 1):
            delay = spec.delay if spec.delay is not None else rng.uniform(*DEFAULT_DELAY)
            await asyncio.sleep(delay)
            work = rng.choice(WORK).format(n=rng.randint(10, 999))
            await _report(node, room, progress(step, steps, f"step {step}/{steps}: {work}"))
    except (BrokerError, ProtocolError) as exc:
        log.warning("demo job %s stopped: %s", room, exc)


async def _report(node: Node, room: str, data: dict[str, object]) -> None:
    await node.publish(room, Raw(encode(data)), None)


def add_routes(app: web.Application) -> None:
    app[JOBS_KEY] = Jobs()
    app.router.add_get("/demo", _to_index)
    for path, name in PAGES.items():
        app.router.add_get(path, _page(name))
    app.router.add_post("/demo/jobs", start_job)
    app.on_shutdown.append(_stop_jobs)


def _page(name: str) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGES_DIR / name, headers={hdrs.CACHE_CONTROL: "no-cache"})

    return page


async def _to_index(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/demo/")


async def _stop_jobs(app: web.Application) -> None:
    await app[JOBS_KEY].stop()


async def start_job(request: web.Request) -> web.Response:
    """``POST /demo/jobs`` (body optional: ``{"steps": N, "delay": S}``) answers 202
    ``{"job": id, "room": "job:<id>"}``; the job publishes its progress into the room."""
    node = request.app[NODE_KEY]
    try:
        spec = await _read_spec(request)
        if not node.ready:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the server is not ready")
        job = request.app[JOBS_KEY].start(node, spec)
    except ProtocolError as error:
        response = error_response(error)
        if error.code == ErrorCode.RATE_LIMITED:
            response.headers[hdrs.RETRY_AFTER] = RETRY_AFTER
        return response
    return json_body(encode({"job": job, "room": job_room(job)}), 202)


async def _read_spec(request: web.Request) -> JobSpec:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(ErrorCode.TOO_LARGE, "the body is too large") from None
    if not raw.strip():
        return JobSpec()
    try:
        return _spec_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"bad body: {exc}") from None

"""Reverse proxies of a test's own in front of roomcast nodes: a real nginx or HAProxy
as a child process on a free port of 127.0.0.1, configured from the templates in
``deploy/`` (the very files docs/deploy.md tells people to use).

    with NginxProcess(tmp_path / "nginx", ["127.0.0.1:8001", "127.0.0.1:8002"],
                      idle_timeout="3s") as proxy:
        proxy.ws_url     # ws://127.0.0.1:PORT/ws, spread over both nodes
    HaproxyProcess(tmp_path / "haproxy", nodes, mode="tcp").start()

A proxy is ready when ``/ready`` through it has answered 200 from every node. Neither
ever touches the machine's own nginx or HAProxy service, their files or port 80: the
configuration, logs, pid and temporary files live in the given directory, and the
process runs in the foreground (``daemon off``, ``-db``) until :meth:`stop`.
``available()`` tells whether the binary is installed (tests skip without it).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from roomcast.testing import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
# urllib without the environment's HTTP proxy: the requests go to our proxy only.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with every ``${NAME}`` (upper case: nginx's own ``$host`` and
    ``${http_upgrade}`` stay) replaced by ``values[NAME]``, as ``envsubst`` does with
    the names given; a placeholder without a value is an error."""
    missing = sorted(set(PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for the placeholders {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def find_binary(name: str) -> str | None:
    """``name`` on PATH, or in an sbin directory (not on every user's PATH)."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in SBIN:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class ProxyProcess:
    """A proxy child process on a free port in front of ``nodes`` (``host:port`` each)."""

    binary_name: ClassVar[str] = ""
    log_name: ClassVar[str] = "proxy.log"

    def __init__(
        self,
        directory: Path,
        nodes: Sequence[str],
        *,
        idle_timeout: str = "60s",
        port: int | None = None,
        template: Path | None = None,
    ) -> None:
        if len(nodes) != 2:
            raise ValueError("the templates in deploy/ name two nodes: NODE1 and NODE2")
        self.directory = directory
        self.nodes = list(nodes)
        self.idle_timeout = idle_timeout
        self.port = port or free_port()
        self.template = template or self.default_template()
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        return find_binary(cls.binary_name) is not None

    def default_template(self) -> Path:
        raise NotImplementedError

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def values(self) -> dict[str, str]:
        """The placeholders of the templates in deploy/."""
        return {
            "LISTEN": f"127.0.0.1:{self.port}",
            "NODE1": self.nodes[0],
            "NODE2": self.nodes[1],
            "IDLE_TIMEOUT": self.idle_timeout,
        }

    @property
    def log_path(self) -> Path:
        return self.directory / self.log_name

    def command(self, binary: str) -> list[str]:
        """Write the configuration into the directory; the command line to run."""
        raise NotImplementedError

    def check_command(self, binary: str) -> list[str]:
        """Write the configuration; the command line that only checks it."""
        raise NotImplementedError

    def check(self) -> str:
        """Render the configuration and have the proxy check it (``nginx -t``,
        ``haproxy -c``) without starting; its output. Raises if the check fails."""
        binary = find_binary(self.binary_name)
        if binary is None:
            raise RuntimeError(f"{self.binary_name} is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            self.check_command(binary), capture_output=True, text=True, timeout=30, check=False
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"{self.binary_name} rejects its configuration:\n{output}")
        return output

    def start(self, timeout: float = 20.0) -> ProxyProcess:
        """Start; wait until ``/ready`` through the proxy answered 200 from every node."""
        binary = find_binary(self.binary_name)
        if binary is None:
            raise RuntimeError(f"{self.binary_name} is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = self.command(binary)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Ask ``/ready`` through the proxy until every node has answered 200 (round
        robin takes turns, so this also waits for the health checks to pass)."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while len(seen) < len(self.nodes):
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RuntimeError(f"{self.binary_name} exited with {code}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.binary_name} on port {self.port}: /ready answered 200 only from "
                    f"{sorted(seen)} after {timeout}s:\n{self.log()}"
                )
            try:
                with _opener.open(self.http_url + "/ready", timeout=2) as answer:
                    if answer.status == 200:
                        seen.add(str(json.loads(answer.read())["node"]))
                        continue
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """Stop at once (SIGTERM: both close their connections without waiting)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class NginxProcess(ProxyProcess):
    """nginx from ``deploy/nginx/roomcast.conf``, included in a main configuration of
    its own (one worker, every path in the directory), as ``nginx -p DIR -c FILE -g
    'daemon off;'``."""

    binary_name = "nginx"
    log_name = "error.log"

    def default_template(self) -> Path:
        return DEPLOY / "nginx" / "roomcast.conf"

    def command(self, binary: str) -> list[str]:
        site = self.directory / "roomcast.conf"
        site.write_text(render(self.template.read_text(), self.values))
        (self.directory / "temp").mkdir(exist_ok=True)  # nginx makes only the last level
        main = self.directory / "nginx.conf"
        main.write_text(self.main_config(site))
        return [
            binary, "-p", f"{self.directory}/", "-e", str(self.log_path),
            "-c", str(main), "-g", "daemon off;",
        ]  # fmt: skip

    def check_command(self, binary: str) -> list[str]:
        return [*self.command(binary), "-t"]

    def main_config(self, site: Path) -> str:
        d = self.directory
        temp = "\n".join(
            f"    {kind}_temp_path {d / 'temp' / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx's workers would run as `nobody` (Debian builds it with no
        # --user), which cannot enter a test's private temporary directory.
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
        return f"""\
# Written by roomcast.testing_proxy for a test: everything in {d}.
{user}
worker_processes 1;
pid {d / "nginx.pid"};
error_log {self.log_path} info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {d / "access.log"};
{temp}
    include {site};
}}
"""


class HaproxyProcess(ProxyProcess):
    """HAProxy from ``deploy/haproxy/roomcast-http.cfg`` (``mode="http"``, L7) or
    ``roomcast-tcp.cfg`` (``mode="tcp"``, L4), as ``haproxy -db -f FILE``."""

    binary_name = "haproxy"
    log_name = "haproxy.log"

    def __init__(
        self,
        directory: Path,
        nodes: Sequence[str],
        *,
        mode: str = "http",
        idle_timeout: str = "60s",
        port: int | None = None,
        template: Path | None = None,
    ) -> None:
        if mode not in {"http", "tcp"}:
            raise ValueError(f"mode must be 'http' or 'tcp', not {mode!r}")
        self.mode = mode
        super().__init__(directory, nodes, idle_timeout=idle_timeout, port=port, template=template)

    def default_template(self) -> Path:
        return DEPLOY / "haproxy" / f"roomcast-{self.mode}.cfg"

    def write_config(self) -> Path:
        config = self.directory / f"roomcast-{self.mode}.cfg"
        config.write_text(render(self.template.read_text(), self.values))
        return config

    def command(self, binary: str) -> list[str]:
        return [binary, "-db", "-f", str(self.write_config())]

    def check_command(self, binary: str) -> list[str]:
        return [binary, "-c", "-f", str(self.write_config())]

"""A ``nats-server`` with JetStream of the test's own, on a free port of 127.0.0.1.

``NatsProcess(directory).start()`` returns once the server accepts clients, ``url`` is
its address; ``kill()`` is a crash (SIGKILL), and ``start()`` again keeps the port and the
store directory, so JetStream keeps its streams.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from pathlib import Path

from roomcast.testing import free_port

READY_LINE = b"Server is ready"
PORT_TAKEN = b"address already in use"


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or shutil.which(
        "nats-server", path="/usr/sbin:/usr/local/sbin:/usr/local/bin"
    )


class NatsProcess:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        # A port picked here may be taken by someone else before the server binds it.
        self._may_move = port is None
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[bytes] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsProcess:
        """Start the server; return once it logs that it accepts clients."""
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            command = [binary, "-js", "-sd", str(self.directory), "-a", "127.0.0.1",
                       "-p", str(self.port)]  # fmt: skip
            self.lines = []
            ready, ended = threading.Event(), threading.Event()
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            reader = threading.Thread(
                target=self._read_log, args=(self.process, ready, ended), daemon=True
            )
            reader.start()
            ended.wait(timeout)  # set by the ready line, or when the process ends
            if ready.is_set():
                self._may_move = False  # restarts keep the port
                return self
            log = b"".join(self.lines[-20:])
            self.stop(signal.SIGKILL)
            if not (self._may_move and PORT_TAKEN in log):
                message = log.decode(errors="replace")
                raise TimeoutError(f"nats-server on port {self.port} did not start:\n{message}")
            self.port = free_port()
        raise TimeoutError("nats-server found no free port")

    def _read_log(
        self, process: subprocess.Popen[bytes], ready: threading.Event, ended: threading.Event
    ) -> None:
        assert process.stderr is not None
        with process.stderr:
            for line in process.stderr:  # until the process ends: the pipe never fills up
                self.lines.append(line)
                if READY_LINE in line:
                    ready.set()
                    ended.set()
        ended.set()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(15)
            self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> NatsProcess:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop(signal.SIGKILL)

"""The parent's side of the load generator processes."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import MutableSequence, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, cast

from roomcast.bench.procstat import cpu_seconds
from roomcast.bench.worker import Reply, worker_main


class BenchError(RuntimeError):
    """A benchmark could not run as asked (a worker failed, a server refused...)."""


class WorkerPool:
    """``size`` worker processes (started with spawn: the parent may have threads)."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = size
        self.delivered = cast(MutableSequence[int], context.RawArray("q", size))
        self.progress = cast(MutableSequence[int], context.RawArray("q", size))
        self._conns: list[Connection] = []
        self._processes: list[BaseProcess] = []
        for index in range(size):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(child, index, self.delivered, self.progress),
                name=f"roomcast-bench-{index}",
                daemon=True,
            )
            self._conns.append(parent)
            self._processes.append(process)

    def start(self) -> WorkerPool:
        for process in self._processes:
            process.start()
        return self

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def total_delivered(self) -> int:
        return sum(self.delivered[index] for index in range(self.size))

    def min_progress(self, indexes: Sequence[int]) -> int:
        return min(self.progress[index] for index in indexes)

    def reset_progress(self, value: int) -> None:
        for index in range(self.size):
            self.progress[index] = value
            self.delivered[index] = 0

    async def call(self, index: int, *command: Any) -> Reply:
        """Send one command to worker ``index`` and wait for its reply."""
        conn = self._conns[index]
        conn.send(command)
        # In a thread: uvloop's add_reader would make the pipe non-blocking under recv().
        try:
            reply: Reply = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        except (EOFError, OSError) as exc:
            raise BenchError(f"worker {index} died: {exc!r}") from exc
        if reply[0] == "error":
            raise BenchError(f"worker {index}: {reply[1]}")
        return reply

    async def each(self, commands: Sequence[tuple[Any, ...] | None]) -> list[Reply]:
        """Send ``commands[i]`` to worker i (None: nothing) and wait for all replies."""
        calls = [
            self.call(index, *command)
            for index, command in enumerate(commands)
            if command is not None
        ]
        return list(await asyncio.gather(*calls))

    async def all(self, *command: Any) -> list[Reply]:
        return await self.each([command] * self.size)

    async def spread(self, counts: Sequence[int], *command: Any) -> list[Reply]:
        """Send ``(*command, counts[i], prefix)`` to each worker i with a count above 0."""
        return await self.each(
            [
                (*command, count, f"w{index}-") if count else None
                for index, count in enumerate(counts)
            ]
        )

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("exit",))
        for process in self._processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for conn in self._conns:
            conn.close()


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` nearly equal counts."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]

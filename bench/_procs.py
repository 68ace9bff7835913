"""Child processes for benchmarks: start a node with a READY handshake, stop them all.

The same approach as ``tests/conftest.py`` (``python -m <module> --spec-json ...``, block on
the READY line, no sleeps), without importing pytest, plus a ``Processes`` registry that
stops everything it started on exit: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from nav.runtime.launchfile import NodeSpec

REPO = Path(__file__).resolve().parent.parent


class StartError(RuntimeError):
    """A child process did not print its READY line; the message says why (with log tail)."""


@dataclass
class Child:
    """One started process: its READY line and where its stderr went."""

    name: str
    process: subprocess.Popen[str]
    ready: str
    log_path: Path
    lines: queue.Queue[str | None] = field(repr=False)

    def log_tail(self, n: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-n:])

    def next_line(self, timeout_s: float) -> str | None:
        """The next stdout line after READY, or None on timeout or end of output."""
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def stop(self, grace_s: float = 3.0) -> int:
        """SIGTERM, wait ``grace_s``, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


class Processes:
    """Starts children and stops every one still running when the ``with`` block ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: Sequence[str], *, ready_prefix: str, ready_timeout_s: float = 20.0
    ) -> Child:
        """Run ``argv`` in the repo root; block until a stdout line starts with ``ready_prefix``."""
        log_path = self.log_dir / f"{name}.{len(self.children)}.log"
        with open(log_path, "w", encoding="utf-8") as log_file:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "ORNAV_LOG_LEVEL": "WARNING"},
            )
        lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        child = Child(name, process, "", log_path, lines)
        self.children.append(child)
        deadline = time.monotonic() + ready_timeout_s
        while True:
            line = child.next_line(max(0.0, deadline - time.monotonic()))
            if line is not None and line.startswith(ready_prefix):
                child.ready = line
                return child
            if line is None:
                child.stop(grace_s=1.0)
                why = "exited" if process.poll() is not None else f"no READY in {ready_timeout_s} s"
                raise StartError(
                    f"{name} {why} (exit {process.returncode}); log tail:\n{child.log_tail()}"
                )

    def start_node(self, spec: NodeSpec, *, ready_timeout_s: float = 20.0) -> Child:
        """Start ``python -m spec.module --spec-json ...`` and wait for ``READY <name> ``."""
        argv = [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()]
        return self.start(
            spec.name, argv, ready_prefix=f"READY {spec.name} ", ready_timeout_s=ready_timeout_s
        )

    def pids(self) -> list[int]:
        """This process and every child still running (for ``CpuMeter``)."""
        return [os.getpid()] + [c.process.pid for c in self.children if c.process.poll() is None]

    def stop(self, child: Child, grace_s: float = 3.0) -> int:
        code = child.stop(grace_s)
        if child in self.children:
            self.children.remove(child)
        return code

    def stop_all(self, grace_s: float = 3.0) -> None:
        """Stop in reverse start order (consumers first); SIGTERM all, then wait, then kill."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.children.clear()


class CpuMeter:
    """Machine-wide CPU use over a window, split into this benchmark's processes and the rest.

    Reads Linux ``/proc``: ``/proc/stat`` for the whole machine, ``/proc/<pid>/stat``
    (utime + stime) for ``pids``. "other" is load from processes the benchmark did not start,
    which on a shared machine is the first thing to check when a figure looks off.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._start = self._read()

    def _read(self) -> tuple[float, int, int, int]:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                values = [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            values = [0] * 8
        ours = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ours += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        idle = values[3] + values[4]
        return time.monotonic(), sum(values), idle, ours

    def stop(self) -> dict[str, float]:
        """Cores busy over the window: ``machine``, ``ours`` and ``other`` (machine - ours)."""
        t1, total1, idle1, ours1 = self._read()
        t0, total0, idle0, ours0 = self._start
        cpus = os.cpu_count() or 1
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        d_total = max(1, total1 - total0)
        machine = (d_total - (idle1 - idle0)) / d_total * cpus
        ours = (ours1 - ours0) / ticks_per_s / max(1e-9, t1 - t0)
        return {"machine": machine, "ours": ours, "other": max(0.0, machine - ours)}

"""Child processes for benchmarks: start a node with a READY handshake, stop them all.

Each child is a ``nav.runtime.process.ChildProcess`` (the supervisor's, the demo's and the
test fixtures' lifetime too): ``python -m <module> --spec-json ...`` or any argv, blocking
on the READY line, no sleeps; a ``Processes`` registry stops everything it started on exit:
SIGINT, then SIGTERM, then SIGKILL, a grace period apart.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from nav.runtime.launchfile import NodeSpec
from nav.runtime.process import ChildProcess, NotReadyError

REPO = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 3.0


class StartError(RuntimeError):
    """A child process did not print its READY line; the message says why (with log tail)."""


@dataclass
class Child:
    """One started process: its READY line and where its stderr went."""

    process: ChildProcess
    ready: str = ""

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path

    def log_tail(self, n: int = 8) -> str:
        return "\n".join((self.process.log_lines() or [])[-n:])

    def next_line(self, timeout_s: float) -> str | None:
        """The next stdout line after READY, or None on timeout or end of output."""
        return self.process.next_line(timeout_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGINT, SIGTERM, SIGKILL, ``grace_s`` apart; returns the exit code."""
        return self.process.stop(sigint_timeout_s=grace_s, sigterm_timeout_s=grace_s)


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
        child = Child(
            ChildProcess(
                name=name,
                argv=argv,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "ORNAV_LOG_LEVEL": "WARNING"},
                cwd=REPO,
                stdout="pipe",
                stderr=self.log_dir / f"{name}.{len(self.children)}.log",
                sigint_timeout_s=1.0,  # for one that never becomes ready
                sigterm_timeout_s=1.0,
            )
        )
        child.process.start()
        self.children.append(child)  # stopped on the way out, even after a Ctrl-C here
        try:
            child.ready = child.process.wait_ready(ready_prefix, ready_timeout_s)
        except NotReadyError as error:
            raise StartError(f"{error}; log tail:\n{child.log_tail()}") from None
        return child

    def start_node(self, spec: NodeSpec, *, ready_timeout_s: float = 20.0) -> Child:
        """Start ``python -m spec.module --spec-json ...`` and wait for ``READY <name> ``."""
        argv = [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()]
        return self.start(
            spec.name, argv, ready_prefix=f"READY {spec.name} ", ready_timeout_s=ready_timeout_s
        )

    def pids(self) -> list[int]:
        """This process and every child still running (for ``CpuMeter``)."""
        return [os.getpid()] + [
            pid
            for c in self.children
            if (pid := c.process.pid) is not None and c.process.poll() is None
        ]

    def stop(self, child: Child, grace_s: float = STOP_GRACE_S) -> int:
        code = child.stop(grace_s)
        if child in self.children:
            self.children.remove(child)
        return code

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop in reverse start order (consumers first), each with the full escalation."""
        for child in reversed(self.children):
            child.stop(grace_s)
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

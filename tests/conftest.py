"""Shared fixtures: short ipc directories, node processes with a READY handshake, shared data."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from nav.runtime.launchfile import NodeSpec

# A shared 2-core machine makes any example slow now and then: never fail on wall time.
settings.register_profile(
    "ornav", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ornav")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(relative: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not present: {path} (a fresh clone has no ../shared)")
    return path


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    """A short directory for ipc sockets (pytest's tmp_path can exceed the 107-byte limit)."""
    path = Path(tempfile.mkdtemp(prefix="ornav-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class NodeProcess:
    """A node started as a real process; ``ready`` is its READY line."""

    spec: NodeSpec
    process: subprocess.Popen[str]
    ready: str
    stdout_lines: queue.Queue[str | None] = field(repr=False)

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it hangs, then fails)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.spec.name} ignored SIGTERM for {timeout_s} s") from None


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line.rstrip("\n"))
    lines.put(None)


def start_node(
    spec: NodeSpec, *, ready_timeout_s: float = 20.0, stderr: object = None
) -> NodeProcess:
    """Start ``python -m spec.module --spec-json ...`` and block until its READY line."""
    process = subprocess.Popen(
        [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=ready_timeout_s)
    except queue.Empty:
        process.kill()
        raise AssertionError(f"{spec.name} printed no READY within {ready_timeout_s} s") from None
    if line is None or not line.startswith(f"READY {spec.name} "):
        process.kill()
        raise AssertionError(f"{spec.name} did not become ready: {line!r}")
    return NodeProcess(spec, process, line, lines)


@pytest.fixture
def node_processes() -> Iterator[list[NodeProcess]]:
    """Append started nodes here; any still running at the end are killed."""
    started: list[NodeProcess] = []
    yield started
    for node in started:
        if node.process.poll() is None:
            node.process.kill()
            node.process.wait()

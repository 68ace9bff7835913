"""Shared fixtures: short ipc directories, node processes with a READY handshake, shared data."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from nav.runtime.launchfile import NodeSpec
from nav.runtime.process import ChildProcess, NotReadyError

# A shared 2-core machine makes any example slow now and then: never fail on wall time.
settings.register_profile(
    "ornav", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ornav")

pytest_plugins = ("tests.browser",)  # the `chromium` fixture for page tests

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
STOP_TIMEOUT_S = 5.0  # each of the SIGINT and SIGTERM waits: a node needs 50 ms


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
    """A node started as a real process (``nav.runtime.process``); ``ready`` is its READY line."""

    spec: NodeSpec
    child: ChildProcess
    ready: str

    @property
    def process(self) -> subprocess.Popen[str]:
        """The OS process, for tests that signal, poll or wait on it directly."""
        assert self.child.popen is not None
        return self.child.popen

    @property
    def stdout_lines(self) -> queue.Queue[str | None]:
        """Its stdout lines after READY; None once stdout has closed."""
        return self.child.lines

    def terminate(self, timeout_s: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it hangs, then fails)."""
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        code = self.child.wait(timeout_s)
        if code is None:
            self.child.kill()
            raise AssertionError(f"{self.spec.name} ignored SIGTERM for {timeout_s} s")
        return code


def start_node(
    spec: NodeSpec, *, ready_timeout_s: float = 20.0, stderr: Path | None = None
) -> NodeProcess:
    """Start ``python -m spec.module --spec-json ...`` and block until its READY line.

    ``stderr``: a log file for the node's stderr (None: the test's own, captured by pytest).
    A node that exits or prints no READY in time fails the test with its exit code.
    """
    child = ChildProcess(
        name=spec.name,
        argv=[sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
        stdout="pipe",
        stderr=stderr,
        sigint_timeout_s=STOP_TIMEOUT_S,
        sigterm_timeout_s=STOP_TIMEOUT_S,
    )
    child.start()
    try:
        ready = child.wait_ready(f"READY {spec.name} ", ready_timeout_s)
    except NotReadyError as error:
        raise AssertionError(str(error)) from None
    return NodeProcess(spec, child, ready)


@pytest.fixture
def node_processes() -> Iterator[list[NodeProcess]]:
    """Append started nodes here; any still running at the end are stopped (SIGINT first)."""
    started: list[NodeProcess] = []
    yield started
    for node in reversed(started):
        node.child.stop()

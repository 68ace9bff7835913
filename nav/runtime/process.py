"""One child process's lifetime: start, wait for its READY line, stop with escalation.

The supervisor's nodes, the demo's headset client, the benchmarks' children and the test
fixtures all run through ``ChildProcess`` (ROS 2 launch keeps this in one place too,
``launch/actions/execute_local.py``):

- ``start()``: ``argv`` with stdin from /dev/null; stdout to a pipe (its lines read on a
  thread, so a chatty child can never block on a full pipe), to a log file, or inherited;
  stderr to a log file, to wherever stdout goes, or inherited. Log files are appended to,
  mode 0600 in directories created 0700 (a log names a case and a run), and only the
  lines this start wrote are read back.
- ``wait_ready(prefix, timeout_s)``: the first stdout line starting with ``prefix``. A
  child that exits first, or prints none in time, raises ``NotReadyError`` naming it, its
  exit code and the last line of its log; one still running then is stopped first, so it
  never lingers.
- ``stop()``: SIGINT, wait; SIGTERM, wait; SIGKILL, wait. Returns the exit code (negative:
  the signal that killed it), logs each escalation, and is idempotent.

Pure process handling: no sockets, no launch files. Signals go to the child's pid only; with
``new_session`` it is also out of reach of a Ctrl-C at the terminal, so its parent decides
when and how it stops.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

from nav.runtime.private_files import open_private

log = logging.getLogger(__name__)

DEFAULT_SIGINT_TIMEOUT_S = 5.0
DEFAULT_SIGTERM_TIMEOUT_S = 5.0
_LAST_LINE_CHARS = 300  # a log line quoted in an error: enough for a Python exception


class NotReadyError(RuntimeError):
    """A child exited, or printed no READY line in time; the message is one line.

    ``returncode`` is its exit code (after it was stopped, if it had timed out);
    ``timed_out`` says which; ``last_line`` is the last non-empty line of its log.
    """

    def __init__(
        self, message: str, *, name: str, returncode: int, timed_out: bool, last_line: str
    ) -> None:
        super().__init__(message)
        self.name = name
        self.returncode = returncode
        self.timed_out = timed_out
        self.last_line = last_line


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # Keep reading after READY so a chatty child can never block on a full pipe.
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


class ChildProcess:
    """One child process, started at most once. Drive it from one thread.

    ``stdout``: ``"pipe"`` (lines for ``wait_ready`` and ``next_line``), a log file path, or
    None (inherited). ``stderr``: a log file path, ``"stdout"`` (the same place), or None.
    ``sigint_timeout_s`` and ``sigterm_timeout_s`` are the waits ``stop()`` uses unless told
    otherwise (also when ``wait_ready`` stops a child that never became ready).
    """

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: Literal["pipe"] | Path | None = "pipe",
        stderr: Literal["stdout"] | Path | None = None,
        new_session: bool = False,
        sigint_timeout_s: float = DEFAULT_SIGINT_TIMEOUT_S,
        sigterm_timeout_s: float = DEFAULT_SIGTERM_TIMEOUT_S,
    ) -> None:
        if stderr == "stdout" and stdout == "pipe":
            raise ValueError(f"{name}: stderr into the READY pipe would hide the READY line")
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stdout = stdout
        self.stderr = stderr
        self.new_session = new_session
        self.sigint_timeout_s = sigint_timeout_s
        self.sigterm_timeout_s = sigterm_timeout_s
        self.popen: subprocess.Popen[str] | None = None
        self.stopped_by: signal.Signals | None = None  # the signal ``stop()`` ended it with
        self.lines: queue.Queue[str | None] = queue.Queue()  # stdout lines; None: closed
        self._log_offset = 0  # where this start's lines begin in the log file

    @property
    def log_path(self) -> Path | None:
        """The file the child's stderr goes to, if any."""
        if isinstance(self.stderr, Path):
            return self.stderr
        if self.stderr == "stdout" and isinstance(self.stdout, Path):
            return self.stdout
        return None

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it is known (``poll``, ``wait`` or ``stop``); else None."""
        return None if self.popen is None else self.popen.returncode

    def start(self) -> None:
        """Start the child; OSError if it cannot be (no such program, log not writable)."""
        if self.popen is not None:
            raise RuntimeError(f"{self.name} was already started (pid {self.popen.pid})")
        fds: list[int] = []
        try:
            out: int | None = None
            if self.stdout == "pipe":
                out = subprocess.PIPE
            elif isinstance(self.stdout, Path):
                out = open_private(self.stdout, append=True)
                fds.append(out)
            err: int | None = None
            if self.stderr == "stdout":
                err = subprocess.STDOUT
            elif isinstance(self.stderr, Path):
                err = open_private(self.stderr, append=True)
                fds.append(err)
            log_fd = err if isinstance(self.stderr, Path) else out
            if self.log_path is not None and log_fd is not None:
                self._log_offset = os.fstat(log_fd).st_size
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                errors="replace",  # one stray byte must not kill the reader and block the child
                cwd=self.cwd,
                env=self.env,
                start_new_session=self.new_session,
            )
        finally:
            for fd in fds:
                os.close(fd)  # the child has its own copies
        if self.popen.stdout is not None:
            threading.Thread(
                target=_pump,
                args=(self.popen.stdout, self.lines),
                name=f"{self.name}-stdout",
                daemon=True,
            ).start()
        log.debug("%s started (pid %d): %s", self.name, self.popen.pid, self.argv)

    def _started(self) -> subprocess.Popen[str]:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen

    def wait_ready(self, prefix: str, timeout_s: float) -> str:
        """Block until a stdout line starts with ``prefix``; that line.

        Other lines before it are logged as warnings and dropped. Raises NotReadyError when
        the child's stdout ends first (it exited) or after ``timeout_s`` (it is stopped).
        """
        popen = self._started()
        if self.stdout != "pipe":
            raise ValueError(f"{self.name}: wait_ready needs stdout='pipe'")
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = self.last_log_line()  # what it was doing, not how it stopped
                code = self.stop()
                raise NotReadyError(
                    f"{self.name} did not become ready within {timeout_s:g} s (no stdout line "
                    f"starting {prefix!r}; stopped, exit code {code}): {last}",
                    name=self.name,
                    returncode=code,
                    timed_out=True,
                    last_line=last,
                )
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: it exited, or is about to
                try:
                    code = popen.wait(timeout=max(remaining, 1.0))
                except subprocess.TimeoutExpired:  # closed its stdout and lives on
                    code = self.stop()
                last = self.last_log_line()
                raise NotReadyError(
                    f"{self.name} exited with code {code} before READY: {last}",
                    name=self.name,
                    returncode=code,
                    timed_out=False,
                    last_line=last,
                )
            if line.startswith(prefix):
                return line
            log.warning("%s wrote to stdout before READY: %s", self.name, line[:200])

    def next_line(self, timeout_s: float) -> str | None:
        """The next stdout line, or None on timeout or once stdout has closed."""
        try:
            return self.lines.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def poll(self) -> int | None:
        """The exit code if the child has exited, else None (never started: None)."""
        return None if self.popen is None else self.popen.poll()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the child to exit; its exit code, or None after ``timeout_s``."""
        try:
            return self._started().wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child (nothing once it has exited and been waited for)."""
        self._started().send_signal(sig)

    def kill(self) -> int:
        """SIGKILL now and wait; the exit code (idempotent)."""
        return self.stop(sigint_timeout_s=0.0, sigterm_timeout_s=0.0)

    def stop(
        self, *, sigint_timeout_s: float | None = None, sigterm_timeout_s: float | None = None
    ) -> int:
        """SIGINT, wait; SIGTERM, wait; SIGKILL, wait: the exit code (idempotent).

        A timeout of 0 skips that wait (the signal is still sent). None: the constructor's.
        ``stopped_by`` says which signal ended it (None: it had exited by itself).
        """
        popen = self._started()
        code = popen.poll()
        if code is not None:
            return code
        if sigint_timeout_s is None:
            sigint_timeout_s = self.sigint_timeout_s
        if sigterm_timeout_s is None:
            sigterm_timeout_s = self.sigterm_timeout_s
        steps: tuple[tuple[signal.Signals, float | None], ...] = (
            (signal.SIGINT, sigint_timeout_s),
            (signal.SIGTERM, sigterm_timeout_s),
            (signal.SIGKILL, None),  # cannot be ignored: wait for the kernel
        )
        for index, (sig, timeout_s) in enumerate(steps):
            popen.send_signal(sig)  # a no-op once it has exited
            try:
                code = popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                if timeout_s:  # a zero wait was no chance to stop: not worth a warning
                    log.warning(
                        "%s still running %g s after %s: sending %s",
                        self.name,
                        timeout_s,
                        sig.name,
                        steps[index + 1][0].name,
                    )
                continue
            self.stopped_by = sig
            level = logging.DEBUG if sig == signal.SIGINT else logging.WARNING
            log.log(level, "%s stopped by %s (exit code %d)", self.name, sig.name, code)
            return code
        raise AssertionError("unreachable: the SIGKILL wait has no timeout")

    def log_lines(self) -> list[str] | None:
        """The non-empty lines this start of the child wrote to its log; None: no log."""
        path = self.log_path
        if path is None:
            return None
        try:
            with path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                text = log_file.read().decode(errors="replace")
        except OSError:
            return None
        return [line for line in text.splitlines() if line.strip()]

    def last_log_line(self) -> str:
        """The last non-empty line of its log (why it died, usually), at most 300 chars."""
        lines = self.log_lines()
        if lines is None:
            return "(no log)" if self.log_path is not None else "(stderr not captured)"
        return lines[-1][-_LAST_LINE_CHARS:] if lines else "(empty log)"

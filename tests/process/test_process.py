"""The one child-process lifetime (``nav.runtime.process``), on real child processes.

Each child is a short ``python -c`` script that sets up its signal handling before it prints
READY, so the handshake, not a sleep, says it is ready to be stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nav.runtime.process import ChildProcess, NotReadyError

READY_TIMEOUT_S = 30.0  # a Python start on a busy 2-core machine: far more than it needs


def _script(body: str) -> list[str]:
    """argv running ``body`` (dedented) in a fresh unbuffered Python."""
    return [sys.executable, "-u", "-c", textwrap.dedent(body)]


def _child(tmp_path: Path, body: str, **kwargs: object) -> ChildProcess:
    kwargs.setdefault("stderr", tmp_path / "child.log")
    return ChildProcess(name="child", argv=_script(body), **kwargs)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# Ignores the signals named in IGNORE, exits 7 on a SIGTERM it does not ignore.
STUBBORN = """
    import os, signal, sys, time
    IGNORE = {ignore!r}
    for name in IGNORE:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if "SIGTERM" not in IGNORE:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
    print(f"READY child pid={{os.getpid()}}")
    while True:
        time.sleep(0.05)
"""


def test_ready_line_is_returned_after_other_stdout_and_sigint_stops_the_child(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _child(
        tmp_path,
        """
        import os, sys, time
        print("loading the case")
        print(f"READY child pid={os.getpid()} pub=ipc:///tmp/x control=ipc:///tmp/y")
        print("after ready")
        try:
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            sys.exit(0)
        """,
    )
    child.start()
    with caplog.at_level(logging.WARNING, logger="nav.runtime.process"):
        ready = child.wait_ready("READY child ", READY_TIMEOUT_S)
    assert ready == f"READY child pid={child.pid} pub=ipc:///tmp/x control=ipc:///tmp/y"
    assert "child wrote to stdout before READY: loading the case" in caplog.text
    assert child.next_line(READY_TIMEOUT_S) == "after ready"  # the pipe is still read
    assert child.poll() is None
    assert child.stop() == 0
    assert child.stopped_by == signal.SIGINT
    assert child.returncode == 0
    assert child.pid is not None and not _alive(child.pid)


def test_child_that_ignores_sigint_is_stopped_by_sigterm_and_its_exit_code_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _child(tmp_path, STUBBORN.format(ignore=["SIGINT"]))
    child.start()
    child.wait_ready("READY child ", READY_TIMEOUT_S)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="nav.runtime.process"):
        code = child.stop(sigint_timeout_s=0.3, sigterm_timeout_s=60.0)
    assert code == 7
    assert child.stopped_by == signal.SIGTERM
    assert time.monotonic() - t0 >= 0.3  # it had its SIGINT wait
    assert "child still running 0.3 s after SIGINT: sending SIGTERM" in caplog.text
    assert "child stopped by SIGTERM (exit code 7)" in caplog.text


def test_child_that_ignores_sigint_and_sigterm_is_killed_within_the_timeouts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _child(tmp_path, STUBBORN.format(ignore=["SIGINT", "SIGTERM"]))
    child.start()
    child.wait_ready("READY child ", READY_TIMEOUT_S)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="nav.runtime.process"):
        code = child.stop(sigint_timeout_s=0.3, sigterm_timeout_s=0.3)
    elapsed_s = time.monotonic() - t0
    assert code == -signal.SIGKILL
    assert child.stopped_by == signal.SIGKILL
    assert 0.6 <= elapsed_s < 6.0  # both waits, and well within 10x of them
    assert "after SIGINT: sending SIGTERM" in caplog.text
    assert "after SIGTERM: sending SIGKILL" in caplog.text
    assert child.pid is not None and not _alive(child.pid)


def test_stop_is_idempotent_and_returns_the_code_of_a_child_that_exited_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _child(
        tmp_path,
        """
        import os, sys
        print(f"READY child pid={os.getpid()}")
        sys.exit(3)
        """,
    )
    child.start()
    child.wait_ready("READY child ", READY_TIMEOUT_S)
    assert child.wait(READY_TIMEOUT_S) == 3
    with caplog.at_level(logging.DEBUG, logger="nav.runtime.process"):
        assert child.stop() == 3
        assert child.stop() == 3
    assert child.stopped_by is None  # no signal was needed
    assert "stopped by" not in caplog.text

    stopped = _child(tmp_path, STUBBORN.format(ignore=["SIGINT"]))
    stopped.start()
    stopped.wait_ready("READY child ", READY_TIMEOUT_S)
    assert stopped.stop(sigint_timeout_s=0.0) == 7
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="nav.runtime.process"):
        assert stopped.stop(sigint_timeout_s=0.0) == 7  # nothing sent, nothing logged
    assert stopped.stopped_by == signal.SIGTERM
    assert caplog.text == ""


def test_child_that_dies_before_ready_is_named_with_its_exit_code_and_last_stderr_line(
    tmp_path: Path,
) -> None:
    child = _child(
        tmp_path,
        """
        import sys
        print("reading the launch file", file=sys.stderr)
        print("bad.toml: nodes.tracker: unknown key 'rate'", file=sys.stderr)
        sys.exit(4)
        """,
    )
    child.start()
    with pytest.raises(NotReadyError) as caught:
        child.wait_ready("READY child ", READY_TIMEOUT_S)
    error = caught.value
    assert str(error) == (
        "child exited with code 4 before READY: bad.toml: nodes.tracker: unknown key 'rate'"
    )
    assert (error.name, error.returncode, error.timed_out) == ("child", 4, False)
    assert error.last_line == "bad.toml: nodes.tracker: unknown key 'rate'"


def test_child_that_never_prints_ready_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        STUBBORN.format(ignore=["SIGINT"]).replace(
            'print(f"READY child pid={os.getpid()}")', 'print("still loading", file=sys.stderr)'
        ),
        sigint_timeout_s=0.2,
        sigterm_timeout_s=30.0,
    )
    child.start()
    t0 = time.monotonic()
    with pytest.raises(NotReadyError) as caught:
        child.wait_ready("READY child ", 1.0)
    assert time.monotonic() - t0 >= 1.0
    error = caught.value
    assert error.timed_out and error.returncode == 7  # escalated to SIGTERM, which it obeys
    assert error.last_line == "still loading"
    assert str(error).startswith("child did not become ready within 1 s")
    assert str(error).endswith(": still loading")
    assert "\n" not in str(error)
    assert child.pid is not None and not _alive(child.pid)
    assert child.stopped_by == signal.SIGTERM


def test_log_is_private_appended_and_only_this_start_is_read_back(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "deep" / "child.log"
    body = """
        import sys
        print({line!r}, file=sys.stderr)
        sys.exit(1)
    """
    first = _child(tmp_path, body.format(line="first start failed"), stderr=log_path)
    first.start()
    with pytest.raises(NotReadyError):
        first.wait_ready("READY child ", READY_TIMEOUT_S)
    second = _child(tmp_path, "import sys; sys.exit(2)", stderr=log_path)
    second.start()
    assert second.wait(READY_TIMEOUT_S) == 2
    assert first.last_log_line() == "first start failed"
    assert second.last_log_line() == "(empty log)"  # not the first start's line
    assert log_path.read_text() == "first start failed\n"
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700


def test_stdout_and_stderr_to_one_file_in_its_own_session(tmp_path: Path) -> None:
    log_path = tmp_path / "headset.log"
    child = _child(
        tmp_path,
        """
        import sys
        print("on stdout")
        print("on stderr", file=sys.stderr)
        """,
        stdout=log_path,
        stderr="stdout",
        new_session=True,
    )
    child.start()
    assert child.pid is not None
    assert os.getsid(child.pid) == child.pid  # a terminal's Ctrl-C does not reach it
    assert child.wait(READY_TIMEOUT_S) == 0
    assert child.log_lines() == ["on stdout", "on stderr"]
    with pytest.raises(ValueError, match="wait_ready needs stdout='pipe'"):
        child.wait_ready("READY", 1.0)


def test_a_chatty_child_never_blocks_on_its_stdout_pipe(tmp_path: Path) -> None:
    child = _child(
        tmp_path,
        """
        import os, sys
        print(f"READY child pid={os.getpid()}")
        for i in range(20000):
            print("x" * 100)
        """,
    )
    child.start()
    child.wait_ready("READY child ", READY_TIMEOUT_S)
    assert child.wait(READY_TIMEOUT_S) == 0  # 2 MB through a 64 KiB pipe nobody else reads


def test_misuse_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    never = _child(tmp_path, "pass")
    with pytest.raises(RuntimeError, match="child was never started"):
        never.stop()
    assert never.pid is None and never.poll() is None
    with pytest.raises(ValueError, match="would hide the READY line"):
        ChildProcess(name="child", argv=["true"], stdout="pipe", stderr="stdout")
    missing = ChildProcess(name="missing", argv=[str(tmp_path / "no-such-program")])
    with pytest.raises(OSError):
        missing.start()
    twice = _child(tmp_path, "pass")
    twice.start()
    with pytest.raises(RuntimeError, match="already started"):
        twice.start()
    assert twice.wait(READY_TIMEOUT_S) == 0


def test_supervisor_reports_a_node_log_it_cannot_open_in_one_line(
    tmp_path: Path, ipc_dir: Path
) -> None:
    # The supervisor's use of ChildProcess: an unwritable log was an OSError traceback.
    from nav.runtime.launchfile import NODE_PACKAGES, load
    from nav.runtime.supervisor import StartupError, Supervisor

    launch_file = tmp_path / "stack.toml"
    launch_file.write_text(
        '[stack]\nname = "test"\n[nodes.a]\nmodule = "tests.fake.behaving_node"\n'
        'pub = "ipc://{ipc_dir}/a.pub"\n[nodes.a.params]\n'
    )
    launch = load(
        launch_file,
        run_dir=tmp_path / "run",
        ipc_dir=ipc_dir,
        node_packages=(*NODE_PACKAGES, "tests.fake"),
    )
    (tmp_path / "run" / "logs" / "a.log").mkdir(parents=True)  # the log's name is taken
    supervisor = Supervisor(launch)
    with pytest.raises(StartupError) as caught:
        supervisor.start()
    assert str(caught.value) == (
        f"{launch_file}: node 'a': [Errno 21] Is a directory: '{tmp_path}/run/logs/a.log'"
    )
    assert supervisor.nodes["a"].state == "dead" and supervisor.nodes["a"].pid is None

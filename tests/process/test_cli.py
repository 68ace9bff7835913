"""End to end through the `ornav` command: the demo stack records, inspect reads it, replay
republishes it byte for byte onto a real socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.demo.command import DEFAULT_LAUNCH_FILE
from nav.messages import decode, encode
from nav.runtime import bus
from nav.runtime.recording import iter_recording

REPO = Path(__file__).resolve().parents[2]


def _ornav(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ornav launch launch/sim.toml` for 4 s, as `make demo` runs it (shorter)."""
    run_dir = tmp_path_factory.mktemp("demo")
    result = _ornav(
        "launch", "launch/sim.toml", "--duration", "4",
        "--run-dir", str(run_dir), "--summary", str(run_dir / "summary.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.slow
def test_sim_stack_runs_healthy_and_records_every_tracker_frame(demo_run: Path) -> None:
    summary = json.loads((demo_run / "summary.json").read_text())
    assert summary["healthy"] and summary["restarts"] == 0 and summary["rejected"] == 0
    assert summary["latency_ms"]["measured_at"] == "recorder"
    frames = [m for m in iter_recording(demo_run / "session.mcap") if m.topic == "pose/sim"]
    assert len(frames) > 0.8 * 60 * 4  # 60 Hz for ~4 s, minus the subscription join
    seqs = [m.seq for m in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost in between


@pytest.mark.slow
def test_inspect_prints_topics_counts_and_rates(demo_run: Path) -> None:
    result = _ornav("inspect", str(demo_run / "session.mcap"))
    assert result.returncode == 0, result.stderr
    assert "pose/sim" in result.stdout and "ornav.TrackerFrame" in result.stdout
    assert "heartbeat/tracker" in result.stdout


@pytest.mark.slow
def test_replay_command_republishes_the_recording_byte_for_byte(
    demo_run: Path, ipc_dir: Path, tmp_path: Path
) -> None:
    recording = demo_run / "session.mcap"
    expected = [m.payload for m in iter_recording(recording) if m.topic == "pose/sim"]
    endpoint = f"ipc://{ipc_dir}/replay.pub"
    sub = bus.QueueSubscriber([endpoint], ["pose/"])
    # A long start delay lets the subscription join before the first message (ZeroMQ PUB
    # drops until then); the test fails, never hangs, if that was not enough.
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "replay", str(recording), "--pub", endpoint,
         "--speed", "4", "--start-delay", "1.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(expected) and time.monotonic() < deadline:
            received += [r.payload for r in sub.poll(0.1)]
        assert process.wait(timeout=30) == 0
    finally:
        sub.close()
        if process.poll() is None:
            process.kill()

    # The same messages, stamped with the replay's own publisher epoch (nav.runtime.replay_node).
    def unstamped(payload: bytes) -> bytes:
        envelope = decode(payload)
        return encode(envelope.message, seq=envelope.seq, t_pub_ns=envelope.t_pub_ns)

    assert [unstamped(p) for p in received] == [unstamped(p) for p in expected]
    assert list(tmp_path.glob("ornav-*")) == []  # its control socket's directory is gone


def test_a_node_run_by_hand_leaves_no_empty_temp_run_dir(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tracking.sim_node", "--launch", "launch/sim.toml",
         "--node", "tracker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("READY tracker ")
        assert len(list(tmp_path.glob("ornav-*"))) == 1  # its {run_dir}, while it runs
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert list(tmp_path.glob("ornav-*")) == []


def test_replay_of_a_file_that_is_not_mcap_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a recording")
    result = _ornav("replay", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"ornav: {bad}: not an MCAP recording (bad magic bytes)"


# --- `ornav launch`: its temp dir, file modes, a taken endpoint (issue 10) -----------------

LAUNCH_STACK = """
[stack]
name = "hygiene"
stop_grace_s = 2.0
insecure = true  # a tcp pub here is about port hygiene, not keys (test_secure_stack.py)

[nodes.tracker]
module = "tracking.sim_node"
pub = "{pub}"
control = "ipc://{{ipc_dir}}/tracker.ctl"
rate_hz = 100

[nodes.relay]
module = "nav.runtime.relay_node"
pub = "ipc://{{ipc_dir}}/relay.pub"
subscribe = ["tracker"]
"""


def _launch_in(
    tmp_path: Path, text: str, *extra: str, interrupt: bool = False
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run `ornav launch` with its own TMPDIR; returns the result and that TMPDIR."""
    launch = tmp_path / "stack.toml"
    launch.write_text(text)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = [sys.executable, "-m", "cli.main", "launch", str(launch), "--no-table",
            "--run-dir", str(tmp_path / "run"), *extra]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp)}
    if not interrupt:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=120, cwd=REPO, env=env
        )
        return result, tmp
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while sum(" ready (pid " in line for line in lines) < 2:  # both nodes up
            line = process.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(args, process.returncode, out, "".join(lines) + err), tmp


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_launch_refused_at_validation_leaves_no_temp_dir(tmp_path: Path) -> None:
    text = LAUNCH_STACK.format(pub="ipc://{ipc_dir}/tracker.pub").replace("rate_hz = 100", "")
    result, tmp = _launch_in(tmp_path, text)
    assert result.returncode == 2, result.stderr
    assert list(tmp.iterdir()) == []


def test_launch_run_to_its_duration_leaves_no_temp_dir_and_private_files(tmp_path: Path) -> None:
    summary = tmp_path / "out" / "summary.json"
    text = LAUNCH_STACK.format(pub="ipc://{ipc_dir}/tracker.pub")
    result, tmp = _launch_in(tmp_path, text, "--duration", "1", "--summary", str(summary))
    assert result.returncode == 0, result.stderr
    assert list(tmp.iterdir()) == []  # the ipc dir, its sockets and roster: gone
    assert oct(summary.stat().st_mode & 0o777) == "0o600"
    assert oct(summary.parent.stat().st_mode & 0o777) == "0o700"
    logs = tmp_path / "run" / "logs"
    assert oct(logs.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in logs.iterdir()} == {"0o600"}


def test_launch_stopped_by_ctrl_c_leaves_no_temp_dir(tmp_path: Path) -> None:
    text = LAUNCH_STACK.format(pub="ipc://{ipc_dir}/tracker.pub")
    result, tmp = _launch_in(tmp_path, text, interrupt=True)
    assert result.returncode == 0, result.stderr
    assert "SIGINT received: stopping" in result.stderr
    assert list(tmp.iterdir()) == []


def test_launch_whose_endpoint_is_taken_says_so_and_leaves_no_temp_dir(tmp_path: Path) -> None:
    """Another process holds the tracker's tcp port: one loud line, the summary, exit 1."""
    port = _free_tcp_port()
    squatter = bus.Publisher(f"tcp://127.0.0.1:{port}")
    summary = tmp_path / "summary.json"
    try:
        text = LAUNCH_STACK.format(pub=f"tcp://127.0.0.1:{port}")
        result, tmp = _launch_in(tmp_path, text, "--summary", str(summary))
    finally:
        squatter.close()
    line = (
        f"tracker: cannot bind tcp://127.0.0.1:{port}: Address already in use"
        " — another process holds it"
    )
    assert result.returncode == 1, result.stderr
    assert f"ornav: {tmp_path / 'stack.toml'}: {line}\n" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(summary.read_text())
    assert report["healthy"] is False and report["bind_failures"] == [line]
    assert report["nodes"]["tracker"]["exit_code"] == 3
    assert report["nodes"]["relay"]["pid"] is None  # nothing after it was started
    assert list(tmp.iterdir()) == []


def test_demo_default_launch_file_does_not_depend_on_the_current_directory(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # no launch/ here
    )
    assert result.returncode == 0, result.stderr
    shipped = REPO / "launch" / "sim.toml"
    assert str(shipped) in " ".join(result.stdout.split()), result.stdout
    assert DEFAULT_LAUNCH_FILE == shipped and DEFAULT_LAUNCH_FILE.is_file()

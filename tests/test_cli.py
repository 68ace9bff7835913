"""End to end through the `ornav` command: the demo stack records, inspect reads it, replay
republishes it byte for byte onto a real socket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nav import bus
from nav.messages import decode, encode
from nav.recording import iter_recording

REPO = Path(__file__).resolve().parent.parent


def _ornav(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nav.cli", *args],
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
    demo_run: Path, ipc_dir: Path
) -> None:
    recording = demo_run / "session.mcap"
    expected = [m.payload for m in iter_recording(recording) if m.topic == "pose/sim"]
    endpoint = f"ipc://{ipc_dir}/replay.pub"
    sub = bus.QueueSubscriber([endpoint], ["pose/"])
    # A long start delay lets the subscription join before the first message (ZeroMQ PUB
    # drops until then); the test fails, never hangs, if that was not enough.
    process = subprocess.Popen(
        [sys.executable, "-m", "nav.cli", "replay", str(recording), "--pub", endpoint,
         "--speed", "4", "--start-delay", "1.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
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

    # The same messages, stamped with the replay's own publisher epoch (nav.replay_node).
    def unstamped(payload: bytes) -> bytes:
        envelope = decode(payload)
        return encode(envelope.message, seq=envelope.seq, t_pub_ns=envelope.t_pub_ns)

    assert [unstamped(p) for p in received] == [unstamped(p) for p in expected]


def test_replay_of_a_file_that_is_not_mcap_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(b"not a recording")
    result = _ornav("replay", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f"ornav: {bad}: not an MCAP recording (bad magic bytes)"

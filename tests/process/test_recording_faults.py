"""Recordings under faults: a recorder killed and restarted, corrupt chunks, files nothing can
be read from, file permissions, and a replay stack under the supervisor's epoch roster.

Real recorder and replay processes on ipc sockets, as in ``test_recording.py`` (whose
helpers these tests share); recordings are written by the recorder or ``RecordingWriter``
and damaged in tmp_path.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcap.reader import make_reader

from nav.messages import TrackerFrame, decode
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.recording import (
    RECOVERY_METADATA,
    RESTART_METADATA,
    RecordingWriter,
    inspect_recording,
    iter_recording,
    make_private_dir,
)
from tests.process.test_recording import (
    REPO,
    NodeProcess,
    Source,
    chunk_offsets,
    closing,
    flip_middle_chunk,
    one_second_session,
    play_when_joined,
    record_then_kill,
    recorded_on,
    recording_status,
    replay_spec,
    replayed_until_exit,
    sock_dir,
    start_node,
    tracker_frame,
    wait_until,
    write_synthetic,
)

__all__ = ["closing", "sock_dir", "start_node"]  # fixtures, shared with test_recording.py


def _ornav(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _standard_reader(path: Path) -> tuple[Any, list[bytes]]:
    """The summary and the payloads as the standard ``mcap`` reader gives them."""
    with open(path, "rb") as file:
        reader = make_reader(file, validate_crcs=True)
        summary = reader.get_summary()
        payloads = [message.data for _schema, _channel, message in reader.iter_messages()]
    return summary, payloads


# --- item 8: a recorder killed mid-recording, restarted as the supervisor would --------


@pytest.mark.slow
def test_a_recorder_restarted_after_sigkill_recovers_the_crashed_file_and_reports_the_gap(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    source = closing(Source(f"ipc://{sock_dir}/source.pub"))
    run_dir = tmp_path / "run"  # the recorder creates it
    path = run_dir / "session.mcap"
    n = 50
    spec, client = record_then_kill(source, path, sock_dir, start_node, closing, frames=n)
    with iter_recording(path) as reader:
        before = [m.payload for m in reader]
    assert reader.truncated
    summary, _ = _standard_reader_or_none(path)
    assert summary is None  # what the issue saw: no summary, the standard reader is stuck

    restarted = start_node(spec)
    restarted.wait_ready()
    client.close()
    assert spec.control is not None
    client = closing(bus.CommandClient(spec.control))
    wait_until(
        lambda: recording_status(client)["recovery"]["state"] == "done",
        "the crashed file to be recovered",
    )
    status = recording_status(client)
    assert status["path"] == str(run_dir / "session-1.mcap")
    (report,) = status["recovery"]["files"]
    assert report["path"] == str(path) and report["messages"] == len(before)
    assert 0 < report["gap_s"] < 60
    assert "was cut off by a crash: recovered" in restarted.stderr()

    # Every tool reads it now: the standard reader, with its summary, holds every message.
    summary, payloads = _standard_reader(path)
    assert summary is not None and summary.statistics is not None
    assert payloads == before
    assert [p for p in payloads if decode(p).type_name == TrackerFrame.TYPE] == [
        p for t, p in source.sent if t == "pose/sim"
    ]
    recovered = inspect_recording(path)
    assert recovered.indexed and not recovered.truncated
    assert recovered.notes[RECOVERY_METADATA]["continued_in"] == "session-1.mcap"
    gap_ns = int(recovered.notes[RECOVERY_METADATA]["gap_ns"])
    assert gap_ns / 1e9 == pytest.approx(report["gap_s"])
    result = _ornav("inspect", str(path))
    assert result.returncode == 0, result.stderr
    assert f"recovered after a crash: {len(before)} messages" in result.stdout
    assert f"{gap_ns / 1e9:.2f} s" in result.stdout

    # The new file records on, and says which part came before it and the gap between.
    source.send("pose/sim", tracker_frame(n))
    wait_until(lambda: recorded_on(client, "pose/sim") >= 1, "the restarted recorder to record")
    assert restarted.terminate() == 0, restarted.stderr()
    after = inspect_recording(run_dir / "session-1.mcap")
    assert after.notes[RESTART_METADATA]["previous"] == "session.mcap"
    assert int(after.notes[RESTART_METADATA]["gap_ns"]) == gap_ns
    result = _ornav("inspect", str(run_dir / "session-1.mcap"))
    assert f"continues session.mcap after a {gap_ns / 1e9:.2f} s gap" in result.stdout

    # Item 13: patient session data is not world-readable.
    assert _mode(run_dir) == 0o700
    assert _mode(path) == 0o600 and _mode(run_dir / "session-1.mcap") == 0o600
    assert not list(run_dir.glob("*.recovering"))


def _standard_reader_or_none(path: Path) -> tuple[Any, list[bytes]]:
    try:
        return _standard_reader(path)
    except Exception:  # the standard reader may raise on a file with no summary
        return None, []


# --- item 13: permissions ---------------------------------------------------------------


def test_recordings_are_created_0600_and_missing_directories_0700_whatever_the_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0)
    try:
        make_private_dir(tmp_path / "a" / "b")
        with RecordingWriter(tmp_path / "a" / "b" / "s.mcap"):
            pass
        stale = tmp_path / "old.mcap"
        stale.write_bytes(b"x")
        stale.chmod(0o644)
        with RecordingWriter(stale, overwrite=True):
            pass
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path / "a" / "b" / "s.mcap") == 0o600
    assert _mode(stale) == 0o600


# --- item 10: corrupt chunks ------------------------------------------------------------


def test_replay_reads_past_a_corrupt_chunk_and_says_what_was_lost(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session(), chunk_size_bytes=2048)
    flip_middle_chunk(path)
    with iter_recording(path) as reader:
        readable = [(m.topic, m.payload) for m in reader if m.topic.startswith("pose/")]
    lost = reader.lost_messages
    assert lost > 0 and len(readable) > len([w for w in written if w[0] == "pose/sim"]) // 2

    rspec = replay_spec(sock_dir, path=str(path), wait_for_play=True, speed=4.0)
    replay = start_node(rspec)
    replay.wait_ready()
    assert rspec.pub is not None and rspec.control is not None
    sub = closing(bus.QueueSubscriber([rspec.pub]))
    play_when_joined(sub, rspec.control, closing)
    got, code = replayed_until_exit(replay, sub, len(readable))
    assert code == 0, replay.stderr()
    # Messages after the bad chunk are replayed too (before: the replay stopped there).
    assert [decode(r.payload).seq for r in got] == [decode(p).seq for _, p in readable]
    assert f"1 corrupt chunk(s) skipped, {lost} message(s) lost" in replay.stderr()


def _unreadable(path: Path) -> Path:
    write_synthetic(path, one_second_session(), chunk_size_bytes=2048)
    data = bytearray(path.read_bytes())
    for start, length in chunk_offsets(path):
        data[start + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_a_recording_with_no_readable_message_is_exit_2_in_one_line_for_every_tool(
    tmp_path: Path, sock_dir: str, start_node: Callable[[NodeSpec], NodeProcess]
) -> None:
    path = _unreadable(tmp_path / "s.mcap")
    for args in (
        ("inspect", str(path)),
        ("replay", str(path), "--pub", f"ipc://{sock_dir}/cli.pub"),
        ("convert", str(path), str(tmp_path / "out.igs.mha")),
    ):
        result = _ornav(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ornav: "), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.igs.mha").exists()

    replay = start_node(replay_spec(sock_dir, path=str(path)))
    assert replay.wait() == 2
    assert "no readable message" in replay.stderr() and "corrupt chunk" in replay.stderr()
    assert "Traceback" not in replay.stderr()


def test_inspect_reports_corrupt_chunks_and_lost_messages_not_the_summarys_count(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session(), chunk_size_bytes=2048)
    flip_middle_chunk(path)
    result = _ornav("inspect", str(path))
    assert result.returncode == 0, result.stderr
    summary = inspect_recording(path)
    assert summary.message_count < len(written)
    assert f"{summary.message_count} messages" in result.stdout
    assert "1 corrupt chunk(s) skipped" in result.stdout
    assert f"{summary.lost_messages} message(s) lost" in result.stdout


# --- the replay stack under the supervisor's roster --------------------------------------


@pytest.mark.slow
def test_replay_toml_under_the_supervisor_delivers_replayed_poses_to_a_trusting_subscriber(
    tmp_path: Path,
) -> None:
    recording = tmp_path / "demo.mcap"
    write_synthetic(recording, one_second_session())
    text = (REPO / "launch" / "replay.toml").read_text()
    assert 'path = "runs/demo/session.mcap"' in text
    text = text.replace('path = "runs/demo/session.mcap"', f'path = "{recording}"')
    # A recorder in the same stack: under the supervisor it trusts only rostered epochs.
    text += (
        "\n[nodes.recorder]\n"
        'module = "nav.runtime.recorder_node"\n'
        'pub = "ipc://{ipc_dir}/recorder.pub"\n'
        'control = "ipc://{ipc_dir}/recorder.ctl"\n'
        'subscribe = ["replay"]\n'
        'restart = "never"\n'
        "\n[nodes.recorder.params]\n"
        'path = "{run_dir}/again.mcap"\n'
        'topics = ["pose/"]\n'
    )
    launch = tmp_path / "replay.toml"
    launch.write_text(text)
    run_dir = tmp_path / "run"
    result = _ornav(
        "launch", str(launch), "--duration", "4", "--run-dir", str(run_dir), "--no-table"
    )
    assert result.returncode == 0, result.stderr
    with iter_recording(run_dir / "again.mcap") as reader:
        again = [decode(m.payload) for m in reader]
    assert len(again) > 50, result.stderr  # 100 Hz poses for ~3 s, replayed in a loop
    assert len({e.epoch for e in again}) == 1 and again[0].epoch != 0

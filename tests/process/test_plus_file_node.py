"""The PLUS file tracker as a real process: READY, the file's frames on the bus, SIGTERM -> 0."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nav.messages import Heartbeat, ToolStatus, TrackerFrame
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.transforms import nearest_rigids
from tests.conftest import REPO, NodeProcess, shared_data, start_node
from tracking.plus_sequence import PlusFrame, read_plus_sequence, write_plus_sequence

NWIRE = "PlusLibData/TestImages/NwirePhantomFreehand.igs.mha"


def _spec(ipc_dir: Path, **params: object) -> NodeSpec:
    return NodeSpec(
        name="plus",
        module="tracking.plus_file_node",
        pub=f"ipc://{ipc_dir}/plus.pub",
        control=f"ipc://{ipc_dir}/plus.ctl",
        params=params,
    )


def _play_when_joined(sub: bus.QueueSubscriber, node: NodeProcess) -> None:
    """Wait for the node's heartbeat (our subscription has joined), then send ``play``."""
    deadline = time.monotonic() + 10.0
    while not any(r.topic == "heartbeat/plus" for r in sub.poll(0.05)):
        assert time.monotonic() < deadline, "no heartbeat from the PLUS file node"
    client = bus.CommandClient(node.spec.control or "")
    try:
        reply = client.call("play", timeout_s=5.0)
        assert reply.ok, reply.error
    finally:
        client.close()


def _receive(
    sub: bus.QueueSubscriber, topic: str, n: int
) -> tuple[list[bus.Received], list[bus.Received]]:
    """The first ``n`` messages on ``topic``, and everything received meanwhile."""
    everything: list[bus.Received] = []
    got: list[bus.Received] = []
    deadline = time.monotonic() + 20.0
    while len(got) < n:
        assert time.monotonic() < deadline, f"received {len(got)} of {n} on {topic}"
        batch = sub.poll(0.05)
        everything += batch
        got += [r for r in batch if r.topic == topic]
    return got[:n], everything


def test_plus_file_node_publishes_the_files_frames_with_their_statuses_and_exits_0_on_sigterm(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    path = shared_data(NWIRE)
    _header, frames = read_plus_sequence(path)
    node = start_node(_spec(ipc_dir, path=str(path), timing="fast", rate_hz=400.0,
                            loop=True, wait_for_play=True))  # fmt: skip
    node_processes.append(node)
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/", "heartbeat/plus"])
    try:
        _play_when_joined(sub, node)
        received, _all = _receive(sub, "pose/plus", len(frames))  # the first pass, in order
        rates: dict[str, float] = {}
        counters: dict[str, int] = {}
        deadline = time.monotonic() + 10.0
        while rates.get("tool/probe", 0.0) < 100.0:  # looping at 400 Hz
            assert time.monotonic() < deadline, f"no OK rate for the probe: {rates}"
            for r in sub.poll(0.1):
                if isinstance(r.message, Heartbeat):
                    rates, counters = r.message.rates_hz, r.message.counters
    finally:
        sub.close()
    assert rates["tool/stylus"] == 0.0  # INVALID in every frame: no OK rate, but listed
    assert counters["projected_poses"] > 0 and counters["downgraded"] == 0
    assert counters["projected_max_deviation_ppm"] == 2  # 1.33e-6, rounded up
    for i, (frame, got) in enumerate(zip(frames, received, strict=True)):
        message = got.message
        assert isinstance(message, TrackerFrame)
        assert message.tracker == "plus" and message.frame_number == i  # file has no numbers
        assert message.tools == ("probe", "reference", "stylus")
        assert message.statuses == (ToolStatus.OK, ToolStatus.OK, ToolStatus.INVALID)
        # OK matrices travel projected onto the nearest rigid transform (this file's are
        # within 1.3e-6 of one), the INVALID stylus as the file has it.
        expected = np.stack([frame.transforms[n] for n in frame.transforms])
        expected[:2] = nearest_rigids(expected[:2])[0]
        assert np.array_equal(message.T_tracker_from_tools, expected)
    assert node.terminate() == 0


def test_original_timing_keeps_the_files_sample_spacing_and_other_frames_get_their_topic(
    tmp_path: Path, ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    rng = np.random.default_rng(4)
    offsets_ns = np.cumsum(rng.integers(20_000_000, 40_000_000, size=25))
    frames = [
        PlusFrame(
            index=i,
            timestamp_ns=int(5_000_000_000 + dt),
            transforms={"StylusToTracker": np.eye(4), "ProbeToReference": np.eye(4)},
            statuses={"StylusToTracker": "OK", "ProbeToReference": "OUT_OF_VIEW"},
            frame_number=1000 + i,
        )
        for i, dt in enumerate(offsets_ns)
    ]
    path = tmp_path / "s.igs.nrrd"
    write_plus_sequence(path, frames)
    node = start_node(_spec(ipc_dir, path=str(path), wait_for_play=True, end_linger_s=0.2))
    node_processes.append(node)
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/", "heartbeat/plus"])
    try:
        _play_when_joined(sub, node)
        own, everything = _receive(sub, "pose/plus", len(frames))
        everything += sub.poll(0.5)
        others = [r for r in everything if r.topic == "pose/plus_reference"]
    finally:
        sub.close()
    sensor = np.array([r.message.t_sensor_ns for r in own])  # type: ignore[union-attr]
    np.testing.assert_array_equal(np.diff(sensor), np.diff(offsets_ns))
    numbers = [r.message.frame_number for r in own]  # type: ignore[union-attr]
    assert numbers == [1000 + i for i in range(25)]
    span_s = (own[-1].t_recv_ns - own[0].t_recv_ns) / 1e9
    file_span_s = (offsets_ns[-1] - offsets_ns[0]) / 1e9
    assert 0.5 * file_span_s < span_s < 2.0 * file_span_s, span_s
    assert len(others) == len(frames), "ProbeToReference belongs on pose/plus_reference"
    probe = others[0].message
    assert isinstance(probe, TrackerFrame)
    assert probe.tools == ("probe",) and probe.statuses == (ToolStatus.OUT_OF_VIEW,)
    assert node.process.wait(timeout=10) == 0  # the end of the file: finished, not crashed


def _run_without_ready(spec: NodeSpec) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_a_truncated_or_missing_file_is_one_error_line_and_exit_2_before_ready(
    tmp_path: Path, ipc_dir: Path
) -> None:
    cut = tmp_path / "cut.igs.mha"
    cut.write_bytes(shared_data(NWIRE).read_bytes()[:20_000])
    for path, why in ((cut, "truncated"), (tmp_path / "none.igs.mha", "no such file")):
        result = _run_without_ready(_spec(ipc_dir, path=str(path)))
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""  # no READY line
        errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and why in errors[0], result.stderr
        assert "Traceback" not in result.stderr


def test_a_bad_timing_is_refused_at_start_naming_the_key(ipc_dir: Path) -> None:
    result = _run_without_ready(_spec(ipc_dir, path="x.igs.mha", timing="realtime"))
    assert result.returncode == 2
    assert "timing" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_ornav_replay_of_a_plus_file_republishes_its_frames_and_exits_0_at_the_end(
    ipc_dir: Path,
) -> None:
    path = shared_data(NWIRE)
    pub = f"ipc://{ipc_dir}/replay.pub"
    sub = bus.QueueSubscriber([pub], ["pose/plus"])  # connects before the bind: joins early
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "replay", str(path), "--pub", pub,
             "--speed", "4", "--start-delay", "1.0"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        received, _all = _receive(sub, "pose/plus", 97)
        _out, err = process.communicate(timeout=30)
    finally:
        sub.close()
    assert process.returncode == 0, err
    statuses = {r.message.statuses for r in received}  # type: ignore[union-attr]
    assert statuses == {(ToolStatus.OK, ToolStatus.OK, ToolStatus.INVALID)}
    span_s = (received[-1].t_recv_ns - received[0].t_recv_ns) / 1e9
    assert 1.0 < span_s < 5.0, span_s  # 10.2 s of file at 4x

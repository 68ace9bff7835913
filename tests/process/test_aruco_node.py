"""The ArUco camera tracker as a real process on scikit-surgery's multipattern.avi."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from calibration.files import write_calibration
from nav.messages import Heartbeat, ToolStatus, TrackerFrame
from nav.runtime import bus
from nav.runtime.config import ConfigError, from_table
from nav.runtime.launchfile import NodeSpec
from tests.conftest import REPO, NodeProcess, shared_data, start_node
from tracking.aruco_node import Config

ARUCO_DATA = "scikit-surgeryarucotracker/data"
BARD_CALIBRATION = "scikit-surgerybard/data/calibration/matts_mbp_640_x_480/calib.intrinsics.txt"


def _params(**overrides: object) -> dict[str, object]:
    data = shared_data(ARUCO_DATA)
    return {
        "source": str(data / "multipattern.avi"),
        "calibration": str(shared_data(BARD_CALIBRATION)),
        "bodies": [f"reference={data / 'reference.txt'}", str(data / "pointer.txt")],
        **overrides,
    }


def _spec(ipc_dir: Path, **overrides: object) -> NodeSpec:
    return NodeSpec(
        name="camera",
        module="tracking.aruco_node",
        pub=f"ipc://{ipc_dir}/camera.pub",
        control=f"ipc://{ipc_dir}/camera.ctl",
        params=_params(**overrides),
    )


def _run_until_exit(spec: NodeSpec, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def test_node_publishes_multipattern_frames_and_exits_0_at_the_end_of_the_video(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    node = start_node(_spec(ipc_dir, rate_hz=10.0))  # 10 frames in about 1 s
    node_processes.append(node)
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/camera"])
    frames: list[TrackerFrame] = []
    try:
        deadline = time.monotonic() + 10.0
        while node.process.poll() is None and time.monotonic() < deadline:
            frames += [r.message for r in sub.poll(0.1) if isinstance(r.message, TrackerFrame)]
        frames += [r.message for r in sub.poll(0.2) if isinstance(r.message, TrackerFrame)]
    finally:
        sub.close()
    assert node.process.wait(timeout=5) == 0
    # The first frames may pass before the subscription is up; the rest must all arrive.
    assert len(frames) >= 5, len(frames)
    numbers = [f.frame_number for f in frames]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert numbers[-1] <= 9  # the video has 10 frames, and loop is off
    for frame in frames:
        assert frame.tracker == "camera"
        assert frame.tools == ("reference", "pointer")
        assert frame.statuses == (ToolStatus.OK, ToolStatus.OK)
        assert np.all((frame.fit_errors_mm > 0.05) & (frame.fit_errors_mm < 2.0))
        depth_mm = frame.T_tracker_from_tools[:, 2, 3]
        assert np.all((200.0 < depth_mm) & (depth_mm < 300.0))  # on a table ~250 mm away


def test_node_loops_the_video_reports_rates_and_stops_on_sigterm(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    node = start_node(_spec(ipc_dir, rate_hz=60.0, loop=True, tracker_name="cam"))
    node_processes.append(node)
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/cam", "heartbeat/camera"])
    latest_frame: TrackerFrame | None = None
    beat: Heartbeat | None = None
    try:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            for r in sub.poll(0.1):
                if isinstance(r.message, TrackerFrame):
                    latest_frame = r.message
                elif isinstance(r.message, Heartbeat):
                    beat = r.message
            looped = latest_frame is not None and latest_frame.frame_number > 25
            rated = beat is not None and beat.rates_hz.get("tool/reference", 0.0) > 0
            if looped and rated:
                break
    finally:
        sub.close()
    assert latest_frame is not None and latest_frame.frame_number > 25, "did not loop"
    assert beat is not None
    # 60 Hz asked: never faster; slower only on a loaded machine (not a timing test).
    assert 0.0 < beat.rates_hz["tool/reference"] < 90.0
    assert 0.0 < beat.latency_ms["frame_p50"] < 1000.0
    assert {"p50", "p99", "frame_p99", "frame_max"} <= set(beat.latency_ms)
    assert beat.counters["frames"] > 0
    assert node.terminate() == 0


def test_a_file_that_is_not_a_video_exits_2_with_one_log_line(tmp_path: Path) -> None:
    fake = tmp_path / "broken.avi"
    fake.write_bytes(b"this is not a video\n" * 10)
    spec = NodeSpec(
        name="camera",
        module="tracking.aruco_node",
        pub=f"ipc://{tmp_path}/c.pub",
        params=_params(source=str(fake)),
    )
    result = _run_until_exit(spec)
    assert result.returncode == 2
    assert result.stdout == ""  # no READY
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ERROR" in lines[0] and f"cannot open video file {fake}" in lines[0]


def test_a_missing_video_or_bad_body_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    missing = NodeSpec(
        name="camera",
        module="tracking.aruco_node",
        params=_params(source=str(tmp_path / "nothing.avi")),
    )
    result = _run_until_exit(missing)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ornav: key 'source': {tmp_path / 'nothing.avi'}: no such video file"
    )
    body = tmp_path / "pointer.txt"
    body.write_text("1 0 0 0 0 0 0 10 0 0 10 10 0 0 10\n")
    bad_body = NodeSpec(
        name="camera", module="tracking.aruco_node", params=_params(bodies=[str(body)])
    )
    result = _run_until_exit(bad_body)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"ornav: key 'bodies': {body}:1: expected 13 or 16")
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_names_bodies_by_entry_or_by_file_stem() -> None:
    pointer = str(shared_data(f"{ARUCO_DATA}/pointer.txt"))
    cfg = from_table(Config, _params())
    assert [b.name for b in cfg.load_bodies()] == ["reference", "pointer"]
    with pytest.raises(ConfigError, match="two bodies are named 'pointer'"):
        from_table(Config, _params(bodies=[pointer, f"pointer={pointer}"]))
    with pytest.raises(ConfigError, match="'Ref' is not a tool name"):
        from_table(Config, _params(bodies=[f"Ref={pointer}"]))
    with pytest.raises(ConfigError, match="key 'body_dictionaries': no body named 'tag0'"):
        from_table(Config, _params(body_dictionaries=["tag0=DICT_4X4_50"]))
    with pytest.raises(ConfigError, match="key 'rate_hz'"):
        from_table(Config, _params(rate_hz=0.0))
    assert math.isclose(from_table(Config, _params(rate_hz=12)).rate_hz or 0.0, 12.0)


def test_a_calibration_for_another_image_size_exits_2_before_ready(tmp_path: Path) -> None:
    K = [[600.0, 0.0, 639.5], [0.0, 600.0, 359.5], [0.0, 0.0, 1.0]]
    write_calibration(
        tmp_path / "hd.toml",
        kind="camera",
        method="test",
        input={},
        result={"camera_matrix": K, "dist_coeffs": [0.0] * 5, "image_size": [1280, 720]},
        errors={"rms_reprojection_px": 0.3},
    )
    spec = NodeSpec(
        name="camera",
        module="tracking.aruco_node",
        pub=f"ipc://{tmp_path}/c.pub",
        params=_params(calibration=str(tmp_path / "hd.toml")),
    )
    result = _run_until_exit(spec)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "frames are 640x480 but the calibration" in lines[0], lines
    assert "is for 1280x720" in lines[0]

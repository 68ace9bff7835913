"""`ornav calibrate` end to end: from files, and live from a tracker over the bus."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibration.files import (
    PlusTransform,
    plus_tip_transform,
    read_calibration,
    read_opencv_camera,
    read_plus_transforms,
    write_calibration,
    write_plus_transform,
)
from calibration.live import LiveCollectionError, collect_poses
from calibration.pivot import PivotResult
from nav.messages import Command, PointerTouch, ToolStatus, TrackerFrame
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.transforms import axis_angle_to_matrix, invert_rigid, make_rigid
from tests.conftest import REPO, NodeProcess, shared_data, start_node

PIVOT_DIR = "scikit-surgerycore/tests/data/PivotCalibration"
CAMERA_DIR = "scikit-surgerybard/data/calibration/matts_mbp_640_x_480"

# scikit-surgery's published result on its recorded pivot data (test_pivot.py upstream).
UPSTREAM_TIP = (-14.476, 395.143, -7.558)
UPSTREAM_PIVOT = (-805.285, -85.448, -2112.066)
UPSTREAM_RMS_MM = 1.838


def _ornav(*args: str, cwd: Path = REPO, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The run failed as bad input: exit 2, one line `ornav: ...` on stderr, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ornav: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


# --- from files ------------------------------------------------------------------------


def test_pivot_from_the_real_recording_matches_scikit_surgery(tmp_path: Path) -> None:
    out, plus = tmp_path / "x.toml", tmp_path / "plus.xml"
    result = _ornav(
        "calibrate", "pivot", "--input", str(shared_data(PIVOT_DIR)),
        "--out", str(out), "--plus-out", str(plus),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert "RMS over the stacked x, y, z residual components" in result.stdout
    calibration = read_calibration(out)
    assert calibration.kind == "pivot" and calibration.input["n_poses"] == 1151
    np.testing.assert_allclose(calibration.array("p_tip_in_pointer"), UPSTREAM_TIP, atol=0.01)
    np.testing.assert_allclose(calibration.array("p_pivot_in_tracker"), UPSTREAM_PIVOT, atol=0.01)
    assert calibration.scalar("rms_error_mm") == pytest.approx(UPSTREAM_RMS_MM, abs=0.01)
    # mean per-pose distance is the larger figure: sqrt(3) x RMS for isotropic residuals
    assert calibration.scalar("mean_residual_norm_mm") > calibration.scalar("rms_error_mm")
    (transform,) = read_plus_transforms(plus)
    assert transform.name == "StylusTipToStylus"
    np.testing.assert_allclose(transform.matrix[:3, 3], UPSTREAM_TIP, atol=0.01)
    assert transform.error == pytest.approx(calibration.scalar("mean_residual_norm_mm"), rel=1e-5)


def test_pivot_ransac_drops_the_slipped_poses(tmp_path: Path) -> None:
    out = tmp_path / "r.toml"
    result = _ornav(
        "calibrate", "pivot", "--input", str(shared_data(PIVOT_DIR)), "--ransac", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    calibration = read_calibration(out)
    assert calibration.method == "ransac" and calibration.input["inlier_threshold_mm"] == 4.0
    assert 0.8 * 1151 < calibration.scalar("n_inliers") < 1151
    assert calibration.scalar("rms_error_mm") < UPSTREAM_RMS_MM


def test_default_output_goes_to_the_current_directory_named_by_kind_and_time(
    tmp_path: Path,
) -> None:
    result = _ornav("calibrate", "pivot", "--input", str(shared_data(PIVOT_DIR)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (written,) = tmp_path.glob("pivot-*.toml")
    assert f"wrote {written.name}" in result.stdout


def test_a_bad_file_in_the_input_dir_is_one_line_naming_it(tmp_path: Path) -> None:
    poses = tmp_path / "poses"
    poses.mkdir()
    for i, source in enumerate(sorted(shared_data(PIVOT_DIR).iterdir())[:40]):
        (poses / f"{i:03d}.txt").write_text(source.read_text())
    (poses / "020.txt").write_text("1 0 0\n0 1 0\n")
    line = _one_error_line(_ornav("calibrate", "pivot", "--input", str(poses)))
    assert str(poses / "020.txt") in line and "4x4" in line


def test_a_missing_input_dir_is_one_line(tmp_path: Path) -> None:
    line = _one_error_line(_ornav("calibrate", "pivot", "--input", str(tmp_path / "nope")))
    assert "no such directory" in line


def test_a_refused_calibration_is_one_line_with_its_reason_and_writes_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "x.toml"
    result = _ornav(
        "calibrate", "pivot", "--input", str(shared_data(PIVOT_DIR)),
        "--min-rotation-deg", "60", "--out", str(out),
    )  # fmt: skip
    line = _one_error_line(result)
    assert "not_enough_rotation" in line and "27.1 deg" in line
    assert not out.exists()


def test_poses_moved_1e308_mm_are_one_line_naming_the_file_not_a_300_digit_tip(
    tmp_path: Path,
) -> None:
    poses = tmp_path / "poses"
    poses.mkdir()
    for source in sorted(shared_data(PIVOT_DIR).iterdir()):
        T = np.loadtxt(source)
        T[0, 3] += 1e308
        np.savetxt(poses / source.name, T, fmt="%.17g")
    out = tmp_path / "x.toml"
    result = _ornav("calibrate", "pivot", "--input", str(poses), "--out", str(out))
    line = _one_error_line(result)
    first = sorted(poses.iterdir())[0]
    assert line == (
        f"ornav: {first}: translation 1e+308 mm is beyond the 10000 mm limit "
        "(a unit error or a corrupt file?)"
    )
    assert result.stdout == "" and not out.exists()


def test_a_tip_solved_beyond_ten_metres_is_refused_not_printed(tmp_path: Path) -> None:
    """Rotations about one axis (a 1e-6 rad wobble) with the gates off: the tip comes out 64 m."""
    rng = np.random.default_rng(0)
    p_tip, p_pivot = np.array([0.0, 0.0, 150.0]), np.array([10.0, 20.0, -1000.0])
    Ts = []
    for i in range(60):
        R = axis_angle_to_matrix(
            [1.0, 0.0, 0.0], math.radians(40.0) * math.sin(i / 60 * 2 * math.pi)
        )
        R = R @ axis_angle_to_matrix([0.0, 1.0, 0.0], 1e-6 * math.cos(i))
        Ts.append(make_rigid(R, p_pivot - R @ p_tip + rng.normal(scale=0.3, size=3)))
    _write_poses(tmp_path / "poses", np.array(Ts))
    out = tmp_path / "x.toml"
    result = _ornav(
        "calibrate", "pivot", "--input", str(tmp_path / "poses"), "--out", str(out),
        "--min-rotation-deg", "0", "--min-weakest-rotation-deg", "0",
    )  # fmt: skip
    line = _one_error_line(result)
    assert line.startswith("ornav: pivot calibration refused (degenerate): the tip comes out ")
    assert "beyond the 10000 mm limit" in line
    assert result.stdout == "" and not out.exists()


def test_a_pivot_file_with_a_tip_beyond_ten_metres_is_refused_where_it_is_read(
    tmp_path: Path,
) -> None:
    pivot = tmp_path / "pivot.toml"
    pivot.write_text(
        'format = "ornav-calibration"\nversion = 1\ncreated = 2026-05-09T07:35:25Z\n'
        'kind = "pivot"\nmethod = "algebraic"\n[input]\n[result]\n'
        "p_tip_in_pointer = [0.0, 0.0, 1e308]\np_pivot_in_tracker = [0.0, 0.0, -1000.0]\n"
        "[errors]\nrms_error_mm = 0.1\nmean_residual_norm_mm = 0.2\nmax_residual_norm_mm = 0.3\n"
    )
    spin = tmp_path / "spin"
    _write_poses(spin, np.stack([make_rigid(np.eye(3), [0.0, 0.0, -1000.0])] * 3))
    line = _one_error_line(
        _ornav("calibrate", "spin", "--input", str(spin), "--tip-from", str(pivot))
    )
    assert line == (
        f"ornav: {pivot}: key 'result.p_tip_in_pointer': 1e+308 mm from the origin, "
        "beyond the 10000 mm limit"
    )


def test_camera_from_the_real_chessboard_views_writes_toml_and_opencv_yml(tmp_path: Path) -> None:
    out, yml = tmp_path / "camera.toml", tmp_path / "camera.yml"
    result = _ornav(
        "calibrate", "camera", "--input", str(shared_data(CAMERA_DIR)),
        "--pattern", "14x10", "--square-mm", "6", "--out", str(out), "--opencv-out", str(yml),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calibration = read_calibration(out)
    assert calibration.input["n_views"] == 12
    assert calibration.scalar("rms_reprojection_px") < 0.5
    camera = read_opencv_camera(yml)
    assert np.array_equal(camera.camera_matrix, calibration.array("camera_matrix"))
    assert camera.image_size == (640, 480)


def test_camera_with_the_wrong_pattern_is_refused_in_one_line(tmp_path: Path) -> None:
    result = _ornav(
        "calibrate", "camera", "--input", str(shared_data(CAMERA_DIR)),
        "--pattern", "20x15", "--square-mm", "6", "--out", str(tmp_path / "c.toml"),
    )  # fmt: skip
    assert "camera calibration refused" in _one_error_line(result)


def test_spin_from_a_matrix_dir_finds_the_shaft_oriented_by_a_pivot_file(tmp_path: Path) -> None:
    tip = np.array([3.0, -5.0, -150.0])
    shaft = tip / np.linalg.norm(tip)
    R0 = axis_angle_to_matrix([1.0, 0.2, 0.0], 0.4)
    Ts = []
    for angle in np.linspace(0.0, math.radians(200.0), 120):
        R = R0 @ axis_angle_to_matrix(shaft, float(angle))
        Ts.append(make_rigid(R, [10.0, 20.0, -1200.0] - R @ tip))
    _write_poses(tmp_path / "spin", np.array(Ts))
    pivot = tmp_path / "pivot.toml"
    write_calibration(
        pivot,
        kind="pivot",
        method="algebraic",
        input={},
        result={"p_tip_in_pointer": tip, "p_pivot_in_tracker": [10.0, 20.0, -1200.0]},
        errors={"rms_error_mm": 0.1, "mean_residual_norm_mm": 0.2, "max_residual_norm_mm": 0.3},
    )
    out = tmp_path / "spin.toml"
    result = _ornav(
        "calibrate", "spin", "--input", str(tmp_path / "spin"), "--tip-from", str(pivot),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calibration = read_calibration(out)
    np.testing.assert_allclose(calibration.array("shaft_direction_in_pointer"), shaft, atol=1e-9)
    assert calibration.scalar("spin_range_deg") == pytest.approx(200.0, abs=0.01)
    line = _one_error_line(
        _ornav("calibrate", "spin", "--input", str(tmp_path / "spin"), "--tip-from", str(out))
    )
    assert "a spin file, not a pivot one" in line
    # A PLUS device set's StylusTipToStylus orients the shaft as the pivot file does.
    plus = tmp_path / "stylus.xml"
    write_plus_transform(plus, PlusTransform("StylusTip", "Stylus", plus_tip_transform(-tip)))
    result = _ornav(
        "calibrate", "spin", "--input", str(tmp_path / "spin"), "--tip-from", str(plus),
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(read_calibration(out).array("shaft_direction_in_pointer"), -shaft)


def _write_poses(directory: Path, Ts: np.ndarray) -> None:
    directory.mkdir()
    for i, T in enumerate(Ts):
        np.savetxt(directory / f"pose_{i}.txt", T)  # pose_10 after pose_9: natural order


def test_handeye_from_matrix_dirs_recovers_the_camera_on_its_marker(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    X = make_rigid(axis_angle_to_matrix([0.2, 1.0, -0.4], 0.9), [15.0, -40.0, 65.0])
    T_tracker_from_target = make_rigid(axis_angle_to_matrix([1, 0, 0], 3.0), [0, 100, -1400])
    T_tracker_from_marker = np.array(
        [
            make_rigid(axis_angle_to_matrix(rng.normal(size=3), rng.uniform(0.2, 0.8)),
                       rng.normal(0, 80, 3) + [0, 0, -1100])
            for _ in range(12)
        ]
    )  # fmt: skip
    # T_tracker_from_target = T_tracker_from_marker @ X @ T_camera_from_target
    T_camera_from_target = np.array(
        [invert_rigid(T @ X) @ T_tracker_from_target for T in T_tracker_from_marker]
    )
    _write_poses(tmp_path / "marker", T_tracker_from_marker)
    _write_poses(tmp_path / "target", T_camera_from_target)
    out = tmp_path / "he.toml"
    result = _ornav(
        "calibrate", "handeye", "--marker-poses", str(tmp_path / "marker"),
        "--target-poses", str(tmp_path / "target"), "--method", "all", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calibration = read_calibration(out)
    np.testing.assert_allclose(calibration.array("T_marker_from_camera"), X, atol=1e-6)
    assert calibration.scalar("translation_residual_mm") < 1e-6


def test_temporal_from_two_csv_files_finds_the_offset(tmp_path: Path) -> None:
    t = np.arange(0.0, 8.0, 0.01)

    def bump(t_s: np.ndarray) -> np.ndarray:
        return np.exp(-(((t_s - 4.0) / 0.3) ** 2))

    np.savetxt(tmp_path / "a.csv", np.c_[t, bump(t - 0.037)], delimiter=",", header="t_s,x")
    np.savetxt(tmp_path / "b.csv", np.c_[t, bump(t)], delimiter=",")
    out = tmp_path / "t.toml"
    result = _ornav(
        "calibrate", "temporal", "--input", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"),
        "--max-lag-s", "0.5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read_calibration(out).scalar("dt_a_from_b_s") == pytest.approx(0.037, abs=1e-3)
    assert read_calibration(out).result["sign"] == 1
    assert "correlation at the peak (refused below 0.8)" in result.stdout  # the default
    (tmp_path / "b.csv").write_text("t_s,x\n0,1\n0.1,oops\n")
    line = _one_error_line(
        _ornav("calibrate", "temporal", "--input", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"))
    )
    assert f"{tmp_path / 'b.csv'}: line 3" in line


# --- live ------------------------------------------------------------------------------

TRUE_TIP = np.array([3.0, -5.0, -150.0])
TRUE_PIVOT = np.array([20.0, 40.0, -1200.0])
REFERENCE = make_rigid(np.eye(3), [0.0, 150.0, -1300.0])


def _pivoting_pose(t_s: float) -> np.ndarray:
    """The pointer pivoting about TRUE_PIVOT: a cone of 25 +- 15 deg swept at 0.6 Hz.

    The tilt must vary too: a cone of fixed tilt turns the pointer about one axis only
    (the cone's), which leaves the tip's component along it unobservable.
    """
    tilt = math.radians(25.0 + 15.0 * math.sin(2 * math.pi * 0.5 * t_s))
    R = axis_angle_to_matrix([0, 0, 1], 2 * math.pi * 0.6 * t_s) @ axis_angle_to_matrix(
        [1, 0, 0], tilt
    )
    return make_rigid(R, TRUE_PIVOT - R @ TRUE_TIP)


class _SyntheticTracker(threading.Thread):
    """Publishes TrackerFrames of a pivoting pointer at 200 Hz on ``endpoint``; every 10th
    sample marks the pointer OUT_OF_VIEW (identity), which a collector must skip."""

    def __init__(self, endpoint: str, tools: tuple[str, ...] = ("pointer", "reference")) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.tools = endpoint, tools
        self.ready, self.stop = threading.Event(), threading.Event()

    def run(self) -> None:
        pub = bus.Publisher(self.endpoint)  # made in this thread: sockets are not thread-safe
        self.ready.set()
        rng = np.random.default_rng(0)
        t0, k = time.monotonic(), 0
        try:
            while not self.stop.wait(0.005):
                t_s = time.monotonic() - t0
                T = _pivoting_pose(t_s)
                T[:3, 3] += rng.normal(0.0, 0.05, 3)
                hidden = k % 10 == 9
                Ts = np.array([np.eye(4) if hidden else T, REFERENCE])[: len(self.tools)]
                statuses = (ToolStatus.OUT_OF_VIEW if hidden else ToolStatus.OK, ToolStatus.OK)
                frame = TrackerFrame(
                    tracker="synth",
                    t_sensor_ns=time.monotonic_ns(),
                    frame_number=k,
                    tools=self.tools,
                    T_tracker_from_tools=Ts,
                    statuses=statuses[: len(self.tools)],
                    fit_errors_mm=np.array([math.nan if hidden else 0.1, 0.1])[: len(self.tools)],
                )
                pub.publish("pose/synth", frame)
                k += 1
        finally:
            pub.close()

    def __enter__(self) -> _SyntheticTracker:
        self.start()
        assert self.ready.wait(5.0)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.join(5.0)


def test_live_pivot_from_a_publishing_tracker_recovers_the_known_tip(ipc_dir: Path) -> None:
    endpoint = f"ipc://{ipc_dir}/synth.pub"
    out = ipc_dir / "live.toml"
    with _SyntheticTracker(endpoint):
        result = _ornav(
            "calibrate", "pivot", "--live", "pointer", "--connect", endpoint,
            "--seconds", "2", "--out", str(out),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calibration = read_calibration(out)
    assert calibration.input["source"] == "live" and calibration.input["tool"] == "pointer"
    n_poses = calibration.input["n_poses"]
    assert isinstance(n_poses, int) and n_poses > 200  # ~360 OK in 2 s at 200 Hz, 9 in 10 OK
    np.testing.assert_allclose(calibration.array("p_tip_in_pointer"), TRUE_TIP, atol=0.2)
    np.testing.assert_allclose(calibration.array("p_pivot_in_tracker"), TRUE_PIVOT, atol=0.2)
    assert calibration.scalar("rms_error_mm") < 0.1


def test_collect_poses_keeps_only_ok_samples_and_reports_a_live_estimate(ipc_dir: Path) -> None:
    endpoint = f"ipc://{ipc_dir}/synth.pub"
    progress: list[tuple[int, float, Any]] = []
    with _SyntheticTracker(endpoint):
        Ts, t_ns = collect_poses(
            [endpoint], "pointer", 1.5, on_progress=lambda *a: progress.append(a)
        )
    assert len(Ts) == len(t_ns) > 150
    assert not np.any(np.all(np.isclose(Ts, np.eye(4)), axis=(1, 2)))  # no OUT_OF_VIEW poses
    assert np.all(np.diff(t_ns) > 0)
    counts = [n for n, _, _ in progress]
    assert len(progress) >= 3 and counts == sorted(counts) and counts[-1] == len(Ts)
    final = progress[-1][2]
    assert isinstance(final, PivotResult) and final.rms_error_mm < 0.2


def test_collect_poses_says_which_tools_it_saw_when_the_tool_is_absent(ipc_dir: Path) -> None:
    endpoint = f"ipc://{ipc_dir}/synth.pub"
    with _SyntheticTracker(endpoint, tools=("reference",)):
        with pytest.raises(LiveCollectionError, match=r"tool 'pointer' is not in .*reference"):
            collect_poses([endpoint], "pointer", 0.5)


def test_collect_poses_on_a_silent_endpoint_says_nothing_arrived(ipc_dir: Path) -> None:
    endpoint = f"ipc://{ipc_dir}/silent.pub"
    publisher = bus.Publisher(endpoint)
    try:
        with pytest.raises(LiveCollectionError, match="no pose messages"):
            collect_poses([endpoint], "pointer", 0.3)
    finally:
        publisher.close()


def test_live_without_a_running_stack_is_one_line(ipc_dir: Path) -> None:
    result = _ornav(
        "calibrate", "pivot", "--live", "pointer", "--connect", f"ipc://{ipc_dir}/none.pub"
    )
    assert "no socket there" in _one_error_line(result)
    assert "needs --connect" in _one_error_line(_ornav("calibrate", "pivot", "--live", "pointer"))


@pytest.mark.slow
def test_live_pivot_on_the_sim_pointer_touching_one_point_is_refused_for_too_little_rotation(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    """The sim's pointer held on one point keeps its tip fixed but only wobbles a few
    degrees: the rotation gate must refuse it, with the measured spread in the message."""
    spec = NodeSpec(
        name="tracker",
        module="tracking.sim_node",
        pub=f"ipc://{ipc_dir}/tracker.pub",
        control=f"ipc://{ipc_dir}/tracker.ctl",
        rate_hz=200.0,
        params={"rate_hz": 200.0, "breathing_peak_to_peak_mm": 0.0, "dropout_rate_hz": 0.0},
    )
    node = start_node(spec)
    node_processes.append(node)
    client = bus.CommandClient(spec.control or "")
    try:
        touch = PointerTouch(points=[[0.0, 0.0, 0.0]], dwell_s=60.0, travel_s=0.2)
        reply = client.request(Command(touch.NAME, touch.to_args()))
        assert reply.ok, reply.error
    finally:
        client.close()
    time.sleep(0.3)  # the script's own travel time to the point, not a socket wait
    out = ipc_dir / "never.toml"
    result = _ornav(
        "calibrate", "pivot", "--live", "pointer", "--connect", spec.pub or "",
        "--seconds", "2", "--out", str(out),
    )  # fmt: skip
    line = _one_error_line(result)
    assert "not_enough_rotation" in line and "pivot the pointer further" in line, line
    assert "collecting pointer" in result.stdout
    assert not out.exists()
    assert node.terminate() == 0


# --- from a PLUS sequence file ----------------------------------------------------------


def test_pivot_from_a_plus_sequence_uses_only_the_ok_samples_of_the_named_transform(
    tmp_path: Path,
) -> None:
    from tests.unit.test_calibration_pivot import pivot_poses
    from tracking.plus_sequence import PlusFrame, write_plus_sequence

    rng = np.random.default_rng(7)
    p_tip, p_pivot = np.array([1.0, 2.0, -150.0]), np.array([10.0, -40.0, -1200.0])
    Ts = pivot_poses(rng, n=120, p_tip=p_tip, p_pivot=p_pivot, max_angle_deg=35.0)
    junk = np.eye(4)
    junk[:3, 3] = 500.0  # an INVALID sample far off: used, it would wreck the fit
    frames = [
        PlusFrame(
            index=i,
            timestamp_ns=i * 20_000_000,
            transforms={"StylusToReference": junk if i % 10 == 0 else T},
            statuses={"StylusToReference": "INVALID" if i % 10 == 0 else "OK"},
        )
        for i, T in enumerate(Ts)
    ]
    sequence = tmp_path / "pivot.igs.mha"
    write_plus_sequence(sequence, frames)

    out = tmp_path / "pivot.toml"
    result = _ornav(
        "calibrate", "pivot", "--input", str(sequence), "--transform", "StylusToReference",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pivot = read_calibration(out)
    assert pivot.input["n_poses"] == 108  # every 10th sample was INVALID
    np.testing.assert_allclose(pivot.result["p_tip_in_pointer"], p_tip, atol=1e-6)
    np.testing.assert_allclose(pivot.result["p_pivot_in_tracker"], p_pivot, atol=1e-6)

    missing = _ornav("calibrate", "pivot", "--input", str(sequence), "--out", str(out))
    assert "give --transform, one of StylusToReference" in _one_error_line(missing)

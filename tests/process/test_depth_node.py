"""The depth node as a process: a recorded synthetic RGB-D sequence (a sphere of known
place, frames as Open3D records them) into SurfaceClouds on the bus, in the reference
frame through a tracked camera, bad frames counted and never published; a live device
this machine lacks refused with one line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from calibration.files import write_calibration
from nav.messages import Heartbeat, SurfaceCloud
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.transforms import apply, axis_angle_to_matrix, invert_rigid, make_rigid
from tests.conftest import REPO, start_node
from tests.fake.camera_tracker import CameraTracker
from tests.unit.test_depth import (
    CAMERA,
    QUANTISATION_MM,
    SPHERE_CENTRE_MM,
    SPHERE_RADIUS_MM,
    sphere_depth_mm,
    to_uint16,
)
from tracking.depth import DepthParams, depth_to_points

T_MARKER_FROM_CAMERA = make_rigid(axis_angle_to_matrix([0, 1.0, 0], 0.4), [10.0, -5.0, 30.0])
T_TRACKER_FROM_MARKER = make_rigid(axis_angle_to_matrix([1.0, 0, 0], 0.2), [50.0, 0.0, -900.0])
T_TRACKER_FROM_REFERENCE = make_rigid(
    axis_angle_to_matrix([0, 0, 1.0], 0.5), [-80.0, 20.0, -1000.0]
)
T_REFERENCE_FROM_CAMERA = (
    invert_rigid(T_TRACKER_FROM_REFERENCE) @ T_TRACKER_FROM_MARKER @ T_MARKER_FROM_CAMERA
)
BAD_KINDS = ("unreadable", "size", "empty", "nonfinite")


def _recording(folder: Path) -> Path:
    """Frames as Open3D's recorders leave them: depth/, color/, intrinsic.json. Three good
    sphere frames and one of each bad kind."""
    (folder / "depth").mkdir(parents=True)
    (folder / "color").mkdir()
    o3d.io.write_pinhole_camera_intrinsic(folder / "intrinsic.json", CAMERA.to_open3d())
    good = to_uint16(sphere_depth_mm())
    for name in ("000000", "000002", "000004"):
        cv2.imwrite(str(folder / "depth" / f"{name}.png"), good)
        cv2.imwrite(str(folder / "color" / f"{name}.jpg"), np.zeros((*good.shape, 3), np.uint8))
    (folder / "depth" / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbled")
    cv2.imwrite(str(folder / "depth" / "000003.png"), good[:, :-8])  # not the intrinsics'
    cv2.imwrite(str(folder / "depth" / "000005.png"), np.zeros_like(good))
    nan = good.astype(np.float32)
    nan[10, 10] = np.nan
    cv2.imwrite(str(folder / "depth" / "000006.tiff"), nan)
    return folder


def _collect(endpoint: str, name: str, timeout_s: float = 30.0) -> tuple[list[SurfaceCloud], dict]:
    """Clouds until a heartbeat shows every bad kind refused and two clouds published."""
    sub = bus.QueueSubscriber([endpoint], ("surface/", "heartbeat/"))
    clouds: list[SurfaceCloud] = []
    counters: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for received in sub.poll(0.2):
                if isinstance(received.message, SurfaceCloud):
                    clouds.append(received.message)
                elif isinstance(received.message, Heartbeat) and received.message.node == name:
                    counters = received.message.counters
            if len(clouds) >= 2 and all(counters.get(f"refused_{k}", 0) for k in BAD_KINDS):
                break
    finally:
        sub.close()
    return clouds, counters


def _write_hand_eye(path: Path) -> Path:
    write_calibration(
        path,
        kind="handeye",
        method="test",
        input={"n_poses": 3},
        result={"T_marker_from_camera": T_MARKER_FROM_CAMERA},
        errors={"rotation_residual_deg": 0.1, "translation_residual_mm": 0.5},
    )
    return path


@pytest.mark.slow
def test_a_recorded_sequence_is_published_in_the_reference_frame_bad_frames_counted(
    ipc_dir: Path, tmp_path: Path
) -> None:
    folder = _recording(tmp_path / "rgbd")
    tracker_endpoint = f"ipc://{ipc_dir}/tracker.pub"
    spec = NodeSpec(
        name="depth",
        module="tracking.depth_node",
        pub=f"ipc://{ipc_dir}/depth.pub",
        subscribe=("tracker",),
        subscribe_endpoints=(tracker_endpoint,),
        params={
            "folder": str(folder),
            "rate_hz": 20.0,
            "loop": True,
            "camera_tool": "depthcam",
            "hand_eye": str(_write_hand_eye(tmp_path / "handeye.toml")),
        },
    )
    with CameraTracker(
        tracker_endpoint,
        camera_tool="depthcam",
        T_tracker_from_marker=T_TRACKER_FROM_MARKER,
        T_tracker_from_reference=T_TRACKER_FROM_REFERENCE,
    ):
        node = start_node(spec)
        try:
            clouds, counters = _collect(spec.pub or "", spec.name)
        finally:
            assert node.terminate() == 0
    assert len(clouds) >= 2, counters
    for kind in BAD_KINDS:
        assert counters.get(f"refused_{kind}", 0) >= 1, counters
    # every published cloud is a good frame: the sphere, in the reference frame
    expected = apply(
        T_REFERENCE_FROM_CAMERA,
        depth_to_points(to_uint16(sphere_depth_mm()), CAMERA, DepthParams()).points_camera,
    )
    centre_reference = apply(T_REFERENCE_FROM_CAMERA, SPHERE_CENTRE_MM[None])[0]
    for cloud in clouds:
        assert cloud.source == "depth" and cloud.frame == "reference"
        assert np.allclose(cloud.points_mm, expected, atol=1e-2)  # float32 at ~1 m
        on_sphere = np.linalg.norm(cloud.points_mm - centre_reference, axis=1) - SPHERE_RADIUS_MM
        assert np.abs(on_sphere).max() < QUANTISATION_MM + 0.05
        assert np.all(cloud.confidence_mm > 0)


@pytest.mark.slow
def test_an_untracked_camera_publishes_in_the_camera_frame_and_ends_with_the_recording(
    ipc_dir: Path, tmp_path: Path
) -> None:
    folder = _recording(tmp_path / "rgbd")
    spec = NodeSpec(
        name="depth",
        module="tracking.depth_node",
        pub=f"ipc://{ipc_dir}/depth.pub",
        params={"folder": str(folder), "rate_hz": 20.0, "loop": True},
    )
    node = start_node(spec)
    try:
        clouds, _ = _collect(spec.pub or "", spec.name)
    finally:
        assert node.terminate() == 0
    assert clouds and clouds[0].frame == "camera"
    error = np.linalg.norm(clouds[0].points_mm - SPHERE_CENTRE_MM, axis=1) - SPHERE_RADIUS_MM
    assert np.abs(error).max() < QUANTISATION_MM + 0.05
    # without loop the node stops by itself at the end of the frames, exit 0
    once = NodeSpec(
        name="depth",
        module="tracking.depth_node",
        pub=f"ipc://{ipc_dir}/depth2.pub",
        params={"folder": str(folder), "rate_hz": 50.0},
    )
    assert start_node(once).child.wait(30.0) == 0


def _assert_one_line_exit_2(ipc_dir: Path, cases: list[tuple[dict[str, object], str]]) -> None:
    """Each params set stops the node before READY with one stderr line naming the problem."""
    for params, problem in cases:
        spec = NodeSpec(
            name="depth",
            module="tracking.depth_node",
            pub=f"ipc://{ipc_dir}/depth.pub",
            params=params,
        )
        result = subprocess.run(
            [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and problem in lines[0], result.stderr


def test_bad_params_are_one_line_and_exit_2(ipc_dir: Path, tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rgbd")
    garbled = tmp_path / "intrinsic.json"
    garbled.write_text("{not json")
    wrong_mask = tmp_path / "mask.png"
    cv2.imwrite(str(wrong_mask), np.ones((10, 10), np.uint8))
    cases: list[tuple[dict[str, object], str]] = [
        ({"folder": str(tmp_path / "nothing")}, "no depth images"),
        ({"folder": str(folder), "intrinsic": str(garbled)}, "key 'intrinsic'"),
        ({"folder": str(folder), "mask": str(wrong_mask)}, "key 'mask'"),
        ({"folder": str(folder), "camera_tool": "depthcam"}, "hand_eye"),
        ({"folder": str(folder), "device": "realsense"}, "either 'folder'"),
        ({"device": "kinect_v1"}, "key 'device'"),
        ({"folder": str(folder), "min_depth_mm": 500.0, "max_depth_mm": 400.0}, "min_depth"),
    ]
    _assert_one_line_exit_2(ipc_dir, cases)


def test_a_live_device_that_is_absent_is_one_line_and_exit_2(ipc_dir: Path, tmp_path: Path) -> None:
    """No depth camera here: the device path is exercised only up to its refusal."""
    if hasattr(o3d.t.io, "RealSenseSensor"):
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            if o3d.t.io.RealSenseSensor.list_devices():
                pytest.skip("a RealSense camera is connected to this machine")
    intrinsic = tmp_path / "intrinsic.json"
    o3d.io.write_pinhole_camera_intrinsic(intrinsic, CAMERA.to_open3d())
    cases: list[tuple[dict[str, object], str]] = [
        ({"device": "realsense"}, "RealSense"),
        ({"device": "azure_kinect", "intrinsic": str(intrinsic)}, "Azure Kinect"),
    ]
    _assert_one_line_exit_2(ipc_dir, cases)

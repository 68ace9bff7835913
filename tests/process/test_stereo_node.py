"""The stereo node as a process: the real Open-CAS pair into SurfaceClouds on the bus, in
the camera frame, and in the reference frame when a tracker places the camera."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.files import write_calibration
from nav.messages import SurfaceCloud
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.transforms import apply, axis_angle_to_matrix, invert_rigid, make_rigid
from tests.conftest import shared_data, start_node
from tests.fake.camera_tracker import CameraTracker
from tracking.stereo import StereoCalibration, StereoReconstructor

OPEN_CAS = "scikit-surgerysurfacematch/tests/data/open_cas_tmi/Stereo_SD_d_complete_22"
T_MARKER_FROM_CAMERA = make_rigid(axis_angle_to_matrix([0, 1.0, 0], 0.4), [10.0, -5.0, 30.0])
T_TRACKER_FROM_MARKER = make_rigid(axis_angle_to_matrix([1.0, 0, 0], 0.2), [50.0, 0.0, -900.0])
T_TRACKER_FROM_REFERENCE = make_rigid(
    axis_angle_to_matrix([0, 0, 1.0], 0.5), [-80.0, 20.0, -1000.0]
)


def _params(folder: Path) -> dict[str, object]:
    name = folder.name
    return {
        "calibration": str(folder),
        "left": str(folder / f"{name}_IMG_left.bmp"),
        "right": str(folder / f"{name}_IMG_right.bmp"),
        "mask": str(folder / f"{name}_MASK_eval_inverted.png"),
        "rate_hz": 5.0,
        "loop": True,
    }


def _clouds(endpoint: str, n: int, timeout_s: float = 30.0) -> list[SurfaceCloud]:
    sub = bus.QueueSubscriber([endpoint], ("surface/",))
    clouds: list[SurfaceCloud] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(clouds) < n and time.monotonic() < deadline:
            for received in sub.poll(0.2):
                if isinstance(received.message, SurfaceCloud):
                    clouds.append(received.message)
    finally:
        sub.close()
    return clouds


def _expected(folder: Path) -> np.ndarray:
    name = folder.name
    left = cv2.imread(str(folder / f"{name}_IMG_left.bmp"))
    right = cv2.imread(str(folder / f"{name}_IMG_right.bmp"))
    mask = cv2.imread(str(folder / f"{name}_MASK_eval_inverted.png"), cv2.IMREAD_GRAYSCALE)
    calibration = StereoCalibration.from_text_files(folder, (left.shape[1], left.shape[0]))
    return StereoReconstructor(calibration).reconstruct(left, right, mask).points_camera


@pytest.mark.slow
def test_recorded_pair_is_published_in_the_camera_frame(ipc_dir: Path) -> None:
    folder = shared_data(OPEN_CAS)
    spec = NodeSpec(
        name="stereo",
        module="tracking.stereo_node",
        pub=f"ipc://{ipc_dir}/stereo.pub",
        params=_params(folder),
    )
    node = start_node(spec)
    try:
        clouds = _clouds(spec.pub or "", 2)
    finally:
        assert node.terminate() == 0
    assert len(clouds) == 2
    cloud = clouds[0]
    assert cloud.source == "stereo" and cloud.frame == "camera"
    assert np.allclose(cloud.points_mm, _expected(folder), atol=1e-3)
    assert np.all(cloud.confidence_mm > 0)


@pytest.mark.slow
def test_tracked_camera_publishes_in_the_reference_frame(ipc_dir: Path, tmp_path: Path) -> None:
    folder = shared_data(OPEN_CAS)
    hand_eye = tmp_path / "handeye.toml"
    write_calibration(
        hand_eye,
        kind="handeye",
        method="test",
        input={"n_poses": 3},
        result={"T_marker_from_camera": T_MARKER_FROM_CAMERA},
        errors={"rotation_residual_deg": 0.1, "translation_residual_mm": 0.5},
    )
    tracker_endpoint = f"ipc://{ipc_dir}/tracker.pub"
    params = _params(folder) | {"camera_tool": "endoscope", "hand_eye": str(hand_eye)}
    spec = NodeSpec(
        name="stereo",
        module="tracking.stereo_node",
        pub=f"ipc://{ipc_dir}/stereo.pub",
        subscribe=("tracker",),
        subscribe_endpoints=(tracker_endpoint,),
        params=params,
    )
    with CameraTracker(
        tracker_endpoint,
        camera_tool="endoscope",
        T_tracker_from_marker=T_TRACKER_FROM_MARKER,
        T_tracker_from_reference=T_TRACKER_FROM_REFERENCE,
    ):
        node = start_node(spec)
        try:
            clouds = _clouds(spec.pub or "", 2)
        finally:
            assert node.terminate() == 0
    assert clouds and clouds[0].frame == "reference"
    T_reference_from_camera = (
        invert_rigid(T_TRACKER_FROM_REFERENCE) @ T_TRACKER_FROM_MARKER @ T_MARKER_FROM_CAMERA
    )
    expected = apply(T_reference_from_camera, _expected(folder))
    assert np.allclose(clouds[0].points_mm, expected, atol=1e-2)  # float32 at ~1 m


def test_bad_params_are_one_line_and_exit_2(ipc_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    folder = shared_data(OPEN_CAS)
    for params, problem in (
        (_params(folder) | {"left": str(tmp_path / "*.png")}, "need the same number"),
        (_params(folder) | {"camera_tool": "endoscope"}, "hand_eye"),
        (_params(folder) | {"mask": str(tmp_path / "nope.png")}, "key 'mask'"),
    ):
        spec = NodeSpec(
            name="stereo",
            module="tracking.stereo_node",
            pub=f"ipc://{ipc_dir}/stereo.pub",
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

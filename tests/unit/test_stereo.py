"""Stereo reconstruction: the depth error model against its closed form, a synthetic rig
of known depth, the real Open-CAS liver pair against its CT surface, and refusals."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nav.registration.surface import SurfaceConfig, register_surface
from nav.transforms import apply, axis_angle_to_matrix, make_rigid, rotation_angle_rad
from tests.conftest import shared_data
from tracking.stereo import (
    StereoCalibration,
    StereoError,
    StereoParams,
    StereoReconstructor,
    depth_uncertainty_mm,
    points_in_reference,
)

OPEN_CAS = "scikit-surgerysurfacematch/tests/data/open_cas_tmi/Stereo_SD_d_complete_22"
F_PX, BASELINE_MM, SIZE = 500.0, 5.0, (320, 240)


@given(st.floats(20, 300), st.floats(200, 2000), st.floats(2, 20))
def test_depth_uncertainty_is_the_first_order_disparity_error(
    z_mm: float, f_px: float, b_mm: float
) -> None:
    """z = f B / d: a disparity error of delta moves z by ~ z^2 delta / (f B)."""
    delta = 1e-3
    d = f_px * b_mm / z_mm
    moved = abs(f_px * b_mm / (d - delta) - z_mm)
    assert depth_uncertainty_mm(z_mm, f_px, b_mm, delta) == pytest.approx(moved, rel=1e-3)


def _rig() -> StereoCalibration:
    K = np.array([[F_PX, 0, SIZE[0] / 2], [0, F_PX, SIZE[1] / 2], [0, 0, 1]])
    return StereoCalibration(
        K_left=K,
        dist_left=np.zeros(5),
        K_right=K,
        dist_right=np.zeros(5),
        T_right_from_left=make_rigid(np.eye(3), [-BASELINE_MM, 0, 0]),
        image_size=SIZE,
    )


def _textured_pair(depth_mm: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fronto-parallel textured plane at ``depth_mm``: the right image is the left one
    shifted by the disparity f B / z."""
    rng = np.random.default_rng(seed)
    wide = cv2.GaussianBlur(rng.uniform(0, 255, (SIZE[1], SIZE[0] + 64)), (0, 0), 1.5)
    wide = cv2.normalize(wide, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    d = F_PX * BASELINE_MM / depth_mm
    shift = np.float32([[1, 0, -d], [0, 1, 0]])  # right(x) = left(x + d)
    right = cv2.warpAffine(wide, shift, (wide.shape[1], wide.shape[0]), flags=cv2.INTER_LINEAR)
    return wide[:, : SIZE[0]].copy(), right[:, : SIZE[0]].copy()


@pytest.mark.parametrize("depth_mm", [60.0, 90.0, 150.0])
def test_a_plane_of_known_depth_is_reconstructed_at_that_depth(depth_mm: float) -> None:
    left, right = _textured_pair(depth_mm, seed=int(depth_mm))
    cloud = StereoReconstructor(_rig(), StereoParams(check_rows=False)).reconstruct(left, right)
    assert len(cloud.points_camera) > 500
    z = cloud.points_camera[:, 2]
    # SGBM's sub-pixel disparities lock towards whole pixels (measured here: +0.22 to
    # +0.33 px on this texture), so the depth is right to half a pixel of disparity:
    # z^2 * 0.5 / (f B) = 0.7 mm at 60 mm, 4.5 mm at 150 mm
    assert np.median(z) == pytest.approx(
        depth_mm, abs=depth_uncertainty_mm(depth_mm, F_PX, BASELINE_MM, 0.5)
    )
    assert np.all(cloud.confidence_mm > 0)
    assert np.median(cloud.confidence_mm) == pytest.approx(
        depth_uncertainty_mm(depth_mm, F_PX, BASELINE_MM, 0.5), rel=0.05
    )


@given(st.integers(0, 2**31))
def test_points_go_to_the_reference_through_marker_and_hand_eye(seed: int) -> None:
    rng = np.random.default_rng(seed)

    def rigid() -> np.ndarray:
        return make_rigid(
            axis_angle_to_matrix(rng.normal(size=3), rng.uniform(0, 3)), rng.uniform(-500, 500, 3)
        )

    T_tracker_from_marker, T_marker_from_camera, T_tracker_from_reference = (
        rigid(),
        rigid(),
        rigid(),
    )
    p_camera = rng.uniform(-50, 50, (7, 3))
    p_reference = points_in_reference(
        p_camera, T_tracker_from_marker, T_marker_from_camera, T_tracker_from_reference
    )
    back = apply(T_tracker_from_reference, p_reference)
    assert np.allclose(
        back, apply(T_tracker_from_marker @ T_marker_from_camera, p_camera), atol=1e-9
    )


def _open_cas() -> tuple[StereoCalibration, np.ndarray, np.ndarray, np.ndarray, Path]:
    folder = shared_data(OPEN_CAS)
    name = folder.name
    left = cv2.imread(str(folder / f"{name}_IMG_left.bmp"))
    right = cv2.imread(str(folder / f"{name}_IMG_right.bmp"))
    mask = cv2.imread(str(folder / f"{name}_MASK_eval_inverted.png"), cv2.IMREAD_GRAYSCALE)
    calibration = StereoCalibration.from_text_files(folder, (left.shape[1], left.shape[0]))
    return calibration, left, right, mask, folder / f"{name}_CT_cut.stl"


def test_real_liver_pair_matches_its_ct_surface_inside_the_mask() -> None:
    """Open-CAS ex-vivo liver (Maier-Hein et al., IEEE TMI 2014): the CT surface is in the
    left camera frame, so the reconstruction's distance to it is its error."""
    calibration, left, right, mask, stl = _open_cas()
    cloud = StereoReconstructor(calibration).reconstruct(left, right, mask)
    mesh = o3d.io.read_triangle_mesh(str(stl))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    d = scene.compute_distance(o3d.core.Tensor(cloud.points_camera.astype(np.float32))).numpy()
    assert len(d) > 500 and cloud.valid_fraction > 0.5
    assert np.median(d) < 1.0  # measured 0.66 mm
    assert np.percentile(d, 90) < 2.0  # measured 1.44 mm
    assert np.median(cloud.confidence_mm) < 1.5  # z ~ 55 mm, f ~ 450 px, B 4.4 mm


def test_real_liver_registration_from_perturbed_starts_lands_near_the_identity() -> None:
    """The CT patch onto the reconstruction from starts up to 10 mm / 10 degrees off the
    truth (the identity): every start lands in the same place, about 1 mm from it."""
    calibration, left, right, mask, stl = _open_cas()
    cloud = StereoReconstructor(calibration).reconstruct(left, right, mask)
    mesh = o3d.io.read_triangle_mesh(str(stl))
    V, F = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    centre = V.mean(axis=0)
    rng = np.random.default_rng(0)
    landed = []
    for _ in range(4):
        about = make_rigid(np.eye(3), centre)
        offset = rng.normal(size=3)
        T0 = (
            about
            @ make_rigid(
                axis_angle_to_matrix(rng.normal(size=3), math.radians(rng.uniform(3, 10))),
                offset / np.linalg.norm(offset) * rng.uniform(3, 10),
            )
            @ np.linalg.inv(about)
        )
        # tolerance 1e-3 mm: on a smooth 2 cm patch Tukey-weighted ICP creeps below 1e-4
        result = register_surface(
            V,
            F,
            cloud.points_camera,
            T_init=T0,
            config=SurfaceConfig(max_iterations=300, tolerance_mm=1e-3),
        )
        T = result.T_patient_from_model
        landed.append(np.linalg.norm(apply(T, V) - V, axis=1).mean())
        assert math.degrees(rotation_angle_rad(T[:3, :3])) < 4.0  # measured 2.95
        assert result.rms_residual_mm < 1.0
    assert max(landed) < 1.5  # mean CT-vertex distance from the truth: measured 1.05 mm
    assert max(landed) - min(landed) < 0.1  # one basin, whatever the start


def test_refusals_are_one_line() -> None:
    calibration, left, right, mask, _stl = _open_cas()
    reconstructor = StereoReconstructor(calibration)
    with pytest.raises(StereoError, match="too little texture"):
        reconstructor.reconstruct(np.full_like(left, 128), np.full_like(right, 128), mask)
    T = calibration.T_right_from_left.copy()
    T[:3, :3] = axis_angle_to_matrix([1.0, 0, 0], math.radians(3)) @ T[:3, :3]
    wrong = StereoCalibration(
        calibration.K_left,
        calibration.dist_left,
        calibration.K_right,
        calibration.dist_right,
        T,
        calibration.image_size,
    )
    with pytest.raises(StereoError, match="calibration does not fit"):
        StereoReconstructor(wrong).reconstruct(left, right, mask)
    with pytest.raises(StereoError, match="the calibration is for 720x576"):
        reconstructor.reconstruct(left[:480, :640], right[:480, :640])
    with pytest.raises(StereoError, match="K_left"):
        StereoCalibration(
            np.full((3, 3), np.nan),
            calibration.dist_left,
            calibration.K_right,
            calibration.dist_right,
            calibration.T_right_from_left,
            (720, 576),
        )
    with pytest.raises(StereoError, match="calib.l2r.txt"):
        StereoCalibration.from_text_files(Path("/nonexistent"), (720, 576))

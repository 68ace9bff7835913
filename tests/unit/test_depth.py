"""Depth camera frames into points: synthetic RGB-D frames rendered from a known plane and
sphere with known intrinsics, Open3D's back-projection against the closed form, the
intrinsics file against Open3D's own writer, the noise model, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tracking.depth import (
    DepthError,
    DepthParams,
    PinholeIntrinsics,
    depth_noise_mm,
    depth_to_points,
    find_intrinsics,
    read_depth,
)

CAMERA = PinholeIntrinsics(width=320, height=240, fx=280.0, fy=285.0, cx=159.5, cy=121.0)
SPHERE_CENTRE_MM = np.array([10.0, -5.0, 400.0])
SPHERE_RADIUS_MM = 60.0
# uint16 in mm rounds the depth to 0.5 mm; along a ray that is at most 0.5 mm off the
# surface, less the further the surface leans
QUANTISATION_MM = 0.5


def _rays(camera: PinholeIntrinsics) -> npt.NDArray[np.float64]:
    """(H, W, 3): each pixel's ray with z = 1 (Open3D's convention: pixel centres at
    integer coordinates)."""
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    return np.stack([(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], -1)


def sphere_depth_mm(
    camera: PinholeIntrinsics = CAMERA,
    centre_mm: npt.ArrayLike = SPHERE_CENTRE_MM,
    radius_mm: float = SPHERE_RADIUS_MM,
) -> npt.NDArray[np.float64]:
    """(H, W) the depth (z, mm) of a sphere's near side; 0 where a ray misses it."""
    d = _rays(camera)
    c = np.asarray(centre_mm, dtype=np.float64)
    a = (d**2).sum(-1)
    b = -2 * (d @ c)
    disc = b**2 - 4 * a * (c @ c - radius_mm**2)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where(disc > 0, t, 0.0)


def plane_depth_mm(
    camera: PinholeIntrinsics, normal: npt.ArrayLike, offset_mm: float
) -> npt.NDArray[np.float64]:
    """(H, W) the depth of the plane ``n . p = offset_mm`` (unit ``normal``)."""
    return offset_mm / (_rays(camera) @ np.asarray(normal, dtype=np.float64))


def to_uint16(depth_mm: npt.NDArray[np.float64], scale: float = 1000.0) -> npt.NDArray[np.uint16]:
    """Depth as Open3D stores it: ``scale`` units per metre, rounded, 0 = none."""
    return np.round(depth_mm * scale / 1000.0).astype(np.uint16)


def _sphere_error_mm(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.abs(np.linalg.norm(points - SPHERE_CENTRE_MM, axis=1) - SPHERE_RADIUS_MM)


def test_a_sphere_is_reconstructed_on_its_surface_in_mm() -> None:
    cloud = depth_to_points(to_uint16(sphere_depth_mm()), CAMERA, DepthParams())
    assert len(cloud.points_camera) > 1000
    assert _sphere_error_mm(cloud.points_camera).max() < QUANTISATION_MM + 0.05
    # mm, not metres: the near side of the sphere is 340 mm away
    assert cloud.points_camera[:, 2].min() == pytest.approx(
        SPHERE_CENTRE_MM[2] - SPHERE_RADIUS_MM, abs=2
    )


def test_a_tilted_plane_is_reconstructed_on_the_plane() -> None:
    normal = np.array([0.3, -0.2, 1.0]) / np.linalg.norm([0.3, -0.2, 1.0])
    depth = plane_depth_mm(CAMERA, normal, 500.0)
    cloud = depth_to_points(to_uint16(depth), CAMERA, DepthParams())
    residual = cloud.points_camera @ normal - 500.0
    # a depth error dz moves a point along its ray by n . (dz ray) = dz 500 / z
    z = cloud.points_camera[:, 2]
    assert np.all(np.abs(residual) <= QUANTISATION_MM * 500.0 / z + 0.01)
    assert cloud.valid_fraction == 1.0


def test_a_noisy_sphere_lies_within_the_noise_model() -> None:
    rng = np.random.default_rng(3)
    params = DepthParams(noise_at_1m_mm=3.0)
    depth = sphere_depth_mm()
    noisy = np.where(depth > 0, depth + rng.normal(0, depth_noise_mm(depth, params)), 0)
    cloud = depth_to_points(to_uint16(noisy), CAMERA, params)
    sigma = float(np.median(cloud.confidence_mm))  # ~0.5 mm at 400 mm
    # a 2 mm voxel averages a few pixels' noise: the error is below the per-pixel sigma
    rms = float(np.sqrt(np.mean(_sphere_error_mm(cloud.points_camera) ** 2)))
    assert rms < sigma + QUANTISATION_MM / np.sqrt(3)


def test_a_depth_scale_other_than_open3ds_gives_the_same_surface() -> None:
    depth = sphere_depth_mm()
    tenth_mm = depth_to_points(to_uint16(depth, 10_000.0), CAMERA, DepthParams(depth_scale=1e4))
    assert _sphere_error_mm(tenth_mm.points_camera).max() < 0.1  # 0.05 mm rounding


def test_float32_depth_in_metres_reads_like_16_bit_mm() -> None:
    depth_u16 = to_uint16(sphere_depth_mm())
    params = DepthParams(voxel_mm=0)
    metres = (depth_u16 / 1000.0).astype(np.float32)
    from_u16 = depth_to_points(depth_u16, CAMERA, params)
    from_m = depth_to_points(metres, CAMERA, DepthParams(depth_scale=1.0, voxel_mm=0))
    assert np.allclose(from_u16.points_camera, from_m.points_camera, atol=1e-3)


def test_the_depth_range_limits_are_honoured() -> None:
    normal = np.array([0.0, -0.6, 1.0]) / np.linalg.norm([0.0, -0.6, 1.0])
    depth = plane_depth_mm(CAMERA, normal, 400.0)  # 330-570 mm top to bottom
    params = DepthParams(min_depth_mm=400.0, max_depth_mm=500.0)
    z = depth_to_points(to_uint16(depth), CAMERA, params).points_camera[:, 2]
    assert z.min() >= 400.0 - 1.0 and z.max() <= 500.0 + 1.0  # a voxel's averaging
    assert z.min() < 405.0 and z.max() > 495.0


def test_the_mask_is_honoured() -> None:
    mask = np.zeros((CAMERA.height, CAMERA.width), dtype=np.uint8)
    mask[40:200, 60:150] = 255  # left of the principal point: x < 0
    cloud = depth_to_points(to_uint16(sphere_depth_mm()), CAMERA, DepthParams(), mask)
    p = cloud.points_camera
    u = p[:, 0] / p[:, 2] * CAMERA.fx + CAMERA.cx
    v = p[:, 1] / p[:, 2] * CAMERA.fy + CAMERA.cy
    # voxel centroids land within a pixel of the pixels they average
    assert u.min() > 60 - 1.5 and u.max() < 149 + 1.5
    assert v.min() > 40 - 1.5 and v.max() < 199 + 1.5
    unmasked = depth_to_points(to_uint16(sphere_depth_mm()), CAMERA, DepthParams())
    assert len(p) < 0.6 * len(unmasked.points_camera)


def test_confidence_is_the_noise_model_and_grows_with_depth() -> None:
    normal = np.array([0.0, -0.6, 1.0]) / np.linalg.norm([0.0, -0.6, 1.0])
    params = DepthParams(noise_floor_mm=0.2, noise_at_1m_mm=1.5)
    cloud = depth_to_points(to_uint16(plane_depth_mm(CAMERA, normal, 400.0)), CAMERA, params)
    z, sigma = cloud.points_camera[:, 2], cloud.confidence_mm
    assert np.allclose(sigma, 0.2 + 1.5 * (z / 1000.0) ** 2)
    order = np.argsort(z)
    assert np.all(np.diff(sigma[order]) >= 0)
    assert sigma[order[-1]] > sigma[order[0]] * 1.5  # 330 -> 570 mm


@given(
    z_mm=st.floats(1.0, 1e5),
    floor=st.floats(0.0, 5.0),
    at_1m=st.floats(0.01, 10.0),
)
def test_the_noise_model_is_its_closed_form(z_mm: float, floor: float, at_1m: float) -> None:
    params = DepthParams(noise_floor_mm=floor, noise_at_1m_mm=at_1m)
    assert depth_noise_mm(z_mm, params) == pytest.approx(floor + at_1m * (z_mm / 1000) ** 2)
    assert depth_noise_mm(2 * z_mm, params) > depth_noise_mm(z_mm, params)


@st.composite
def _sparse_depth(draw: st.DrawFn) -> tuple[PinholeIntrinsics, npt.NDArray[np.uint16], float]:
    width, height = draw(st.integers(4, 64)), draw(st.integers(4, 64))
    camera = PinholeIntrinsics(
        width=width,
        height=height,
        fx=draw(st.floats(50.0, 2000.0)),
        fy=draw(st.floats(50.0, 2000.0)),
        cx=draw(st.floats(0.0, width - 1.0)),
        cy=draw(st.floats(0.0, height - 1.0)),
    )
    scale = draw(st.sampled_from([1000.0, 4000.0, 10_000.0]))
    depth = np.zeros((height, width), dtype=np.uint16)
    pixels = draw(
        st.lists(
            st.tuples(st.integers(0, height - 1), st.integers(0, width - 1)),
            min_size=1,
            max_size=15,  # fewer than the outlier filter's 20 neighbours: it stays off
            unique=True,
        )
    )
    values = draw(hnp.arrays(np.uint16, len(pixels), elements=st.integers(1, 65535)))
    for (v, u), value in zip(pixels, values, strict=True):
        depth[v, u] = value
    return camera, depth, scale


@given(_sparse_depth())
def test_back_projection_is_the_pinhole_closed_form(
    case: tuple[PinholeIntrinsics, npt.NDArray[np.uint16], float],
) -> None:
    """z = d / depth_scale (m, x 1000 to mm), x = (u - cx) z / fx, y = (v - cy) z / fy."""
    camera, depth, scale = case
    params = DepthParams(
        depth_scale=scale, min_depth_mm=1e-3, max_depth_mm=1e5, voxel_mm=0, min_points=1
    )
    cloud = depth_to_points(depth, camera, params)
    v, u = np.nonzero(depth)  # row-major, as Open3D walks the image
    z = depth[v, u] / scale * 1000.0
    expected = np.stack([(u - camera.cx) * z / camera.fx, (v - camera.cy) * z / camera.fy, z], 1)
    assert cloud.points_camera.shape == expected.shape
    # Open3D scales the depth in float32: a relative 6e-8
    assert np.allclose(cloud.points_camera, expected, rtol=1e-6, atol=1e-6)
    assert np.allclose(cloud.confidence_mm, depth_noise_mm(z, params), rtol=1e-6)


def test_the_intrinsics_file_reads_as_open3d_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "intrinsic.json"
    written = o3d.camera.PinholeCameraIntrinsic(640, 480, 600.0, 610.0, 320.5, 240.25)
    o3d.io.write_pinhole_camera_intrinsic(path, written)
    intrinsics, depth_scale = PinholeIntrinsics.from_open3d_json(path)
    assert intrinsics == PinholeIntrinsics(640, 480, 600.0, 610.0, 320.5, 240.25)
    assert depth_scale is None
    assert np.allclose(intrinsics.to_open3d().intrinsic_matrix, written.intrinsic_matrix)
    assert find_intrinsics(tmp_path) == path


def test_a_metadata_files_depth_scale_is_read(tmp_path: Path) -> None:
    """Open3D's ``RGBDVideoMetadata`` (RealSense bag frames) adds ``depth_scale``."""
    path = tmp_path / "intrinsic.json"
    matrix = [600.0, 0, 0, 0, 600.0, 0, 320.0, 240.0, 1]
    path.write_text(
        json.dumps({"width": 640, "height": 480, "intrinsic_matrix": matrix, "depth_scale": 4000})
    )
    assert PinholeIntrinsics.from_open3d_json(path)[1] == 4000.0


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"width": 640, "height": 480}),
        json.dumps({"width": 640, "height": 480, "intrinsic_matrix": [1, 2, 3]}),
        json.dumps({"width": -1, "height": 480, "intrinsic_matrix": [1.0] * 9}),
        json.dumps({"width": 640, "height": 480, "intrinsic_matrix": [0.0] * 9}),
        json.dumps([1, 2]),
    ],
)
def test_a_bad_intrinsics_file_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "intrinsic.json"
    path.write_text(text)
    with pytest.raises(DepthError) as raised:
        PinholeIntrinsics.from_open3d_json(path)
    assert raised.value.kind == "intrinsics" and "\n" not in str(raised.value)


def _refusal(depth: npt.NDArray[np.generic], mask: npt.NDArray[np.uint8] | None = None) -> str:
    with pytest.raises(DepthError) as raised:
        depth_to_points(depth, CAMERA, DepthParams(), mask)
    assert "\n" not in str(raised.value)
    return raised.value.kind


def test_bad_frames_are_refused_by_kind() -> None:
    good = to_uint16(sphere_depth_mm())
    nan = good.astype(np.float32)
    nan[100, 100] = np.nan
    negative = good.astype(np.float32)
    negative[0, 0] = -1.0
    assert _refusal(good[:, :-1]) == "size"
    assert _refusal(good, np.ones((10, 10), dtype=np.uint8)) == "size"
    assert _refusal(np.zeros_like(good)) == "empty"
    assert _refusal(nan) == "nonfinite"
    assert _refusal(negative) == "nonfinite"
    assert _refusal((good // 256).astype(np.uint8)) == "format"
    assert _refusal(np.stack([good] * 3, -1)) == "format"
    assert _refusal(good.astype(np.float64)) == "format"
    assert _refusal(to_uint16(sphere_depth_mm() + 2000)) == "empty"  # all beyond 1 m
    assert _refusal(good, np.zeros(good.shape, dtype=np.uint8)) == "empty"


def test_a_missing_or_garbled_depth_file_is_unreadable(tmp_path: Path) -> None:
    garbled = tmp_path / "000000.png"
    garbled.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for path in (garbled, tmp_path / "missing.png"):
        with pytest.raises(DepthError) as raised:
            read_depth(path)
        assert raised.value.kind == "unreadable"


def test_a_16_bit_png_round_trips(tmp_path: Path) -> None:
    depth = to_uint16(sphere_depth_mm())
    cv2.imwrite(str(tmp_path / "d.png"), depth)
    read = read_depth(tmp_path / "d.png")
    assert read.dtype == np.uint16 and np.array_equal(read, depth)


def test_at_most_max_points_are_kept_evenly() -> None:
    params = DepthParams(voxel_mm=0, max_points=1000)
    cloud = depth_to_points(to_uint16(sphere_depth_mm()), CAMERA, params)
    assert len(cloud.points_camera) == 1000
    # taken evenly over the image rows: the top and bottom of the sphere both stay
    full = depth_to_points(to_uint16(sphere_depth_mm()), CAMERA, DepthParams(voxel_mm=0))
    y, y_full = cloud.points_camera[:, 1], full.points_camera[:, 1]
    assert y.min() < y_full.min() + 2 and y.max() > y_full.max() - 2

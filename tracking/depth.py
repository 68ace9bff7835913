"""Depth camera surface: an RGB-D frame's depth image into a point cloud, mm.

Frames as Open3D reads and records them (its RealSense recorder, ``RSBagReader
.save_frames``, the reconstruction system's datasets): a folder with ``depth/*.png``
(16-bit, ``depth_scale`` units per metre, Open3D's default 1000: millimetres; 0 = no
depth), ``color/*.jpg|png`` beside it (not used: a ``SurfaceCloud`` carries no colour),
and the pinhole intrinsics as Open3D writes them (``intrinsic.json`` or
``camera_intrinsic.json``: ``width``, ``height`` and a column-major ``intrinsic_matrix``;
an ``RGBDVideoMetadata`` file adds ``depth_scale``). A float32 depth image (a live
device's) is read the same way: raw value / ``depth_scale`` = metres.

A frame becomes points in the ``camera`` frame (the depth camera's optical frame, x
right, y down, z forward, mm):

1. depth range limits and an optional mask, on the pixels (0 = no depth, as Open3D);
2. back-projection by Open3D (``PointCloud.create_from_depth_image``: z = d /
   depth_scale, x = (u - cx) z / fx, y = (v - cy) z / fy, metres) and x 1000 to mm;
3. voxel downsampling, then statistical outlier removal (Open3D), then at most
   ``max_points`` points, taken evenly;
4. per-point confidence, the expected depth error of each point (the axial noise model):
   ``sigma_z = noise_floor_mm + noise_at_1m_mm * (z / 1 m)^2``. Structured light and
   active stereo triangulate, so a disparity error ``sigma_d`` px gives ``sigma_z = z^2
   sigma_d / (f b)`` (Khoshelham & Elberink, "Accuracy and resolution of Kinect depth
   data", Sensors 12(2), 2012, eq. 10; Intel's "Tuning depth cameras for best
   performance" gives the same RMS formula for the RealSense D400): the D415 (f ~ 970
   px, b = 55 mm, 0.08 px sub-pixel) has 1.5 mm at 1 m, the default. Nguyen, Izadi &
   Lovell (3DIMPVT 2012) fit 1.2 mm + 1.9 mm (z - 0.4 m)^2 / m^2 for the Kinect v1, the
   same quadratic growth. Time-of-flight noise hardly grows with depth (Azure Kinect: a
   random error of at most 17 mm SD, its spec): set ``noise_at_1m_mm = 0`` and the floor.

A frame that cannot give a trustworthy surface is refused with one line
(``DepthError``, its ``kind`` for a node's counters): ``unreadable`` (missing or
garbled), ``format`` (not a one-channel 16-bit or float32 image), ``size`` (not the
intrinsics' size), ``nonfinite`` (NaN, inf or negative depth), ``empty`` (no depth, or
too few points inside the range and the mask).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from nav.arrays import FloatArray
from nav.messages.surface import MAX_SURFACE_POINTS

OPEN3D_DEPTH_SCALE = 1000.0  # Open3D's default: depth units per metre (mm)
INTRINSIC_NAMES = ("intrinsic.json", "camera_intrinsic.json")  # Open3D's recorders
MM_PER_M = 1000.0
DEPTH_KINDS = ("unreadable", "format", "size", "nonfinite", "empty")


class DepthError(ValueError):
    """A depth frame or intrinsics file that cannot give a trustworthy surface; one line.
    ``kind`` is one of ``DEPTH_KINDS`` (or ``intrinsics`` for the file)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PinholeIntrinsics:
    """A pinhole camera without distortion (what Open3D's RGB-D frames assume):
    ``width`` x ``height`` px, focal lengths and principal point px."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if not (1 <= self.width <= 16384 and 1 <= self.height <= 16384):
            raise DepthError("intrinsics", f"image size {self.width}x{self.height} px")
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise DepthError("intrinsics", "focal lengths must be finite and > 0")

    @classmethod
    def from_open3d_json(cls, path: str | Path) -> tuple[PinholeIntrinsics, float | None]:
        """Read an intrinsics file as ``o3d.io.read_pinhole_camera_intrinsic`` does, and
        the ``depth_scale`` an ``RGBDVideoMetadata`` file adds (None if absent)."""
        try:
            data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
            matrix = np.asarray(data["intrinsic_matrix"], dtype=np.float64)
            width, height = data["width"], data["height"]
            scale = data.get("depth_scale")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DepthError("intrinsics", f"{path}: not an Open3D intrinsics file: {e}") from None
        if matrix.shape != (9,) or not all(isinstance(v, int) for v in (width, height)):
            raise DepthError(
                "intrinsics", f"{path}: expected integer width, height and 9 matrix values"
            )
        if scale is not None and not (isinstance(scale, int | float) and 0 < scale < 1e7):
            raise DepthError("intrinsics", f"{path}: depth_scale {scale!r} is not > 0")
        K = matrix.reshape(3, 3).T  # Open3D stores it column-major
        try:
            intrinsics = cls(width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        except DepthError as error:
            raise DepthError("intrinsics", f"{path}: {error}") from None
        return intrinsics, None if scale is None else float(scale)

    @classmethod
    def from_open3d(cls, intrinsic: o3d.camera.PinholeCameraIntrinsic) -> PinholeIntrinsics:
        fx, fy = intrinsic.get_focal_length()
        cx, cy = intrinsic.get_principal_point()
        return cls(intrinsic.width, intrinsic.height, fx, fy, cx, cy)

    def to_open3d(self) -> o3d.camera.PinholeCameraIntrinsic:
        return o3d.camera.PinholeCameraIntrinsic(
            self.width, self.height, self.fx, self.fy, self.cx, self.cy
        )


def find_intrinsics(folder: str | Path) -> Path:
    """The intrinsics file Open3D's recorders leave in a recording ``folder``."""
    for name in INTRINSIC_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise DepthError("intrinsics", f"{folder}: no {' or '.join(INTRINSIC_NAMES)}")


@dataclass(frozen=True)
class DepthParams:
    """How a depth image becomes points; lengths mm (module docstring)."""

    depth_scale: float = OPEN3D_DEPTH_SCALE  # depth units per metre
    min_depth_mm: float = 100.0
    max_depth_mm: float = 1000.0
    voxel_mm: float = 2.0  # 0: no downsampling
    outlier_neighbours: int = 20
    outlier_std_ratio: float = 2.0
    noise_floor_mm: float = 0.0
    noise_at_1m_mm: float = 1.5
    min_points: int = 50
    max_points: int = MAX_SURFACE_POINTS

    def __post_init__(self) -> None:
        if not 0 < self.depth_scale < 1e7:
            raise ValueError(f"depth_scale {self.depth_scale} must be > 0 (units per metre)")
        if not 0 < self.min_depth_mm < self.max_depth_mm <= 1e5:
            raise ValueError("need 0 < min_depth_mm < max_depth_mm <= 1e5")
        if self.voxel_mm < 0:
            raise ValueError("voxel_mm must be >= 0")
        if self.noise_floor_mm < 0 or self.noise_at_1m_mm < 0:
            raise ValueError("noise_floor_mm and noise_at_1m_mm must be >= 0")
        if self.noise_floor_mm + self.noise_at_1m_mm <= 0:
            raise ValueError("noise_floor_mm or noise_at_1m_mm must be > 0")
        if not 1 <= self.min_points <= self.max_points <= MAX_SURFACE_POINTS:
            raise ValueError(f"need 1 <= min_points <= max_points <= {MAX_SURFACE_POINTS}")


@dataclass
class DepthCloud:
    """``points_camera`` (N, 3) mm, camera frame; ``confidence_mm`` (N,) the expected
    depth error of each; ``valid_fraction`` of the region (mask or image) with a depth
    inside the range."""

    points_camera: FloatArray
    confidence_mm: FloatArray
    valid_fraction: float


def depth_noise_mm(depth_mm: npt.ArrayLike, params: DepthParams) -> FloatArray:
    """``sigma_z = noise_floor_mm + noise_at_1m_mm * (z / 1000 mm)^2`` (module docstring)."""
    z_m = np.asarray(depth_mm, dtype=np.float64) / MM_PER_M
    sigma: FloatArray = params.noise_floor_mm + params.noise_at_1m_mm * z_m**2
    return sigma


def read_depth(path: str | Path) -> npt.NDArray[Any]:
    """A depth image as stored (16-bit PNG: uint16; a float TIFF: float32)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DepthError("unreadable", f"{path}: missing or not a readable image")
    return np.asarray(image)


def depth_to_points(
    depth: npt.NDArray[Any],
    intrinsics: PinholeIntrinsics,
    params: DepthParams,
    mask: npt.NDArray[Any] | None = None,
) -> DepthCloud:
    """The frame's surface in the camera frame (module docstring). ``depth`` (H, W)
    uint16 or float32, raw units; ``mask`` (H, W), nonzero where to keep. Raises
    ``DepthError``."""
    if depth.ndim != 2 or depth.dtype not in (np.uint16, np.float32):
        raise DepthError(
            "format",
            f"depth image is {depth.dtype} with shape {depth.shape}: expected one channel, "
            "16-bit or float32",
        )
    w, h = intrinsics.width, intrinsics.height
    if depth.shape != (h, w):
        raise DepthError(
            "size",
            f"depth image is {depth.shape[1]}x{depth.shape[0]} px, the intrinsics are for {w}x{h}",
        )
    if depth.dtype == np.float32 and not (np.isfinite(depth).all() and depth.min() >= 0):
        raise DepthError("nonfinite", "depth image holds NaN, inf or negative values (0 = none)")
    if not depth.any():
        raise DepthError("empty", "depth image is all zero (no depth anywhere)")
    if mask is not None and mask.shape[:2] != depth.shape:
        raise DepthError("size", f"mask is {mask.shape[1]}x{mask.shape[0]} px, depth {w}x{h}")
    region = np.ones(depth.shape, dtype=bool) if mask is None else np.asarray(mask) > 0
    to_mm = MM_PER_M / params.depth_scale
    depth_mm = depth.astype(np.float64) * to_mm
    keep = region & (depth_mm >= params.min_depth_mm) & (depth_mm <= params.max_depth_mm)
    valid_fraction = float(keep.sum() / max(region.sum(), 1))
    kept = np.where(keep, depth, np.zeros((), dtype=depth.dtype))
    cloud = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(cast(Any, np.ascontiguousarray(kept))),  # a Buffer to Open3D
        intrinsics.to_open3d(),
        depth_scale=params.depth_scale,
        depth_trunc=np.finfo(np.float32).max,  # the range is applied above, in mm
        project_valid_depth_only=True,
    )
    if params.voxel_mm > 0 and cloud.has_points():
        cloud = cloud.voxel_down_sample(params.voxel_mm / MM_PER_M)
    if len(cloud.points) > params.outlier_neighbours:
        cloud, _ = cloud.remove_statistical_outlier(
            params.outlier_neighbours, params.outlier_std_ratio
        )
    points = np.asarray(cloud.points, dtype=np.float64) * MM_PER_M
    if len(points) < params.min_points:
        raise DepthError(
            "empty",
            f"{len(points)} points inside {params.min_depth_mm:g}-{params.max_depth_mm:g} mm"
            f"{' and the mask' if mask is not None else ''} (at least {params.min_points})",
        )
    if len(points) > params.max_points:
        points = points[np.linspace(0, len(points) - 1, params.max_points).astype(np.int64)]
    return DepthCloud(points, depth_noise_mm(points[:, 2], params), valid_fraction)

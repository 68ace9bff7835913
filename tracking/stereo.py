"""Stereo surface reconstruction: a rectified image pair into a point cloud, mm.

The intraoperative surface for registration, from a stereo laparoscope or a stereo rig:

1. rectify both images with the stereo calibration (OpenCV ``stereoRectify``, lens
   distortion removed; maps computed once per calibration);
2. disparity by semi-global matching (OpenCV SGBM, H. Hirschmueller, IEEE PAMI 30(2),
   2008; 3-way mode, left-right check, speckle filter);
3. a mask (the organ, or an evaluation region) in the *original* left image, carried to
   the rectified one through the same map;
4. points in the left camera frame, depth limits, statistical outlier removal and voxel
   downsampling (Open3D);
5. per-point confidence: the depth uncertainty of a disparity error ``sigma_disparity_px``,
   ``sigma_z = z^2 sigma_d / (f B)`` (f the rectified focal length in px, B the baseline,
   mm): far points are less certain, quadratically.

A pair that cannot give a trustworthy surface is refused with one line
(``StereoError``): images of the wrong size for the calibration, a calibration that does
not fit the images (matched features in the rectified pair lie on different rows), or
too little texture (too few pixels with an image gradient, or with a disparity, inside
the mask). Frames: ``camera``
is the left camera's optical frame (x right, y down, z forward, mm); to the patient
reference through the camera's tracked marker and its hand-eye calibration
(``points_in_reference``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from nav.arrays import FloatArray
from nav.transforms import Mat4, apply, is_rigid

# Median row offset of features matched across a rectified pair. The real Open-CAS pair
# with its own calibration shows 1.7 px (SD video); a 1 degree error about the baseline
# shows ~8 px. SGBM's 5 px blocks absorb the first, not the second.
MAX_ROW_ERROR_PX = 4.0
MIN_MATCHES_FOR_CHECK = 20


class StereoError(ValueError):
    """A stereo pair or calibration that cannot give a trustworthy surface; one line."""


@dataclass(frozen=True, eq=False)
class StereoCalibration:
    """Two cameras: intrinsics (3, 3) px, distortion (k1 k2 p1 p2 [k3 ...]), and the
    right camera's pose in the left's, ``T_right_from_left`` (4, 4) mm; ``image_size``
    (width, height) px the calibration was made at."""

    K_left: FloatArray
    dist_left: FloatArray
    K_right: FloatArray
    dist_right: FloatArray
    T_right_from_left: Mat4
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("K_left", "K_right"):
            K = np.asarray(getattr(self, name), dtype=np.float64)
            if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise StereoError(f"{name}: expected a 3x3 camera matrix with positive focal")
            object.__setattr__(self, name, K)
        for name in ("dist_left", "dist_right"):
            d = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if len(d) not in (4, 5, 8, 12, 14) or not np.all(np.isfinite(d)):
                raise StereoError(f"{name}: expected 4, 5, 8, 12 or 14 finite coefficients")
            object.__setattr__(self, name, d)
        T = np.asarray(self.T_right_from_left, dtype=np.float64)
        if T.shape != (4, 4) or not is_rigid(T, tol=1e-4):
            raise StereoError("T_right_from_left: expected a rigid 4x4 transform")
        if not 0.5 < np.linalg.norm(T[:3, 3]) < 1000:
            raise StereoError(f"baseline {np.linalg.norm(T[:3, 3]):.3g} mm is not plausible")
        object.__setattr__(self, "T_right_from_left", T)
        w, h = self.image_size
        if not (16 <= w <= 8192 and 16 <= h <= 8192):
            raise StereoError(f"image size {w}x{h} px is not plausible")

    @property
    def baseline_mm(self) -> float:
        return float(np.linalg.norm(self.T_right_from_left[:3, 3]))

    @classmethod
    def from_text_files(cls, folder: str | Path, image_size: tuple[int, int]) -> StereoCalibration:
        """scikit-surgery's layout: ``calib.left.intrinsics.txt``,
        ``calib.left.distortion.txt``, the same for ``right``, and ``calib.l2r.txt``
        (4x4, or 3x3 rotation with the translation as a 4th row)."""
        folder = Path(folder)

        def load(name: str) -> FloatArray:
            path = folder / name
            try:
                return np.loadtxt(path, dtype=np.float64)
            except (OSError, ValueError) as error:
                raise StereoError(f"{path}: {error}") from None

        l2r = load("calib.l2r.txt")
        T = np.eye(4)
        if l2r.shape == (4, 4):
            T = l2r
        elif l2r.shape == (4, 3):
            T[:3, :3], T[:3, 3] = l2r[:3], l2r[3]
        else:
            raise StereoError(f"{folder / 'calib.l2r.txt'}: expected 4x4 or 4x3, got {l2r.shape}")
        return cls(
            K_left=load("calib.left.intrinsics.txt"),
            dist_left=load("calib.left.distortion.txt"),
            K_right=load("calib.right.intrinsics.txt"),
            dist_right=load("calib.right.distortion.txt"),
            T_right_from_left=T,
            image_size=image_size,
        )


@dataclass(frozen=True)
class StereoParams:
    """How a pair becomes points; lengths mm, disparities px."""

    num_disparities: int = 64  # a multiple of 16
    block_size: int = 5
    uniqueness_ratio: int = 10
    min_depth_mm: float = 10.0
    max_depth_mm: float = 300.0
    voxel_mm: float = 1.0  # 0: no downsampling
    outlier_neighbours: int = 20
    outlier_std_ratio: float = 2.0
    sigma_disparity_px: float = 0.5
    min_valid_fraction: float = 0.05  # of the mask's pixels with a disparity
    min_texture_fraction: float = 0.05  # of the mask's pixels with a horizontal gradient
    # of at least 1 grey level / px (after a 5x5 blur): the real Open-CAS liver has 46 %,
    # blurred by a sigma of 8 px 11 %, a flat or noise-only image 0
    check_rows: bool = True

    def __post_init__(self) -> None:
        if self.num_disparities < 16 or self.num_disparities % 16:
            raise ValueError("num_disparities must be a positive multiple of 16")
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError("block_size must be odd and >= 1")
        if not 0 < self.min_depth_mm < self.max_depth_mm:
            raise ValueError("need 0 < min_depth_mm < max_depth_mm")


@dataclass
class StereoCloud:
    """``points_camera`` (N, 3) mm, left camera frame; ``confidence_mm`` (N,) the depth
    uncertainty of each; ``valid_fraction`` of the mask with a disparity; ``times_ms``
    per stage."""

    points_camera: FloatArray
    confidence_mm: FloatArray
    valid_fraction: float
    times_ms: dict[str, float] = field(default_factory=dict)


class StereoReconstructor:
    """Reconstructs pairs taken with one calibration (rectification maps made once)."""

    def __init__(self, calibration: StereoCalibration, params: StereoParams | None = None):
        self.calibration = c = calibration
        self.params = p = params or StereoParams()
        R = c.T_right_from_left[:3, :3].copy()
        t = c.T_right_from_left[:3, 3].reshape(3, 1).copy()
        size = c.image_size
        R1, R2, P1, P2, Q, _roi1, _roi2 = cv2.stereoRectify(
            c.K_left,
            c.dist_left,
            c.K_right,
            c.dist_right,
            size,
            R,
            t,
            flags=cv2.CALIB_ZERO_DISPARITY,
            alpha=0,
        )
        self.R_rect_from_left = R1
        self.Q = Q
        self.focal_px = float(P1[0, 0])
        self._maps_left = cv2.initUndistortRectifyMap(
            c.K_left, c.dist_left, R1, P1, size, cv2.CV_32FC1
        )
        self._maps_right = cv2.initUndistortRectifyMap(
            c.K_right, c.dist_right, R2, P2, size, cv2.CV_32FC1
        )
        self._sgbm = sgbm_matcher(p)

    def rectify(
        self, left: npt.NDArray[np.uint8], right: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Both images rectified (rows are epipolar lines); checks their size first."""
        w, h = self.calibration.image_size
        for name, image in (("left", left), ("right", right)):
            if image.ndim not in (2, 3) or image.shape[:2] != (h, w):
                raise StereoError(
                    f"{name} image is {image.shape[1]}x{image.shape[0]} px, the calibration "
                    f"is for {w}x{h}"
                )
        return (
            np.asarray(cv2.remap(left, *self._maps_left, cv2.INTER_LINEAR), dtype=np.uint8),
            np.asarray(cv2.remap(right, *self._maps_right, cv2.INTER_LINEAR), dtype=np.uint8),
        )

    def row_error_px(
        self, left_rect: npt.NDArray[np.uint8], right_rect: npt.NDArray[np.uint8]
    ) -> float | None:
        """|median row offset| (px) of ORB features matched across the rectified pair
        (Lowe's ratio test, 0.75): about 0 for a calibration that fits; None with too few
        matches to tell (a textureless pair, which the disparity check then refuses)."""
        orb = cv2.ORB.create(nfeatures=2000)
        kl, dl = orb.detectAndCompute(_gray(left_rect), None)
        kr, dr = orb.detectAndCompute(_gray(right_rect), None)
        if dl is None or dr is None or len(dl) < 2 or len(dr) < 2:
            return None
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(dl, dr, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
        if len(good) < MIN_MATCHES_FOR_CHECK:
            return None
        dy = [kl[m.queryIdx].pt[1] - kr[m.trainIdx].pt[1] for m in good]
        return float(abs(np.median(dy)))

    def reconstruct(
        self,
        left: npt.NDArray[np.uint8],
        right: npt.NDArray[np.uint8],
        mask: npt.NDArray[np.uint8] | None = None,
    ) -> StereoCloud:
        """The pair's surface in the left camera frame (see the module docstring).
        ``mask``: nonzero where to reconstruct, in the original left image."""
        p = self.params
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        left_rect, right_rect = self.rectify(left, right)
        times["rectify"] = (time.perf_counter() - t0) * 1e3
        if p.check_rows:
            row_error = self.row_error_px(left_rect, right_rect)
            if row_error is not None and row_error > MAX_ROW_ERROR_PX:
                raise StereoError(
                    f"the calibration does not fit these images: matched features are "
                    f"{row_error:.1f} px apart vertically after rectification (at most "
                    f"{MAX_ROW_ERROR_PX})"
                )
        t1 = time.perf_counter()
        disparity = self._sgbm.compute(_gray(left_rect), _gray(right_rect)).astype(np.float32) / 16
        times["sgbm"] = (time.perf_counter() - t1) * 1e3
        t2 = time.perf_counter()
        region = np.ones(disparity.shape, dtype=bool)
        if mask is not None:
            w, h = self.calibration.image_size
            if mask.shape[:2] != (h, w):
                raise StereoError(f"mask is {mask.shape[1]}x{mask.shape[0]} px, images {w}x{h}")
            # the mask lives in the original image: sample it where each rectified pixel
            # came from (the rectification map), nearest pixel
            mx, my = self._maps_left
            ox = np.clip(np.rint(mx).astype(np.int32), 0, w - 1)
            oy = np.clip(np.rint(my).astype(np.int32), 0, h - 1)
            region = mask[oy, ox] > 0
        texture = _texture(_gray(left_rect))[region]
        texture_fraction = float(texture.mean()) if texture.size else 0.0
        if texture_fraction < p.min_texture_fraction:
            raise StereoError(
                f"too little texture: {100 * texture_fraction:.1f} % of the region has any "
                f"image gradient (at least {100 * p.min_texture_fraction:.0f} %)"
            )
        has_disparity = (disparity > 0) & region
        valid_fraction = float(has_disparity.sum() / max(region.sum(), 1))
        if valid_fraction < p.min_valid_fraction:
            raise StereoError(
                f"too little texture: {100 * valid_fraction:.1f} % of the region has a "
                f"disparity (at least {100 * p.min_valid_fraction:.0f} %)"
            )
        xyz_rect = cv2.reprojectImageTo3D(disparity, self.Q)[has_disparity].astype(np.float64)
        z = xyz_rect[:, 2]
        keep = np.isfinite(xyz_rect).all(axis=1) & (z >= p.min_depth_mm) & (z <= p.max_depth_mm)
        xyz_rect = xyz_rect[keep]
        # rectified -> left camera: x_rect = R1 x_left
        points = xyz_rect @ self.R_rect_from_left
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        if p.voxel_mm > 0 and len(points):
            cloud = cloud.voxel_down_sample(p.voxel_mm)
        if len(cloud.points) > p.outlier_neighbours:
            cloud, _ = cloud.remove_statistical_outlier(p.outlier_neighbours, p.outlier_std_ratio)
        points = np.asarray(cloud.points, dtype=np.float64)
        times["points"] = (time.perf_counter() - t2) * 1e3
        depth = (points @ self.R_rect_from_left.T)[:, 2]  # depth along the rectified axis
        confidence = (
            depth**2 * p.sigma_disparity_px / (self.focal_px * self.calibration.baseline_mm)
        )
        return StereoCloud(points, confidence, valid_fraction, times)


def sgbm_matcher(params: StereoParams) -> cv2.StereoSGBM:
    """OpenCV's semi-global matcher with ``params``' settings: 3-way mode, P1/P2 of the
    block size as OpenCV's samples set them, left-right check, speckle filter."""
    return cv2.StereoSGBM.create(
        minDisparity=0,
        numDisparities=params.num_disparities,
        blockSize=params.block_size,
        P1=8 * 3 * params.block_size**2,
        P2=32 * 3 * params.block_size**2,
        uniquenessRatio=params.uniqueness_ratio,
        speckleWindowSize=100,
        speckleRange=2,
        disp12MaxDiff=1,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )


def depth_uncertainty_mm(
    depth_mm: npt.ArrayLike, focal_px: float, baseline_mm: float, sigma_disparity_px: float
) -> FloatArray:
    """``sigma_z = z^2 sigma_d / (f B)``: depth from disparity ``d = f B / z``, to first order."""
    z = np.asarray(depth_mm, dtype=np.float64)
    sigma: FloatArray = z**2 * sigma_disparity_px / (focal_px * baseline_mm)
    return sigma


def points_in_reference(
    points_camera: npt.ArrayLike,
    T_tracker_from_marker: Mat4,
    T_marker_from_camera: Mat4,
    T_tracker_from_reference: Mat4,
) -> FloatArray:
    """Camera points into the patient reference frame: the camera's tracked marker, its
    hand-eye calibration ``T_marker_from_camera``, and the reference marker, all mm."""
    T_reference_from_camera = (
        np.linalg.inv(T_tracker_from_reference) @ T_tracker_from_marker @ T_marker_from_camera
    )
    return apply(T_reference_from_camera, np.asarray(points_camera, dtype=np.float64))


def _texture(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Pixels with a horizontal gradient of 1 grey level / px or more (5x5 blur first):
    where matching along a row has something to hold on to."""
    smooth = cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # Sobel's 3x3 weights sum to 8
    return np.asarray(np.abs(gx) >= 1.0)


def _gray(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        return image
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)

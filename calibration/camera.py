"""Camera intrinsic calibration from views of a planar target (chessboard or ChArUco).

Z. Zhang, "A flexible new technique for camera calibration", IEEE TPAMI
22(11):1330-1334, 2000, as implemented by OpenCV's ``calibrateCamera``: a
closed-form start from the homographies of a planar target, then
Levenberg-Marquardt on the reprojection error over the pinhole model with
Brown-Conrady distortion (``k1 k2 p1 p2 k3`` by default).

Images come in as arrays (this module reads no files): ``(H, W)`` grey or
``(H, W, 3)`` BGR ``uint8``. Pixel coordinates follow OpenCV: ``(u, v)`` with
``u`` to the right and ``v`` down, the centre of the top-left pixel at (0, 0).
Target (board) coordinates are mm in the board plane (``z = 0``); the results
are in the ``camera`` frame (OpenCV's: x right, y down, z forward).

Corner detector (:func:`detect_chessboard`). Chosen by accuracy on the real
scikit-surgerybard views (12 of a 14x10, 6 mm board at 640x480; calibration RMS)
and on rendered, blurred, noisy boards with known corners (mean corner error):

- ``"sb"`` (default): ``findChessboardCornersSB`` (D. Duda and U. Frese,
  "Accurate detection and localization of checkerboard corners for
  calibration", BMVC 2018), default flags: 0.325 px real, 0.086 px rendered,
  about 50 ms per 640x480 view. ``CALIB_CB_NORMALIZE_IMAGE`` made it worse (0.351 px);
  ``CALIB_CB_ACCURACY`` gained little (0.323 px) at three times the time.
- ``"classic"``: ``findChessboardCorners`` then ``cornerSubPix`` with a
  half-window of 0.4 times the corner spacing (at most 11 px): 0.335 px real,
  0.099 px rendered, 4 times faster. The common fixed 11 px half-window
  reproduces upstream's stored corners to 0.03 px on ten views, and like them
  misplaces corners of views 10 and 11 by up to 8 px, where squares are 11 to
  19 px wide and the window spans neighbouring corners (per-view RMS 3.5 and
  3.2 px against 0.2 to 0.6 px for the other ten).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from nav.arrays import FloatArray
from nav.transforms import make_rigid

ChessboardDetector: TypeAlias = Literal["sb", "classic"]

MIN_POINTS_PER_VIEW: Final = 4
"""The fewest points a view needs for its homography (Zhang 2000, section 3.1)."""

_SUBPIX_CRITERIA: Final = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)

# OpenCV's stubs type the camera matrix and distortion outputs as required arrays;
# None (no initial guess, OpenCV allocates them) is what the C++ API means by default.
_calibrate_camera_extended: Any = cv2.calibrateCameraExtended


@dataclass(frozen=True, eq=False, kw_only=True)
class CameraCalibration:
    """A camera's intrinsics from a planar-target calibration, and how well they fit.

    Fields:

    - ``camera_matrix`` (3, 3): ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, px.
    - ``dist_coeffs`` (k,): OpenCV's order ``k1 k2 p1 p2 k3 ...`` (k = 5 by default).
    - ``image_size``: (width, height) px.
    - ``rms_reprojection_px``: OpenCV's overall RMS, ``sqrt(sum |e|^2 / n_points)``
      over every point of every used view, ``e`` the 2D reprojection error.
    - ``per_view_rms_px``: the same RMS per used view, aligned with ``view_names``.
    - ``view_names``: the views used in the final calibration.
    - ``rejected_views``: ``(name, reason)`` for each view left out, in the order
      they were refused (no board found, too few points, or above ``max_view_rms_px``).
    - ``pattern``: the target, e.g. ``"chessboard 14x10 inner corners, 6 mm squares"``.
    - ``intrinsics_std_px``: OpenCV's standard deviations of (fx, fy, cx, cy),
      px; they assume independent pixel noise, so they understate a detector's
      systematic error.
    - ``T_camera_from_target`` (n_views, 4, 4) mm: the board pose in each used
      view, aligned with ``view_names``; the hand-eye input
      (:func:`calibration.handeye.hand_eye`). For a chessboard whose inner
      corner counts are both even or both odd the board looks the same turned
      by 180 deg, so its origin is chosen by the image (see
      :func:`detect_chessboard`); a ChArUco board has a unique origin.
    """

    camera_matrix: FloatArray
    dist_coeffs: FloatArray
    image_size: tuple[int, int]
    rms_reprojection_px: float
    per_view_rms_px: tuple[float, ...]
    view_names: tuple[str, ...]
    rejected_views: tuple[tuple[str, str], ...]
    pattern: str
    intrinsics_std_px: tuple[float, float, float, float]
    T_camera_from_target: FloatArray


# ---------------------------------------------------------------------------- images


def to_gray(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Return ``image`` as a contiguous (H, W) uint8 grey image.

    Accepts (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, uint8. Raises
    CalibrationError("bad_input") for anything else (the channel order only
    changes the grey weights, which corner detection does not depend on).
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise CalibrationError("bad_input", f"image must be uint8, got {a.dtype} {a.shape}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if a.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        a = cv2.cvtColor(np.ascontiguousarray(a), code)
    if a.ndim != 2 or min(a.shape) < 8:
        raise CalibrationError("bad_input", f"image must be (H, W) or (H, W, 3), got {a.shape}")
    gray: npt.NDArray[np.uint8] = np.ascontiguousarray(a)
    return gray


def _image_size(gray: npt.NDArray[np.uint8]) -> tuple[int, int]:
    return (int(gray.shape[1]), int(gray.shape[0]))


# ---------------------------------------------------------------------------- chessboard


def _check_pattern_size(pattern_size: tuple[int, int]) -> tuple[int, int]:
    try:
        cols, rows = (int(n) for n in pattern_size)
    except (TypeError, ValueError):
        raise CalibrationError(
            "bad_input", f"pattern_size must be (columns, rows), got {pattern_size!r}"
        ) from None
    if cols < 3 or rows < 3:
        raise CalibrationError(
            "bad_input", f"pattern_size must be at least (3, 3) inner corners, got {pattern_size!r}"
        )
    return cols, rows


def _min_corner_spacing_px(corners: FloatArray, cols: int, rows: int) -> float:
    grid = corners.reshape(rows, cols, 2)
    along_rows = np.linalg.norm(np.diff(grid, axis=1), axis=2).min()
    along_cols = np.linalg.norm(np.diff(grid, axis=0), axis=2).min()
    return float(min(along_rows, along_cols))


def chessboard_object_points(pattern_size: tuple[int, int], square_size_mm: float) -> FloatArray:
    """The inner corners in the board frame, (cols * rows, 3) mm, in detection order.

    Row by row from the first detected corner: ``(c * s, r * s, 0)`` for row ``r``,
    column ``c`` and square size ``s`` (as upstream's stored object points).
    """
    cols, rows = _check_pattern_size(pattern_size)
    r, c = np.mgrid[0:rows, 0:cols]
    points = np.zeros((rows * cols, 3))
    points[:, 0] = c.ravel() * square_size_mm
    points[:, 1] = r.ravel() * square_size_mm
    return points


def detect_chessboard(
    image: npt.ArrayLike,
    *,
    pattern_size: tuple[int, int],
    method: ChessboardDetector = "sb",
) -> FloatArray | None:
    """Find the inner corners of a chessboard to sub-pixel accuracy; None if not all are found.

    ``pattern_size`` is (columns, rows) of inner corners, OpenCV's order, e.g.
    (14, 10). Returns (columns * rows, 2) px, row by row, matching
    :func:`chessboard_object_points`. ``method`` is ``"sb"`` or ``"classic"``
    (see the module docstring for why ``"sb"`` is the default).

    A board whose counts are both even or both odd is symmetric under a 180 deg
    turn and the detector's choice of first corner is arbitrary; the order is
    then fixed so that the grid runs from the image's top-left towards its
    bottom-right (``(last - first) . (1, 1) > 0``), which keeps the board frame
    consistent between views of a camera that does not roll past 90 deg.
    """
    cols, rows = _check_pattern_size(pattern_size)
    gray = to_gray(image)
    if method == "sb":
        found, corners = cv2.findChessboardCornersSB(gray, (cols, rows), flags=0)
        if not found or corners is None:
            return None
    elif method == "classic":
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        found, corners = cv2.findChessboardCorners(gray, (cols, rows), flags=flags)
        if not found or corners is None:
            return None
        # Half-window 0.4 x the smallest corner spacing (at most 11 px): the window
        # then never reaches a neighbouring corner, which would pull the fit off.
        spacing = _min_corner_spacing_px(corners.reshape(-1, 2).astype(np.float64), cols, rows)
        half = int(max(2, min(11, math.floor(0.4 * spacing))))
        corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), _SUBPIX_CRITERIA)
    else:
        raise CalibrationError(
            "bad_input", f"unknown chessboard detector {method!r}; choose 'sb' or 'classic'"
        )
    points = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    if points.shape[0] != cols * rows:
        return None
    if (cols + rows) % 2 == 0 and float(np.sum(points[-1] - points[0])) < 0.0:
        points = points[::-1].copy()
    return points


# ---------------------------------------------------------------------------- the core


def _check_view_points(
    object_points: npt.ArrayLike, image_points: npt.ArrayLike, name: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    try:
        obj = np.asarray(object_points, dtype=np.float64)
        img = np.asarray(image_points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError("bad_input", f"{name}: points are not numeric: {exc}") from None
    if obj.ndim != 2 or obj.shape[1] != 3 or img.ndim != 2 or img.shape[1] != 2:
        raise CalibrationError(
            "bad_input",
            f"{name}: object points must be (K, 3) and image points (K, 2), "
            f"got {obj.shape} and {img.shape}",
        )
    if len(obj) != len(img):
        raise CalibrationError(
            "bad_input", f"{name}: {len(obj)} object points but {len(img)} image points"
        )
    if not (np.isfinite(obj).all() and np.isfinite(img).all()):
        raise CalibrationError("bad_input", f"{name}: points have a non-finite value")
    if np.any(obj[:, 2] != 0.0):
        raise CalibrationError(
            "bad_input", f"{name}: object points must lie in the target plane z = 0"
        )
    return obj.astype(np.float32), img.astype(np.float32)


def calibrate_from_points(
    object_points: Sequence[npt.ArrayLike],
    image_points: Sequence[npt.ArrayLike],
    *,
    image_size: tuple[int, int],
    view_names: Sequence[str] | None = None,
    max_view_rms_px: float | None = None,
    min_views: int = 3,
    flags: int = 0,
    pattern: str = "planar target",
    rejected_views: Sequence[tuple[str, str]] = (),
) -> CameraCalibration:
    """Calibrate from matched board and image points, one pair of arrays per view.

    ``object_points[i]`` (K_i, 3) mm in the board plane (``z = 0``) and
    ``image_points[i]`` (K_i, 2) px; ``image_size`` (width, height) px.
    ``flags`` are ``cv2.CALIB_*`` flags; the default 0 (5 distortion
    coefficients, nothing fixed) is what scikit-surgery used, and reproduces its
    stored calibration. A view with fewer than 4 points is rejected. With
    ``max_view_rms_px``, while the worst view's RMS is above it, that view is
    dropped and the calibration redone: one at a time, because a gross view
    inflates the residuals of good ones too. ``rejected_views`` are earlier
    refusals (e.g. no board found) to carry into the result.

    Raises CalibrationError: ``bad_input`` (shapes, non-finite, non-planar,
    parameters), ``too_few_poses`` (fewer than ``min_views`` usable views),
    ``degenerate`` (OpenCV found no solution).
    """
    n_views = len(object_points)
    if len(image_points) != n_views:
        raise CalibrationError(
            "bad_input", f"{n_views} object point sets but {len(image_points)} image point sets"
        )
    names = [f"view {i}" for i in range(n_views)] if view_names is None else list(view_names)
    if len(names) != n_views:
        raise CalibrationError("bad_input", f"{len(names)} view names for {n_views} views")
    try:
        width, height = (int(n) for n in image_size)
    except (TypeError, ValueError):
        raise CalibrationError(
            "bad_input", f"image_size must be (width, height), got {image_size!r}"
        ) from None
    if width <= 0 or height <= 0:
        raise CalibrationError("bad_input", f"image_size must be positive, got {image_size!r}")
    if isinstance(min_views, bool) or not isinstance(min_views, int) or min_views < 1:
        raise CalibrationError("bad_input", f"min_views must be an integer >= 1, got {min_views!r}")
    if max_view_rms_px is not None and not (
        math.isfinite(max_view_rms_px) and max_view_rms_px > 0.0
    ):
        raise CalibrationError(
            "bad_input", f"max_view_rms_px must be a positive number, got {max_view_rms_px!r}"
        )

    rejected = [(str(n), str(r)) for n, r in rejected_views]
    views: list[tuple[str, npt.NDArray[np.float32], npt.NDArray[np.float32]]] = []
    for name, obj_in, img_in in zip(names, object_points, image_points, strict=True):
        obj, img = _check_view_points(obj_in, img_in, name)
        if len(obj) < MIN_POINTS_PER_VIEW:
            rejected.append((name, f"only {len(obj)} points, need {MIN_POINTS_PER_VIEW}"))
        else:
            views.append((name, obj, img))

    while True:
        if len(views) < min_views:
            why = "; ".join(f"{n}: {r}" for n, r in rejected[:3])
            more = f" (+{len(rejected) - 3} more)" if len(rejected) > 3 else ""
            raise CalibrationError(
                "too_few_poses",
                f"{len(views)} usable views, need at least {min_views}"
                + (f"; rejected {why}{more}" if rejected else ""),
            )
        try:
            rms, K, D, rvecs, tvecs, std_intrinsics, _, per_view = _calibrate_camera_extended(
                [v[1] for v in views], [v[2] for v in views], (width, height), None, None,
                flags=flags,
            )  # fmt: skip
        except cv2.error as exc:
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2.error"
            raise CalibrationError("degenerate", f"OpenCV calibration failed: {message}") from None
        per_view_rms = np.asarray(per_view, dtype=np.float64).ravel()
        worst = int(np.argmax(per_view_rms))
        if max_view_rms_px is None or per_view_rms[worst] <= max_view_rms_px:
            break
        rejected.append(
            (
                views[worst][0],
                f"reprojection RMS {per_view_rms[worst]:.2f} px above "
                f"max_view_rms_px {max_view_rms_px:g} px",
            )
        )
        del views[worst]

    if not (np.isfinite(K).all() and np.isfinite(D).all() and math.isfinite(rms)):
        raise CalibrationError("degenerate", "OpenCV calibration gave a non-finite result")
    poses = np.stack(
        [
            make_rigid(cv2.Rodrigues(np.asarray(r, dtype=np.float64))[0], np.ravel(t))
            for r, t in zip(rvecs, tvecs, strict=True)
        ]
    )
    std = np.asarray(std_intrinsics, dtype=np.float64).ravel()
    return CameraCalibration(
        camera_matrix=np.asarray(K, dtype=np.float64),
        dist_coeffs=np.asarray(D, dtype=np.float64).ravel(),
        image_size=(width, height),
        rms_reprojection_px=float(rms),
        per_view_rms_px=tuple(float(e) for e in per_view_rms),
        view_names=tuple(v[0] for v in views),
        rejected_views=tuple(rejected),
        pattern=pattern,
        intrinsics_std_px=(float(std[0]), float(std[1]), float(std[2]), float(std[3])),
        T_camera_from_target=poses,
    )


def _gray_views(
    images: Sequence[tuple[str, npt.ArrayLike]],
) -> tuple[list[tuple[str, npt.NDArray[np.uint8]]], list[tuple[str, str]], tuple[int, int]]:
    """Grey images of the same size as the first good one; the others rejected with a reason."""
    grays: list[tuple[str, npt.NDArray[np.uint8]]] = []
    rejected: list[tuple[str, str]] = []
    size: tuple[int, int] | None = None
    for item in images:
        try:
            name, image = item
        except (TypeError, ValueError):
            raise CalibrationError(
                "bad_input", "images must be a sequence of (name, image array) pairs"
            ) from None
        name = str(name)
        try:
            gray = to_gray(image)
        except CalibrationError as exc:
            rejected.append((name, str(exc)))
            continue
        view_size = _image_size(gray)
        if size is None:
            size = view_size
        elif view_size != size:
            rejected.append(
                (
                    name,
                    f"image size {view_size[0]}x{view_size[1]} differs from "
                    f"{size[0]}x{size[1]} of the first view",
                )
            )
            continue
        grays.append((name, gray))
    return grays, rejected, size or (0, 0)


def calibrate_chessboard(
    images: Sequence[tuple[str, npt.ArrayLike]],
    *,
    pattern_size: tuple[int, int],
    square_size_mm: float,
    max_view_rms_px: float | None = None,
    min_views: int = 3,
    method: ChessboardDetector = "sb",
) -> CameraCalibration:
    """Detect a chessboard in each ``(name, image)`` and calibrate from the views where it is found.

    ``pattern_size`` (columns, rows) of inner corners, ``square_size_mm`` the
    printed square side. A view whose board is not found (or whose image is not
    usable) is rejected with its reason; the rest as :func:`calibrate_from_points`.
    """
    cols, rows = _check_pattern_size(pattern_size)
    if not (math.isfinite(square_size_mm) and square_size_mm > 0.0):
        raise CalibrationError(
            "bad_input", f"square_size_mm must be a positive number, got {square_size_mm!r}"
        )
    board = chessboard_object_points((cols, rows), square_size_mm)
    grays, rejected, size = _gray_views(images)
    names: list[str] = []
    image_points: list[FloatArray] = []
    for name, gray in grays:
        corners = detect_chessboard(gray, pattern_size=(cols, rows), method=method)
        if corners is None:
            rejected.append((name, f"chessboard {cols}x{rows} not found"))
            continue
        names.append(name)
        image_points.append(corners)
    return calibrate_from_points(
        [board] * len(names),
        image_points,
        image_size=size,
        view_names=names,
        max_view_rms_px=max_view_rms_px,
        min_views=min_views,
        pattern=f"chessboard {cols}x{rows} inner corners, {square_size_mm:g} mm squares",
        rejected_views=rejected,
    )


# ---------------------------------------------------------------------------- ChArUco


def charuco_board(
    *,
    squares_x: int,
    squares_y: int,
    square_mm: float,
    marker_mm: float,
    dictionary: str = "DICT_4X4_50",
    legacy_pattern: bool = False,
) -> Any:
    """Return the ``cv2.aruco.CharucoBoard`` (mm units) for these parameters.

    ``squares_x`` by ``squares_y`` squares (not inner corners); ``dictionary``
    is a ``cv2.aruco`` predefined dictionary name. ``legacy_pattern`` for
    boards with an even number of rows printed by OpenCV before 4.6.0 (OpenCV
    issue 23152). Board frame: origin at the board's top-left outer corner,
    x along the squares_x direction, y along squares_y, z into the board.
    Raises CalibrationError("bad_input") for nonsensical parameters.
    """
    if min(squares_x, squares_y) < 2:
        raise CalibrationError(
            "bad_input", f"a ChArUco board needs at least 2x2 squares, got {squares_x}x{squares_y}"
        )
    if not (math.isfinite(square_mm) and math.isfinite(marker_mm) and 0 < marker_mm < square_mm):
        raise CalibrationError(
            "bad_input",
            f"need 0 < marker_mm < square_mm, got marker {marker_mm!r} mm, square {square_mm!r} mm",
        )
    dictionary_id = getattr(cv2.aruco, dictionary, None) if dictionary.startswith("DICT_") else None
    if not isinstance(dictionary_id, int):
        raise CalibrationError(
            "bad_input", f"unknown ArUco dictionary {dictionary!r} (e.g. 'DICT_4X4_50')"
        )
    board = cv2.aruco.CharucoBoard(
        (int(squares_x), int(squares_y)),
        float(square_mm),
        float(marker_mm),
        cv2.aruco.getPredefinedDictionary(dictionary_id),
    )
    board.setLegacyPattern(bool(legacy_pattern))
    return board


def _detect_charuco(
    detector: Any, board: Any, gray: npt.NDArray[np.uint8], min_corners: int
) -> tuple[FloatArray, FloatArray] | str:
    """Board and image points of one view, or the reason there are none usable."""
    corners, ids, _, _ = detector.detectBoard(gray)
    n = 0 if ids is None else len(ids)
    if n == 0:
        return "no ChArUco corners found"
    if n < min_corners:
        return f"only {n} ChArUco corners found, need {min_corners}"
    if board.checkCharucoCornersCollinear(ids):
        return f"the {n} ChArUco corners found lie on one line"
    obj, img = board.matchImagePoints(corners, ids)
    return (
        np.asarray(obj, dtype=np.float64).reshape(-1, 3),
        np.asarray(img, dtype=np.float64).reshape(-1, 2),
    )


def detect_charuco(
    image: npt.ArrayLike, *, board: Any, min_corners: int = 6
) -> tuple[FloatArray, FloatArray] | None:
    """Find the ChArUco corners of ``board`` (from :func:`charuco_board`) in an image.

    Returns ``(object_points (K, 3) mm, image_points (K, 2) px)`` for the K
    corners found (only visible corners; the board may be partly out of view),
    or None with fewer than ``min_corners`` or collinear corners.
    """
    found = _detect_charuco(cv2.aruco.CharucoDetector(board), board, to_gray(image), min_corners)
    return None if isinstance(found, str) else found


def calibrate_charuco(
    images: Sequence[tuple[str, npt.ArrayLike]],
    *,
    squares_x: int,
    squares_y: int,
    square_mm: float,
    marker_mm: float,
    dictionary: str = "DICT_4X4_50",
    legacy_pattern: bool = False,
    min_corners: int = 6,
    max_view_rms_px: float | None = None,
    min_views: int = 3,
) -> CameraCalibration:
    """Detect a ChArUco board (``cv2.aruco.CharucoDetector``) in each image and calibrate.

    Board parameters as :func:`charuco_board`. Unlike a chessboard, a view
    needs only part of the board: each corner is identified by its neighbouring
    markers (S. Garrido-Jurado et al., "Automatic generation and detection of
    highly reliable fiducial markers under occlusion", Pattern Recognition
    47(6):2280-2292, 2014). A view with fewer than ``min_corners`` corners, or
    with collinear ones, is rejected with its reason; the rest as
    :func:`calibrate_from_points`.
    """
    if isinstance(min_corners, bool) or not isinstance(min_corners, int) or min_corners < 4:
        raise CalibrationError(
            "bad_input", f"min_corners must be an integer >= 4, got {min_corners!r}"
        )
    board = charuco_board(
        squares_x=squares_x,
        squares_y=squares_y,
        square_mm=square_mm,
        marker_mm=marker_mm,
        dictionary=dictionary,
        legacy_pattern=legacy_pattern,
    )
    detector = cv2.aruco.CharucoDetector(board)
    grays, rejected, size = _gray_views(images)
    names: list[str] = []
    object_points: list[FloatArray] = []
    image_points: list[FloatArray] = []
    for name, gray in grays:
        found = _detect_charuco(detector, board, gray, min_corners)
        if isinstance(found, str):
            rejected.append((name, found))
            continue
        names.append(name)
        object_points.append(found[0])
        image_points.append(found[1])
    return calibrate_from_points(
        object_points,
        image_points,
        image_size=size,
        view_names=names,
        max_view_rms_px=max_view_rms_px,
        min_views=min_views,
        pattern=(
            f"charuco {squares_x}x{squares_y} squares, {square_mm:g} mm squares, "
            f"{marker_mm:g} mm markers, {dictionary}"
        ),
        rejected_views=rejected,
    )

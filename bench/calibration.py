"""Calibration speed and accuracy, side by side with the plain reference, in one run.

    .venv/bin/python bench/calibration.py [--repeats N]

1. Pivot calibration of 1000 synthetic poses (a hand pivoting a 160 mm pointer through
   a 10-40 degree cone, 0.25 mm / 0.05 deg tracker noise, seeded), and of the 1151 real
   poses of scikit-surgery's recording when ../shared/data is present:
   ``calibration.pivot.pivot_calibration`` (SVD least squares, input checks, rotation
   gates, residual figures) against the reference a reader would write first: the same
   stacked system ``[R_i -I] x = -t_i`` solved by its normal equations
   ``(A^T A) x = A^T b`` in plain numpy. Same result check: the two tips must agree to
   1e-6 mm. Then ``pivot_calibration_ransac`` on the synthetic poses with 10% of them
   slipped (tip 5-20 mm off the divot) against the same plain solve on the same poses:
   RANSAC's price in time, and what it buys in tip error against the known truth.
2. Camera calibration of the 12 real 640x480 chessboard views of scikit-surgerybard
   (14x10 inner corners, 6 mm), detection included: ``calibration.camera.
   calibrate_chessboard`` against OpenCV's tutorial recipe (``findChessboardCorners``,
   ``cornerSubPix`` with an 11x11 window, ``calibrateCamera``). Skipped with a message
   when the images are absent. The intrinsics scikit-surgerybard stored with the images
   are printed for comparison.

Times are the median of ``--repeats`` calls in this process (images are loaded once,
before timing). Ratios are ornav / reference: above 1 means ornav is slower. Nothing
here asserts a timing. On a busy machine with few cores, OpenBLAS's worker threads make
the small SVD inside ``pivot_calibration`` (3N x 6) up to 10x slower than one thread
does (measured: 8 ms against 0.75 ms on 2 loaded cores); the header prints
``OPENBLAS_NUM_THREADS``, and ``OPENBLAS_NUM_THREADS=1`` gives the single-thread figures.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
# `python bench/calibration.py` puts bench/ first on sys.path, where this file would shadow
# the calibration package: drop it, and put the repository first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from calibration.pivot import pivot_calibration, pivot_calibration_ransac  # noqa: E402
from nav.transforms import axis_angle_to_matrix, make_rigid  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
PIVOT_DIR = SHARED / "scikit-surgerycore/tests/data/PivotCalibration"
CAMERA_DIR = SHARED / "scikit-surgerybard/data/calibration/matts_mbp_640_x_480"
TRUE_TIP = np.array([2.0, -3.0, -160.0])
TRUE_PIVOT = np.array([30.0, 120.0, -1250.0])
UPSTREAM_TIP = np.array([-14.476, 395.143, -7.558])

R = TypeVar("R")


def timed(function: Callable[[], R], repeats: int) -> tuple[float, R]:
    """Median wall time of ``repeats`` calls in ms, and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), result


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in cells[1:]:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


# --- pivot ----------------------------------------------------------------------------


def synthetic_pivot(n: int, *, slipped_fraction: float, seed: int) -> np.ndarray:
    """``T_tracker_from_pointer`` (n, 4, 4) pivoting about TRUE_PIVOT, with noise."""
    rng = np.random.default_rng(seed)
    Ts = np.empty((n, 4, 4))
    for i in range(n):
        s = i / n
        tilt = math.radians(25.0 + 15.0 * math.sin(2 * math.pi * 3.0 * s))
        R_i = axis_angle_to_matrix([0, 0, 1], 2 * math.pi * 2.0 * s) @ axis_angle_to_matrix(
            [1, 0, 0], tilt
        )
        R_i = R_i @ axis_angle_to_matrix(rng.normal(size=3), math.radians(0.05) * rng.normal())
        tip = TRUE_TIP.copy()
        if rng.random() < slipped_fraction:
            tip += rng.normal(size=3) / 1.7 * rng.uniform(5.0, 20.0)  # the tip left the divot
        Ts[i] = make_rigid(R_i, TRUE_PIVOT - R_i @ tip + rng.normal(0.0, 0.25 / math.sqrt(3), 3))
    return Ts


def naive_pivot(Ts: np.ndarray) -> tuple[np.ndarray, float]:
    """The stacked system ``[R_i -I] [p_tip; p_pivot] = -t_i`` by its normal equations."""
    n = len(Ts)
    A = np.zeros((3 * n, 6))
    A[:, :3] = Ts[:, :3, :3].reshape(3 * n, 3)
    A[:, 3:] = -np.tile(np.eye(3), (n, 1))
    b = -Ts[:, :3, 3].reshape(3 * n)
    x = np.linalg.solve(A.T @ A, A.T @ b)
    return x[:3], math.sqrt(float(np.mean((A @ x - b) ** 2)))


def section_pivot(repeats: int) -> None:
    clean = synthetic_pivot(1000, slipped_fraction=0.0, seed=1)
    slipped = synthetic_pivot(1000, slipped_fraction=0.1, seed=2)
    cases: list[tuple[str, np.ndarray, Callable[[np.ndarray], Any], np.ndarray | None]] = [
        ("1000 poses, plain", clean, pivot_calibration, TRUE_TIP),
        ("1000 poses, 10% slipped, RANSAC", slipped, pivot_calibration_ransac, TRUE_TIP),
    ]
    if PIVOT_DIR.is_dir():
        from calibration.files import read_matrix_dir

        cases.append(
            ("1151 real poses, plain", read_matrix_dir(PIVOT_DIR), pivot_calibration, None)
        )
    else:
        print(f"(real pivot poses skipped: {PIVOT_DIR} is absent)")
    rows = []
    for name, Ts, ornav, truth in cases:
        ms_ornav, result = timed(functools.partial(ornav, Ts), repeats)
        ms_naive, (tip_naive, rms_naive) = timed(functools.partial(naive_pivot, Ts), repeats)
        reference_tip = truth if truth is not None else UPSTREAM_TIP
        label = "truth" if truth is not None else "upstream"
        rows.append(
            [
                name,
                f"{ms_ornav:.2f}",
                f"{ms_naive:.2f}",
                f"{ms_ornav / ms_naive:.1f}x",
                f"{result.rms_error_mm:.3f}",
                f"{rms_naive:.3f}",
                f"{np.linalg.norm(result.p_tip_in_pointer - reference_tip):.3f} ({label})",
                f"{np.linalg.norm(tip_naive - reference_tip):.3f}",
                f"{np.linalg.norm(result.p_tip_in_pointer - tip_naive):.2g}",
            ]
        )
    print(
        table(
            f"pivot calibration: ornav vs plain normal equations (median of {repeats} calls)",
            [
                "case",
                "ornav ms",
                "naive ms",
                "ratio",
                "ornav RMS mm",
                "naive RMS mm",
                "ornav tip err mm",
                "naive tip err mm",
                "|tip diff| mm",
            ],
            rows,
        )
    )
    print(
        "  RMS: over the stacked x, y, z residual components (RANSAC: over its inliers).\n"
        "  ornav does more per call than the reference: input and rigidity checks, rotation\n"
        "  spread gates, per-pose residual norms; its solve is SVD (lstsq), which keeps its\n"
        "  accuracy where A^T A squares the condition number."
    )


# --- camera ---------------------------------------------------------------------------


def naive_camera(
    images: Sequence[tuple[str, np.ndarray]], pattern: tuple[int, int], square_mm: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """OpenCV's calibration tutorial, as written there."""
    import cv2

    board = np.zeros((pattern[0] * pattern[1], 3), np.float32)
    board[:, :2] = np.mgrid[0 : pattern[0], 0 : pattern[1]].T.reshape(-1, 2) * square_mm
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.001)
    object_points, image_points = [], []
    size = (0, 0)
    for _name, image in images:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        size = gray.shape[::-1]
        found, corners = cv2.findChessboardCorners(gray, pattern, None)
        if found:
            object_points.append(board)
            image_points.append(cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), criteria))
    rms, K, dist, _rvecs, _tvecs = cv2.calibrateCamera(
        object_points, image_points, size, None, None
    )
    return K, dist.reshape(-1), float(rms)


def section_camera(repeats: int) -> None:
    if not CAMERA_DIR.is_dir():
        print(f"camera calibration skipped: {CAMERA_DIR} is absent (no ../shared/data)")
        return
    import cv2

    from calibration.camera import calibrate_chessboard

    paths = sorted(CAMERA_DIR.glob("calib.images.*.png"))
    images: list[tuple[str, np.ndarray]] = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(f"camera calibration skipped: {path} is not readable")
            return
        images.append((path.name, np.asarray(image)))
    pattern, square_mm = (14, 10), 6.0
    ms_ornav, result = timed(
        lambda: calibrate_chessboard(images, pattern_size=pattern, square_size_mm=square_mm),
        repeats,
    )
    ms_naive, (K_naive, _dist, rms_naive) = timed(
        lambda: naive_camera(images, pattern, square_mm), repeats
    )
    K = result.camera_matrix
    stored = np.loadtxt(CAMERA_DIR / "calib.intrinsics.txt")

    def intrinsics(K: np.ndarray) -> str:
        return f"{K[0, 0]:.1f} {K[1, 1]:.1f} {K[0, 2]:.1f} {K[1, 2]:.1f}"

    rows = [
        [
            f"{len(images)} views 640x480",
            f"{ms_ornav:.0f}",
            f"{ms_naive:.0f}",
            f"{ms_ornav / ms_naive:.1f}x",
            f"{result.rms_reprojection_px:.3f}",
            f"{rms_naive:.3f}",
            intrinsics(K),
            intrinsics(K_naive),
        ]
    ]
    print(
        table(
            f"camera calibration: ornav vs OpenCV's tutorial recipe (median of {repeats} calls)",
            [
                "case",
                "ornav ms",
                "naive ms",
                "ratio",
                "ornav RMS px",
                "naive RMS px",
                "ornav fx fy cx cy",
                "naive fx fy cx cy",
            ],
            rows,
        )
    )
    print(
        f"  scikit-surgerybard's stored intrinsics for these views: {intrinsics(stored)}\n"
        f"  RMS: OpenCV's reprojection RMS over every corner of every view; views used: "
        f"ornav {len(result.view_names)}, rejected {len(result.rejected_views)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="calls per timing (pivot)")
    args = parser.parse_args(argv)
    print(
        f"ornav calibration benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}, load average {os.getloadavg()[0]:.2f}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )
    section_pivot(args.repeats)
    print()
    section_camera(max(1, args.repeats // 5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

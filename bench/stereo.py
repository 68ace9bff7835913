"""Stereo reconstruction time per pair, side by side with OpenCV's plain SGBM, one run.

    .venv/bin/python bench/stereo.py [--repeats N]

The real Open-CAS liver pair (720x576, ../shared/data; skipped with a message when absent)
and the same pair resized to 640x480 (calibration scaled to match). ``tracking.stereo``'s
whole pipeline (rectify, SGBM, mask, points, voxel and outlier filters, confidence, the
calibration row check) against the reference a reader writes first: ``StereoSGBM.compute``
alone on the grey images, with the same matcher settings. Median of ``--repeats`` calls;
ratio = ornav / plain (above 1: ornav slower, for the work the plain call does not do).
The reconstruction error against the CT surface inside the evaluation mask is printed
with it. Nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracking.stereo import (  # noqa: E402
    StereoCalibration,
    StereoParams,
    StereoReconstructor,
    sgbm_matcher,
)

DATA = (
    Path(__file__).resolve().parents[2]
    / "shared/data/scikit-surgerysurfacematch/tests/data/open_cas_tmi/Stereo_SD_d_complete_22"
)


def _median_ms(call: Callable[..., object], args: tuple[object, ...], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(*args)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _scaled(calibration: StereoCalibration, size: tuple[int, int]) -> StereoCalibration:
    sx, sy = size[0] / calibration.image_size[0], size[1] / calibration.image_size[1]
    S = np.diag([sx, sy, 1.0])
    return StereoCalibration(
        S @ calibration.K_left,
        calibration.dist_left,
        S @ calibration.K_right,
        calibration.dist_right,
        calibration.T_right_from_left,
        size,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not present (../shared/data)")
        return 0
    name = DATA.name
    left = cv2.imread(str(DATA / f"{name}_IMG_left.bmp"))
    right = cv2.imread(str(DATA / f"{name}_IMG_right.bmp"))
    mask = cv2.imread(str(DATA / f"{name}_MASK_eval_inverted.png"), cv2.IMREAD_GRAYSCALE)
    full = StereoCalibration.from_text_files(DATA, (left.shape[1], left.shape[0]))
    mesh = o3d.io.read_triangle_mesh(str(DATA / f"{name}_CT_cut.stl"))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    print(f"# stereo reconstruction, Open-CAS liver pair, median of {args.repeats}")
    print("| size | ornav (ms) | plain SGBM (ms) | ratio | points | error median / p90 (mm) |")
    print("|---|---|---|---|---|---|")
    for size in ((720, 576), (640, 480)):
        calibration = full if size == full.image_size else _scaled(full, size)
        l_img = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
        r_img = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
        m_img = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        params = StereoParams()
        reconstructor = StereoReconstructor(calibration, params)
        plain = sgbm_matcher(params)  # the same matcher, called alone
        gl, gr = cv2.cvtColor(l_img, cv2.COLOR_BGR2GRAY), cv2.cvtColor(r_img, cv2.COLOR_BGR2GRAY)
        ours_ms = _median_ms(reconstructor.reconstruct, (l_img, r_img, m_img), args.repeats)
        plain_ms = _median_ms(plain.compute, (gl, gr, None), args.repeats)
        cloud = reconstructor.reconstruct(l_img, r_img, m_img)
        d = scene.compute_distance(o3d.core.Tensor(cloud.points_camera.astype(np.float32))).numpy()
        print(
            f"| {size[0]}x{size[1]} | {ours_ms:.1f} | {plain_ms:.1f} | {ours_ms / plain_ms:.2f} "
            f"| {len(d)} | {np.median(d):.2f} / {np.percentile(d, 90):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

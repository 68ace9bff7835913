"""ArUco rigid-body tracking speed on one core, side by side with scikit-surgery's method.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/aruco.py [--passes N] [--no-pin]

One core means: ``cv2.setNumThreads(1)``, OpenBLAS held to one thread (set here before
numpy loads unless the environment says otherwise), and the process pinned to one CPU
with ``sched_setaffinity`` (``--no-pin`` to leave it free). The header prints all three.

Videos (from ``../shared/data``; skipped with a message when absent), 640x480:

- ``multipattern.avi`` (10 frames): scikit-surgery's reference (12 tags) and pointer
  (6 tags), ``DICT_ARUCO_ORIGINAL``, scikit-surgerybard's intrinsics for that camera.
  scikit-surgerybard's copy of the file is byte-identical (checked, and said so).
- ``output.avi`` (10 frames): one 33 mm ``DICT_4X4_50`` tag, ``tag_0.txt``.
- ``12markers.avi`` (1 frame): twelve ``DICT_6X6_250`` tags, ids 1-12, each tracked as a
  single-tag body of a nominal 40 mm (no definition ships with it), intrinsics
  ``calibration.txt``.

Pipelines, each timed per frame on grey frames decoded before timing (detection, then
pose of every body), frames taken round-robin for ``--passes`` passes:

- ``ornav``: ``tracking.aruco.ArucoTracker`` (dictionary restricted to the bodies' ids,
  sub-pixel corners, IPPE/SQPnP + LM, outlier-tag rejection).
- ``reference``: what scikit-surgeryarucotracker does: ``ArucoDetector`` with the full
  predefined dictionary and default parameters, then per body ``cv2.solvePnP``
  (ITERATIVE) over all corners of its visible tags.
- ``ornav, full dict``: ornav's settings with the full dictionary: how much of the gain
  is the restricted dictionary.

Frames/s is 1000 / mean ms per frame. Ratio is reference / ornav mean time: above 1
means ornav is faster. The last column is the largest distance between the body origins
ornav and the reference find (mm, over all frames and bodies): the two use different
corner refinement, so they agree to about a millimetre, not exactly. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one core

import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from tracking.aruco import (  # noqa: E402
    ArucoTracker,
    RigidBodyDefinition,
    read_camera_intrinsics,
)

SHARED = REPO.parent / "shared" / "data"
ARUCO = SHARED / "scikit-surgeryarucotracker" / "data"
BARD = SHARED / "scikit-surgerybard" / "data"
BARD_CALIBRATION = BARD / "calibration" / "matts_mbp_640_x_480" / "calib.intrinsics.txt"

Gray = npt.NDArray[np.uint8]
Poses = dict[str, npt.NDArray[np.float64] | None]


@dataclass(frozen=True)
class Case:
    title: str
    video: Path
    calibration: Path
    bodies: tuple[RigidBodyDefinition, ...]


def _cases() -> list[Case]:
    cases = []
    if (ARUCO / "multipattern.avi").is_file() and BARD_CALIBRATION.is_file():
        bodies = (
            RigidBodyDefinition.from_file(ARUCO / "reference.txt"),
            RigidBodyDefinition.from_file(ARUCO / "pointer.txt"),
        )
        cases.append(
            Case("multipattern.avi: reference + pointer", ARUCO / "multipattern.avi",
                 BARD_CALIBRATION, bodies)
        )  # fmt: skip
        cases.append(
            Case("output.avi: tag_0 (DICT_4X4_50)", ARUCO / "output.avi", BARD_CALIBRATION,
                 (RigidBodyDefinition.from_file(ARUCO / "tag_0.txt", name="tag0",
                                                dictionary="DICT_4X4_50"),))
        )  # fmt: skip
    if (ARUCO / "12markers.avi").is_file():
        singles = tuple(
            RigidBodyDefinition.single_tag(f"tag{i}", i, 40.0, dictionary="DICT_6X6_250")
            for i in range(1, 13)
        )
        cases.append(
            Case("12markers.avi: 12 single tags (DICT_6X6_250)", ARUCO / "12markers.avi",
                 ARUCO / "calibration.txt", singles)
        )  # fmt: skip
    return cases


def _frames(video: Path) -> list[Gray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8))
    capture.release()
    return frames


class Reference:
    """scikit-surgeryarucotracker's method: full dictionary, default detector, solvePnP."""

    def __init__(
        self,
        camera_matrix: npt.NDArray[np.float64],
        dist_coeffs: npt.NDArray[np.float64],
        bodies: Sequence[RigidBodyDefinition],
    ) -> None:
        self.K, self.dist = camera_matrix, dist_coeffs
        self.bodies = bodies
        self.detectors = {
            name: cv2.aruco.ArucoDetector(
                cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name)),
                cv2.aruco.DetectorParameters(),
            )
            for name in dict.fromkeys(b.dictionary for b in bodies)
        }

    def detect(self, gray: Gray) -> dict[str, tuple[Any, Any]]:
        return {name: d.detectMarkers(gray)[:2] for name, d in self.detectors.items()}

    def estimate(self, found: dict[str, tuple[Any, Any]]) -> Poses:
        poses: Poses = {}
        for body in self.bodies:
            corners, ids = found[body.dictionary]
            obj, img = [], []
            for c, tag_id in zip(corners, [] if ids is None else ids.ravel(), strict=True):
                if int(tag_id) in body.tag_ids:
                    obj.append(body.p_corners_in_body[body.tag_ids.index(int(tag_id))])
                    img.append(np.asarray(c, dtype=np.float64).reshape(4, 2))
            if not obj:
                poses[body.name] = None
                continue
            ok, rvec, tvec = cv2.solvePnP(
                np.concatenate(obj), np.concatenate(img), self.K, self.dist
            )
            T = np.eye(4)
            T[:3, :3] = cv2.Rodrigues(rvec)[0]
            T[:3, 3] = tvec.ravel()
            poses[body.name] = T if ok else None
        return poses


def _ornav(tracker: ArucoTracker) -> tuple[Callable[[Gray], Any], Callable[[Any, Gray], Poses]]:
    def estimate(found: Any, gray: Gray) -> Poses:
        return {
            name: pose.T_camera_from_body if pose.status.value == "OK" else None
            for name, pose in tracker.estimate(found, gray).items()
        }

    return tracker.detect, estimate


def _time(
    detect: Callable[[Gray], Any],
    estimate: Callable[[Any, Gray], Poses],
    frames: Sequence[Gray],
    passes: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[Poses]]:
    detect_ms, pose_ms, poses = [], [], []
    for k in range(passes * len(frames)):
        gray = frames[k % len(frames)]
        t0 = time.perf_counter()
        found = detect(gray)
        t1 = time.perf_counter()
        result = estimate(found, gray)
        t2 = time.perf_counter()
        detect_ms.append((t1 - t0) * 1e3)
        pose_ms.append((t2 - t1) * 1e3)
        if k < len(frames):
            poses.append(result)
    return np.array(detect_ms), np.array(pose_ms), poses


def _max_distance_mm(a: list[Poses], b: list[Poses]) -> float:
    distances = []
    for pa, pb in zip(a, b, strict=True):
        for name, Ta in pa.items():
            Tb = pb.get(name)
            if Ta is not None and Tb is not None:
                distances.append(float(np.linalg.norm(Ta[:3, 3] - Tb[:3, 3])))
    return max(distances) if distances else float("nan")


def _run_case(case: Case, passes: int) -> None:
    frames = _frames(case.video)
    camera = read_camera_intrinsics(case.calibration)
    K, dist = camera.camera_matrix, camera.dist_coeffs
    tracker = ArucoTracker(K, dist, case.bodies)
    full = ArucoTracker(K, dist, case.bodies, restrict_dictionary=False)
    reference = Reference(K, dist, case.bodies)
    rows = []
    results: dict[str, tuple[Any, ...]] = {}
    for name, (detect, estimate) in {
        "ornav": _ornav(tracker),
        "reference": (reference.detect, lambda found, _gray: reference.estimate(found)),
        "ornav, full dict": _ornav(full),
    }.items():
        for gray in frames[:2]:  # warm-up: first calls allocate
            estimate(detect(gray), gray)
        results[name] = _time(detect, estimate, frames, passes)
    ornav_mean = float(np.mean(results["ornav"][0] + results["ornav"][1]))
    for name, (detect_ms, pose_ms, poses) in results.items():
        total = detect_ms + pose_ms
        seen = sum(p is not None for frame in poses for p in frame.values())
        rows.append(
            [
                name,
                f"{np.median(detect_ms):.2f}",
                f"{np.median(pose_ms):.3f}",
                f"{np.median(total):.2f}",
                f"{np.percentile(total, 99):.2f}",
                f"{1e3 / np.mean(total):.0f}",
                f"{np.mean(total) / ornav_mean:.2f}",
                f"{seen}/{len(poses) * len(case.bodies)}",
                "-" if name == "ornav" else f"{_max_distance_mm(results['ornav'][2], poses):.2f}",
            ]
        )
    header = [
        "pipeline", "detect p50", "pose p50", "ms p50", "ms p99", "frames/s", "ratio",
        "poses", "vs ornav mm",
    ]  # fmt: skip
    print(f"\n{case.title}: {len(frames)} frames x {passes} passes")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--passes", type=int, default=30, help="passes over each video")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    pinned = "no"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"CPU {cpu}"
    print(
        f"ornav bench/aruco.py: Python {platform.python_version()}, OpenCV {cv2.__version__}, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'})"
    )
    print(
        f"one core: cv2.getNumThreads()={cv2.getNumThreads()}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, pinned to {pinned}"
    )
    cases = _cases()
    if not cases:
        print(f"skipped: no videos under {SHARED} (a fresh clone has no ../shared)")
        return 0
    same = BARD / "multipattern.avi"
    if same.is_file():
        digests = {
            hashlib.sha256(p.read_bytes()).hexdigest() for p in (same, ARUCO / "multipattern.avi")
        }
        print(
            "scikit-surgerybard/data/multipattern.avi is "
            + ("byte-identical to scikit-surgeryarucotracker's: timed once" if len(digests) == 1
               else "a different file from scikit-surgeryarucotracker's")
        )  # fmt: skip
    for case in cases:
        _run_case(case, args.passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

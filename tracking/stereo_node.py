"""Stereo camera node: image pairs into surface point clouds (``tracking.stereo``).

Publishes:
- ``surface/<name>``: one ``SurfaceCloud`` per reconstructed pair. With ``camera_tool``
  set, in the patient ``reference`` frame: the newest tracker frame in which the camera's
  marker and the reference are both OK and no older than ``max_pose_age_ms`` than the pair,
  through the hand-eye calibration ``T_marker_from_camera``; a pair without such a frame is
  not published (``untracked``). Without ``camera_tool``, in the ``camera`` frame (an
  untracked camera: calibration and offline use; registration wants the reference frame).
- ``heartbeat/<name>``: counters ``pairs``, ``clouds``, ``refused_texture``,
  ``refused_calibration``, ``untracked``; latency grab -> publish.
Subscribes: the tracker (``pose/``) when ``camera_tool`` is set. Control: ``ping``, ``status``.

Params::

    calibration = "stereo/"           # calib.{left,right}.{intrinsics,distortion}.txt + l2r
    left = "pairs/*_left.png"         # recorded pairs: two sorted globs of equal length
    right = "pairs/*_right.png"
    camera = ""                       # or a live stereo camera delivering [left | right]
                                      # side by side in one frame ("0", "/dev/video2")
    mask = ""                         # optional: nonzero where to reconstruct (left image)
    rate_hz = 2.0                     # pairs per second at most
    loop = false                      # recorded pairs: start again at the end
    camera_tool = ""                  # the tracked marker on the camera
    reference_tool = "reference"
    hand_eye = ""                     # ornav handeye TOML (T_marker_from_camera)
    max_pose_age_ms = 50.0
    min_depth_mm = 10.0, max_depth_mm = 300.0, voxel_mm = 1.0, num_disparities = 64

Files are read when the config is built: a bad calibration, glob, mask or hand-eye file
stops the launch with one line. A pair the reconstruction refuses (too little texture, a
calibration that does not fit) is counted and logged once per kind, never published.
Exit codes: 0 at the end of the recorded pairs without ``loop`` and on SIGINT/SIGTERM; 2
for a source that cannot be opened or images of the wrong size; 1 when a camera stops.
"""

from __future__ import annotations

import glob
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import NodeRuntime, node_main
from tracking.stereo import (
    StereoCalibration,
    StereoError,
    StereoParams,
    StereoReconstructor,
)
from tracking.tracked_camera import SurfaceSourceLoop, TrackedCameraParams

log = logging.getLogger(__name__)
MAX_PAIRS = 100_000


@dataclass(frozen=True)
class Config(TrackedCameraParams):
    """The node's launch-file params (module docstring); ``camera_tool``,
    ``reference_tool``, ``hand_eye`` and ``max_pose_age_ms`` from ``TrackedCameraParams``."""

    calibration: str
    left: str = ""
    right: str = ""
    camera: str = ""
    mask: str = ""
    rate_hz: float = 2.0
    loop: bool = False
    min_depth_mm: float = 10.0
    max_depth_mm: float = 300.0
    voxel_mm: float = 1.0
    num_disparities: int = 64

    def __post_init__(self) -> None:
        if bool(self.camera) == bool(self.left or self.right):
            raise ValueError("give either 'left' and 'right' (recorded pairs) or 'camera'")
        if not self.camera:
            left, right = self.pair_paths()
            if not left or len(left) != len(right):
                raise ValueError(
                    f"keys 'left'/'right': {len(left)} and {len(right)} images: need the same "
                    "number, at least one"
                )
        if not 0 < self.rate_hz <= 60:
            raise ValueError(f"key 'rate_hz': {self.rate_hz} is outside (0, 60]")
        super().__post_init__()
        self.params()  # its own checks
        if self.mask and not Path(self.mask).is_file():
            raise ValueError(f"key 'mask': {self.mask}: no such file")
        if self.mask and cv2.imread(self.mask, cv2.IMREAD_GRAYSCALE) is None:
            raise ValueError(f"key 'mask': {self.mask}: not a readable image")

    def pair_paths(self) -> tuple[list[str], list[str]]:
        left = sorted(glob.glob(self.left))[:MAX_PAIRS]
        right = sorted(glob.glob(self.right))[:MAX_PAIRS]
        return left, right

    def params(self) -> StereoParams:
        return StereoParams(
            num_disparities=self.num_disparities,
            min_depth_mm=self.min_depth_mm,
            max_depth_mm=self.max_depth_mm,
            voxel_mm=self.voxel_mm,
        )

    def load_calibration(self, image_size: tuple[int, int]) -> StereoCalibration:
        try:
            return StereoCalibration.from_text_files(self.calibration, image_size)
        except StereoError as error:
            raise ValueError(f"key 'calibration': {error}") from None


def _recorded_pairs(cfg: Config) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]:
    left, right = cfg.pair_paths()
    while True:
        for lp, rp in zip(left, right, strict=True):
            images = cv2.imread(lp), cv2.imread(rp)
            if images[0] is None or images[1] is None:
                raise OSError(f"cannot read the pair {lp}, {rp}")
            yield images  # type: ignore[misc]
        if not cfg.loop:
            return


def _camera_pairs(capture: Any) -> Iterator[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]:
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise ConnectionError("the stereo camera stopped delivering frames")
        half = frame.shape[1] // 2
        yield frame[:, :half].copy(), frame[:, half:].copy()


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    capture = None
    if cfg.camera:
        capture = cv2.VideoCapture(int(cfg.camera) if cfg.camera.isdigit() else cfg.camera)
        if not capture.isOpened():
            log.error("cannot open the stereo camera %s", cfg.camera)
            return 2
        pairs = _camera_pairs(capture)
    else:
        pairs = _recorded_pairs(cfg)
    mask = (
        np.asarray(cv2.imread(cfg.mask, cv2.IMREAD_GRAYSCALE), dtype=np.uint8) if cfg.mask else None
    )
    runtime = NodeRuntime(spec, stop)
    reconstructor: StereoReconstructor | None = None
    try:
        with runtime:
            source = SurfaceSourceLoop(cfg, spec, runtime, rate_hz=cfg.rate_hz)
            runtime.ready()
            for grab, (left, right) in source.paced(pairs, stop):
                runtime.counters["pairs"] += 1
                if reconstructor is None:
                    size = (left.shape[1], left.shape[0])
                    reconstructor = StereoReconstructor(cfg.load_calibration(size), cfg.params())
                try:
                    cloud = reconstructor.reconstruct(left, right, mask)
                except StereoError as error:
                    if "is for" in str(error):
                        log.error("%s: %s", spec.name, error)
                        return 2
                    source.refuse(
                        "calibration" if "calibration" in str(error) else "texture", error
                    )
                    continue
                source.publish(grab, cloud.points_camera, cloud.confidence_mm)
            source.close()
    except (OSError, ConnectionError) as error:
        log.error("%s: %s", spec.name, error)
        return 1
    finally:
        if capture is not None:
            capture.release()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

"""Depth camera node: RGB-D frames into surface point clouds (``tracking.depth``).

Publishes:
- ``surface/<name>``: one ``SurfaceCloud`` per frame, in the patient ``reference`` frame
  when ``camera_tool`` is set (the camera's tracked marker and its hand-eye calibration,
  ``tracking.tracked_camera``; a frame without a fresh tracker frame is ``untracked``),
  else in the ``camera`` frame (an untracked camera: calibration and offline use).
- ``heartbeat/<name>``: counters ``frames``, ``clouds``, ``untracked`` and
  ``refused_<kind>`` for ``unreadable``, ``format``, ``size``, ``nonfinite``, ``empty``
  (``tracking.depth.DEPTH_KINDS``); latency grab -> publish.
Subscribes: the tracker (``pose/``) when ``camera_tool`` is set. Control: ``ping``, ``status``.

Params::

    folder = "rgbd/"                  # recorded frames as Open3D records them:
                                      # depth/*.png (16-bit), color/ beside it (unused)
    device = ""                       # or a live camera through Open3D: "realsense",
                                      # "azure_kinect" (untested here: no device)
    intrinsic = ""                    # Open3D intrinsics JSON; default: the folder's
                                      # intrinsic.json or camera_intrinsic.json, a
                                      # RealSense's own; needed for azure_kinect
    depth_scale = 0.0                 # depth units per metre; 0: the intrinsics file's,
                                      # the device's, else Open3D's 1000 (mm)
    mask = ""                         # optional: nonzero where to keep (depth image)
    rate_hz = 5.0                     # frames per second at most
    loop = false                      # recorded frames: start again at the end
    camera_tool = "", reference_tool = "reference", hand_eye = "", max_pose_age_ms = 50.0
    min_depth_mm = 100.0, max_depth_mm = 1000.0, voxel_mm = 2.0
    noise_floor_mm = 0.0, noise_at_1m_mm = 1.5   # sigma_z = floor + at_1m (z / 1 m)^2

Files are read when the config is built: a bad folder, intrinsics, mask or hand-eye file
stops the launch with one line. A frame that gives no trustworthy surface (missing or
garbled, the wrong size, NaN, no depth in range) is counted and logged once per kind,
never published. Exit codes: 0 at the end of the recorded frames without ``loop`` and on
SIGINT/SIGTERM; 2 for a device this Open3D build lacks or that is not connected; 1 when a
device stops delivering frames.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import NodeRuntime, node_main
from tracking.depth import (
    OPEN3D_DEPTH_SCALE,
    DepthError,
    DepthParams,
    PinholeIntrinsics,
    depth_to_points,
    find_intrinsics,
    read_depth,
)
from tracking.tracked_camera import SurfaceSourceLoop, TrackedCameraParams

log = logging.getLogger(__name__)
MAX_FRAMES = 100_000
DEVICES = ("realsense", "azure_kinect")
K4A_LIBRARY = "libk4a.so"  # what Open3D's Azure Kinect plugin loads
DEPTH_PATTERNS = ("depth/*.png", "depth/*.tif", "depth/*.tiff")

# One recorded or live frame: a label for the log, the depth image (None: unreadable).
Frame = tuple[str, npt.NDArray[Any] | None]


class DeviceError(RuntimeError):
    """A live camera that cannot be opened or stopped delivering; one line."""


@dataclass(frozen=True)
class Config(TrackedCameraParams):
    """The node's launch-file params (module docstring); ``camera_tool``,
    ``reference_tool``, ``hand_eye`` and ``max_pose_age_ms`` from ``TrackedCameraParams``."""

    folder: str = ""
    device: str = ""
    intrinsic: str = ""
    depth_scale: float = 0.0
    mask: str = ""
    rate_hz: float = 5.0
    loop: bool = False
    min_depth_mm: float = 100.0
    max_depth_mm: float = 1000.0
    voxel_mm: float = 2.0
    noise_floor_mm: float = 0.0
    noise_at_1m_mm: float = 1.5

    def __post_init__(self) -> None:
        if bool(self.folder) == bool(self.device):
            raise ValueError("give either 'folder' (recorded frames) or 'device'")
        if self.device and self.device not in DEVICES:
            raise ValueError(f"key 'device': {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.device == "azure_kinect" and not self.intrinsic:
            raise ValueError("key 'intrinsic': needed with azure_kinect (Open3D gives none)")
        if self.folder and not self.depth_paths():
            raise ValueError(
                f"key 'folder': {self.folder}: no depth images ({', '.join(DEPTH_PATTERNS)})"
            )
        if not 0 < self.rate_hz <= 60:
            raise ValueError(f"key 'rate_hz': {self.rate_hz} is outside (0, 60]")
        if self.depth_scale < 0:
            raise ValueError("key 'depth_scale': must be >= 0 (0: from the intrinsics)")
        super().__post_init__()
        self.params(OPEN3D_DEPTH_SCALE)  # its own checks
        intrinsics = self.intrinsics()[0] if self.folder or self.intrinsic else None
        if self.mask:
            mask = cv2.imread(self.mask, cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise ValueError(f"key 'mask': {self.mask}: missing or not a readable image")
            if intrinsics is not None and mask.shape != (intrinsics.height, intrinsics.width):
                raise ValueError(
                    f"key 'mask': {self.mask} is {mask.shape[1]}x{mask.shape[0]} px, the "
                    f"intrinsics {intrinsics.width}x{intrinsics.height}"
                )

    def depth_paths(self) -> list[str]:
        paths = (glob.glob(str(Path(self.folder) / pattern)) for pattern in DEPTH_PATTERNS)
        return sorted(path for found in paths for path in found)[:MAX_FRAMES]

    def intrinsics(self) -> tuple[PinholeIntrinsics, float | None]:
        """The intrinsics file's camera and depth scale (None: the file has none)."""
        try:
            path = self.intrinsic or find_intrinsics(self.folder)
            return PinholeIntrinsics.from_open3d_json(path)
        except DepthError as error:
            raise ValueError(f"key 'intrinsic': {error}") from None

    def params(self, file_depth_scale: float | None) -> DepthParams:
        """The reconstruction's settings; ``depth_scale`` from this config when set, else
        from the intrinsics file or device (``file_depth_scale``), else Open3D's."""
        try:
            return DepthParams(
                depth_scale=self.depth_scale or file_depth_scale or OPEN3D_DEPTH_SCALE,
                min_depth_mm=self.min_depth_mm,
                max_depth_mm=self.max_depth_mm,
                voxel_mm=self.voxel_mm,
                noise_floor_mm=self.noise_floor_mm,
                noise_at_1m_mm=self.noise_at_1m_mm,
            )
        except ValueError as error:
            raise ValueError(f"depth params: {error}") from None


def _recorded_frames(cfg: Config) -> Iterator[Frame]:
    paths = cfg.depth_paths()
    while True:
        for path in paths:
            try:
                yield path, read_depth(path)
            except DepthError:
                yield path, None
        if not cfg.loop:
            return


def _open3d_line(error: Exception) -> str:
    """Open3D's error text without its colours, source location and newlines."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = re.sub(r"^\s*\[Open3D \w+\] \(.*?\) \S+:\d+: ", "", text)
    return " ".join(text.split())


def _realsense(cfg: Config) -> tuple[Iterator[Frame], PinholeIntrinsics, float]:
    if not hasattr(o3d.t.io, "RealSenseSensor"):
        raise DeviceError("this Open3D build has no RealSense support (BUILD_LIBREALSENSE)")
    try:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            if not o3d.t.io.RealSenseSensor.list_devices():
                raise DeviceError("no RealSense camera is connected")
            sensor = o3d.t.io.RealSenseSensor()
            sensor.init_sensor(o3d.t.io.RealSenseSensorConfig(), 0, "")
            sensor.start_capture(False)
    except RuntimeError as error:
        raise DeviceError(f"RealSense: {_open3d_line(error)}") from None
    metadata = sensor.get_metadata()
    intrinsics = (
        cfg.intrinsics()[0] if cfg.intrinsic else PinholeIntrinsics.from_open3d(metadata.intrinsics)
    )

    def frames() -> Iterator[Frame]:
        try:
            for number in range(2**62):
                rgbd = sensor.capture_frame(True, True)
                if rgbd.depth.is_empty():
                    raise DeviceError("the RealSense camera stopped delivering frames")
                depth = rgbd.depth.as_tensor().numpy()
                yield f"frame {number}", depth.reshape(depth.shape[:2])
        finally:
            sensor.stop_capture()

    return frames(), intrinsics, float(metadata.depth_scale)


def _azure_kinect(cfg: Config) -> tuple[Iterator[Frame], PinholeIntrinsics, float]:
    if not hasattr(o3d.io, "AzureKinectSensor"):
        raise DeviceError("this Open3D build has no Azure Kinect support (BUILD_AZURE_KINECT)")
    try:
        # Open3D loads the SDK itself; without it the sensor object aborts the process
        # when it is destroyed, so look first
        ctypes.CDLL(K4A_LIBRARY)
    except OSError:
        raise DeviceError(
            f"Azure Kinect: the Azure Kinect SDK ({K4A_LIBRARY}) is not installed"
        ) from None
    try:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            sensor = o3d.io.AzureKinectSensor(o3d.io.AzureKinectSensorConfig())
            if not sensor.connect(0):
                raise DeviceError("no Azure Kinect camera is connected")
    except RuntimeError as error:
        raise DeviceError(f"Azure Kinect: {_open3d_line(error)}") from None

    def frames() -> Iterator[Frame]:
        number = 0
        while True:
            rgbd = sensor.capture_frame(True)
            if rgbd is None:  # not ready yet: Open3D's own recorder polls the same way
                continue
            yield f"frame {number}", np.asarray(rgbd.depth)
            number += 1

    return frames(), cfg.intrinsics()[0], OPEN3D_DEPTH_SCALE


def _source(cfg: Config) -> tuple[Iterator[Frame], DepthParams, PinholeIntrinsics]:
    """The frames, the settings and the camera; raises DeviceError for a live device."""
    if cfg.device == "realsense":
        frames, intrinsics, scale = _realsense(cfg)
    elif cfg.device == "azure_kinect":
        frames, intrinsics, scale = _azure_kinect(cfg)
    else:
        intrinsics, file_scale = cfg.intrinsics()
        return _recorded_frames(cfg), cfg.params(file_scale), intrinsics
    return frames, cfg.params(scale), intrinsics


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    try:
        frames, params, intrinsics = _source(cfg)
    except DeviceError as error:
        log.error("%s: %s", spec.name, error)
        return 2
    mask = cv2.imread(cfg.mask, cv2.IMREAD_GRAYSCALE) if cfg.mask else None
    if mask is not None and mask.shape != (intrinsics.height, intrinsics.width):
        log.error("%s: key 'mask': not the camera's size", spec.name)  # a device's own
        return 2
    runtime = NodeRuntime(spec, stop)
    try:
        with runtime:
            source = SurfaceSourceLoop(cfg, spec, runtime, rate_hz=cfg.rate_hz)
            runtime.ready()
            for grab, (label, depth) in source.paced(frames, stop):
                runtime.counters["frames"] += 1
                try:
                    if depth is None:
                        raise DepthError("unreadable", "missing or not a readable image")
                    cloud = depth_to_points(depth, intrinsics, params, mask)
                except DepthError as error:
                    source.refuse(error.kind, f"{label}: {error}")
                    continue
                source.publish(grab, cloud.points_camera, cloud.confidence_mm)
            source.close()
    except DeviceError as error:
        log.error("%s: %s", spec.name, error)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

"""Camera marker tracker node: ArUco rigid bodies in a camera's or a video file's frames.

Publishes:
- ``pose/<tracker>``: ``TrackerFrame`` with every body, one per processed frame. The
  camera is the tracker: ``T_tracker_from_tools`` holds each body's ``T_camera_from_body``
  (OpenCV's camera frame: x right, y down, z forward, mm). ``fit_errors_mm`` holds the
  reprojection RMS back-projected at the body's depth (``tracking.aruco``: across the line
  of sight only); NaN for a body that is not OK. Statuses: OK, OUT_OF_VIEW (no tag seen),
  INVALID (the fit was refused).
- ``pose/<tracker>/<tool>``: one ``ToolPose`` per body, only with ``publish_tool_poses``.
- ``heartbeat/<name>``: rates ``tool/<tool>`` (OK samples only) and ``published``;
  ``latency_ms`` holds ``p50``, ``p99``, ``p999``, ``max`` from grab to publish, and
  ``frame_p50``, ``frame_p99``, ``frame_max``: detection + pose time per frame (ms);
  counters ``frames``, ``overruns`` (a video fell behind its pace), ``skipped``
  (camera frames dropped by the ``rate_hz`` cap).
Subscribes: nothing. Control: only the built-in ``ping`` and ``status``.

Params (launch-file ``[nodes.<name>.params]``)::

    source = "data/multipattern.avi"   # a video file, or a camera: "0", "/dev/video2"
    calibration = "camera.toml"        # ornav camera TOML, OpenCV .yml, scikit-surgery .txt
    bodies = ["reference=ref.txt", "pointer.txt", "board=charuco.toml"]
    dictionary = "DICT_ARUCO_ORIGINAL" # for .txt bodies
    body_dictionaries = ["tag0=DICT_4X4_50"]   # per-body overrides for .txt bodies
    tracker_name = "camera"
    loop = false                       # video files: start again at the end
    rate_hz = 30.0                     # optional, see below
    max_reprojection_rms_px = 3.0
    threads = 1                        # OpenCV worker threads
    publish_tool_poses = false

A body entry is ``"name=path"`` or a bare path (the name is the file's stem); names are
tool names. Relative paths are relative to the node's working directory. Files are read
when the config is built, so a bad body or calibration file stops the launch with one
line naming the key and file.

Pacing. A video file plays at ``rate_hz`` if given (above its fps replays faster), else at
its own fps; if detection cannot keep up it falls behind and counts ``overruns`` (it never
skips frames). A camera paces itself; ``rate_hz`` then caps the rate by grabbing and
dropping frames (``skipped``). ``t_sensor_ns`` is the host monotonic clock when ``grab``
returned: after exposure and transfer, so it is late by the camera's own latency
(typically one frame), which temporal calibration measures.

Exit codes: 0 at the end of a video without ``loop`` and on SIGINT/SIGTERM; 2 when the
source cannot be opened, has no readable frame, or its frames do not match the
calibration's image size (one log line naming it; before READY unless the backend only
tells the size with the first frame); 1 when a camera stops delivering frames or on any
other failure. A camera whose calibration names its image size is asked for that size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nav.frames import is_valid_tool_name
from nav.messages import Heartbeat, ToolStatus, TrackerFrame
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import NodeRuntime, node_main
from nav.runtime.stats import LatencyWindow, advance_schedule
from tracking.aruco import (
    DEFAULT_DICTIONARY,
    DEFAULT_MAX_REPROJECTION_RMS_PX,
    ArucoTracker,
    BodyPose,
    CameraIntrinsics,
    RigidBodyDefinition,
    dictionary_size,
    read_camera_intrinsics,
)

log = logging.getLogger(__name__)

MAX_RATE_HZ = 1000.0
MAX_LAG_PERIODS = 5
FALLBACK_VIDEO_FPS = 30.0  # for a file that does not say (fps 0 or NaN)
MAX_THREADS = 64


def _is_camera(source: str) -> bool:
    """A camera index ("0"), a V4L device, or a stream URL: anything that is not a file."""
    return source.isdigit() or source.startswith("/dev/") or "://" in source


def _body_entry(entry: str) -> tuple[str | None, str]:
    name, sep, path = entry.partition("=")
    return (name.strip(), path.strip()) if sep else (None, entry.strip())


@dataclass(frozen=True)
class Config:
    """The node's launch-file params (module docstring)."""

    source: str
    calibration: str
    bodies: tuple[str, ...]
    dictionary: str = DEFAULT_DICTIONARY
    body_dictionaries: tuple[str, ...] = ()
    tracker_name: str = "camera"
    loop: bool = False
    rate_hz: float | None = None
    max_reprojection_rms_px: float = DEFAULT_MAX_REPROJECTION_RMS_PX
    threads: int = 1
    publish_tool_poses: bool = False

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ValueError("key 'source': empty (a video file or a camera index)")
        if not _is_camera(self.source) and not Path(self.source).is_file():
            raise ValueError(f"key 'source': {self.source}: no such video file")
        if self.rate_hz is not None and not 0 < self.rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"key 'rate_hz': {self.rate_hz} Hz is outside (0, {MAX_RATE_HZ:g}]")
        if not is_valid_tool_name(self.tracker_name):
            raise ValueError(f"key 'tracker_name': {self.tracker_name!r} is not a valid name")
        if not self.max_reprojection_rms_px > 0:
            raise ValueError("key 'max_reprojection_rms_px': must be > 0")
        if not 1 <= self.threads <= MAX_THREADS:
            raise ValueError(f"key 'threads': expected 1..{MAX_THREADS}, got {self.threads}")
        try:
            dictionary_size(self.dictionary)
        except ValueError as error:
            raise ValueError(f"key 'dictionary': {error}") from None
        self.body_dictionary_map()
        self.load_camera()
        bodies = self.load_bodies()
        try:
            # The tracker refuses ids shared by two bodies, and bad intrinsics.
            self.tracker(self.load_camera(), bodies)
        except ValueError as error:
            raise ValueError(f"key 'bodies': {error}") from None

    def body_dictionary_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for entry in self.body_dictionaries:
            name, dictionary = _body_entry(entry)
            if name is None or not name:
                raise ValueError(f"key 'body_dictionaries': {entry!r}: expected 'name=DICT_...'")
            try:
                dictionary_size(dictionary)
            except ValueError as error:
                raise ValueError(f"key 'body_dictionaries': {entry!r}: {error}") from None
            out[name] = dictionary
        return out

    def load_camera(self) -> CameraIntrinsics:
        try:
            return read_camera_intrinsics(self.calibration)
        except ValueError as error:  # CalibrationFileError is a ValueError
            raise ValueError(f"key 'calibration': {error}") from None

    def load_bodies(self) -> list[RigidBodyDefinition]:
        if not self.bodies:
            raise ValueError("key 'bodies': empty (at least one body definition file)")
        overrides = self.body_dictionary_map()
        bodies: list[RigidBodyDefinition] = []
        for entry in self.bodies:
            name, path = _body_entry(entry)
            name = name if name is not None else Path(path).stem
            if not is_valid_tool_name(name):
                raise ValueError(
                    f"key 'bodies': {entry!r}: {name!r} is not a tool name (lowercase "
                    "letters, digits, _; a letter first); write 'name=path'"
                )
            if any(b.name == name for b in bodies):
                raise ValueError(f"key 'bodies': two bodies are named {name!r}")
            try:
                bodies.append(
                    RigidBodyDefinition.from_file(
                        path,
                        name=name,
                        dictionary=overrides.get(name)
                        or (None if path.lower().endswith(".toml") else self.dictionary),
                    )
                )
            except ValueError as error:
                raise ValueError(f"key 'bodies': {error}") from None
        unknown = sorted(set(overrides) - {b.name for b in bodies})
        if unknown:
            raise ValueError(f"key 'body_dictionaries': no body named {unknown[0]!r}")
        return bodies

    def tracker(
        self, camera: CameraIntrinsics, bodies: Sequence[RigidBodyDefinition]
    ) -> ArucoTracker:
        return ArucoTracker(
            camera.camera_matrix,
            camera.dist_coeffs,
            bodies,
            max_reprojection_rms_px=self.max_reprojection_rms_px,
        )


class _CameraRuntime(NodeRuntime):
    """A NodeRuntime whose heartbeat also carries the detection + pose time per frame."""

    def __init__(self, spec: NodeSpec, stop: threading.Event) -> None:
        super().__init__(spec, stop)
        self.frame_time = LatencyWindow(capacity=1024)

    def heartbeat(self, now_ns: int, extra_rates: Mapping[str, int] | None = None) -> Heartbeat:
        beat = super().heartbeat(now_ns, extra_rates)
        frame = self.frame_time.percentiles_ms()
        extra = {f"frame_{k}": frame[k] for k in ("p50", "p99", "max") if k in frame}
        return dataclasses.replace(beat, latency_ms={**beat.latency_ms, **extra})


def _open(source: str) -> Any:
    if source.isdigit():
        return cv2.VideoCapture(int(source))
    return cv2.VideoCapture(source)


def _frame(
    cfg: Config,
    names: Sequence[str],
    poses: Mapping[str, BodyPose],
    *,
    t_sensor_ns: int,
    frame_number: int,
) -> TrackerFrame:
    chosen = [poses[name] for name in names]
    return TrackerFrame(
        tracker=cfg.tracker_name,
        t_sensor_ns=t_sensor_ns,
        frame_number=frame_number,
        tools=tuple(names),
        # A non-OK BodyPose already carries the identity.
        T_tracker_from_tools=np.stack([pose.T_camera_from_body for pose in chosen]),
        statuses=tuple(pose.status for pose in chosen),
        fit_errors_mm=np.array(
            [pose.fit_error_mm if pose.status is ToolStatus.OK else math.nan for pose in chosen]
        ),
    )


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    cv2.setNumThreads(cfg.threads)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we report a failed open
    camera = cfg.load_camera()
    tracker = cfg.tracker(camera, cfg.load_bodies())
    live = _is_camera(cfg.source)
    capture = _open(cfg.source)
    try:
        if not capture.isOpened():
            log.error("cannot open %s %s", "camera" if live else "video file", cfg.source)
            return 2
        if live and camera.image_size is not None:
            # Ask the camera for the size its calibration is for; it may refuse (checked below).
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, camera.image_size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, camera.image_size[1])
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        # Some backends report 0 until the first frame: that one is checked in the loop.
        if width and height and not _size_matches(width, height, camera, cfg.source):
            return 2
        return _loop(cfg, spec, stop, capture, tracker, camera, live)
    finally:
        capture.release()


def _loop(
    cfg: Config,
    spec: NodeSpec,
    stop: threading.Event,
    capture: Any,
    tracker: ArucoTracker,
    camera: CameraIntrinsics,
    live: bool,
) -> int:
    names = tracker.body_names
    topic = f"pose/{cfg.tracker_name}"
    ok_counts = {f"tool/{name}": 0 for name in names}
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    if cfg.rate_hz is not None:
        period_ns = int(round(1e9 / cfg.rate_hz))
    elif live:
        period_ns = 0
    else:
        period_ns = int(
            round(1e9 / (fps if math.isfinite(fps) and fps > 0 else FALLBACK_VIDEO_FPS))
        )
    runtime = _CameraRuntime(spec, stop)
    with runtime:
        if runtime.pub is None:
            raise ValueError(f"node {spec.name!r}: the tracker needs a pub endpoint")
        runtime.ready()
        log.info(
            "%s: tracking %s in %s at %s",
            spec.name,
            ", ".join(names),
            cfg.source,
            f"{1e9 / period_ns:.1f} Hz" if period_ns else "the camera's rate",
        )
        frame_number = 0
        frames_in_pass = 0
        next_ns = time.monotonic_ns()
        while not stop.is_set():
            if not live:
                wait_ns = next_ns - time.monotonic_ns()
                if wait_ns > 0 and stop.wait(wait_ns / 1e9):
                    break
            if not capture.grab():
                if live:
                    log.error("camera %s stopped delivering frames", cfg.source)
                    return 1
                if frame_number == 0:
                    log.error("video file %s has no frame that can be read", cfg.source)
                    return 2
                if not cfg.loop or frames_in_pass == 0:
                    log.info("end of video %s after %d frames", cfg.source, frame_number)
                    return 0
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                frames_in_pass = 0
                continue
            t_sensor_ns = time.monotonic_ns()
            if live and period_ns:
                # A quarter period of slack, so a camera at the cap's own rate is not halved
                # by its frame-time jitter.
                if t_sensor_ns < next_ns - period_ns // 4:
                    runtime.counters["skipped"] += 1  # over the rate cap: grabbed, not decoded
                    runtime.service(ok_counts)
                    continue
                next_ns = max(next_ns + period_ns, t_sensor_ns)
            ok, image = capture.retrieve()
            if not ok or image is None:
                log.error("%s: frame %d cannot be decoded", cfg.source, frame_number)
                return 1
            height, width = image.shape[:2]
            if frame_number == 0 and not _size_matches(width, height, camera, cfg.source):
                return 2
            t0_ns = time.monotonic_ns()
            poses = tracker.track(image)
            runtime.frame_time.add(time.monotonic_ns() - t0_ns)
            frame = _frame(cfg, names, poses, t_sensor_ns=t_sensor_ns, frame_number=frame_number)
            runtime.pub.publish(topic, frame)
            if cfg.publish_tool_poses:
                for pose in frame.poses():
                    runtime.pub.publish(f"{topic}/{pose.tool}", pose)
            runtime.latency.add(time.monotonic_ns() - t_sensor_ns)
            for name in names:
                if poses[name].status is ToolStatus.OK:
                    ok_counts[f"tool/{name}"] += 1
            runtime.counters["frames"] += 1
            frame_number += 1
            frames_in_pass += 1
            if not live:
                next_ns, overrun = advance_schedule(
                    next_ns,
                    period_ns=period_ns,
                    now_ns=time.monotonic_ns(),
                    max_lag_periods=MAX_LAG_PERIODS,
                )
                runtime.counters["overruns"] += overrun
            runtime.service(ok_counts)
    return 0


def _size_matches(width: int, height: int, camera: CameraIntrinsics, source: str) -> bool:
    if camera.image_size is None:
        return True
    if (width, height) != tuple(camera.image_size):
        log.error(
            "%s: frames are %dx%d but the calibration %s is for %dx%d",
            source,
            width,
            height,
            camera.source,
            *camera.image_size,
        )
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

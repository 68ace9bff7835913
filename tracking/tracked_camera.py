"""A surface camera's clouds onto the patient: what the stereo and depth nodes share.

A camera with a tracked marker (``camera_tool``) and a hand-eye calibration
``T_marker_from_camera`` places each camera-frame cloud in the patient ``reference``
frame through the newest tracker frame in which the camera's marker and the reference
are both OK and no older than ``max_pose_age_ms`` than the grab; a grab without such a
frame is not published (the node counts it ``untracked``). Without ``camera_tool`` the
cloud stays in the ``camera`` frame (an untracked camera: calibration and offline use).

``TrackedCameraParams`` holds those four launch-file params (a node's ``Config`` inherits
them, keyword-only), ``CameraTracking`` follows the tracker on the node's sockets,
``surface_cloud`` builds the message, and ``SurfaceSourceLoop`` is the loop around a
node's own reconstruction: pacing, the grab's time and pose, refusals counted and logged
once per kind, placing and publishing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from nav.frames import is_valid_tool_name
from nav.messages import SurfaceCloud, ToolStatus, TrackerFrame
from nav.messages.surface import MAX_SURFACE_POINTS
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime
from nav.transforms import Mat4
from tracking.stereo import points_in_reference

log = logging.getLogger(__name__)
T = TypeVar("T")
MIN_CONFIDENCE_MM = 1e-3  # the wire wants > 0; no camera is better than a micrometre


@dataclass(frozen=True, kw_only=True)
class TrackedCameraParams:
    """Where the camera is: its tracked marker, the patient reference, the hand-eye file
    (an ``ornav calibrate handeye`` TOML holding ``T_marker_from_camera``), and how much
    older than a grab a tracker frame may be."""

    camera_tool: str = ""
    reference_tool: str = "reference"
    hand_eye: str = ""
    max_pose_age_ms: float = 50.0

    def __post_init__(self) -> None:
        if self.camera_tool:
            for key in ("camera_tool", "reference_tool"):
                if not is_valid_tool_name(getattr(self, key)):
                    raise ValueError(f"key {key!r}: {getattr(self, key)!r} is not a tool name")
            if not self.hand_eye:
                raise ValueError("key 'hand_eye': needed with camera_tool (T_marker_from_camera)")
            self.load_hand_eye()
        if not self.max_pose_age_ms > 0:
            raise ValueError("key 'max_pose_age_ms': must be > 0")

    def load_hand_eye(self) -> Mat4:
        from calibration.files import CalibrationFileError, read_calibration

        try:
            calibration = read_calibration(self.hand_eye)
            if calibration.kind != "handeye":
                raise ValueError(f"expected a handeye calibration, got {calibration.kind!r}")
            return calibration.array("T_marker_from_camera")
        except (CalibrationFileError, KeyError, ValueError) as error:
            raise ValueError(f"key 'hand_eye': {error}") from None


class CameraTracking:
    """The newest tracker frames on ``spec``'s subscriptions, for placing a grab."""

    def __init__(self, params: TrackedCameraParams, spec: NodeSpec, runtime: NodeRuntime) -> None:
        self.params = params
        self.T_marker_from_camera = params.load_hand_eye()
        self.sub = bus.LatestSubscriber(spec.subscribe_endpoints, ("pose/",))
        runtime.watch(self.sub.counters)
        self.latest: TrackerFrame | None = None

    def poll(self) -> None:
        for received in self.sub.poll(0.0):
            if isinstance(received.message, TrackerFrame):
                self.latest = received.message

    def to_reference(
        self, points_camera: npt.NDArray[np.float64], frame: TrackerFrame | None, t_ns: int
    ) -> npt.NDArray[np.float64] | None:
        """The points in the reference frame with ``frame`` (the newest at the grab), or
        None when it is too old for the grab or either marker is not OK."""
        p = self.params
        if frame is None or abs(t_ns - frame.t_sensor_ns) > p.max_pose_age_ms * 1e6:
            return None
        try:
            marker = frame.pose(p.camera_tool)
            reference = frame.pose(p.reference_tool)
        except KeyError:
            return None
        if marker.status is not ToolStatus.OK or reference.status is not ToolStatus.OK:
            return None
        return points_in_reference(
            points_camera,
            marker.T_tracker_from_tool,
            self.T_marker_from_camera,
            reference.T_tracker_from_tool,
        )

    def close(self) -> None:
        self.sub.close()


def surface_cloud(
    source: str,
    *,
    frame: str,
    t_sensor_ns: int,
    points_mm: npt.ArrayLike,
    confidence_mm: npt.ArrayLike,
) -> SurfaceCloud:
    """The message for one grab: float32, at most ``MAX_SURFACE_POINTS`` points (the
    first ones), every confidence at least ``MIN_CONFIDENCE_MM``."""
    keep = slice(0, MAX_SURFACE_POINTS)
    confidence = np.maximum(np.asarray(confidence_mm, dtype=np.float64)[keep], MIN_CONFIDENCE_MM)
    return SurfaceCloud(
        source=source,
        frame=frame,
        t_sensor_ns=t_sensor_ns,
        points_mm=np.asarray(points_mm, dtype=np.float64)[keep].astype(np.float32),
        confidence_mm=confidence.astype(np.float32),
    )


@dataclass(frozen=True)
class Grab:
    """When a frame was taken (host monotonic clock) and the newest tracker frame then."""

    t_sensor_ns: int
    pose_frame: TrackerFrame | None


class SurfaceSourceLoop:
    """A surface camera node's loop around its own reconstruction (module docstring).

    Counters on the heartbeat: ``clouds``, ``untracked``, ``refused_<kind>``.
    """

    def __init__(
        self,
        params: TrackedCameraParams,
        spec: NodeSpec,
        runtime: NodeRuntime,
        *,
        rate_hz: float,
    ) -> None:
        if runtime.pub is None:
            raise ValueError(f"node {spec.name!r}: a surface source needs a pub endpoint")
        self.pub = runtime.pub
        self.runtime = runtime
        self.name = spec.name
        self.tracking = CameraTracking(params, spec, runtime) if params.camera_tool else None
        self.period_s = 1.0 / rate_hz
        self.warned: set[str] = set()

    def paced(self, frames: Iterator[T], stop: threading.Event) -> Iterator[tuple[Grab, T]]:
        """Each frame at ``rate_hz`` at most with its ``Grab`` (taken as the frame is
        read), serving the node's control and heartbeat between; ends on ``stop`` or at
        the end of ``frames`` (logged)."""
        next_s = time.monotonic()
        while not stop.is_set():
            if self.tracking is not None:
                self.tracking.poll()
            self.runtime.service()
            wait = next_s - time.monotonic()
            if wait > 0:
                stop.wait(min(wait, POLL_TIMEOUT_S))
                continue
            next_s += self.period_s
            try:
                frame = next(frames)
            except StopIteration:
                log.info("%s: end of the recorded frames", self.name)
                return
            yield self._grab(), frame

    def _grab(self) -> Grab:
        t_sensor_ns = time.monotonic_ns()
        if self.tracking is None:
            return Grab(t_sensor_ns, None)
        self.tracking.poll()  # where the camera was at the grab
        return Grab(t_sensor_ns, self.tracking.latest)

    def refuse(self, kind: str, reason: object) -> None:
        """A frame that gives no trustworthy surface: counted, logged once per kind."""
        self.runtime.counters[f"refused_{kind}"] += 1
        if kind not in self.warned:
            self.warned.add(kind)
            log.warning("%s: frame refused: %s", self.name, reason)

    def publish(
        self, grab: Grab, points_camera: npt.NDArray[np.float64], confidence_mm: npt.ArrayLike
    ) -> bool:
        """Place the cloud (reference frame when tracked) and publish it; False when the
        camera was not tracked at the grab (counted ``untracked``)."""
        points, frame = points_camera, "camera"
        if self.tracking is not None:
            placed = self.tracking.to_reference(points, grab.pose_frame, grab.t_sensor_ns)
            if placed is None:
                self.runtime.counters["untracked"] += 1
                return False
            points, frame = placed, "reference"
        self.pub.publish(
            f"surface/{self.name}",
            surface_cloud(
                self.name,
                frame=frame,
                t_sensor_ns=grab.t_sensor_ns,
                points_mm=points,
                confidence_mm=confidence_mm,
            ),
        )
        self.runtime.counters["clouds"] += 1
        self.runtime.latency.add(time.monotonic_ns() - grab.t_sensor_ns)
        return True

    def close(self) -> None:
        if self.tracking is not None:
            self.tracking.close()

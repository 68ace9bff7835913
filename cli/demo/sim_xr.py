"""``ornav demo --xr-registration``: the headset registration, simulated end to end.

The simulated headset gets a world-tracking space of its own (``xr``): a fixed
``T_xr_from_tracker`` chosen here, which *drifts* as a real headset's SLAM does (a slow
translation and yaw, ``drift_mm_per_s`` / ``drift_deg_per_s``) and reads its controller
with noise (``noise_mm``). The tracker's headset marker stands for the tracked marker on
the controller: the demo turns its sway up (a hand waving, ``head_sway_*``) and names it
the render node's ``xr_marker_tool``. During the navigation phase the demo collects, from
the tracker's stream, what the headset would report (grip poses in its drifting world,
with their instants), sends ``XrPairedPoses`` on a session of its own to the render node,
and reports what came back: the residual, or the reason it was refused, and how far the
registration is from the simulated truth at the collection's midpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zmq  # noqa: TID251 -- a DEALER session of its own, as render.headset_client
from scipy.spatial.transform import Rotation

from nav.messages import Hello, Reply, TrackerFrame, XrPairedPoses, XrRegistration, decode, encode
from nav.messages.headset import HEADSET_PROTOCOL_VERSION
from nav.runtime import bus
from nav.runtime.launchfile import LaunchSpec
from nav.transforms import make_rigid

log = logging.getLogger("ornav.demo")

MARKER = "headset"
T_XR_FROM_TRACKER_TRUE = make_rigid(
    Rotation.from_euler("xyz", [90.0, 0.0, 25.0], degrees=True).as_matrix(), [300.0, 1500.0, -800.0]
)
T_GRIP_FROM_MARKER = make_rigid(
    Rotation.from_euler("xyz", [10.0, -15.0, 30.0], degrees=True).as_matrix(), [25.0, -5.0, 55.0]
)
WAVE_MM, WAVE_DEG = 120.0, 35.0  # the marker waved like a controller, not swayed like a head


@dataclass(frozen=True)
class SimXrWorld:
    """The simulated headset's world: where the tracker is in it at time ``t_s`` (drifting),
    and the grip pose it reports for a tracker pose of the marker (noisy)."""

    drift_mm_per_s: float = 0.5
    drift_deg_per_s: float = 0.02
    noise_mm: float = 1.0

    def T_xr_from_tracker(self, t_s: float) -> np.ndarray:
        drift = make_rigid(
            Rotation.from_euler("y", self.drift_deg_per_s * t_s, degrees=True).as_matrix(),
            [self.drift_mm_per_s * t_s, 0.0, 0.0],
        )
        out: np.ndarray = drift @ T_XR_FROM_TRACKER_TRUE
        return out

    def grip(
        self, T_tracker_from_marker: np.ndarray, t_s: float, rng: np.random.Generator
    ) -> np.ndarray:
        G = self.T_xr_from_tracker(t_s) @ T_tracker_from_marker @ np.linalg.inv(T_GRIP_FROM_MARKER)
        G[:3, 3] += rng.normal(scale=self.noise_mm / np.sqrt(3), size=3)
        return G


def with_xr_registration(launch: LaunchSpec) -> LaunchSpec:
    """``launch`` with the tracker's headset marker waved and named the render node's
    ``xr_marker_tool``."""
    nodes = []
    for spec in launch.nodes:
        params = dict(spec.params)
        if spec.module == "tracking.sim_node":
            params.update(head_sway_mm=WAVE_MM, head_sway_deg=WAVE_DEG)
        if spec.module == "render.render_node":
            params["xr_marker_tool"] = MARKER
        nodes.append(replace(spec, params=params))
    return replace(launch, nodes=tuple(nodes))


class XrRegistrationRun:
    """Collect for ``seconds`` then register, in a thread (the scenario keeps running)."""

    def __init__(
        self, *, tracker_pub: str, headset_endpoint: str, seconds: float, world: SimXrWorld
    ) -> None:
        self.tracker_pub, self.headset_endpoint = tracker_pub, headset_endpoint
        self.seconds, self.world = seconds, world
        self.result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name="xr-registration", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> dict[str, Any]:
        self._thread.join(timeout_s)
        return self.result or {"outcome": "not finished"}

    def _collect(self) -> tuple[np.ndarray, np.ndarray, float]:
        sub = bus.QueueSubscriber([self.tracker_pub], ("pose/",))
        rng = np.random.default_rng(12)
        times: list[int] = []
        grips: list[np.ndarray] = []
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < self.seconds:
                for r in sub.poll(0.1):
                    frame = r.message
                    if not isinstance(frame, TrackerFrame) or MARKER not in frame.tools:
                        continue
                    i = frame.tools.index(MARKER)
                    if frame.statuses[i].value != "OK" or frame.frame_number % 3:
                        continue
                    times.append(frame.t_sensor_ns)
                    grips.append(
                        self.world.grip(frame.T_tracker_from_tools[i], time.monotonic() - t0, rng)
                    )
        finally:
            sub.close()
        return np.array(times, np.int64), np.stack(grips) if grips else np.zeros((0, 4, 4)), t0

    def _run(self) -> None:
        try:
            times, grips, _ = self._collect()
            sock = bus.context().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.headset_endpoint)
            try:
                sock.send(encode(Hello(HEADSET_PROTOCOL_VERSION, "sim-xr"), seq=0, t_pub_ns=0))
                sock.send(encode(XrPairedPoses(times, grips), seq=1, t_pub_ns=0))
                deadline = time.monotonic() + 20.0
                while time.monotonic() < deadline:
                    if not sock.poll(500):
                        continue
                    message = decode(sock.recv()).message
                    if isinstance(message, XrRegistration):
                        truth = self.world.T_xr_from_tracker(self.seconds / 2)
                        p = np.array([0.0, 150.0, -1300.0, 1.0])  # the patient's region
                        error = float(np.linalg.norm(message.T_xr_from_tracker @ p - truth @ p))
                        self.result = {
                            "outcome": "accepted",
                            "poses": len(times),
                            "rms_mm": round(message.rms_mm, 3),
                            "error_at_patient_mm": round(error, 2),
                        }
                        log.info(
                            "headset registration (simulated, drifting world): %d poses, residual "
                            "%.2f mm, %.1f mm from the truth at the patient",
                            len(times),
                            message.rms_mm,
                            error,
                        )
                        return
                    if isinstance(message, Reply) and not message.ok:
                        self.result = {
                            "outcome": "refused",
                            "poses": len(times),
                            "reason": message.error,
                        }
                        log.warning("headset registration refused: %s", message.error)
                        return
                self.result = {"outcome": "no answer", "poses": len(times)}
            finally:
                sock.close(linger=0)
        except Exception as error:  # reported in the summary, never a crashed demo
            self.result = {"outcome": "failed", "reason": f"{type(error).__name__}: {error}"}

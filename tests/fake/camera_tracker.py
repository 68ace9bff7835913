"""A tracker that sees a camera's marker and the patient reference, both still, at 100 Hz:
what a tracked surface camera node (stereo, depth) needs to place its clouds."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import numpy as np

from nav.messages import ToolStatus, TrackerFrame
from nav.runtime import bus


class CameraTracker:
    """Publishes ``pose/sim`` frames with ``camera_tool`` and "reference" at fixed poses on
    ``endpoint`` from a thread, while used as a context manager."""

    def __init__(
        self,
        endpoint: str,
        *,
        camera_tool: str,
        T_tracker_from_marker: np.ndarray,
        T_tracker_from_reference: np.ndarray,
    ) -> None:
        self.publisher = bus.Publisher(endpoint)
        self.tools = (camera_tool, "reference")
        self.poses = np.stack([T_tracker_from_marker, T_tracker_from_reference])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            frame = TrackerFrame(
                tracker="sim",
                t_sensor_ns=time.monotonic_ns(),
                frame_number=seq,
                tools=self.tools,
                T_tracker_from_tools=self.poses,
                statuses=(ToolStatus.OK, ToolStatus.OK),
                fit_errors_mm=np.zeros(2),
            )
            self.publisher.publish("pose/sim", frame)
            seq += 1
            self._stop.wait(0.01)

    def __enter__(self) -> CameraTracker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(2)
        self.publisher.close()

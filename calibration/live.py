"""Collect one tool's poses from a running stack's tracker, for a calibration.

Not a node: the ``ornav calibrate ... --live TOOL --connect ENDPOINT`` command calls
``collect_poses`` in its own process, connected to the tracker's PUB socket like any
other subscriber. It reads through ``nav.runtime.bus`` (so every message is validated before it
counts) and keeps only samples whose status is OK.

Subscribes: ``pose/`` — ``TrackerFrame`` on ``pose/<tracker>`` and, if the tracker also
publishes them, ``ToolPose`` on ``pose/<tracker>/<tool>``. A sample that arrives both
ways (same ``t_sensor_ns``) is kept once. Publishes: nothing.

A queue subscriber, not latest-wins: a calibration wants every sample of the window, and
the collection loop does nothing else, so it keeps up with a 1 kHz tracker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from calibration.errors import CalibrationError
from calibration.pivot import PivotResult, pivot_calibration
from nav.arrays import FloatArray, IntArray
from nav.messages import ToolPose, ToolStatus, TrackerFrame
from nav.runtime import bus

log = logging.getLogger(__name__)


ProgressCallback: TypeAlias = Callable[[int, float, Any], None]
"""``on_progress(n_collected, elapsed_s, live_estimate)``; the estimate may be None."""

Estimator: TypeAlias = Callable[[FloatArray], Any]
"""Poses (N, 4, 4) so far -> a live estimate for ``on_progress`` (None: not yet)."""

PROGRESS_PERIOD_S = 0.5
POLL_TIMEOUT_S = 0.05  # a stop request is honoured within this
ESTIMATE_MAX_POSES = 2000  # the live estimate fits a subsample: a few ms at 2 Hz
ESTIMATE_MIN_POSES = 30


class LiveCollectionError(ValueError):
    """Nothing usable arrived: the message says what was seen, and what to check."""


def live_pivot_estimate(Ts: FloatArray) -> PivotResult | None:
    """A pivot fit of the poses so far, with no rotation gate; None until it is solvable.

    The rotation gates stay off here because the point is to show the spread growing
    while the engineer pivots; the final calibration applies them.
    """
    if len(Ts) < ESTIMATE_MIN_POSES:
        return None
    if len(Ts) > ESTIMATE_MAX_POSES:
        Ts = Ts[np.linspace(0, len(Ts) - 1, ESTIMATE_MAX_POSES).astype(int)]
    try:
        return pivot_calibration(
            Ts, min_poses=ESTIMATE_MIN_POSES, min_rotation_deg=0.0, min_weakest_rotation_deg=0.0
        )
    except CalibrationError:
        return None  # degenerate until the pointer has turned at least a little


def check_ipc_endpoint(endpoint: str) -> None:
    """Refuse an ``ipc://`` endpoint whose socket file does not exist (LiveCollectionError)."""
    # ZeroMQ connects to a missing ipc path without complaint and waits forever.
    if endpoint.startswith("ipc://") and not Path(endpoint[len("ipc://") :]).exists():
        raise LiveCollectionError(
            f"{endpoint}: no socket there: is the stack running? "
            "(`ornav launch` prints its ipc directory)"
        )


def collect_poses(
    endpoints: Sequence[str],
    tool: str,
    seconds: float,
    *,
    on_progress: ProgressCallback | None = None,
    estimator: Estimator | None = live_pivot_estimate,
    stop: threading.Event | None = None,
    progress_period_s: float = PROGRESS_PERIOD_S,
) -> tuple[FloatArray, IntArray]:
    """Subscribe for ``seconds`` and return ``tool``'s OK poses and their times.

    Returns ``T_tracker_from_<tool>`` (N, 4, 4) mm and ``t_sensor_ns`` (N,), in sensor
    time order. ``on_progress(n_collected, elapsed_s, estimator(poses))`` is called about
    every ``progress_period_s`` and once at the end; the default estimator is
    ``live_pivot_estimate``. Setting ``stop`` ends the window early (Ctrl-C), keeping
    what was collected. Raises LiveCollectionError when not one OK sample of ``tool``
    arrived, saying whether anything arrived at all, which tools did, and their statuses.
    """
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"seconds must be a finite number > 0, got {seconds}")
    for endpoint in endpoints:
        check_ipc_endpoint(endpoint)
    stop = stop or threading.Event()
    Ts: list[FloatArray] = []
    times: list[int] = []
    seen_ns: set[int] = set()
    statuses: Counter[str] = Counter()
    tools_seen: set[str] = set()
    messages = 0

    def take(pose: ToolPose) -> None:
        statuses[pose.status.value] += 1
        if pose.status is ToolStatus.OK and pose.t_sensor_ns not in seen_ns:
            seen_ns.add(pose.t_sensor_ns)
            Ts.append(np.array(pose.T_tracker_from_tool, dtype=np.float64))
            times.append(pose.t_sensor_ns)

    def report(elapsed_s: float) -> None:
        if on_progress is None:
            return
        estimate = estimator(np.asarray(Ts)) if estimator is not None and Ts else None
        on_progress(len(Ts), elapsed_s, estimate)

    sub = bus.QueueSubscriber(endpoints, ["pose/"])
    try:
        t0 = time.monotonic()
        next_report = t0 + progress_period_s
        while not stop.is_set():
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            for received in sub.poll(min(POLL_TIMEOUT_S, max(0.0, t0 + seconds - now))):
                messages += 1
                message = received.message
                if isinstance(message, TrackerFrame):
                    tools_seen.update(message.tools)
                    if tool in message.tools:
                        take(message.pose(tool))
                elif isinstance(message, ToolPose):
                    tools_seen.add(message.tool)
                    if message.tool == tool:
                        take(message)
            if time.monotonic() >= next_report:
                next_report += progress_period_s
                report(time.monotonic() - t0)
        elapsed_s = time.monotonic() - t0
        rejected = sub.counters["rejected"]
    finally:
        sub.close()
    report(elapsed_s)
    where = ", ".join(endpoints)
    if not Ts:
        if messages == 0:
            extra = f" ({rejected} rejected as malformed)" if rejected else ""
            raise LiveCollectionError(
                f"no pose messages from {where} in {elapsed_s:.1f} s{extra}: "
                "is the tracker running and is this its pub endpoint?"
            )
        if tool not in tools_seen:
            raise LiveCollectionError(
                f"tool {tool!r} is not in what {where} publishes "
                f"(tools: {', '.join(sorted(tools_seen)) or 'none'})"
            )
        seen = ", ".join(f"{status} x{n}" for status, n in statuses.most_common())
        raise LiveCollectionError(
            f"tool {tool!r} was never tracked (status OK) in {elapsed_s:.1f} s ({seen}): "
            "is it in the tracker's view?"
        )
    order = np.argsort(np.asarray(times), kind="stable")
    log.info(
        "collected %d OK poses of %s in %.1f s (%s)",
        len(Ts),
        tool,
        elapsed_s,
        ", ".join(f"{s} x{n}" for s, n in statuses.most_common()),
    )
    return np.asarray(Ts)[order], np.asarray(times, dtype=np.int64)[order]

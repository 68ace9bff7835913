"""Simulated tracker node: publishes every tool of each simulated sample at ``rate_hz``.

Publishes:
- ``pose/<tracker>``: ``TrackerFrame`` with every tool (pointer, reference, headset and
  ``extra_tools`` dummies), at ``rate_hz``;
- ``pose/<tracker>/<tool>``: one ``ToolPose`` per tool, only with ``publish_tool_poses``;
- ``heartbeat/<name>``: with ``tool/<tool>`` rates counting OK samples only.
Subscribes: nothing.
Control (typed in ``nav/messages/control.py``, which holds the ranges):
``pointer.touch`` (``PointerTouch``: points [[x, y, z], ...] mm in the reference frame,
dwell_s, travel_s), ``pointer.trace`` (``PointerTrace``: polyline, speed_mm_s, travel_s),
``pointer.rest`` (``PointerRest``); each replies ``ScriptStarted``, the script's start and
duration in sim seconds. ``tool.occlude`` (``OccludeTool``: tool, duration_s): that tool
is OUT_OF_VIEW from the next sample for ``duration_s`` (tests and demos lose the
reference on cue); replies ``ToolOccluded``, the interval. Arguments are checked before
anything changes, and a bad one is a ``Reply`` error naming it: an unknown key;
``dwell_s``, ``travel_s`` outside [``MIN_STEP_S``, ``MAX_SCRIPT_S``]; ``speed_mm_s``
outside [``MIN_SPEED_MM_S``, ``MAX_SPEED_MM_S``]; more than ``MAX_SCRIPT_POINTS`` points
or a coordinate beyond ``MAX_POSITION_MM``; ``duration_s`` outside (0, ``MAX_OCCLUDE_S``];
and, here, a script that would last longer than ``MAX_SCRIPT_S`` or a tool the tracker
does not have.

Samples are scheduled on the monotonic clock at ``t0 + k / rate_hz``; ``t_sensor_ns`` is
the clock read when the sample is taken, not the schedule, so latency figures are honest.
If the loop falls more than ``MAX_LAG_PERIODS`` behind it skips ahead and counts an
overrun rather than bursting stale samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self, TypeVar

import numpy as np

from nav.messages import (
    Command,
    JsonValue,
    OccludeTool,
    PointerRest,
    PointerTouch,
    PointerTrace,
    Reply,
    ScriptStarted,
    ToolOccluded,
    ToolStatus,
)
from nav.messages.control import MAX_SCRIPT_S
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import NodeRuntime, node_main
from nav.runtime.stats import advance_schedule
from tracking.sim_model import PointerScript, SimConfig, SimulatedTracker

MIN_RATE_HZ = 30.0
MAX_RATE_HZ = 1000.0
MAX_LAG_PERIODS = 5


@dataclass(frozen=True)
class Config:
    """The node's launch-file params; see ``tracking.sim_model.SimConfig`` for meanings."""

    rate_hz: float
    tracker_name: str = "sim"
    seed: int = 0
    noise_mm_rms: float = 0.25
    noise_deg_rms: float = 0.05
    breathing_peak_to_peak_mm: float = 4.0
    breathing_hz: float = 0.25
    dropout_rate_hz: float = 0.05
    dropout_duration_s: float = 0.4
    extra_tools: int = 0
    publish_tool_poses: bool = False
    head_sway_mm: float = 5.0
    head_sway_deg: float = 2.0

    def __post_init__(self) -> None:
        if not MIN_RATE_HZ <= self.rate_hz <= MAX_RATE_HZ:
            raise ValueError(
                f"key 'rate_hz': {self.rate_hz} Hz is outside {MIN_RATE_HZ:g}..{MAX_RATE_HZ:g}"
            )
        self.sim_config()  # SimConfig validates the rest, now rather than at first sample

    def sim_config(self) -> SimConfig:
        return SimConfig(
            tracker_name=self.tracker_name,
            seed=self.seed,
            noise_mm_rms=self.noise_mm_rms,
            noise_deg_rms=self.noise_deg_rms,
            breathing_peak_to_peak_mm=self.breathing_peak_to_peak_mm,
            breathing_hz=self.breathing_hz,
            dropout_rate_hz=self.dropout_rate_hz,
            dropout_duration_s=self.dropout_duration_s,
            extra_tools=self.extra_tools,
            head_sway_mm=self.head_sway_mm,
            head_sway_deg=self.head_sway_deg,
        )


class _PointerControl:
    """Swaps the tracker's pointer script and forced occlusions on command (the model
    itself is immutable: each command builds a new one)."""

    def __init__(self, sim_cfg: SimConfig) -> None:
        self.sim_cfg = sim_cfg
        self.tracker = SimulatedTracker(sim_cfg)
        self.now_s = 0.0  # sim time of the latest sample; a new script starts here

    def _live_occlusions(self) -> tuple[tuple[str, float, float], ...]:
        # Intervals that are over can never matter again; dropping them keeps this bounded.
        return tuple(o for o in self.tracker.forced_occlusions if o[2] > self.now_s)

    def _start(self, script: PointerScript) -> ScriptStarted:
        if not script.duration_s <= MAX_SCRIPT_S:
            raise ValueError(
                f"the script would last {script.duration_s:.3g} s, more than {MAX_SCRIPT_S:g} s"
            )
        self.tracker = SimulatedTracker(
            self.sim_cfg,
            script,
            script_start_s=self.now_s,
            forced_occlusions=self._live_occlusions(),
        )
        return ScriptStarted(start_s=self.now_s, duration_s=script.duration_s)

    def touch(self, request: PointerTouch) -> ScriptStarted:
        script = PointerScript().touch(
            np.array(request.points, dtype=np.float64).reshape(-1, 3),
            dwell_s=request.dwell_s,
            travel_s=request.travel_s,
        )
        return self._start(script)

    def trace(self, request: PointerTrace) -> ScriptStarted:
        script = PointerScript().trace(
            np.array(request.polyline, dtype=np.float64).reshape(-1, 3),
            speed_mm_s=request.speed_mm_s,
            travel_s=request.travel_s,
        )
        return self._start(script)

    def rest(self, request: PointerRest) -> ScriptStarted:
        self.tracker = SimulatedTracker(self.sim_cfg, forced_occlusions=self._live_occlusions())
        return ScriptStarted(start_s=self.now_s, duration_s=0.0)

    def occlude(self, request: OccludeTool) -> ToolOccluded:
        tool = request.tool
        if tool not in self.tracker.tools:
            raise ValueError(f"'tool' must be one of {list(self.tracker.tools)}, got {tool!r}")
        # From the next sample on: now_s is the sim time of the one already published.
        start_s = self.now_s + 1e-9
        current = self.tracker
        self.tracker = SimulatedTracker(
            self.sim_cfg,
            current.script,
            script_start_s=current.script_start_s,
            forced_occlusions=self._live_occlusions(),
        ).with_occlusion(tool, start_s=start_s, duration_s=request.duration_s)
        return ToolOccluded(tool=tool, start_s=start_s, end_s=start_s + request.duration_s)


class _Request(Protocol):
    NAME: ClassVar[str]

    @classmethod
    def from_args(cls, args: Mapping[str, JsonValue]) -> Self: ...


class _Result(Protocol):
    def to_result(self) -> dict[str, JsonValue]: ...


R = TypeVar("R", bound=_Request)


def _serve(runtime: NodeRuntime, request_type: type[R], handler: Callable[[R], _Result]) -> None:
    """Answer ``request_type.NAME``: its args read once by ``from_args`` (a ValueError is the
    Reply's one-line error in ``NodeRuntime``, nothing changed), ``handler``'s reply as the
    result."""

    def handle(command: Command) -> Reply:
        return Reply(ok=True, result=handler(request_type.from_args(command.args)).to_result())

    runtime.on(request_type.NAME, handle)


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    pointer = _PointerControl(cfg.sim_config())
    topic = f"pose/{cfg.tracker_name}"
    period_ns = int(round(1e9 / cfg.rate_hz))
    ok_counts = {f"tool/{tool}": 0 for tool in pointer.tracker.tools}
    with NodeRuntime(spec, stop) as runtime:
        if runtime.pub is None:
            raise ValueError(f"node {spec.name!r}: the tracker needs a pub endpoint")
        _serve(runtime, PointerTouch, pointer.touch)
        _serve(runtime, PointerTrace, pointer.trace)
        _serve(runtime, PointerRest, pointer.rest)
        _serve(runtime, OccludeTool, pointer.occlude)
        runtime.ready()
        t0_ns = time.monotonic_ns()
        frame_number = 0
        next_ns = t0_ns
        while not stop.is_set():
            wait_ns = next_ns - time.monotonic_ns()
            if wait_ns > 0 and stop.wait(wait_ns / 1e9):
                break
            t_sensor_ns = time.monotonic_ns()
            pointer.now_s = (t_sensor_ns - t0_ns) / 1e9
            frame = pointer.tracker.sample(
                pointer.now_s, frame_number=frame_number, t_sensor_ns=t_sensor_ns
            )
            runtime.pub.publish(topic, frame)
            if cfg.publish_tool_poses:
                for pose in frame.poses():
                    runtime.pub.publish(f"{topic}/{pose.tool}", pose)
            for tool, status in zip(frame.tools, frame.statuses, strict=True):
                if status is ToolStatus.OK:
                    ok_counts[f"tool/{tool}"] += 1
            frame_number += 1
            next_ns, overrun = advance_schedule(
                next_ns,
                period_ns=period_ns,
                now_ns=time.monotonic_ns(),
                max_lag_periods=MAX_LAG_PERIODS,
            )
            runtime.counters["overruns"] += overrun
            runtime.service(ok_counts)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

"""Simulated tracker node: publishes every tool of each simulated sample at ``rate_hz``.

Publishes:
- ``pose/<tracker>``: ``TrackerFrame`` with every tool (pointer, reference, headset and
  ``extra_tools`` dummies), at ``rate_hz``;
- ``pose/<tracker>/<tool>``: one ``ToolPose`` per tool, only with ``publish_tool_poses``;
- ``heartbeat/<name>``: with ``tool/<tool>`` rates counting OK samples only.
Subscribes: nothing.
Control: ``pointer.touch`` {points: [[x, y, z], ...] (mm, reference frame), dwell_s,
travel_s}, ``pointer.trace`` {polyline: [[x, y, z], ...], speed_mm_s, travel_s},
``pointer.rest`` {}; each replies with the script's start and duration in sim seconds.
``tool.occlude`` {tool, duration_s}: that tool is OUT_OF_VIEW from the next sample for
``duration_s`` (tests and demos lose the reference on cue); replies with the interval.
Arguments are checked before anything changes, and a bad one is a ``Reply`` error naming
it: an unknown key; ``dwell_s``, ``travel_s`` outside [``MIN_STEP_S``, ``MAX_SCRIPT_S``];
``speed_mm_s`` outside [``MIN_SPEED_MM_S``, ``MAX_SPEED_MM_S``]; more than
``MAX_SCRIPT_POINTS`` points or a coordinate beyond ``MAX_POSITION_MM``; a script that
would last longer than ``MAX_SCRIPT_S``; ``duration_s`` outside (0, ``MAX_OCCLUDE_S``].

Samples are scheduled on the monotonic clock at ``t0 + k / rate_hz``; ``t_sensor_ns`` is
the clock read when the sample is taken, not the schedule, so latency figures are honest.
If the loop falls more than ``MAX_LAG_PERIODS`` behind it skips ahead and counts an
overrun rather than bursting stale samples.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nav.messages import Command, JsonValue, Reply, ToolStatus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import NodeRuntime, node_main
from nav.runtime.stats import advance_schedule
from tracking.sim_model import PointerScript, SimConfig, SimulatedTracker

MIN_RATE_HZ = 30.0
MAX_RATE_HZ = 1000.0
MAX_LAG_PERIODS = 5
MAX_OCCLUDE_S = 3600.0
MAX_SCRIPT_S = 3600.0  # a scripted touch or trace; a longer one is a typo, not a test
MIN_STEP_S = 1e-3  # a dwell or travel shorter than one sample at 1 kHz is no motion at all
MIN_SPEED_MM_S = 0.1
MAX_SPEED_MM_S = 1000.0  # a metre a second: faster than any hand traces a surface
MAX_SCRIPT_POINTS = 10_000
MAX_POSITION_MM = 1e4  # reference frame: 10 m, beyond any tracker's working volume
COMMAND_ARGS: dict[str, tuple[str, ...]] = {
    "pointer.touch": ("points", "dwell_s", "travel_s"),
    "pointer.trace": ("polyline", "speed_mm_s", "travel_s"),
    "pointer.rest": (),
    "tool.occlude": ("tool", "duration_s"),
}
"""The arguments each control command takes; any other key is refused."""


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
        )


def _check_args(command: Command) -> Mapping[str, JsonValue]:
    """The command's arguments, if every key is one it takes; ValueError naming the first not."""
    allowed = COMMAND_ARGS[command.name]
    for key in command.args:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no arguments"
            raise ValueError(f"unknown argument {key!r}; {command.name} takes {takes}")
    return command.args


def _points_arg(args: Mapping[str, JsonValue], key: str) -> npt.NDArray[np.float64]:
    value = args.get(key)
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list of [x, y, z] points in mm")
    if len(value) > MAX_SCRIPT_POINTS:
        raise ValueError(f"{key!r} has {len(value)} points, at most {MAX_SCRIPT_POINTS}")
    try:
        points = np.asarray(value, dtype=np.float64)  # PointerScript checks the shape
    except (TypeError, ValueError):
        raise ValueError(f"{key!r} must be a list of [x, y, z] points in mm") from None
    largest = float(np.max(np.abs(points))) if points.size else 0.0
    if not largest <= MAX_POSITION_MM:  # NaN fails too
        raise ValueError(
            f"{key!r} has a coordinate of {largest:.3g} mm, beyond {MAX_POSITION_MM:g} mm"
        )
    return points


def _float_arg(
    args: Mapping[str, JsonValue], key: str, default: float, *, low: float, high: float
) -> float:
    """A number in [low, high] (NaN and inf are outside); ValueError naming ``key`` if not."""
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key!r} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{key!r} must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _step_s(args: Mapping[str, JsonValue], key: str, default: float) -> float:
    return _float_arg(args, key, default, low=MIN_STEP_S, high=MAX_SCRIPT_S)


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

    def _start(self, script: PointerScript) -> Reply:
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
        return Reply(ok=True, result={"start_s": self.now_s, "duration_s": script.duration_s})

    def touch(self, command: Command) -> Reply:
        args = _check_args(command)
        script = PointerScript().touch(
            _points_arg(args, "points"),
            dwell_s=_step_s(args, "dwell_s", 1.0),
            travel_s=_step_s(args, "travel_s", 1.5),
        )
        return self._start(script)

    def trace(self, command: Command) -> Reply:
        args = _check_args(command)
        script = PointerScript().trace(
            _points_arg(args, "polyline"),
            speed_mm_s=_float_arg(
                args, "speed_mm_s", 20.0, low=MIN_SPEED_MM_S, high=MAX_SPEED_MM_S
            ),
            travel_s=_step_s(args, "travel_s", 1.5),
        )
        return self._start(script)

    def rest(self, command: Command) -> Reply:
        _check_args(command)
        self.tracker = SimulatedTracker(self.sim_cfg, forced_occlusions=self._live_occlusions())
        return Reply(ok=True, result={"start_s": self.now_s, "duration_s": 0.0})

    def occlude(self, command: Command) -> Reply:
        args = _check_args(command)
        tool = args.get("tool")
        if not isinstance(tool, str) or tool not in self.tracker.tools:
            raise ValueError(f"'tool' must be one of {list(self.tracker.tools)}, got {tool!r}")
        duration_s = _float_arg(args, "duration_s", 1.0, low=0.0, high=MAX_OCCLUDE_S)
        if not duration_s > 0.0:
            raise ValueError(f"'duration_s' must be in (0, {MAX_OCCLUDE_S:g}], got {duration_s}")
        # From the next sample on: now_s is the sim time of the one already published.
        start_s = self.now_s + 1e-9
        current = self.tracker
        self.tracker = SimulatedTracker(
            self.sim_cfg,
            current.script,
            script_start_s=current.script_start_s,
            forced_occlusions=self._live_occlusions(),
        ).with_occlusion(tool, start_s=start_s, duration_s=duration_s)
        return Reply(
            ok=True, result={"tool": tool, "start_s": start_s, "end_s": start_s + duration_s}
        )


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    pointer = _PointerControl(cfg.sim_config())
    topic = f"pose/{cfg.tracker_name}"
    period_ns = int(round(1e9 / cfg.rate_hz))
    ok_counts = {f"tool/{tool}": 0 for tool in pointer.tracker.tools}
    with NodeRuntime(spec, stop) as runtime:
        if runtime.pub is None:
            raise ValueError(f"node {spec.name!r}: the tracker needs a pub endpoint")
        runtime.on("pointer.touch", pointer.touch)
        runtime.on("pointer.trace", pointer.trace)
        runtime.on("pointer.rest", pointer.rest)
        runtime.on("tool.occlude", pointer.occlude)
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

"""PLUS file tracker: replays the tracking of a PLUS sequence file as a live tracker would.

Publishes:
- ``pose/<tracker>``: one ``TrackerFrame`` per PLUS frame, with every transform into the
  tracker's frame (``<Tool>ToTracker`` -> tool ``<tool>``), invalid tools included with
  their status;
- ``pose/<tracker>_<frame>``: the transforms of that frame into another PLUS frame
  (``ProbeToReference`` -> tool ``probe`` of ``<tracker>_reference``), when there are any
  (names and frames: ``tracking.plus_sequence``);
- ``heartbeat/<name>``: counters ``frames``, ``skipped`` (broken frames, and frames with a
  non-finite, negative, backward or jumping timestamp: ``tracking.plus_sequence``; the
  log says how many, once), ``downgraded`` (OK transforms that were not a pose: sent
  INVALID), ``projected_poses`` (OK transforms sent as the nearest rigid transform) with the
  gauge ``projected_max_deviation_ppm`` (their largest deviation, x 1e6), ``passes``;
  rates ``tool/<tool>`` counting OK samples (``tool/<tool>_in_<frame>`` for the other
  frames, when that fits a heartbeat key).
Subscribes: nothing.
Control: ``play`` (start now), ``plus`` -> ``{"path", "state", "frames", "passes"}``.

Timing ``original``: frame i is published at ``t_start + (T_i - T_0) / speed`` on the
monotonic clock, T being PLUS's ``Timestamp``, and that instant is its ``t_sensor_ns``: the
file's sample spacing (over ``speed``) on the host clock, so latency figures downstream are
honest. A frame already late goes out at once. Timing ``fast``: as fast as ``rate_hz``
allows, ``t_sensor_ns`` the publish time (for throughput; the file's spacing is not kept).
``frame_number`` is PLUS's ``FrameNumber``, else the frame's position in the file.

Start, end and stop as ``nav.runtime.replay_node``: playback starts ``start_delay_s`` after READY
(a PUB socket drops what it sends before a subscriber joins), or on ``play``, or only on
``play`` with ``wait_for_play``. ``loop`` starts the file again after its last frame. At
the end (no ``loop``) the node lingers ``end_linger_s`` and exits 0, or with
``exit_at_end = false`` heartbeats until stopped. A file that cannot be read to its end,
or whose names do not map onto ornav tools, is one log line and exit 2, before READY.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nav.messages import MAX_NAME_LEN, Command, Reply, ToolStatus
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from tracking.plus_sequence import (
    DEFAULT_TRACKER_FRAME,
    PlusSequenceError,
    PlusSummary,
    open_plus_sequence,
    summarize_plus_sequence,
    to_tracker_frames,
)

log = logging.getLogger(__name__)

TIMINGS = ("original", "fast")
MAX_RATE_HZ = 10_000.0


@dataclass(frozen=True)
class Config:
    """``path``: the PLUS file. ``tracker_name``: ornav's name for the tracker (the topic).

    ``tracker_frame``: the PLUS frame that is the tracker's measurement frame. ``timing``:
    ``original`` or ``fast``; ``speed`` scales ``original``; ``rate_hz`` caps ``fast``.
    """

    path: str
    tracker_name: str = "plus"
    tracker_frame: str = DEFAULT_TRACKER_FRAME
    timing: str = "original"
    speed: float = 1.0
    rate_hz: float = 1000.0
    loop: bool = False
    wait_for_play: bool = False
    start_delay_s: float = 0.5
    exit_at_end: bool = True
    end_linger_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("key 'path': must not be empty")
        if self.timing not in TIMINGS:
            raise ValueError(f"key 'timing': {self.timing!r} is not one of {', '.join(TIMINGS)}")
        if not self.speed > 0:
            raise ValueError(f"key 'speed': must be > 0, got {self.speed}")
        if not 0 < self.rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"key 'rate_hz': {self.rate_hz} is outside 0..{MAX_RATE_HZ:g} Hz")
        if self.start_delay_s < 0:
            raise ValueError("key 'start_delay_s': must be >= 0")
        if self.end_linger_s < 0:
            raise ValueError("key 'end_linger_s': must be >= 0")


class _Player:
    """The playback of one node: schedule, state, counters."""

    def __init__(
        self,
        cfg: Config,
        runtime: NodeRuntime,
        pub: bus.Publisher,
        stop: threading.Event,
        summary: PlusSummary,
    ) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.pub = pub
        self.stop = stop
        self.play = threading.Event()
        self.state = "waiting"
        self.passes = 0
        self.published_frames = 0
        self.ok_counts: dict[str, int] = {}
        for transform in summary.transforms:
            name = self._rate_name(transform.mapping.tracker, transform.mapping.tool)
            if name is not None:
                self.ok_counts[name] = 0

    def _rate_name(self, tracker: str, tool: str) -> str | None:
        if tracker == self.cfg.tracker_name:
            return f"tool/{tool}"
        name = f"tool/{tool}_in_{tracker[len(self.cfg.tracker_name) + 1 :]}"
        return name if len(name) <= MAX_NAME_LEN else None  # a heartbeat key's limit

    def count_ok(self, tracker: str, tools: Sequence[str], statuses: Sequence[ToolStatus]) -> None:
        for tool, status in zip(tools, statuses, strict=True):
            name = self._rate_name(tracker, tool)
            if status is ToolStatus.OK and name is not None:
                self.ok_counts[name] = self.ok_counts.get(name, 0) + 1

    def service(self) -> None:
        self.runtime.counters["frames"] = self.published_frames
        self.runtime.counters["passes"] = self.passes
        self.runtime.service(self.ok_counts)

    def on_play(self, command: Command) -> Reply:
        self.play.set()
        return self.on_status(command)

    def on_status(self, _command: Command) -> Reply:
        return Reply(
            ok=True,
            result={
                "path": self.cfg.path,
                "state": self.state,
                "frames": self.published_frames,
                "passes": self.passes,
            },
        )

    def wait_until(self, due_ns: int) -> bool:
        """Heartbeat and answer commands until ``due_ns``; False if stopped first."""
        while (now_ns := time.monotonic_ns()) < due_ns:
            self.service()
            if self.stop.wait(min(POLL_TIMEOUT_S, (due_ns - now_ns) / 1e9)):
                return False
        return not self.stop.is_set()

    def wait_for_start(self) -> None:
        deadline_ns = time.monotonic_ns() + int(self.cfg.start_delay_s * 1e9)
        while not self.stop.is_set() and not self.play.is_set():
            if not self.cfg.wait_for_play and time.monotonic_ns() >= deadline_ns:
                return
            self.service()
            self.stop.wait(POLL_TIMEOUT_S)

    def play_pass(self) -> None:
        """Publish the file once, on schedule. Raises PlusSequenceError if it went bad."""
        cfg = self.cfg
        period_ns = int(1e9 / cfg.rate_hz)
        t_start_ns = time.monotonic_ns()
        next_fast_ns = t_start_ns
        first_ns: int | None = None
        # run() read the whole file first and logged its problems: not again on each pass.
        with open_plus_sequence(cfg.path, log_problems=False) as reader:
            for position, frame in enumerate(reader):
                if cfg.timing == "original":
                    first_ns = frame.timestamp_ns if first_ns is None else first_ns
                    due_ns = t_start_ns + int((frame.timestamp_ns - first_ns) / cfg.speed)
                    if not self.wait_until(due_ns):
                        return
                    t_sensor_ns = max(0, due_ns)
                else:
                    if not self.wait_until(next_fast_ns):
                        return
                    t_sensor_ns = time.monotonic_ns()
                    next_fast_ns = max(next_fast_ns + period_ns, t_sensor_ns - 5 * period_ns)
                number = frame.frame_number
                converted = to_tracker_frames(
                    frame,
                    t_sensor_ns=t_sensor_ns,
                    frame_number=number if number is not None and number >= 0 else position,
                    tracker=cfg.tracker_name,
                    tracker_frame=cfg.tracker_frame,
                )
                for message in converted.frames:
                    self.pub.publish(f"pose/{message.tracker}", message)
                    self.count_ok(message.tracker, message.tools, message.statuses)
                self.runtime.counters["downgraded"] += len(converted.downgraded)
                if converted.projected:
                    counters = self.runtime.counters
                    counters["projected_poses"] += len(converted.projected)
                    ppm = math.ceil(converted.max_deviation * 1e6)
                    counters["projected_max_deviation_ppm"] = max(
                        counters["projected_max_deviation_ppm"], ppm
                    )
                self.published_frames += 1
                self.service()
            self.runtime.counters["skipped"] += reader.skipped


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    """Replay ``cfg.path``; 0 at the end of the file or on stop, 2 if the file is bad."""
    if spec.pub is None:
        log.error("%s: the PLUS file tracker needs a pub endpoint in the launch file", spec.name)
        return 2
    try:
        summary = summarize_plus_sequence(
            cfg.path, tracker=cfg.tracker_name, tracker_frame=cfg.tracker_frame
        )
        if summary.frame_count == 0:
            raise PlusSequenceError(f"{cfg.path}: no readable frame to play")
    except PlusSequenceError as error:
        log.error("%s: %s", spec.name, error)
        return 2

    with NodeRuntime(spec, stop) as runtime:
        assert runtime.pub is not None
        player = _Player(cfg, runtime, runtime.pub, stop, summary)
        runtime.on("play", player.on_play)
        runtime.on("plus", player.on_status)
        runtime.ready()
        log.info(
            "%s: %s: %d frames, %.1f s at %.1f Hz, tools %s",
            spec.name,
            Path(cfg.path).name,
            summary.frame_count,
            summary.duration_s,
            summary.rate_hz,
            ", ".join(f"{t.mapping.tracker}/{t.mapping.tool}" for t in summary.transforms),
        )
        player.wait_for_start()
        player.state = "playing"
        while not stop.is_set():
            try:
                player.play_pass()
            except PlusSequenceError as error:  # the file changed or broke since the check
                log.error("%s: %s", spec.name, error)
                return 2
            if stop.is_set():
                break
            player.passes += 1
            if not cfg.loop:
                break
        if not stop.is_set():
            player.state = "finished"
            log.info("%s: end of %s", spec.name, cfg.path)
            end_ns = time.monotonic_ns() + int(cfg.end_linger_s * 1e9)
            while not stop.is_set() and (not cfg.exit_at_end or time.monotonic_ns() < end_ns):
                player.service()
                stop.wait(POLL_TIMEOUT_S)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description="Replay a PLUS sequence file as a tracker.")


if __name__ == "__main__":
    raise SystemExit(main())

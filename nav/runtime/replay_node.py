"""Replay: republishes a recorded session on this node's pub socket, with its original timing.

Subscribes: nothing. Publishes: every recorded message whose topic starts with one of
``topics`` and with none of ``exclude``, under its recorded topic, with its recorded content
(original ``seq``, ``t_pub_ns``, ``t_sensor_ns`` and body), so every node runs unchanged on
a recorded session; plus ``heartbeat/<name>`` (counter ``replayed``).

Epoch: each message is re-encoded with this node's own publisher ``epoch`` (``nav.runtime.roster``)
in place of the recorded one: under a supervisor, subscribers trust only the epochs on its
roster, and the recorded publishers are not running. The recording keeps the original
epochs. A recorded payload that does not decode is counted (``refused``) and skipped:
nothing unvalidated is republished.
Control: ``ping``, ``status``, ``play`` (start now), ``replay`` -> ``{"path", "state",
"replayed", "passes"}``.

Timing: message i goes out at ``t_play + (log_time_i - log_time_0) / speed`` on the monotonic
clock, where 0 is the first replayed message of the pass; a message that is already late is
sent at once, so a slow stretch never accumulates. ``loop`` starts a new pass right after the
last message (the seq numbers then restart: subscribers see a jump backwards, not loss).

Start: a PUB socket drops what it sends before a subscriber has joined, so playback starts
``start_delay_s`` (default 0.5 s) after READY, or at once on the ``play`` command; with
``wait_for_play`` only ``play`` starts it (tests and tools that must not miss the first
message connect, see a heartbeat from this node, then send ``play``).

End: at the end of the file (without ``loop``) the node keeps its socket open for
``end_linger_s`` so the last messages leave the send queue, then exits 0: the supervisor
reads that as "finished", not as a crash. With ``exit_at_end = false`` it stays up,
heartbeating, until stopped.

Clock: by default the payloads keep their recorded times, so a replayed sample is as old
as the recording and every live consumer (nav, render, headset) calls it STALE. With
``live_clock`` each message that carries a ``t_sensor_ns`` (TrackerFrame, ToolPose,
NavState, SceneUpdate) is decoded and re-encoded with ``t_pub_ns`` = now and ``t_sensor_ns``
= now minus its recorded sample-to-publish delay, keeping its ``seq``: downstream nodes
see a session happening now, with its original latency. Messages that fail to decode are
counted (``refused``) and skipped: an unreadable pose is never republished as current.
The recording itself is never touched.

Damage: a corrupt chunk is skipped and reading goes on with the next one; at the end of
each pass one warning says how many chunks and messages were lost (``nav.runtime.recording``). A
recording with no readable message is one error line and exit 2, before READY.

Excluded by default: ``heartbeat/`` topics. A heartbeat says a process is alive now;
replaying the recorded ones would show dead processes as running.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nav.messages import (
    Command,
    MessageError,
    NavState,
    Reply,
    SceneUpdate,
    ToolPose,
    TrackerFrame,
    decode,
    encode,
)
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.runtime.recording import RecordedMessage, RecordingError, damage_report, iter_recording

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    """``path``: the recording. ``speed``: 2.0 plays twice as fast. See the module docstring."""

    path: str
    speed: float = 1.0
    loop: bool = False
    topics: tuple[str, ...] = ("",)
    exclude: tuple[str, ...] = ("heartbeat/",)
    wait_for_play: bool = False
    start_delay_s: float = 0.5
    exit_at_end: bool = True
    end_linger_s: float = 0.5
    live_clock: bool = False

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("key 'path': must not be empty")
        if not self.speed > 0:
            raise ValueError(f"key 'speed': must be > 0, got {self.speed}")
        if not self.topics:
            raise ValueError("key 'topics': give at least one prefix ('' replays everything)")
        if self.start_delay_s < 0:
            raise ValueError("key 'start_delay_s': must be >= 0")
        if self.end_linger_s < 0:
            raise ValueError("key 'end_linger_s': must be >= 0")


_TIMED_TYPES = (TrackerFrame, ToolPose, NavState, SceneUpdate)


def replay_payload(payload: bytes, *, epoch: int, now_ns: int | None = None) -> bytes | None:
    """A recorded ``payload`` as this replay publishes it; None if it does not decode.

    Always: stamped with ``epoch`` (this publisher's), ``seq`` and body as recorded. With
    ``now_ns`` (``live_clock``, see "Clock" above): ``t_pub_ns`` becomes ``now_ns`` and a
    sample's ``t_sensor_ns`` becomes ``now_ns - (t_pub_ns - t_sensor_ns)`` as recorded,
    clamped at 0; a message without a sample time keeps its recorded ``t_pub_ns``.
    """
    try:
        envelope = decode(payload)
    except MessageError:
        return None
    message = envelope.message
    t_pub_ns = envelope.t_pub_ns
    if now_ns is not None and isinstance(message, _TIMED_TYPES):
        delay_ns = max(0, envelope.t_pub_ns - message.t_sensor_ns)
        message = dataclasses.replace(message, t_sensor_ns=max(0, now_ns - delay_ns))
        t_pub_ns = now_ns
    return encode(message, seq=envelope.seq, t_pub_ns=t_pub_ns, epoch=epoch)


class _Player:
    """The playback loop of one node: state, counters and the wait between messages."""

    def __init__(
        self, cfg: Config, runtime: NodeRuntime, pub: bus.Publisher, stop: threading.Event
    ) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.pub = pub
        self.stop = stop
        self.play = threading.Event()
        self.state = "waiting"
        self.replayed = 0
        self.passes = 0

    def service(self) -> None:
        self.runtime.counters["replayed"] = self.replayed
        self.runtime.service({"replayed": self.replayed})

    def on_play(self, _command: Command) -> Reply:
        self.play.set()
        return self.on_status(_command)

    def on_status(self, _command: Command) -> Reply:
        return Reply(
            ok=True,
            result={
                "path": self.cfg.path,
                "state": self.state,
                "replayed": self.replayed,
                "passes": self.passes,
            },
        )

    def idle_until(self, deadline_ns: int | None) -> None:
        """Heartbeat and answer commands until ``deadline_ns`` (None: until stopped)."""
        while not self.stop.is_set():
            now_ns = time.monotonic_ns()
            if deadline_ns is not None and now_ns >= deadline_ns:
                return
            self.service()
            left_s = POLL_TIMEOUT_S if deadline_ns is None else (deadline_ns - now_ns) / 1e9
            self.stop.wait(min(POLL_TIMEOUT_S, left_s))

    def wait_for_start(self) -> None:
        deadline_ns = time.monotonic_ns() + int(self.cfg.start_delay_s * 1e9)
        while not self.stop.is_set() and not self.play.is_set():
            now_ns = time.monotonic_ns()
            if not self.cfg.wait_for_play and now_ns >= deadline_ns:
                return
            self.service()
            self.stop.wait(POLL_TIMEOUT_S)

    def play_pass(self, messages: Iterable[RecordedMessage]) -> int:
        """Publish one pass over ``messages`` on schedule; returns how many were published."""
        speed = self.cfg.speed
        origin_log_ns: int | None = None
        t_play_ns = 0
        published = 0
        for message in messages:
            if any(message.topic.startswith(prefix) for prefix in self.cfg.exclude):
                continue
            if origin_log_ns is None:
                origin_log_ns, t_play_ns = message.log_time_ns, time.monotonic_ns()
            due_ns = t_play_ns + int((message.log_time_ns - origin_log_ns) / speed)
            while (now_ns := time.monotonic_ns()) < due_ns:
                self.service()
                if self.stop.wait(min(POLL_TIMEOUT_S, (due_ns - now_ns) / 1e9)):
                    return published
            if self.stop.is_set():
                return published
            payload = replay_payload(
                message.payload,
                epoch=self.pub.epoch,
                now_ns=time.monotonic_ns() if self.cfg.live_clock else None,
            )
            if payload is None:
                self.runtime.counters["refused"] += 1
                continue
            self.pub.publish_raw(message.topic, payload)
            published += 1
            self.replayed += 1
            self.service()
        return published


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    """Replay ``cfg.path``; 0 at the end of the file or on stop, 2 if it cannot start."""
    if spec.pub is None:
        log.error("%s: replay needs a pub endpoint in the launch file", spec.name)
        return 2
    try:
        reader = iter_recording(cfg.path, topics=cfg.topics)
    except RecordingError as error:
        log.error("%s: %s", spec.name, error)
        return 2
    # Read up to the first message before READY: a file with none is an error, not a replay.
    first = next(reader, None)
    if first is None and reader.messages_read == 0:
        damage = damage_report(reader)
        reader.close()
        log.error(
            "%s: %s: no readable message%s", spec.name, cfg.path, f" ({damage})" if damage else ""
        )
        return 2
    messages: Iterable[RecordedMessage] = itertools.chain([] if first is None else [first], reader)

    try:
        with NodeRuntime(spec, stop) as runtime:
            assert runtime.pub is not None
            player = _Player(cfg, runtime, runtime.pub, stop)
            runtime.on("play", player.on_play)
            runtime.on("replay", player.on_status)
            runtime.ready()
            player.wait_for_start()
            player.state = "playing"
            log.info("%s: playing %s at %gx", spec.name, Path(cfg.path).name, cfg.speed)
            while not stop.is_set():
                published = player.play_pass(messages)
                reader.close()
                damage = damage_report(reader)
                if damage and player.passes == 0:
                    log.warning(
                        "%s: %s: %d messages read; %s",
                        spec.name,
                        cfg.path,
                        reader.messages_read,
                        damage,
                    )
                if stop.is_set():
                    break
                player.passes += 1
                if not cfg.loop or published == 0:  # an empty loop would spin
                    break
                reader = iter_recording(cfg.path, topics=cfg.topics)
                messages = reader
            if not stop.is_set():
                player.state = "finished"
                log.info("%s: end of %s after %d messages", spec.name, cfg.path, player.replayed)
                linger_ns = int(cfg.end_linger_s * 1e9)
                player.idle_until(time.monotonic_ns() + linger_ns if cfg.exit_at_end else None)
    finally:
        reader.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description="Replay an MCAP recording onto the bus.")


if __name__ == "__main__":
    raise SystemExit(main())

"""The reference headset client: joins a render node's session, mirrors its scene, measures.

What a headset does, in the order docs/headset-protocol.md describes it:

1. ``Hello`` on a DEALER socket connected to the render node's ROUTER session socket;
   ``Welcome`` names the session, the scene PUB endpoint and the assets (``Reply`` not ok:
   a protocol mismatch, fatal: ``HeadsetError``).
2. Clock sync: ``ClockPing``/``ClockPong``, a burst on joining then one every
   ``ping_period_s``; the offset (server minus client clock) is taken from the pong with
   the smallest round trip in a sliding window (``ClockSync``).
3. Assets by SHA-256 (``AssetRequest`` -> ``AssetData``, hash checked on decode), pipelined,
   cached in memory (and in ``cache_dir`` if given) by hash across sessions: a rejoin
   fetches only what changed. The case's CT brick (``Welcome.volume``, protocol 3) is one
   of them: fetched once per hash, never per frame; the view carries it for snapshots.
4. ``SnapshotRequest`` for the newest ``SceneUpdate`` right away (a SUB socket misses what
   was published before it joined), then ``scene/update`` on the scene PUB, latest-wins.
5. ``Alert`` pushed on the session socket: recorded and acked with ``AlertAck`` every time
   it arrives (the server resends until acked; a lost ack only costs a resend).
6. ``HeadsetTelemetry`` every ``telemetry_period_s``: frame numbers, sensor, receive and
   display times of the updates applied since the last batch.

Safety on the client's own clock (``client_overlay``): the overlay drawn is the worse of
the server's verdict and the pose age ``now + clock_offset - t_sensor_ns``: older than
``stale_after_ms`` is STALE, older than ``hide_after_ms`` HIDDEN. A dead render node or
tracker therefore never leaves a current-looking overlay.

Rejoin: a scene update or alert from another session (the render node restarted), or no
word from the server for ``silence_timeout_s`` (pongs count, so a quiet stack is not
silence), closes the session socket and says ``Hello`` again on a fresh one, every
``silence_timeout_s`` until a ``Welcome`` comes. So does a ``Reply`` with code "evicted"
or "no_session" (the server closed or forgot the session). A ``Reply`` with code
"sessions_full" is not fatal: Hello again after 0.25 s, doubling up to 5 s.

Scene reload: a scene update of this session whose ``scene_version`` differs from the
``Welcome``'s (the render node swapped its assets, e.g. confidence colours after a
registration) makes the client say ``Hello`` again; the new ``Welcome`` lists the assets,
and only those with new hashes are fetched (``scene_reloads`` in the summary).

Times are the client's monotonic clock (ns) unless named ``*_server_ns``. On one host the
offset is ~0 and latency is a plain difference of monotonic clocks.

``zmq`` is imported here although this is not a ``*_node.py``: the client is a process of
its own (``ornav headset``), and ``nav.runtime.bus`` has no DEALER. The pure parts (``ClockSync``,
``client_overlay``, ``OverlayEvents``) take time as an argument and are tested apart.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import zmq  # noqa: TID251 -- a process of its own; see the module docstring

from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    MAX_ASSET_BYTES,
    MAX_TELEMETRY_SAMPLES,
    Alert,
    AlertAck,
    AssetData,
    AssetInfo,
    AssetRequest,
    ClockPing,
    ClockPong,
    HeadsetTelemetry,
    Hello,
    Message,
    MessageError,
    NavStatus,
    OverlayState,
    Reply,
    SceneUpdate,
    SnapshotRequest,
    Welcome,
    decode,
    encode,
)
from nav.messages.headset import VolumeInfo
from nav.runtime import bus
from nav.runtime.stats import LatencyWindow

log = logging.getLogger(__name__)

SCENE_TOPIC = "scene/update"
ENDPOINT_PATTERN = re.compile(r"(ipc://[^\s]{1,200}|tcp://[^\s:]{1,200}:\d{1,5})")
CLIENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_EVENTS = 1024
_STATS_CAPACITY = 1 << 17  # about 5 minutes of 400 Hz updates
_JOIN_BACKOFF_FIRST_S = 0.25  # a "sessions full" refusal: Hello again after this,
_JOIN_BACKOFF_MAX_S = 5.0  # doubling up to this


class HeadsetError(RuntimeError):
    """The client cannot go on (bad endpoint, protocol mismatch): one line, for the CLI."""


# --- clock sync (pure) ----------------------------------------------------------------


@dataclass(frozen=True)
class ClockSample:
    """One ping/pong: client send and receive times, the server's time in between (ns)."""

    t_send_ns: int
    t_server_ns: int
    t_recv_ns: int

    @property
    def rtt_ns(self) -> int:
        return self.t_recv_ns - self.t_send_ns

    @property
    def offset_ns(self) -> int:
        """Server minus client clock, assuming the server stamped at the round trip's middle."""
        return self.t_server_ns - (self.t_send_ns + self.t_recv_ns) // 2


class ClockSync:
    """Server-minus-client clock offset, NTP style: the minimum-RTT sample of a window.

    With one server timestamp per exchange the true offset lies in
    ``[t_server - t_recv, t_server - t_send]``: the midpoint estimate is off by at most
    ``rtt / 2``, and by exactly half the up/down delay asymmetry. Queueing only adds delay,
    so the sample with the smallest round trip is the least disturbed one (the clock filter
    of NTP, Mills, RFC 5905 section 10). A window of recent samples lets the estimate follow
    a drifting clock; on one host the offset is ~0 and this only measures the RTT.
    """

    def __init__(self, window: int = 16) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._samples: collections.deque[ClockSample] = collections.deque(maxlen=window)

    def add(self, sample: ClockSample) -> None:
        """Add one exchange; a negative round trip (a broken echo) is ignored."""
        if sample.rtt_ns >= 0:
            self._samples.append(sample)

    def reset(self) -> None:
        self._samples.clear()

    def best(self) -> ClockSample | None:
        if not self._samples:
            return None
        return min(self._samples, key=lambda s: s.rtt_ns)

    @property
    def offset_ns(self) -> int:
        """The estimate; 0 before any sample (one host: the clocks are the same clock)."""
        best = self.best()
        return 0 if best is None else best.offset_ns

    @property
    def error_bound_ns(self) -> int | None:
        """Half the best round trip: the estimate's worst-case error; None before a sample."""
        best = self.best()
        return None if best is None else best.rtt_ns // 2

    def __len__(self) -> int:
        return len(self._samples)


# --- the overlay rule on the client's clock (pure) ------------------------------------


def _hidden_reason(update: SceneUpdate) -> str:
    if update.status is not NavStatus.OK:
        return update.status.value
    if not update.headset_ok:
        return "HEADSET_LOST"
    return "server: pose too old"


def client_overlay(
    update: SceneUpdate | None,
    *,
    now_ns: int,
    clock_offset_ns: int,
    stale_after_ms: float = 100.0,
    hide_after_ms: float = 300.0,
) -> tuple[OverlayState, str]:
    """How to draw ``update`` at client time ``now_ns``: the state and a one-line reason.

    The worse of the server's verdict and the pose age on the client's clock
    (``now_ns + clock_offset_ns - t_sensor_ns``). Reason is "" when CURRENT.
    """
    if update is None:
        return OverlayState.HIDDEN, "no scene yet"
    if update.overlay is OverlayState.HIDDEN:
        return OverlayState.HIDDEN, _hidden_reason(update)
    age_ms = (now_ns + clock_offset_ns - update.t_sensor_ns) / 1e6
    if age_ms > hide_after_ms:
        return OverlayState.HIDDEN, f"no update for {age_ms:.0f} ms"
    if age_ms > stale_after_ms:
        return OverlayState.STALE, f"pose {age_ms:.0f} ms old"
    if update.overlay is OverlayState.STALE:
        return OverlayState.STALE, f"server: {update.status.value}, pose {update.age_ms:.0f} ms"
    return OverlayState.CURRENT, ""


@dataclass(frozen=True)
class OverlayEvent:
    """The client's drawn overlay changed at ``t_ns`` (client clock)."""

    t_ns: int
    state: OverlayState
    reason: str
    status: NavStatus | None


class OverlayEvents:
    """Counts the client's transitions: into STALE, and into HIDDEN from a drawn overlay.

    Starting up hidden (nothing drawn yet) is not an event; HIDDEN -> STALE is a stale
    event (the overlay came back, marked).
    """

    def __init__(self) -> None:
        self.state = OverlayState.HIDDEN
        self.reason = "no scene yet"
        self.stale_events = 0
        self.hidden_events = 0
        self.history: collections.deque[OverlayEvent] = collections.deque(maxlen=_MAX_EVENTS)

    def observe(
        self, state: OverlayState, reason: str, *, t_ns: int, status: NavStatus | None = None
    ) -> bool:
        """Record the state at ``t_ns``; True if it changed."""
        self.reason = reason
        if state is self.state:
            return False
        if state is OverlayState.STALE:
            self.stale_events += 1
        elif state is OverlayState.HIDDEN:
            self.hidden_events += 1
        self.state = state
        self.history.append(OverlayEvent(t_ns, state, reason, status))
        return True


# --- the client -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """How the client joins and what it measures; times in s unless named ``*_ms``."""

    endpoint: str
    name: str = "ornav-headset"
    stale_after_ms: float = 100.0
    hide_after_ms: float = 300.0
    silence_timeout_s: float = 1.0
    ping_period_s: float = 0.25
    ping_burst: int = 8
    clock_window: int = 16
    telemetry_period_s: float = 0.2
    display_hz: float = 60.0
    """Rate of the virtual display: pose age is sampled at each of its refreshes."""
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if not ENDPOINT_PATTERN.fullmatch(self.endpoint):
            raise HeadsetError(
                f"--connect {self.endpoint!r}: not a ZeroMQ endpoint (ipc:///path or tcp://host:port)"
            )
        if not CLIENT_NAME_PATTERN.fullmatch(self.name):
            raise HeadsetError(f"--name {self.name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not 0 < self.stale_after_ms < self.hide_after_ms:
            raise HeadsetError("need 0 < stale_after_ms < hide_after_ms")
        for key in ("silence_timeout_s", "ping_period_s", "telemetry_period_s", "display_hz"):
            if not getattr(self, key) > 0:
                raise HeadsetError(f"{key} must be > 0")


class Phase(enum.Enum):
    JOINING = "joining"  # Hello sent, no Welcome yet
    LOADING = "loading"  # welcomed, assets still coming
    LIVE = "live"  # every asset present


@dataclass
class ClientStats:
    """What the client measured so far (the summary JSON is built from this)."""

    latency: LatencyWindow = field(default_factory=lambda: LatencyWindow(_STATS_CAPACITY))
    pose_age: LatencyWindow = field(default_factory=lambda: LatencyWindow(_STATS_CAPACITY))
    frames: int = 0
    snapshots: int = 0
    joins: int = 0
    join_attempts: int = 0
    join_refusals: int = 0  # "sessions full": retried with backoff
    sessions_lost: int = 0  # the server closed our session (evicted, or it forgot it)
    alerts: list[str] = field(default_factory=list)
    alert_acks: int = 0
    assets_fetched: int = 0
    asset_bytes_fetched: int = 0
    asset_fetch_ms: float | None = None
    telemetry_batches: int = 0
    rejected: int = 0
    foreign_updates: int = 0
    out_of_order: int = 0  # updates older than the one drawn (a snapshot's race), dropped
    scene_reloads: int = 0
    scene_loads: list[tuple[int, int]] = field(default_factory=list)
    """(scene_version, client monotonic ns) each time a scene's assets were all in hand:
    from then on its models are what an update draws (bounded: ``MAX_SCENE_LOADS``)."""
    lost_before: int = 0  # seq gaps on scene subscribers already closed
    superseded_before: int = 0


@dataclass(frozen=True, eq=False)
class SceneView:
    """What the headset would draw now: the newest update, the client's verdict, the meshes
    and the CT brick (``volume``: its ``VolumeInfo`` and bytes; None: the case has none)."""

    update: SceneUpdate | None
    overlay: OverlayState
    reason: str
    assets: Mapping[str, tuple[AssetInfo, bytes]]
    t_ns: int
    clock_offset_ns: int
    volume: tuple[VolumeInfo, bytes] | None = None
    deformed: bool = False
    """The models drawn are deformed for the update's registration (``Welcome.deformed_for``)."""


MAX_SCENE_LOADS: Final = 256
"""Scene loads kept for the summary: one per registration that changed the models."""


def _asset_hashes(welcome: Welcome) -> list[str]:
    """Every asset a Welcome lists: the structures' GLBs and the CT brick, if any."""
    hashes = [info.sha256 for info in welcome.assets]
    if welcome.volume is not None:
        hashes.append(welcome.volume.sha256)
    return hashes


def _percentiles(window: LatencyWindow) -> dict[str, float | int | None]:
    p = window.percentiles_ms()
    return {"p50": p.get("p50"), "p99": p.get("p99"), "max": p.get("max"), "n": window.count}


class HeadsetClient:
    """One headset's session with a render node. Call ``step`` in a loop (or ``run``).

    ``clock`` is the client's monotonic clock (ns); injectable for tests. Raises
    ``HeadsetError`` (one line) for a bad endpoint or a protocol mismatch.
    """

    def __init__(self, cfg: ClientConfig, *, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.cfg = cfg
        self._clock = clock
        self.stats = ClientStats()
        self.clock_sync = ClockSync(cfg.clock_window)
        self.events = OverlayEvents()
        self.phase = Phase.JOINING
        self.session: str | None = None
        self.welcome: Welcome | None = None
        self.latest: SceneUpdate | None = None
        self._asset_cache: dict[str, bytes] = {}
        self._pending_pings: dict[int, int] = {}
        self._pending: collections.deque[tuple[str, str]] = collections.deque()
        self._alerts_seen: set[tuple[str, int]] = set()
        self._old_sessions: set[str] = set()
        self._latest_t_pub_ns = -1  # the order of ``latest`` in its session (see below)
        self._reload_t_pub_ns = -1  # updates published up to this predate the newest reload
        self._seq = 0
        self._poller = zmq.Poller()
        self._dealer: zmq.Socket[bytes] | None = None
        self._scene: bus.LatestSubscriber | None = None
        now = clock()
        self._last_contact_ns = now
        self._hello_sent_ns = now
        self._first_join_done = False
        self._asset_t0_ns: int | None = None
        self._next_ping_ns = now
        self._burst_left = 0
        self._next_telemetry_ns = now + int(cfg.telemetry_period_s * 1e9)
        self._display_period_ns = int(1e9 / cfg.display_hz)
        self._next_display_ns = now
        self._telemetry: list[tuple[int, int, int, int]] = []
        self.fatal: str | None = None
        self._retry_at_ns: int | None = None  # when to Hello again after a "full" refusal
        self._join_backoff_s = _JOIN_BACKOFF_FIRST_S
        self._open_session()

    # --- sockets ------------------------------------------------------------------

    def _open_session(self) -> None:
        """A fresh DEALER and a Hello (old socket closed: its queued requests die with it)."""
        if self._dealer is not None:
            self._poller.unregister(self._dealer)
            self._dealer.close(linger=0)
        sock = bus.context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # Assets are big; anything else is small. Oversized input is refused by decode.
        sock.setsockopt(zmq.RCVHWM, 1000)
        try:
            sock.connect(self.cfg.endpoint)
        except zmq.ZMQError as error:
            sock.close(linger=0)
            raise HeadsetError(f"--connect {self.cfg.endpoint}: {error}") from None
        self._dealer = sock
        self._poller.register(sock, zmq.POLLIN)
        self._pending.clear()
        self._pending_pings.clear()
        self._retry_at_ns = None
        self.phase = Phase.JOINING
        now = self._clock()
        self._hello_sent_ns = now
        self._last_contact_ns = now
        self.stats.join_attempts += 1
        self._send(Hello(protocol=HEADSET_PROTOCOL_VERSION, client=self.cfg.name))
        self._pending.append(("Hello", ""))

    def _send(self, message: Message) -> None:
        assert self._dealer is not None
        try:
            self._dealer.send(
                encode(message, seq=self._seq, t_pub_ns=self._clock()), flags=zmq.NOBLOCK
            )
        except zmq.Again:  # not connected yet or HWM: a request is retried by the next Hello
            return
        self._seq += 1

    def _subscribe(self, endpoint: str) -> None:
        if self._scene is not None:
            if self._scene.endpoints == (endpoint,):
                return
            self._close_scene()
        self._scene = bus.LatestSubscriber([endpoint], [SCENE_TOPIC])
        self._poller.register(self._scene.fileno_socket(), zmq.POLLIN)

    def _close_scene(self) -> None:
        if self._scene is None:
            return
        self.stats.lost_before += self._scene.counters["lost"]
        self.stats.superseded_before += self._scene.counters["superseded"]
        self.stats.rejected += self._scene.counters["rejected"]
        self._poller.unregister(self._scene.fileno_socket())
        self._scene.close()
        self._scene = None

    def close(self) -> None:
        """Send the last telemetry batch and close both sockets."""
        if self._dealer is not None:
            if self.session is not None:
                self._flush_telemetry()
            self._poller.unregister(self._dealer)
            self._dealer.close(linger=100)  # a moment for the last batch and acks to leave
            self._dealer = None
        self._close_scene()

    def __enter__(self) -> HeadsetClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the loop -----------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        *,
        duration_s: float | None = None,
        on_second: Callable[[HeadsetClient], None] | None = None,
    ) -> None:
        """Step until ``stop`` is set or ``duration_s`` passed; ``on_second`` about every 1 s."""
        t_end = None if duration_s is None else self._clock() + int(duration_s * 1e9)
        next_report = self._clock() + 1_000_000_000
        while not stop.is_set():
            now = self._clock()
            if t_end is not None and now >= t_end:
                break
            self.step(0.01)
            if self.fatal is not None:
                raise HeadsetError(self.fatal)
            if on_second is not None and self._clock() >= next_report:
                next_report += 1_000_000_000
                on_second(self)

    def step(self, timeout_s: float = 0.01) -> None:
        """Wait up to ``timeout_s`` for traffic, handle it, then the timers."""
        now = self._clock()
        timers = [self._next_ping_ns, self._next_telemetry_ns, self._next_display_ns]
        wait_ms = max(0, min(int(timeout_s * 1000), (min(timers) - now) // 1_000_000))
        ready = dict(self._poller.poll(wait_ms))
        if self._dealer is not None and self._dealer in ready:
            self._drain_session()
        if self._scene is not None and self._scene.fileno_socket() in ready:
            for received in self._scene.poll(0):
                self._on_scene_update(
                    received.message,
                    received.t_recv_ns,
                    t_pub_ns=received.envelope.t_pub_ns,
                    live=True,
                )
        self._timers(self._clock())

    def _timers(self, now: int) -> None:
        if self._retry_at_ns is not None:  # refused for now: no silence to detect
            if now >= self._retry_at_ns:
                self._open_session()
                now = self._clock()
        elif now - self._last_contact_ns > self.cfg.silence_timeout_s * 1e9:
            log.warning(
                "no word from %s for %.1f s: joining again",
                self.cfg.endpoint,
                (now - self._last_contact_ns) / 1e9,
            )
            self._open_session()
            now = self._clock()
        joined = self.session is not None and self.phase is not Phase.JOINING
        if joined and now >= self._next_ping_ns:
            self._ping(now)
            if self._burst_left > 0:
                self._burst_left -= 1
                self._next_ping_ns = now + 20_000_000
            else:
                self._next_ping_ns = now + int(self.cfg.ping_period_s * 1e9)
        if now >= self._next_telemetry_ns:
            self._next_telemetry_ns = now + int(self.cfg.telemetry_period_s * 1e9)
            if joined:  # no session, no telemetry: it would only be refused
                self._flush_telemetry()
        if now >= self._next_display_ns:
            self._next_display_ns += self._display_period_ns
            if self._next_display_ns <= now:  # a stalled loop skips refreshes, not bursts
                self._next_display_ns = now + self._display_period_ns
            if self.latest is not None and self.phase is Phase.LIVE:
                age_ns = now + self.clock_sync.offset_ns - self.latest.t_sensor_ns
                self.stats.pose_age.add(age_ns)
        self._evaluate(now)

    def _evaluate(self, now: int) -> None:
        update = self.latest if self.phase is Phase.LIVE else None
        state, reason = client_overlay(
            update,
            now_ns=now,
            clock_offset_ns=self.clock_sync.offset_ns,
            stale_after_ms=self.cfg.stale_after_ms,
            hide_after_ms=self.cfg.hide_after_ms,
        )
        if self.phase is not Phase.LIVE and self.session is not None:
            reason = "loading assets" if self.phase is Phase.LOADING else "joining"
        elif self.session is None:
            reason = "joining"
        changed = self.events.observe(
            state, reason, t_ns=now, status=None if update is None else update.status
        )
        if changed:
            log.info("overlay %s%s", state.value, f" ({reason})" if reason else "")

    def _ping(self, now: int) -> None:
        self._pending_pings[now] = now
        if len(self._pending_pings) > 64:  # pongs that never came
            for key in sorted(self._pending_pings)[:-64]:
                del self._pending_pings[key]
        self._send(ClockPing(t_client_ns=now))

    # --- session socket -----------------------------------------------------------

    def _drain_session(self) -> None:
        assert self._dealer is not None
        while True:
            try:
                frames = self._dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            t_recv = self._clock()
            if len(frames) != 1:
                self.stats.rejected += 1
                continue
            try:
                envelope = decode(frames[0], max_bytes=MAX_ASSET_BYTES + 4096)
            except MessageError as error:
                self.stats.rejected += 1
                log.debug("dropped a session message: %s", error)
                continue
            if not isinstance(envelope.message, SceneUpdate):
                self._last_contact_ns = t_recv  # a snapshot counts only if it is taken
            self._on_session_message(envelope.message, t_recv, envelope.t_pub_ns)
            if self._dealer is None:
                return

    def _take_pending(self, kind: str, key: str = "") -> None:
        for i, (k, v) in enumerate(self._pending):
            if k == kind and (not key or v == key):
                del self._pending[i]
                return

    def _on_session_message(self, message: Message, t_recv: int, t_pub_ns: int) -> None:
        if isinstance(message, Welcome):
            self._take_pending("Hello")
            self._on_welcome(message, t_recv)
        elif isinstance(message, ClockPong):
            sent = self._pending_pings.pop(message.t_client_ns, None)
            if sent is not None:
                self.clock_sync.add(ClockSample(sent, message.t_server_ns, t_recv))
        elif isinstance(message, AssetData):
            self._take_pending("AssetRequest", message.sha256)
            self._on_asset(message, t_recv)
        elif isinstance(message, SceneUpdate):  # the answer to SnapshotRequest
            self._take_pending("SnapshotRequest")
            self.stats.snapshots += 1
            self._on_scene_update(message, t_recv, t_pub_ns=t_pub_ns, live=False)
        elif isinstance(message, Alert):
            self._on_alert(message)
        elif isinstance(message, Reply):
            code = message.result.get("code") if not message.ok else None
            if code in ("evicted", "no_session"):
                # Not an answer to one request: the server has no session for us (any
                # more). Say Hello again, unless a Hello is already on its way.
                if self.phase is not Phase.JOINING:
                    log.warning("session lost (%s): %s; joining again", code, message.error)
                    self.stats.sessions_lost += 1
                    self._open_session()
                return
            kind, key = self._pending.popleft() if self._pending else ("?", "")
            if code == "sessions_full":
                self._retry_join_later(message.error)
            elif not message.ok:
                self._on_error_reply(kind, key, message.error)
        else:
            self.stats.rejected += 1

    def _retry_join_later(self, error: str) -> None:
        """The server is full: Hello again after a backoff that doubles up to its cap."""
        delay_s = self._join_backoff_s
        self._join_backoff_s = min(_JOIN_BACKOFF_MAX_S, 2 * delay_s)
        self._retry_at_ns = self._clock() + int(delay_s * 1e9)
        self.stats.join_refusals += 1
        log.warning(
            "%s refused the session: %s; trying again in %.2f s", self.cfg.endpoint, error, delay_s
        )

    def _on_error_reply(self, kind: str, key: str, error: str) -> None:
        if kind == "Hello":
            self.fatal = f"{self.cfg.endpoint} refused the session: {error}"
            log.error("%s", self.fatal)
        elif kind == "AssetRequest":
            log.warning("asset %s refused: %s", key[:12], error)
        elif kind == "SnapshotRequest":
            log.info("no snapshot yet: %s", error)
        else:
            log.warning("the render node answered %s with an error: %s", kind, error)

    def _on_welcome(self, welcome: Welcome, t_recv: int) -> None:
        new_session = welcome.session != self.session
        if new_session and self.session is not None:
            self._old_sessions.add(self.session)
        self.welcome = welcome
        self.session = welcome.session
        self.stats.joins += 1
        self._join_backoff_s = _JOIN_BACKOFF_FIRST_S
        self.clock_sync.add(ClockSample(self._hello_sent_ns, welcome.t_server_ns, t_recv))
        if new_session:
            self.clock_sync.reset()  # the server may run on another clock now
            self.clock_sync.add(ClockSample(self._hello_sent_ns, welcome.t_server_ns, t_recv))
            self.latest = None
            self._latest_t_pub_ns = -1
            self._reload_t_pub_ns = -1
        log.info(
            "joined session %s of %s (%d assets, scene %s)%s",
            welcome.session[:8],
            self.cfg.endpoint,
            len(welcome.assets),
            welcome.scene_endpoint,
            "" if self.stats.joins == 1 else f", rejoin {self.stats.joins - 1}",
        )
        self._burst_left = self.cfg.ping_burst
        self._next_ping_ns = t_recv
        self._asset_t0_ns = self._hello_sent_ns
        for sha in _asset_hashes(welcome):
            if sha not in self._asset_cache and not self._load_cached(sha):
                self._send(AssetRequest(sha256=sha))
                self._pending.append(("AssetRequest", sha))
        self.phase = Phase.LOADING
        self._check_assets(t_recv)
        self._subscribe(welcome.scene_endpoint)
        self._send(SnapshotRequest())
        self._pending.append(("SnapshotRequest", ""))

    def _cache_path(self, cache_dir: Path, sha256: str) -> Path:
        volume = None if self.welcome is None else self.welcome.volume
        suffix = ".u16.gz" if volume is not None and volume.sha256 == sha256 else ".glb"
        return cache_dir / f"{sha256}{suffix}"

    def _load_cached(self, sha256: str) -> bool:
        if self.cfg.cache_dir is None:
            return False
        path = self._cache_path(self.cfg.cache_dir, sha256)
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if hashlib.sha256(data).hexdigest() != sha256:
            return False
        self._asset_cache[sha256] = data
        return True

    def _on_asset(self, asset: AssetData, t_recv: int) -> None:
        # decode() has checked the bytes against their hash already.
        if asset.sha256 not in self._asset_cache:
            self._asset_cache[asset.sha256] = asset.data
            self.stats.assets_fetched += 1
            self.stats.asset_bytes_fetched += len(asset.data)
            if self.cfg.cache_dir is not None:
                try:
                    self.cfg.cache_dir.mkdir(parents=True, exist_ok=True)
                    self._cache_path(self.cfg.cache_dir, asset.sha256).write_bytes(asset.data)
                except OSError as error:
                    log.warning("cannot cache asset %s: %s", asset.sha256[:12], error)
        self._check_assets(t_recv)

    def _check_assets(self, now: int) -> None:
        if self.phase is not Phase.LOADING or self.welcome is None:
            return
        if all(sha in self._asset_cache for sha in _asset_hashes(self.welcome)):
            self.phase = Phase.LIVE
            if not self._first_join_done and self._asset_t0_ns is not None:
                self.stats.asset_fetch_ms = (now - self._asset_t0_ns) / 1e6
                self._first_join_done = True
            if len(self.stats.scene_loads) < MAX_SCENE_LOADS:
                self.stats.scene_loads.append((self.welcome.scene_version, now))
            log.info("scene ready: %d assets", len(self.welcome.assets))

    def _on_alert(self, alert: Alert) -> None:
        if alert.session != self.session:
            self._foreign(alert.session)
            return
        key = (alert.session, alert.alert_id)
        if key not in self._alerts_seen:
            self._alerts_seen.add(key)
            self.stats.alerts.append(alert.code)
            log.warning("alert %s (%s): %s", alert.code, alert.severity.value, alert.text)
        self._send(AlertAck(session=alert.session, alert_id=alert.alert_id))
        self.stats.alert_acks += 1

    def _foreign(self, session: str) -> None:
        """Traffic from another session: the render node restarted; join it.

        Leftovers of a session already left (queued before the rejoin) are only dropped.
        """
        self.stats.foreign_updates += 1
        if session in self._old_sessions:
            return
        if self.phase is not Phase.JOINING:
            log.warning("session changed (%s -> %s): joining again", self.session, session[:8])
            self._open_session()

    # --- scene updates ------------------------------------------------------------

    def _on_scene_update(self, message: Message, t_recv: int, *, t_pub_ns: int, live: bool) -> None:
        """Take a scene update from the stream (``live``) or a snapshot, if it is newer.

        Updates are ordered by ``t_pub_ns``, the render node's monotonic clock when it
        published the update (for a snapshot: when it served it, and it serves the newest
        update published by then). One session is one render-node process, so that clock
        never goes back within it. Not by ``frame_number``: that is the tracker's count and
        starts again at 0 when the tracker restarts, which hid the overlay for as long as
        the tracker had run before. An update dropped here is not contact with the server.
        """
        if not isinstance(message, SceneUpdate):
            self.stats.rejected += 1
            return
        if message.session != self.session:
            self._foreign(message.session)
            return
        if self.welcome is not None and message.scene_version != self.welcome.scene_version:
            # Leftovers of the scene left behind, or updates racing our Hello, are dropped.
            if self.phase is not Phase.JOINING and t_pub_ns > self._reload_t_pub_ns:
                self._reload_t_pub_ns = t_pub_ns
                self.stats.scene_reloads += 1
                log.info(
                    "scene version %d -> %d: joining again for the new assets",
                    self.welcome.scene_version,
                    message.scene_version,
                )
                self._open_session()
            return
        if t_pub_ns <= self._latest_t_pub_ns:
            self.stats.out_of_order += 1
            return  # the snapshot raced a newer pub update, or a duplicate
        self._last_contact_ns = t_recv
        self.latest = message
        self._latest_t_pub_ns = t_pub_ns
        latency_ns = t_recv + self.clock_sync.offset_ns - message.t_sensor_ns
        if live:  # the snapshot is not a live sample: keep it out of latency
            self.stats.frames += 1
            self.stats.latency.add(latency_ns)
        if len(self._telemetry) < MAX_TELEMETRY_SAMPLES:
            self._telemetry.append(
                (message.frame_number, message.t_sensor_ns, t_recv, self._clock())
            )
        self._evaluate(t_recv)

    def _flush_telemetry(self) -> None:
        if not self._telemetry:
            return
        rows = np.array(self._telemetry, dtype=np.int64)
        self._telemetry.clear()
        self._send(
            HeadsetTelemetry(
                client=self.cfg.name,
                clock_offset_ns=self.clock_sync.offset_ns,
                frame_numbers=rows[:, 0],
                t_sensor_ns=rows[:, 1],
                t_receive_ns=rows[:, 2],
                t_display_ns=rows[:, 3],
            )
        )
        self.stats.telemetry_batches += 1

    # --- what the rest of the program reads ---------------------------------------

    @property
    def lost(self) -> int:
        live = 0 if self._scene is None else self._scene.counters["lost"]
        return self.stats.lost_before + live

    @property
    def superseded(self) -> int:
        live = 0 if self._scene is None else self._scene.counters["superseded"]
        return self.stats.superseded_before + live

    @property
    def reconnects(self) -> int:
        """Joins after the first one (the render node restarted or went silent), not
        counting the Hellos of scene reloads."""
        return max(0, self.stats.joins - 1 - self.stats.scene_reloads)

    def assets(self) -> dict[str, tuple[AssetInfo, bytes]]:
        """The current scene's assets by structure name (only those present)."""
        if self.welcome is None:
            return {}
        return {
            info.name: (info, self._asset_cache[info.sha256])
            for info in self.welcome.assets
            if info.sha256 in self._asset_cache
        }

    def volume(self) -> tuple[VolumeInfo, bytes] | None:
        """The current scene's CT brick (its info and bytes), if it has one and it is here."""
        info = None if self.welcome is None else self.welcome.volume
        if info is None or info.sha256 not in self._asset_cache:
            return None
        return info, self._asset_cache[info.sha256]

    def view(self) -> SceneView:
        """What the headset would draw right now."""
        now = self._clock()
        self._evaluate(now)
        update = self.latest if self.phase is Phase.LIVE else None
        deformed_for = self.welcome.deformed_for if self.welcome is not None else 0
        return SceneView(
            update=update,
            overlay=self.events.state,
            reason=self.events.reason,
            assets=self.assets(),
            t_ns=now,
            clock_offset_ns=self.clock_sync.offset_ns,
            volume=self.volume(),
            deformed=bool(deformed_for)
            and update is not None
            and update.registration_id == deformed_for,
        )

    def status_line(self) -> str:
        """One line for a terminal, about once a second."""
        lat = self.stats.latency.percentiles_ms()
        age = self.stats.pose_age.percentiles_ms()

        def ms(p: Mapping[str, float], key: str) -> str:
            return f"{p[key]:.2f}" if key in p else "-"

        session = self.session[:8] if self.session else "-"
        state = self.events.state.value + (f" ({self.events.reason})" if self.events.reason else "")
        return (
            f"session {session} {self.phase.value} | overlay {state} | latency p50 "
            f"{ms(lat, 'p50')} p99 {ms(lat, 'p99')} ms | pose age p50 {ms(age, 'p50')} ms | "
            f"frames {self.stats.frames} lost {self.lost} | reconnects {self.reconnects}"
        )

    def summary(self) -> dict[str, Any]:
        """The measured figures (the keys of ``ornav headset --summary``)."""
        infos: Iterable[AssetInfo] = () if self.welcome is None else self.welcome.assets
        infos = list(infos)
        volume = None if self.welcome is None else self.welcome.volume
        lat, age = _percentiles(self.stats.latency), _percentiles(self.stats.pose_age)
        return {
            "endpoint": self.cfg.endpoint,
            "session": self.session,
            "latency_ms": lat,
            "pose_age_ms": age,
            "frames": self.stats.frames,
            "lost": self.lost,
            "superseded": self.superseded,
            "stale_events": self.events.stale_events,
            "hidden_events": self.events.hidden_events,
            "overlay": self.events.state.value,
            "reconnects": self.reconnects,
            "join_refusals": self.stats.join_refusals,
            "sessions_lost": self.stats.sessions_lost,
            "scene_reloads": self.stats.scene_reloads,
            "scene_loads": [
                {"scene_version": version, "t_monotonic_ns": t}
                for version, t in self.stats.scene_loads
            ],
            "alerts": list(self.stats.alerts),
            "alert_acks": self.stats.alert_acks,
            "assets": {
                "count": len(infos),
                "bytes": sum(i.size_bytes for i in infos),
                "fetch_ms": self.stats.asset_fetch_ms,
                "fetched": self.stats.assets_fetched,
                "fetched_bytes": self.stats.asset_bytes_fetched,
                "volume_bytes": None if volume is None else volume.size_bytes,
            },
            "clock_offset_ns": self.clock_sync.offset_ns,
            "clock_rtt_ns": None
            if self.clock_sync.best() is None
            else self.clock_sync.best().rtt_ns,  # type: ignore[union-attr]
            "telemetry_batches": self.stats.telemetry_batches,
            "rejected": self.stats.rejected,
        }

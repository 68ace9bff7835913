"""Render node: streams the registered case to headsets (docs/headset-protocol.md).

Renders nothing itself: the headset gets each structure's mesh once (GLB, by hash), the
case's CT brick once (by hash, when the case has one) and then small per-sample scene
updates, and draws them in its own frame.

Subscribes (latest-wins, from the nodes in its ``subscribe`` list):
- ``nav/state`` (``NavState``) from the nav node;
- ``TrackerFrame`` on ``tracker_topic`` (default ``pose/``) from the tracker, for the
  headset marker ``headset_tool``;
- ``nav/registration`` (``RegistrationResult``), in order (a queue, not latest-wins).

Publishes (its bus PUB, ``spec.pub``):
- ``scene/update`` (``SceneUpdate``): on every new ``nav/state``, and when inputs stop,
  every 1 / ``min_update_hz`` and at the instants the newest pose turns STALE and then
  HIDDEN (``render/scene.py`` has the rule), so a headset sees the overlay degrade on
  time when the tracker or the nav node dies;
- ``scene/alert`` (``Alert``): every alert raised (for the recorder; headsets get them on
  their session socket, reliably);
- ``headset/telemetry`` (``HeadsetTelemetry``): what clients report, republished as is;
- ``heartbeat/<name>``: counters ``updates_<CURRENT|STALE|HIDDEN>``, ``sessions`` (open
  now), ``sessions_opened``, ``sessions_expired``, ``sessions_evicted``, ``assets_served``,
  ``asset_bytes_served``, ``snapshots_served``, ``alerts_raised``, ``alerts_sent``,
  ``alerts_resent``, ``alerts_acked``, ``telemetry_received``, ``telemetry_forged``,
  ``headset_received``, ``headset_rejected`` (also in ``rejected`` / ``rejected_<kind>``:
  ``malformed``, ``oversized``, ``version``, ``unknown_type``, ``invalid``, ``protocol``,
  ``no_session``, ``unexpected``, ``unknown_asset``, ``no_scene``, ``sessions_full``,
  ``forged``, ``xr_registration``),
  ``headset_send_dropped``, ``xr_registrations``, ``xr_registrations_refused``
  (``rejected_xr_registration``), ``confidence_assets_built``, ``case_reloads``,
  ``case_mismatches``; latency = tracker ``t_sensor_ns`` -> ``scene/update`` publish, for
  updates carrying a new sample.

Headset sessions: a ROUTER socket at ``headset_endpoint``. Hello -> Welcome (or a
``Reply`` error on a protocol mismatch; protocols 3 and 2 are served, each client's
Welcome in its own version: only protocol 3 lists the case's CT volume), ClockPing ->
ClockPong, AssetRequest -> AssetData (a structure's GLB or the CT brick), SnapshotRequest
-> the newest ``SceneUpdate``, AlertAck, HeadsetTelemetry,
XrRegistration (the session's ``T_xr_from_tracker``, echoed back as held).
The session id (32 hex) is random per process start, so a client sees a restart. A
session is dropped after ``client_timeout_s`` of silence (clients ping about once a
second). With ``max_sessions`` open, a new Hello takes the seat of a session that has
only pinged (never an asset, snapshot, ack or telemetry), else of one with nothing but
pings for ``client_timeout_s``; the evicted client gets ``Reply`` code "evicted". If every
session is in use the Hello is refused (code "sessions_full": clients retry with backoff).
Telemetry is accepted only under the name its session announced in its Hello
(``telemetry_forged`` otherwise). Anything malformed, oversized, unknown or out of order
from a client is counted and dropped (or answered with a one-line ``Reply`` error, whose
``result["code"]`` is the kind); it never stops the node. A client that stops reading
cannot block the node: sends never block (ROUTER with ``ROUTER_MANDATORY``, ``SNDHWM`` =
``session_sndhwm``), a full pipe drops the message and counts ``headset_send_dropped``;
unacknowledged alerts are resent.

Models: the node serves the models of the case it loaded (``case``), with the organ
coloured by the predicted TRE of the newest accepted or restored point registration, and
reloads ``case`` for a registration of another case (``render/case_models.py`` has the
rules; a new asset set gives a new ``scene_version``, carried by every later
``SceneUpdate`` and ``Welcome``, and the previous assets stay servable to a client
mid-fetch). A registration of a case not loaded here, not yet seen, or naming none leaves
the overlay HIDDEN (alerts CASE_MISMATCH / CASE_UNCONFIRMED): models of another case are
never drawn. Alerts are raised by ``render.scene.AlertMachine`` and numbered by
``render.alerts.AlertLog``.

Layout: ``Config``; ``HeadsetServer`` (the ROUTER socket and its sessions); ``_Scene``
(the per-tick work: registrations, poses and nav states in, updates and alerts out);
``run`` (set-up and wiring, then the poll loop) and ``main``.

Per-sample cost on the phantom (5 structures): a few tens of us for the headset pose, the
scene update and its encoding (``render/scene.py``), of the 1000 us between samples at 1 kHz.
"""

from __future__ import annotations

import errno
import importlib.resources
import logging
import math
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import zmq

from calibration.files import CalibrationFileError, read_calibration
from nav.case import Case, CaseError, load_case
from nav.frames import HEADSET, is_valid_tool_name
from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    MAX_PAYLOAD_BYTES,
    RIGID_TOLERANCE,
    Alert,
    AlertAck,
    AssetData,
    AssetRequest,
    ClockPing,
    ClockPong,
    HeadsetTelemetry,
    Hello,
    Message,
    MessageError,
    NavState,
    OverlayState,
    RegistrationResult,
    Reply,
    SceneUpdate,
    SnapshotRequest,
    ToolStatus,
    TrackerFrame,
    Welcome,
    XrPairedPoses,
    XrRegistration,
    decode,
    encode,
)
from nav.messages.headset import SUPPORTED_HEADSET_PROTOCOLS, VOLUME_PROTOCOL
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.transforms import Mat4, rigidity_errors
from render.alerts import AlertLog
from render.assets import (
    DEFAULT_TRIANGLE_BUDGET,
    AssetSet,
    build_assets,
)
from render.case_models import CaseModels
from render.scene import OverlayLimits, SceneState, headset_sample
from render.xr_registration import (
    DEFAULT_MAX_RESIDUAL_MM,
    MarkerHistory,
    XrRegistrationError,
    register_from_history,
)

log = logging.getLogger(__name__)

SCENE_TOPIC: Final = "scene/update"
ALERT_TOPIC: Final = "scene/alert"
TELEMETRY_TOPIC: Final = "headset/telemetry"
NAV_STATE_TOPIC: Final = "nav/state"
REGISTRATION_TOPIC: Final = "nav/registration"
SIM_DISPLAY_CALIBRATION: Final = "sim_headset_display.toml"

# A client request is small; libzmq drops a peer that sends a frame over MAXMSGSIZE without
# telling us, so that limit sits well above MAX_PAYLOAD_BYTES and decode() refuses (and
# counts) anything between the two. It only bounds the memory one hostile frame can take.
_ROUTER_MAXMSGSIZE: Final = 4 * MAX_PAYLOAD_BYTES
_MAX_CLIENT_MESSAGES_PER_POLL: Final = 256  # bounded work per loop: updates stay on time
_MAX_PENDING_ALERTS: Final = 64  # per session; a client that never acks cannot grow it
_EXPIRE_CHECK_NS: Final = 100_000_000
_REQUESTS: Final = (
    Hello,
    ClockPing,
    AssetRequest,
    SnapshotRequest,
    AlertAck,
    HeadsetTelemetry,
    XrRegistration,
    XrPairedPoses,
)
_XR_HISTORY_SAMPLES: Final = 1 << 14  # ~16 s at 1 kHz, ~270 s at 60 Hz


@dataclass(frozen=True)
class Config:
    """The render node's launch-file params.

    - ``headset_endpoint``: where headsets open sessions (a ROUTER socket), e.g.
      ``ipc://{ipc_dir}/render.headset`` or ``tcp://*:5600``.
    - ``scene_endpoint``: the scene stream address told to clients in ``Welcome``; empty
      = this node's ``pub`` endpoint as bound (set it when binding ``tcp://*``).
    - ``case``: the case folder; empty = the shipped phantom (as for the nav node).
    - ``display_calibration``: a calibration file of kind "display"
      (``T_display_from_headset``); empty = the simulated headset's
      (``calibration/data/sim_headset_display.toml``, shipped with the package). Protocol
      2 sends poses in the tracker frame, so the node only checks the file at start; the
      demo hands it to the simulated headset client (``ornav headset``), which draws with it.
    - ``tracker_topic``: topic prefix of the ``TrackerFrame``s carrying ``headset_tool``.
    - ``headset_tool``: the marker on the headset; empty = none (a headset with its own
      world tracking, e.g. a Quest 3 through the web bridge): the overlay then depends on
      the nav pose alone and updates say ``headset_ok`` (``render/scene.py``).
    - ``stale_after_ms`` / ``hide_after_ms``: pose age past which the overlay is drawn
      STALE / not drawn (docs/headset-protocol.md).
    - ``min_update_hz``: scene updates per second at least, when inputs stop.
    - ``triangle_budget``: most triangles per structure asset (decimated above it).
    - ``alert_resend_s``: an unacknowledged alert is resent this often.
    - ``client_timeout_s``: a session silent this long is dropped.
    - ``max_sessions``: sessions open at most; a Hello beyond it evicts an idle session
      or, if every one is in use, is refused with a Reply error (code "sessions_full").
    - ``session_sndhwm``: messages queued per client before sends to it are dropped.
    - ``xr_marker_tool``: the tracked marker fixed to the headset's controller (or the
      headset) for the headset registration (``XrPairedPoses``); empty = refused.
    - ``xr_max_residual_mm``: a headset registration with a larger residual is refused.
    - ``xr_from_tracker``: 16 numbers (row-major 4x4, mm), the ``T_xr_from_tracker`` a
      new session starts with until its client sends an ``XrRegistration``; empty =
      identity (the client's world is the tracker frame: a monitor view).
    """

    headset_endpoint: str
    scene_endpoint: str = ""
    case: str = ""
    display_calibration: str = ""
    tracker_topic: str = "pose/"
    headset_tool: str = HEADSET
    stale_after_ms: float = 100.0
    hide_after_ms: float = 300.0
    min_update_hz: float = 30.0
    triangle_budget: int = DEFAULT_TRIANGLE_BUDGET
    alert_resend_s: float = 0.5
    client_timeout_s: float = 5.0
    max_sessions: int = 16
    session_sndhwm: int = 100
    xr_from_tracker: tuple[float, ...] = ()
    xr_marker_tool: str = ""
    xr_max_residual_mm: float = DEFAULT_MAX_RESIDUAL_MM

    def __post_init__(self) -> None:
        if self.xr_marker_tool and not is_valid_tool_name(self.xr_marker_tool):
            raise ValueError(f"key 'xr_marker_tool': {self.xr_marker_tool!r} is not a tool name")
        if not (math.isfinite(self.xr_max_residual_mm) and self.xr_max_residual_mm > 0):
            raise ValueError("key 'xr_max_residual_mm': must be finite and > 0")
        if self.xr_from_tracker:
            if len(self.xr_from_tracker) != 16:
                raise ValueError("key 'xr_from_tracker': needs 16 numbers (row-major 4x4)")
            T = np.asarray(self.xr_from_tracker, np.float64).reshape(4, 4)
            if not (np.isfinite(T).all() and rigidity_errors(T[None])[0] <= RIGID_TOLERANCE):
                raise ValueError("key 'xr_from_tracker': not a rigid transform")
        if not self.headset_endpoint:
            raise ValueError("key 'headset_endpoint': must name an endpoint")
        if self.headset_tool and not is_valid_tool_name(self.headset_tool):
            raise ValueError(f"key 'headset_tool': {self.headset_tool!r} is not a tool name")
        if not self.tracker_topic:
            raise ValueError("key 'tracker_topic': must not be empty")
        for key in (
            "stale_after_ms",
            "hide_after_ms",
            "min_update_hz",
            "alert_resend_s",
            "client_timeout_s",
        ):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"key {key!r}: must be finite and > 0, got {value}")
        if self.hide_after_ms < self.stale_after_ms:
            raise ValueError("key 'hide_after_ms': must be >= stale_after_ms")
        for key in ("triangle_budget", "max_sessions", "session_sndhwm"):
            if getattr(self, key) < 1:
                raise ValueError(f"key {key!r}: must be >= 1, got {getattr(self, key)}")

    def T_xr_from_tracker(self) -> Mat4:
        if not self.xr_from_tracker:
            return np.eye(4)
        return np.asarray(self.xr_from_tracker, np.float64).reshape(4, 4)

    def limits(self) -> OverlayLimits:
        return OverlayLimits(
            stale_after_ns=int(self.stale_after_ms * 1e6),
            hide_after_ns=int(self.hide_after_ms * 1e6),
        )


def load_display_calibration(path: str) -> Mat4:
    """``T_display_from_headset`` (4, 4) mm from ``path`` ("" = the simulated headset's).

    Raises CalibrationFileError (one line) for a bad file or one of another kind.
    """
    if path:
        calibration = read_calibration(path)
    else:
        resource = importlib.resources.files("calibration") / "data" / SIM_DISPLAY_CALIBRATION
        with importlib.resources.as_file(resource) as shipped:
            calibration = read_calibration(shipped)
    if calibration.kind != "display":
        where = path or SIM_DISPLAY_CALIBRATION
        raise CalibrationFileError(
            f"{where}: key 'kind': expected a display calibration, got {calibration.kind!r}"
        )
    return calibration.array("T_display_from_headset")


# --- headset sessions ------------------------------------------------------------------


@dataclass(eq=False)
class _Session:
    identity: bytes
    client: str
    """The name the session announced in its Hello: its telemetry must carry it."""
    last_seen_ns: int
    opened_ns: int
    last_useful_ns: int | None = None
    """The last asset, snapshot, alert ack or telemetry; None: it has only pinged so far."""
    seq: int = 0
    pending: dict[int, tuple[Alert, int]] = field(default_factory=dict)
    """alert_id -> (alert, when to resend, ns)."""
    T_xr_from_tracker: Mat4 = field(default_factory=lambda: np.eye(4))
    """This session's registration of the tracker into its client's world (mm)."""
    xr_rms_mm: float = math.nan


class _RequestError(Exception):
    """A client request refused with a one-line Reply error and a counter."""

    def __init__(self, kind: str, error: str) -> None:
        super().__init__(error)
        self.kind = kind
        self.error = error

    def reply(self) -> Reply:
        """The one-line error, with ``result["code"]`` = the kind, for a client to act on."""
        return Reply(ok=False, error=self.error, result={"code": self.kind})


class HeadsetServer:
    """The ROUTER socket and the sessions behind it; counts into ``counters``."""

    def __init__(
        self,
        cfg: Config,
        *,
        session: str,
        scene_endpoint: str,
        scene_version: int,
        assets: AssetSet,
        counters: bus.Counters,
        publish: bus.Publisher,
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.scene_endpoint = scene_endpoint
        self.scene_version = scene_version
        self.assets = assets
        self.counters = counters
        self.publisher = publish
        self.sessions: dict[bytes, _Session] = {}
        self.latest_update: SceneUpdate | None = None
        self.xr_history = MarkerHistory(_XR_HISTORY_SAMPLES) if cfg.xr_marker_tool else None
        self.standing: list[Alert] = []
        self._retired: dict[str, tuple[str, bytes]] = {}
        """sha256 -> (name, GLB) of the previous asset set: a client mid-fetch gets them."""
        self._resend_ns = int(cfg.alert_resend_s * 1e9)
        self._timeout_ns = int(cfg.client_timeout_s * 1e9)
        self._next_expire_ns = 0
        self._warned: set[str] = set()
        sock = bus.context().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, cfg.session_sndhwm)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, _ROUTER_MAXMSGSIZE)
        # Mandatory routing: a send to a full or vanished peer raises instead of vanishing
        # silently, so it is counted; NOBLOCK below keeps a full peer from blocking us.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # tcp: CurveZMQ with this host's keys, clients checked against the allow-list
        # (ZAP, nav.runtime.bus_auth); ipc: the run's 0700 directory.
        bus.secure_server(sock, cfg.headset_endpoint)
        self.endpoint: str = bus.bind(sock, cfg.headset_endpoint)  # BindError: exit 3
        self.sock = sock

    def close(self) -> None:
        self.sock.close(linger=0)

    def swap_assets(self, assets: AssetSet, version: int) -> None:
        """Serve ``assets`` as scene ``version`` from now on (new Welcomes list them); the
        previous set's assets stay servable until the next swap."""
        old = [(info.name, info.sha256) for info in self.assets.infos]
        if self.assets.volume is not None:
            old.append((self.assets.volume.name, self.assets.volume.sha256))
        self._retired = {
            sha: (name, self.assets.data_by_sha256[sha])
            for name, sha in old
            if sha not in assets.data_by_sha256
        }
        self.assets, self.scene_version = assets, version

    # --- sending ---------------------------------------------------------------------

    def _send(self, identity: bytes, message: Message, now_ns: int) -> bool:
        session = self.sessions.get(identity)
        seq = 0
        if session is not None:
            seq = session.seq
            session.seq += 1
        payload = encode(message, seq=seq, t_pub_ns=now_ns)
        try:
            self.sock.send_multipart([identity, payload], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.counters["headset_send_dropped"] += 1  # that client is not reading
            return False
        except zmq.ZMQError as error:
            if error.errno != errno.EHOSTUNREACH:
                raise
            self.counters["headset_send_dropped"] += 1  # gone: disconnected
            if self.sessions.pop(identity, None) is not None:
                self.counters["sessions_closed"] += 1
                self.counters["sessions"] = len(self.sessions)
            return False
        return True

    # --- receiving -------------------------------------------------------------------

    def _reject(self, kind: str, detail: str) -> None:
        self.counters["headset_rejected"] += 1
        self.counters["rejected"] += 1
        self.counters[f"rejected_{kind}"] += 1
        if kind not in self._warned:  # once per kind: a hostile client cannot flood the log
            self._warned.add(kind)
            log.warning("headset request dropped (%s): %s; counting further ones", kind, detail)
        else:
            log.debug("headset request dropped (%s): %s", kind, detail)

    def serve(self) -> int:
        """Handle the queued client messages (at most a bounded batch); returns how many."""
        handled = 0
        while handled < _MAX_CLIENT_MESSAGES_PER_POLL:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            self.counters["headset_received"] += 1
            now_ns = time.monotonic_ns()
            if len(frames) != 2:
                self._reject("malformed", f"{len(frames)} frames (expected identity + payload)")
                continue
            identity, payload = frames
            try:
                envelope = decode(payload, max_bytes=MAX_PAYLOAD_BYTES)
            except MessageError as error:
                self._reject(error.kind, str(error))
                continue
            try:
                self._handle(identity, envelope.message, now_ns)
            except _RequestError as rejected:
                self._reject(rejected.kind, rejected.error)
                self._send(identity, rejected.reply(), now_ns)
        return handled

    def _handle(self, identity: bytes, message: Message, now_ns: int) -> None:
        if not isinstance(message, _REQUESTS):
            # Valid on the bus but not from a headset: dropped without an answer, like
            # garbage, so a confused peer cannot make us talk.
            self._reject("unexpected", f"{message.TYPE} is not a headset request")
            return
        if isinstance(message, Hello):
            self._hello(identity, message, now_ns)
            return
        session = self.sessions.get(identity)
        if session is None:
            raise _RequestError("no_session", f"no session: send Hello first (got {message.TYPE})")
        session.last_seen_ns = now_ns
        if isinstance(message, ClockPing):
            self._send(identity, ClockPong(message.t_client_ns, time.monotonic_ns()), now_ns)
        elif isinstance(message, AssetRequest):
            data = self.assets.data_by_sha256.get(message.sha256)
            name = self.assets.name_of(message.sha256)
            if data is not None and name is not None:
                pass  # a mesh of this scene, or its CT brick
            elif message.sha256 in self._retired:
                name, data = self._retired[message.sha256]
            else:
                raise _RequestError("unknown_asset", f"unknown asset {message.sha256}")
            session.last_useful_ns = now_ns  # more than keeping a seat warm (see _hello)
            if self._send(identity, AssetData(message.sha256, name, data), now_ns):
                self.counters["assets_served"] += 1
                self.counters["asset_bytes_served"] += len(data)
        elif isinstance(message, SnapshotRequest):
            if self.latest_update is None:
                raise _RequestError("no_scene", "no scene update published yet: try again")
            session.last_useful_ns = now_ns
            if self._send(identity, self.latest_update, now_ns):
                self.counters["snapshots_served"] += 1
        elif isinstance(message, AlertAck):
            if message.session != self.session:
                self.counters["alerts_ack_foreign"] += 1  # for an earlier run of this node
            elif session.pending.pop(message.alert_id, None) is not None:
                self.counters["alerts_acked"] += 1
                session.last_useful_ns = now_ns
            else:
                self.counters["alerts_ack_unknown"] += 1  # acked twice, or never sent
        elif isinstance(message, HeadsetTelemetry):
            if message.client != session.client:
                # Recorded under the name of the session that sent it, or not at all.
                self.counters["telemetry_forged"] += 1
                self._reject(
                    "forged",
                    f"telemetry as {message.client!r} from the session of {session.client!r}",
                )
                return
            self.counters["telemetry_received"] += 1
            session.last_useful_ns = now_ns
            self.publisher.publish(TELEMETRY_TOPIC, message)
        elif isinstance(message, XrPairedPoses):
            self._xr_register(session, message, now_ns)
        elif isinstance(message, XrRegistration):
            # Rigid and finite (checked on decode): the session's world from now on.
            session.T_xr_from_tracker = np.array(message.T_xr_from_tracker)
            session.xr_rms_mm = message.rms_mm
            session.last_useful_ns = now_ns
            self.counters["xr_registrations"] += 1
            log.info(
                "headset %s: T_xr_from_tracker set (rms %.2f mm)", session.client, message.rms_mm
            )
            self._send(
                identity, XrRegistration(session.T_xr_from_tracker, session.xr_rms_mm), now_ns
            )

    def _xr_register(self, session: _Session, message: XrPairedPoses, now_ns: int) -> None:
        """Solve this session's T_xr_from_tracker from its collection, or say why not."""
        session.last_useful_ns = now_ns
        if self.xr_history is None:
            raise _RequestError(
                "xr_registration",
                "headset registration is not set up: give the render node an xr_marker_tool",
            )
        try:
            result = register_from_history(
                self.xr_history,
                message.t_sensor_ns,
                message.T_xr_from_grip,
                max_residual_mm=self.cfg.xr_max_residual_mm,
            )
        except XrRegistrationError as error:
            self.counters["xr_registrations_refused"] += 1
            raise _RequestError("xr_registration", str(error)) from None
        session.T_xr_from_tracker, session.xr_rms_mm = result.T_xr_from_tracker, result.rms_mm
        self.counters["xr_registrations"] += 1
        log.info(
            "headset %s registered to the tracker: %d poses, residual %.2f mm (worst %.2f mm)",
            session.client,
            result.n_poses,
            result.rms_mm,
            result.max_error_mm,
        )
        self._send(
            session.identity, XrRegistration(result.T_xr_from_tracker, result.rms_mm), now_ns
        )

    def _hello(self, identity: bytes, hello: Hello, now_ns: int) -> None:
        if hello.protocol not in SUPPORTED_HEADSET_PROTOCOLS:
            spoken = " or ".join(str(v) for v in SUPPORTED_HEADSET_PROTOCOLS)
            raise _RequestError(
                "protocol",
                f"protocol {HEADSET_PROTOCOL_VERSION} required: this render node speaks "
                f"protocol {spoken}, the client {hello.protocol}",
            )
        session = self.sessions.get(identity)
        if session is None:
            if len(self.sessions) >= self.cfg.max_sessions:
                victim = self._eviction_candidate(now_ns)
                if victim is None:
                    raise _RequestError(
                        "sessions_full", f"{len(self.sessions)} sessions in use: try later"
                    )
                self._evict(victim, hello.client, now_ns)
            session = _Session(
                identity,
                hello.client,
                now_ns,
                opened_ns=now_ns,
                T_xr_from_tracker=self.cfg.T_xr_from_tracker(),
            )
            self.sessions[identity] = session
            self.counters["sessions_opened"] += 1
            self.counters["sessions"] = len(self.sessions)
            log.info("headset session opened: %s (%d open)", hello.client, len(self.sessions))
        session.client, session.last_seen_ns = hello.client, now_ns
        # The client's own version: a protocol-2 client gets the Welcome it knows (no
        # volume field); it never learns the brick's hash, so it never fetches it.
        welcome = Welcome(
            protocol=hello.protocol,
            session=self.session,
            scene_endpoint=self.scene_endpoint,
            scene_version=self.scene_version,
            t_server_ns=time.monotonic_ns(),
            assets=self.assets.infos,
            T_xr_from_tracker=session.T_xr_from_tracker,
            xr_rms_mm=session.xr_rms_mm,
            volume=self.assets.volume if hello.protocol >= VOLUME_PROTOCOL else None,
            deformed_for=self.assets.deformed_for if hello.protocol >= VOLUME_PROTOCOL else 0,
        )
        self._send(identity, welcome, now_ns)
        # A late joiner still learns what is wrong now (reference lost, verify first...).
        for alert in self.standing:
            self._queue_alert(session, alert, now_ns)

    def _eviction_candidate(self, now_ns: int) -> _Session | None:
        """The session a new Hello may take the place of when the table is full, or None.

        First one that has never asked for anything but pongs (no asset, snapshot, alert
        ack or telemetry: a seat kept warm), the longest open first, so that a client
        that has just joined has time to fetch; else the one whose last such request is
        the oldest, if older than ``client_timeout_s`` (a client in use reports telemetry
        several times a second). None: every session is in use.
        """
        squatters = [s for s in self.sessions.values() if s.last_useful_ns is None]
        if squatters:
            return min(squatters, key=lambda s: s.opened_ns)
        idlest = min(self.sessions.values(), key=lambda s: s.last_useful_ns or 0)
        if now_ns - (idlest.last_useful_ns or 0) > self._timeout_ns:
            return idlest
        return None

    def _evict(self, victim: _Session, newcomer: str, now_ns: int) -> None:
        """Close ``victim``'s session and tell it (``Reply`` code "evicted")."""
        self._send(
            victim.identity,
            Reply(
                ok=False,
                error="session closed to make room for a new client: say Hello to join again",
                result={"code": "evicted"},
            ),
            now_ns,
        )
        self.sessions.pop(victim.identity, None)
        self.counters["sessions_evicted"] += 1
        self.counters["sessions"] = len(self.sessions)
        log.warning(
            "headset session of %s evicted for %s (%d sessions, %s)",
            victim.client,
            newcomer,
            self.cfg.max_sessions,
            "never fetched or reported" if victim.last_useful_ns is None else "idle",
        )

    # --- alerts and housekeeping -----------------------------------------------------

    def _queue_alert(self, session: _Session, alert: Alert, now_ns: int) -> None:
        if len(session.pending) >= _MAX_PENDING_ALERTS:
            session.pending.pop(next(iter(session.pending)))  # the oldest
            self.counters["alerts_dropped"] += 1
        session.pending[alert.alert_id] = (alert, now_ns + self._resend_ns)
        if self._send(session.identity, alert, now_ns):
            self.counters["alerts_sent"] += 1

    def broadcast(self, alert: Alert, now_ns: int) -> None:
        for session in list(self.sessions.values()):
            self._queue_alert(session, alert, now_ns)

    def tick(self, now_ns: int) -> None:
        """Resend due alerts; drop silent sessions."""
        for session in list(self.sessions.values()):
            for alert_id, (alert, due_ns) in list(session.pending.items()):
                if now_ns >= due_ns:
                    session.pending[alert_id] = (alert, now_ns + self._resend_ns)
                    if self._send(session.identity, alert, now_ns):
                        self.counters["alerts_resent"] += 1
        if now_ns >= self._next_expire_ns:
            self._next_expire_ns = now_ns + _EXPIRE_CHECK_NS
            for identity, session in list(self.sessions.items()):
                if now_ns - session.last_seen_ns > self._timeout_ns:
                    del self.sessions[identity]
                    self.counters["sessions_expired"] += 1
                    log.info("headset session of %s expired (silent)", session.client)
            self.counters["sessions"] = len(self.sessions)

    def next_due_ns(self) -> int | None:
        """The next instant an alert resend is due, if any."""
        dues = [due for s in self.sessions.values() for _, due in s.pending.values()]
        return min(dues) if dues else None


# --- the node ----------------------------------------------------------------------------


class _Scene:
    """The per-tick work, without the sockets' set-up: registrations, poses and nav states
    in, scene updates and alerts out.

    A scene update goes out for every new nav state and, while inputs stop, every
    1 / ``min_update_hz`` and at the instants the newest pose turns STALE and HIDDEN.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        scene: SceneState,
        models: CaseModels,
        alerts: AlertLog,
        server: HeadsetServer,
        runtime: NodeRuntime,
    ) -> None:
        pub = runtime.pub
        assert pub is not None
        self.pub = pub
        self.cfg = cfg
        self.scene = scene
        self.models = models
        self.alerts = alerts
        self.server = server
        self.counters = runtime.counters
        self.latency = runtime.latency
        self.period_ns = int(1e9 / cfg.min_update_hz)
        self.last_pub_ns = 0
        self.last_overlay: OverlayState | None = None
        self.last_case_code: str | None = None
        self.last_latency_t_ns = 0
        self.nav_seen = False
        self.headset_epoch = 0

    def due_ns(self) -> int:
        """When the next timed update (or an alert resend) is due."""
        due_ns = self.last_pub_ns + self.period_ns
        for t in self.scene.transition_times_ns():
            if t + 1 > self.last_pub_ns:
                due_ns = min(due_ns, t + 1)
        resend_ns = self.server.next_due_ns()
        if resend_ns is not None:
            due_ns = min(due_ns, resend_ns)
        return due_ns

    def _send_alerts(self, alerts: list[Alert], now_ns: int) -> None:
        for alert in alerts:
            self.pub.publish(ALERT_TOPIC, alert, t_pub_ns=now_ns)
            self.server.broadcast(alert, now_ns)

    def on_registration(self, result: RegistrationResult) -> None:
        self.scene.on_registration(result)
        t_build = time.perf_counter()
        changed = self.models.on_registration(result)
        if self.models.undrawable_id == result.registration_id:
            self.scene.refuse_models(result.registration_id)
        if changed:
            models = self.models
            self.server.swap_assets(models.served, models.version)
            self.scene.set_case(models.case_id, models.served.names, models.version)
            log.info(
                "registration %d (%s): scene %d, %s in %.1f ms",
                result.registration_id,
                result.method,
                models.version,
                ("deformed models" if result.method == "deformable" else "confidence colours")
                if models.coloured
                else "plain colours",
                (time.perf_counter() - t_build) * 1e3,
            )
        now_ns = time.monotonic_ns()
        self._send_alerts(self.alerts.on_registration(result, now_ns), now_ns)

    def on_latest(self, received: list[bus.Received]) -> bool:
        """Take the newest headset pose, then each nav state; True if an update went out."""
        navs: list[NavState] = []
        for r in received:
            message = r.message
            if isinstance(message, TrackerFrame) and self.server.xr_history is not None:
                marker = headset_sample(message, self.cfg.xr_marker_tool)
                if marker is not None and marker.status is ToolStatus.OK:
                    self.server.xr_history.add(marker.t_sensor_ns, marker.T_tracker_from_headset)
            if isinstance(message, TrackerFrame) and self.cfg.headset_tool:
                sample = headset_sample(message, self.cfg.headset_tool)
                old = self.scene.headset
                # Newer within one tracker process; a restarted tracker (new epoch)
                # starts the order again, whatever its clock says.
                if sample is not None and (
                    old is None
                    or r.envelope.epoch != self.headset_epoch
                    or sample.t_sensor_ns > old.t_sensor_ns
                ):
                    self.headset_epoch = r.envelope.epoch
                    self.scene.on_headset(sample)
            elif isinstance(message, NavState):
                navs.append(message)
        for nav in navs:  # one per poll (latest-wins), after the headset pose
            self.nav_seen = True
            self.scene.on_nav(nav)
            t_pub = time.monotonic_ns()
            update = self.publish(t_pub)
            if nav.t_sensor_ns > self.last_latency_t_ns and update.t_sensor_ns > 0:
                self.last_latency_t_ns = nav.t_sensor_ns
                self.latency.add(t_pub - update.t_sensor_ns)
        return bool(navs)

    def publish(self, now_ns: int) -> SceneUpdate:
        """Publish the scene update for ``now_ns``, with the alerts it makes due."""
        update = self.scene.update(now_ns)
        case_code = self.scene.case_code(update.registration_id)
        self.pub.publish(SCENE_TOPIC, update, t_pub_ns=now_ns)
        self.counters[f"updates_{update.overlay.value}"] += 1
        self.server.latest_update = update
        self.last_pub_ns = now_ns
        if update.overlay is not self.last_overlay or case_code != self.last_case_code:
            level = logging.INFO if update.overlay is OverlayState.CURRENT else logging.WARNING
            log.log(
                level,
                "overlay %s -> %s (status %s, headset %s, age %.0f ms%s)",
                self.last_overlay and self.last_overlay.value,
                update.overlay.value,
                update.status.value,
                "OK" if update.headset_ok else "lost",
                update.age_ms,
                f", registration {update.registration_id}: {case_code}" if case_code else "",
            )
            self.last_overlay, self.last_case_code = update.overlay, case_code
        if self.nav_seen:  # no alerts about a nav node that has not spoken yet
            self._send_alerts(self.alerts.on_scene(update, now_ns, case_code), now_ns)
            self.server.standing = self.alerts.standing()
        return update


# --- setup and run -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    """What the node reads before it opens a socket."""

    case: Case
    assets: AssetSet
    T_display_from_headset: Mat4


def _load(cfg: Config) -> _Loaded:
    """The case, its assets and the display calibration; CaseError, CalibrationFileError or
    ValueError (one line) when one cannot be used."""
    case = load_case(cfg.case or SHIPPED_PHANTOM_DIR)
    T_display_from_headset = load_display_calibration(cfg.display_calibration)
    t0 = time.perf_counter()
    assets = build_assets(case, triangle_budget=cfg.triangle_budget)
    volume = assets.volume
    log.info(
        "case %r: %d assets, %d bytes, built in %.0f ms; %s",
        case.name,
        len(assets.infos),
        assets.total_bytes,
        (time.perf_counter() - t0) * 1e3,
        "no CT volume"
        if volume is None
        else f"CT volume {'x'.join(map(str, volume.shape))}, {volume.size_bytes} bytes",
    )
    return _Loaded(case, assets, T_display_from_headset)


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    try:
        loaded = _load(cfg)
    except (CaseError, CalibrationFileError, ValueError) as error:
        log.error("%s: %s", spec.name, error)
        return 2
    session_id = secrets.token_hex(16)
    with NodeRuntime(spec, stop) as runtime:
        pub = runtime.pub
        if pub is None:
            raise ValueError(f"node {spec.name!r}: the render node needs a pub endpoint")
        counters = runtime.counters
        models = CaseModels(
            loaded.case,
            loaded.assets,
            case_path=cfg.case or SHIPPED_PHANTOM_DIR,
            triangle_budget=cfg.triangle_budget,
            counters=counters,
        )
        server = HeadsetServer(
            cfg,
            session=session_id,
            scene_endpoint=cfg.scene_endpoint or pub.endpoint,
            scene_version=models.version,
            assets=models.served,
            counters=counters,
            publish=pub,
        )
        log.info("case %r has id %s", loaded.case.name, models.case_id)
        tick = _Scene(
            cfg,
            scene=SceneState(
                session=session_id,
                scene_version=models.version,
                structure_names=models.served.names,
                case_id=models.case_id,
                limits=cfg.limits(),
                headset_marker=bool(cfg.headset_tool),
            ),
            models=models,
            alerts=AlertLog(session_id, counters),
            server=server,
            runtime=runtime,
        )
        latest = bus.LatestSubscriber(
            spec.subscribe_endpoints, (cfg.tracker_topic, NAV_STATE_TOPIC)
        )
        registrations = bus.QueueSubscriber(spec.subscribe_endpoints, (REGISTRATION_TOPIC,))
        runtime.watch(latest.counters)
        runtime.watch(registrations.counters)
        poller = zmq.Poller()
        for sock in (latest.fileno_socket(), registrations.fileno_socket(), server.sock):
            poller.register(sock, zmq.POLLIN)
        counters["sessions"] = 0
        runtime.ready()
        log.info("headset sessions at %s, session %s", server.endpoint, session_id)
        try:
            while not stop.is_set():
                due_ns = tick.due_ns()
                wait_s = min(POLL_TIMEOUT_S, max(0.0, (due_ns - time.monotonic_ns()) / 1e9))
                ready = dict(poller.poll(math.ceil(wait_s * 1000)))
                if registrations.fileno_socket() in ready:
                    for received in registrations.poll(0):
                        if isinstance(received.message, RegistrationResult):
                            tick.on_registration(received.message)
                published = latest.fileno_socket() in ready and tick.on_latest(latest.poll(0))
                if server.sock in ready:
                    server.serve()
                now_ns = time.monotonic_ns()
                if not published and now_ns >= due_ns:
                    tick.publish(now_ns)
                server.tick(now_ns)
                runtime.service()
        finally:
            latest.close()
            registrations.close()
            server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

"""OpenIGTLink client node: a tracker source fed by a PLUS Server (or any OpenIGTLink server).

Connects over TCP to ``host:port`` (PLUS Server's default is 18944), reads TRANSFORM,
POSITION, TDATA and STATUS messages with ``tracking.igtl_codec`` and publishes tracker
samples on the bus. It reconnects by itself, with backoff, whenever the server goes away.

Publishes:
- ``pose/<tracker_name>``: ``TrackerFrame``, one per received sample batch (below);
- ``heartbeat/<name>``: with ``tool/<tool>`` rates (OK samples only) and the counters below.
Subscribes: nothing on the bus.
Control: ``ping``, ``status``, ``igtl.info`` -> ``{connected, host, port, devices: {device
name: tool}, clock_offset_ms}``.

Device names -> tools. PLUS names a transform ``<From>To<To>``. A device named
``<Tool>To<tracker_frame>`` (``tracker_frame`` defaults to PLUS's "Tracker") is the pose
``T_tracker_from_<tool>``, and the tool name is ``<Tool>`` in snake case: ``StylusToTracker``
-> ``stylus``, ``NeedleHolderToTracker`` -> ``needle_holder``. ``tools`` entries
(``"DeviceName=tool"``) override or add names, e.g. ``"StylusToTracker=pointer"``. Any other
device (``StylusTipToStylus``, ``ImageToProbe``, a name that is not a valid tool name) is
ignored and counted (``igtl_unmapped``): its matrix is not a tracker-frame pose. TDATA
element names are mapped the same way.

Sample batches. PLUS sends every transform of one tracker sample back to back with the same
header timestamp. A batch is a run of TRANSFORM/POSITION messages with one timestamp, closed
when a message with another timestamp (or a tool already in the batch) arrives, when it
holds every tool of the previous sample, or when ``batch_window_s`` passes with no more
messages; a TDATA message is a batch by itself. Each batch becomes one ``TrackerFrame``
holding every tool known so far (from ``tools`` or seen earlier): a tool the batch does not
carry is MISSING in it (PLUS leaves out tools it cannot see).

Tool status, per tool and batch: v2/v3 metadata ``TransformStatus`` (PLUS vocabulary: OK,
MISSING, OUT_OF_VIEW, OUT_OF_VOLUME; any other value, e.g. REQ_TIMEOUT, is INVALID) or
``TransformValid`` (true/false); OK when the message has neither (a v1 server has no status
channel; PLUS then sends valid transforms only). A STATUS message with a code other than OK
marks its device's tool INVALID, or every tool when its device name maps to no tool, until a
STATUS with code OK for the same device. An OK pose is published as the nearest rigid
transform (``nav.transforms.nearest_rigid``: a tracker's matrix is rigid only to the digits
it sends) when it is within ``nav.transforms.MAX_PROJECTED_DEVIATION`` of one, counted
(``projected_poses``, and the gauge ``projected_max_deviation_ppm``, the largest deviation
x 1e6); one with a non-finite entry or clearly not a pose (scaled, sheared) is published
INVALID and counted (``not_rigid``).
OpenIGTLink carries no marker fit error: every tool has ``fit_error_mm`` NaN ("not
measured", see ``nav.messages``).

Time. ``t_sensor_ns`` (host monotonic) is mapped from the header timestamp (wall clock of the
server): ``t_sensor = t_receive_monotonic - (t_receive_wall - t_message)``, i.e. the age of
the sample by the two wall clocks is carried over to the monotonic clock. That is exact on
one host and as good as NTP across hosts. When the age is negative (server clock ahead) or
above ``max_clock_offset_s`` (clocks not synchronised), the receive time is used instead and
counted (``timestamp_unmapped``, a warning once per connection); a zero timestamp (unused) is
the receive time too (``timestamp_missing``). Latency percentiles in the heartbeat are this
estimated age, for mapped samples only.

Counters (heartbeat): ``igtl_connects``, ``igtl_disconnects``, ``igtl_messages``,
``rejected`` and ``rejected_igtl_<kind>`` (``tracking.igtl_codec.IgtlError`` kinds: crc,
version, body, metadata, oversized, ...), ``igtl_partial`` (a connection that dropped
mid-message: the partial message is discarded), ``igtl_resync`` (framing lost: the connection
is dropped and reopened), ``igtl_ignored`` (types not used here), ``igtl_unmapped``,
``igtl_status``, ``not_rigid``, ``projected_poses``, ``timestamp_unmapped``,
``timestamp_missing`` and the gauges ``igtl_connected`` (0/1) and
``projected_max_deviation_ppm``. A wrong header version is counted and logged; the node keeps
running, and a frame with a bad CRC or body is skipped without dropping the connection.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import selectors
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nav.frames import is_valid_tool_name
from nav.messages import Command, Reply, ToolStatus, TrackerFrame
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.transforms import MAX_PROJECTED_DEVIATION, nearest_rigid, quat_to_matrix
from tracking import igtl_codec as igtl

log = logging.getLogger(__name__)

RECV_BYTES = 1 << 18
# Types this node reads; others (IMAGE from an ultrasound, STRING, ...) are framed and
# dropped without a CRC check or decode, and counted as igtl_ignored.
ACCEPTED_TYPES = frozenset({"TRANSFORM", "POSITION", "TDATA", "STATUS"})
MAX_READ_PER_TICK = 1 << 22  # bytes read before the loop services control and heartbeats
_CAMEL_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+")


@dataclass(frozen=True)
class Config:
    """Launch-file params. ``tools``: ``"DeviceName=tool"`` entries (see the module doc).

    ``host``: give an IP address where you can; a host name is resolved at each connection
    attempt, inside the node loop, and a resolver that hangs delays everything else.
    """

    host: str = "127.0.0.1"
    port: int = igtl.DEFAULT_PORT
    tracker_name: str = "plus"
    tools: tuple[str, ...] = ()
    tracker_frame: str = "Tracker"
    reconnect_s: float = 1.0  # first retry; doubles after each failed attempt
    reconnect_max_s: float = 10.0
    connect_timeout_s: float = 3.0
    batch_window_s: float = 0.002
    max_clock_offset_s: float = 1.0
    max_body_bytes: int = igtl.MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("key 'host': must not be empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"key 'port': {self.port} is not a TCP port")
        if not is_valid_tool_name(self.tracker_name):
            raise ValueError(f"key 'tracker_name': {self.tracker_name!r} is not a valid name")
        if not self.tracker_frame:
            raise ValueError("key 'tracker_frame': must not be empty")
        for key in ("reconnect_s", "reconnect_max_s", "connect_timeout_s", "max_clock_offset_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"key {key!r}: must be > 0")
        if not 0 <= self.batch_window_s <= 0.1:
            raise ValueError(f"key 'batch_window_s': {self.batch_window_s} is outside 0..0.1 s")
        if not 0 < self.max_body_bytes <= igtl.MAX_BODY_BYTES:
            raise ValueError(f"key 'max_body_bytes': 1..{igtl.MAX_BODY_BYTES}")
        self.tool_map()  # checks every entry now rather than at the first message

    def tool_map(self) -> dict[str, str]:
        """``tools`` as {device name: tool}; ValueError names a bad entry."""
        out: dict[str, str] = {}
        for entry in self.tools:
            device, eq, tool = entry.partition("=")
            device, tool = device.strip(), tool.strip()
            if not eq or not device or len(device.encode()) > 20:
                raise ValueError(f"key 'tools': {entry!r} is not 'DeviceName=tool'")
            if not is_valid_tool_name(tool):
                raise ValueError(f"key 'tools': {tool!r} is not a valid tool name")
            out[device] = tool
        return out


# --- pure helpers: names, statuses, batches (no sockets, no clocks) -------------------------


def snake_case(name: str) -> str:
    """``NeedleHolder`` -> ``needle_holder``; ``USProbe`` -> ``us_probe``."""
    return "_".join(word.lower() for word in _CAMEL_WORD.findall(name))


def tool_for_device(
    device_name: str, *, tracker_frame: str, explicit: Mapping[str, str]
) -> str | None:
    """The tool whose ``T_tracker_from_tool`` the device carries, or None (see module doc)."""
    if device_name in explicit:
        return explicit[device_name]
    suffix = "To" + tracker_frame
    if not device_name.endswith(suffix) or len(device_name) == len(suffix):
        return None
    tool = snake_case(device_name[: -len(suffix)])
    return tool if is_valid_tool_name(tool) else None


_STATUS_BY_PLUS_NAME = {s.value: s for s in ToolStatus}


def status_from_metadata(message: igtl.IgtlMessage) -> ToolStatus:
    """The tool status a TRANSFORM/POSITION message states in its metadata (OK if none)."""
    text = message.meta("TransformStatus")
    if text is not None:
        return _STATUS_BY_PLUS_NAME.get(text.strip().upper(), ToolStatus.INVALID)
    valid = message.meta("TransformValid")
    if valid is not None:
        return (
            ToolStatus.OK if valid.strip().lower() in ("1", "true", "yes") else ToolStatus.INVALID
        )
    return ToolStatus.OK


def checked_pose(
    T: npt.NDArray[np.float64], status: ToolStatus
) -> tuple[npt.NDArray[np.float64], ToolStatus, float]:
    """(matrix, status, deviation) safe to publish (a TrackerFrame refuses a non-rigid OK pose).

    A non-finite matrix becomes identity and INVALID; an OK pose within
    ``MAX_PROJECTED_DEVIATION`` of rigid becomes the nearest rigid transform, with its
    deviation (0 when already rigid); an OK pose farther off (scale, shear) becomes INVALID.
    """
    if not np.isfinite(T).all():
        return np.eye(4), ToolStatus.INVALID, math.inf
    if status is not ToolStatus.OK:
        return T, status, 0.0
    T_rigid, deviation = nearest_rigid(T)
    if not deviation <= MAX_PROJECTED_DEVIATION:
        return T, ToolStatus.INVALID, deviation
    return T_rigid, status, deviation


def position_matrix(body: igtl.Position) -> npt.NDArray[np.float64]:
    """POSITION -> (4, 4): quaternion x, y, z, w (w rebuilt for 3 values; none = identity)."""
    T = np.eye(4)
    T[:3, 3] = body.position
    q = body.quaternion
    if q.size == 3:
        w2 = 1.0 - float(q @ q)
        q = np.append(q, math.sqrt(w2) if w2 > 0 else 0.0)
    if q.size == 4:
        if not np.isfinite(q).all() or not float(q @ q) > 0:
            return np.full((4, 4), np.nan)
        T[:3, :3] = quat_to_matrix([q[3], q[0], q[1], q[2]])
    return T


def sensor_time_ns(
    timestamp: int, *, t_recv_ns: int, t_recv_wall_ns: int, max_offset_ns: int
) -> tuple[int, str]:
    """(t_sensor_ns on the monotonic clock, how): ``mapped``, ``missing`` or ``unmapped``."""
    if timestamp == 0:
        return t_recv_ns, "missing"
    age_ns = t_recv_wall_ns - igtl.timestamp_to_ns(timestamp)
    if 0 <= age_ns <= max_offset_ns and age_ns <= t_recv_ns:
        return t_recv_ns - age_ns, "mapped"
    return t_recv_ns, "unmapped"


@dataclass
class Batch:
    """Poses of one sample: tool -> (T_tracker_from_tool, status), with its clocks."""

    timestamp: int
    t_recv_ns: int
    t_recv_wall_ns: int
    poses: dict[str, tuple[npt.NDArray[np.float64], ToolStatus]] = field(default_factory=dict)


@dataclass
class ToolTable:
    """What the node knows across batches: tools seen, device mapping, STATUS overrides."""

    tracker_frame: str
    explicit: Mapping[str, str]
    tools: list[str] = field(default_factory=list)
    devices: dict[str, str | None] = field(default_factory=dict)
    invalid_devices: set[str] = field(default_factory=set)
    tracker_invalid: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for tool in self.explicit.values():
            self.add_tool(tool)

    def add_tool(self, tool: str) -> None:
        if tool not in self.tools:
            self.tools.append(tool)

    def tool(self, device_name: str) -> str | None:
        if device_name not in self.devices:
            if len(self.devices) >= 1024:  # a peer cycling through names must not grow this
                return None
            self.devices[device_name] = tool_for_device(
                device_name, tracker_frame=self.tracker_frame, explicit=self.explicit
            )
        return self.devices[device_name]

    def apply_status(self, device_name: str, body: igtl.Status) -> None:
        """Remember a STATUS: not OK marks the device's tool (or all tools) INVALID."""
        target = self.invalid_devices if self.tool(device_name) else self.tracker_invalid
        if body.code == igtl.StatusCode.OK:
            target.discard(device_name)
        else:
            target.add(device_name)

    def frame(self, batch: Batch, *, tracker: str, t_sensor_ns: int, number: int) -> TrackerFrame:
        """Every known tool, in first-seen order; tools the batch lacks are MISSING."""
        for tool in batch.poses:
            self.add_tool(tool)
        invalid_tools = {self.devices.get(d) for d in self.invalid_devices}
        n = len(self.tools)
        Ts = np.tile(np.eye(4), (n, 1, 1))
        statuses = []
        for i, tool in enumerate(self.tools):
            T, status = batch.poses.get(tool, (None, ToolStatus.MISSING))
            if T is not None:
                Ts[i] = T
            if status is ToolStatus.OK and (self.tracker_invalid or tool in invalid_tools):
                status = ToolStatus.INVALID
            statuses.append(status)
        fit = np.full(len(statuses), math.nan)  # OpenIGTLink reports no marker fit
        return TrackerFrame(
            tracker, t_sensor_ns, number, tuple(self.tools), Ts, tuple(statuses), fit
        )


# --- the node --------------------------------------------------------------------------------


class _Connection:
    """One TCP connection attempt/session to the server (non-blocking)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.connected = False
        self.delivered = 0  # valid messages on this connection
        code = self.sock.connect_ex((host, port))
        if code == 0:
            self.connected = True
        elif code not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self.sock.close()
            raise OSError(code, errno.errorcode.get(code, str(code)))

    def finish_connect(self) -> None:
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, str(code)))
        self.connected = True

    def close(self) -> None:
        self.sock.close()


class _Client:
    """The node's state: connection, decoder, batch being assembled, counters."""

    def __init__(self, cfg: Config, runtime: NodeRuntime) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.counters = runtime.counters
        self.topic = f"pose/{cfg.tracker_name}"
        self.table = ToolTable(cfg.tracker_frame, cfg.tool_map())
        self.decoder = igtl.StreamDecoder(max_body_bytes=cfg.max_body_bytes, accept=ACCEPTED_TYPES)
        self.selector = selectors.DefaultSelector()
        self.conn: _Connection | None = None
        self.connect_deadline_ns = 0
        self.next_attempt_ns = 0
        self.failures = 0
        self.batch: Batch | None = None
        self.batch_deadline_ns = 0
        self.sample_tools: set[str] = set()  # the tools of the last sample published
        self.frame_number = 0
        self.ok_counts: dict[str, int] = {}
        self.clock_offset_ms: float | None = None
        self.warned_clock = False
        self.counters["igtl_connected"] = 0

    # connection management

    def tick(self, stop: threading.Event) -> None:
        now = time.monotonic_ns()
        if self.conn is None and now >= self.next_attempt_ns:
            self._open()
        timeout_ns = int(POLL_TIMEOUT_S * 1e9)
        if self.batch is not None:
            timeout_ns = min(timeout_ns, self.batch_deadline_ns - now)
        if self.conn is None:
            timeout_ns = min(timeout_ns, self.next_attempt_ns - now)
        elif not self.conn.connected:
            timeout_ns = min(timeout_ns, self.connect_deadline_ns - now)
        timeout_s = max(0.0, timeout_ns / 1e9)
        if self.conn is None:
            stop.wait(timeout_s)
        else:
            for _key, mask in self.selector.select(timeout_s):
                if self.conn is None:
                    break
                if not self.conn.connected and mask & selectors.EVENT_WRITE:
                    self._finish_connect()
                elif mask & selectors.EVENT_READ:
                    self._read()
            if (
                self.conn is not None
                and not self.conn.connected
                and time.monotonic_ns() > self.connect_deadline_ns
            ):
                self._failed(f"no connection within {self.cfg.connect_timeout_s} s")
        if self.batch is not None and time.monotonic_ns() >= self.batch_deadline_ns:
            self._publish_batch()

    def _open(self) -> None:
        try:
            self.conn = _Connection(self.cfg.host, self.cfg.port)
        except OSError as error:
            self.conn = None
            self._failed(str(error))
            return
        self.connect_deadline_ns = time.monotonic_ns() + int(self.cfg.connect_timeout_s * 1e9)
        if self.conn.connected:
            self._connected()
        else:
            self.selector.register(self.conn.sock, selectors.EVENT_WRITE)

    def _finish_connect(self) -> None:
        assert self.conn is not None
        try:
            self.conn.finish_connect()
        except OSError as error:
            self._failed(str(error))
            return
        self.selector.unregister(self.conn.sock)
        self._connected()

    def _connected(self) -> None:
        assert self.conn is not None
        self.selector.register(self.conn.sock, selectors.EVENT_READ)
        self.counters["igtl_connects"] += 1
        self.counters["igtl_connected"] = 1
        self.warned_clock = False
        log.info("connected to OpenIGTLink server %s:%d", self.cfg.host, self.cfg.port)

    def _failed(self, why: str) -> None:
        """A connection attempt failed: close, and retry after the backoff delay."""
        if self.conn is not None:
            self.selector.unregister(self.conn.sock)
            self.conn.close()
            self.conn = None
        delay_s = min(self.cfg.reconnect_max_s, self.cfg.reconnect_s * 2 ** min(self.failures, 16))
        if self.failures == 0:
            log.warning(
                "cannot connect to %s:%d (%s); retrying every %.1f..%.1f s",
                self.cfg.host, self.cfg.port, why, self.cfg.reconnect_s, self.cfg.reconnect_max_s,
            )  # fmt: skip
        self.failures += 1
        self.next_attempt_ns = time.monotonic_ns() + int(delay_s * 1e9)

    def disconnect(self, why: str, *, resync: bool = False) -> None:
        """Drop an established connection (server gone, framing lost) and schedule a retry."""
        if self.conn is None:
            return
        self.selector.unregister(self.conn.sock)
        self.conn.close()
        delivered = self.conn.delivered
        self.conn = None
        self.counters["igtl_disconnects"] += 1
        self.counters["igtl_connected"] = 0
        discarded = self.decoder.reset()
        if discarded and not resync:
            self.counters["igtl_partial"] += 1
            log.warning(
                "connection lost mid-message: %d bytes of a partial message dropped", discarded
            )
        if self.batch is not None:
            self._publish_batch()
        log.warning("disconnected from %s:%d: %s", self.cfg.host, self.cfg.port, why)
        if delivered:
            self.failures = 0
        self.next_attempt_ns = time.monotonic_ns() + int(self.cfg.reconnect_s * 1e9)

    def close(self) -> None:
        if self.conn is not None:
            self.selector.unregister(self.conn.sock)
            self.conn.close()
            self.conn = None
        self.selector.close()

    # receiving

    def _read(self) -> None:
        assert self.conn is not None
        total = 0
        while total < MAX_READ_PER_TICK:
            try:
                data = self.conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.disconnect(str(error))
                return
            if not data:
                self.disconnect("the server closed the connection")
                return
            total += len(data)
            t_recv_ns = time.monotonic_ns()
            t_recv_wall_ns = time.time_ns()
            skipped = self.decoder.skipped
            items = self.decoder.feed(data)
            self.counters["igtl_ignored"] += self.decoder.skipped - skipped
            for item in items:
                if isinstance(item, igtl.IgtlError):
                    self._rejected(item)
                    if item.fatal:
                        self.counters["igtl_resync"] += 1
                        self.disconnect(f"framing lost: {item}", resync=True)
                        return
                else:
                    self.conn.delivered += 1
                    self._message(item, t_recv_ns, t_recv_wall_ns)

    def _rejected(self, error: igtl.IgtlError) -> None:
        self.counters["rejected"] += 1
        key = f"rejected_igtl_{error.kind}"
        self.counters[key] += 1
        if self.counters[key] in (1, 10, 100, 1000) or self.counters[key] % 10000 == 0:
            log.warning("refused an OpenIGTLink message (%d so far): %s", self.counters[key], error)

    def _message(self, message: igtl.IgtlMessage, t_recv_ns: int, t_recv_wall_ns: int) -> None:
        self.counters["igtl_messages"] += 1
        body = message.body
        if isinstance(body, igtl.Transform | igtl.Position):
            tool = self.table.tool(message.device_name)
            if tool is None:
                self.counters["igtl_unmapped"] += 1
                return
            T = body.matrix if isinstance(body, igtl.Transform) else position_matrix(body)
            pose = self._checked(T, status_from_metadata(message))
            # Another timestamp, or a tool already in the batch, starts the next sample.
            if self.batch is not None and (
                self.batch.timestamp != message.timestamp or tool in self.batch.poses
            ):
                self._publish_batch()
            if self.batch is None:
                self.batch = Batch(message.timestamp, t_recv_ns, t_recv_wall_ns)
            self.batch.poses[tool] = pose
            self.batch_deadline_ns = time.monotonic_ns() + int(self.cfg.batch_window_s * 1e9)
            if self.sample_tools and self.sample_tools <= self.batch.poses.keys():
                self._publish_batch()  # every tool of the last sample is here: no need to wait
        elif isinstance(body, igtl.TrackingData):
            if self.batch is not None:
                self._publish_batch()
            batch = Batch(message.timestamp, t_recv_ns, t_recv_wall_ns)
            for element in body.elements:
                tool = self.table.tool(element.name)
                if tool is None:
                    self.counters["igtl_unmapped"] += 1
                    continue
                batch.poses[tool] = self._checked(element.matrix, ToolStatus.OK)
            self.batch = batch
            self._publish_batch()
        elif isinstance(body, igtl.Status):
            self.counters["igtl_status"] += 1
            self.table.apply_status(message.device_name, body)
            if body.code != igtl.StatusCode.OK:
                log.warning(
                    "server STATUS %d (%s) for %r: %s",
                    body.code, body.error_name, message.device_name, body.message,
                )  # fmt: skip
        else:
            self.counters["igtl_ignored"] += 1

    def _checked(
        self, T: npt.NDArray[np.float64], status: ToolStatus
    ) -> tuple[npt.NDArray[np.float64], ToolStatus]:
        checked_T, checked_status, deviation = checked_pose(T, status)
        if checked_status is not status:
            self.counters["not_rigid"] += 1
        elif deviation > 0.0:
            self.counters["projected_poses"] += 1
            ppm = math.ceil(deviation * 1e6)
            if ppm > self.counters["projected_max_deviation_ppm"]:
                self.counters["projected_max_deviation_ppm"] = ppm
        return checked_T, checked_status

    def _publish_batch(self) -> None:
        batch, self.batch = self.batch, None
        if batch is None or not batch.poses or self.runtime.pub is None:
            return
        self.sample_tools = set(batch.poses)
        t_sensor_ns, how = sensor_time_ns(
            batch.timestamp,
            t_recv_ns=batch.t_recv_ns,
            t_recv_wall_ns=batch.t_recv_wall_ns,
            max_offset_ns=int(self.cfg.max_clock_offset_s * 1e9),
        )
        if how == "mapped":
            age_ns = batch.t_recv_ns - t_sensor_ns
            self.clock_offset_ms = age_ns / 1e6
            self.runtime.latency.add(age_ns)
        else:
            self.counters[f"timestamp_{how}"] += 1
            if how == "unmapped" and not self.warned_clock:
                self.warned_clock = True
                age_s = (batch.t_recv_wall_ns - igtl.timestamp_to_ns(batch.timestamp)) / 1e9
                log.warning(
                    "message timestamps are %.3f s from this host's clock (beyond 0..%g s): "
                    "using receive time; synchronise the clocks (NTP)",
                    age_s, self.cfg.max_clock_offset_s,
                )  # fmt: skip
        frame = self.table.frame(
            batch, tracker=self.cfg.tracker_name, t_sensor_ns=t_sensor_ns, number=self.frame_number
        )
        self.frame_number += 1
        self.runtime.pub.publish(self.topic, frame)
        for tool, status in zip(frame.tools, frame.statuses, strict=True):
            key = f"tool/{tool}"
            self.ok_counts[key] = self.ok_counts.get(key, 0) + (status is ToolStatus.OK)

    def info(self, _command: Command) -> Reply:
        return Reply(
            ok=True,
            result={
                "connected": bool(self.conn is not None and self.conn.connected),
                "host": self.cfg.host,
                "port": self.cfg.port,
                "devices": {d: t for d, t in self.table.devices.items() if t is not None},
                "clock_offset_ms": self.clock_offset_ms,
            },
        )


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    with NodeRuntime(spec, stop) as runtime:
        if runtime.pub is None:
            raise ValueError(f"node {spec.name!r}: the tracker needs a pub endpoint")
        client = _Client(cfg, runtime)
        runtime.on("igtl.info", client.info)
        runtime.ready()
        try:
            while not stop.is_set():
                client.tick(stop)
                runtime.service(client.ok_counts)
        finally:
            client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

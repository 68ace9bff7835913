"""OpenIGTLink server node: streams the bus's tool poses to OpenIGTLink clients (3D Slicer).

Listens on TCP ``host:port`` (default 127.0.0.1:18944; port 0 lets the OS choose, see
``igtl.info``), subscribes (latest-wins) to ``topics`` on the nodes in its ``subscribe`` list
and, for each newest ``TrackerFrame`` (or ``ToolPose``), sends every client one TRANSFORM per
tool with PLUS-style device names: ``<Tool>To<tracker_frame>`` (``pointer`` ->
``PointerToTracker``, ``us_probe`` -> ``UsProbeToTracker``) carrying ``T_tracker_from_tool``,
and, when the frame has a ``reference_tool`` (default ``reference``), ``<Tool>ToReference``
carrying ``T_reference_from_tool = inv(T_tracker_from_reference) @ T_tracker_from_tool``
(status OK only when both tools are OK). Header timestamps are wall-clock time of the sample
(``t_sensor_ns`` moved from the monotonic to the wall clock).

With ``header_version`` 2 (default; OpenIGTLink 3, what Slicer and PLUS speak) every
TRANSFORM carries metadata ``TransformStatus`` = the tool status (OK, MISSING, OUT_OF_VIEW,
OUT_OF_VOLUME, INVALID) and non-OK tools are sent too, with the matrix the tracker last had.
With ``header_version`` 1 there is no way to say a pose is invalid, so only OK tools are sent
(as PLUS does with ``SendValidTransformsOnly``).

Requests from clients: ``GET_POLYDATA`` with a device name is answered with that mesh from
``models`` (``"Name=path/to/mesh.ply"``, loaded at start with trimesh, mm) as POLYDATA
(triangles), or with STATUS NOT_FOUND; an empty device name sends every model.
``GET_CAPABIL`` is answered with CAPABILITY. Other messages are counted and ignored.

Clients: up to ``max_clients`` at once; each has a bounded send queue. A client more than
``client_backlog_bytes`` behind loses poses (counted ``igtl_client_dropped``; a pose queued
behind seconds of others is worthless), and the kernel send buffer is capped at
``client_sndbuf_bytes`` so that it cannot hide seconds of backlog either. Requests are
answered in order while the client's queue is under ``client_reply_budget_bytes`` (4 MiB);
beyond it the rest wait and the client is not read until they are answered (TCP
backpressure; ``igtl_requests_held`` counts such episodes), so a client that asks for
meshes and never reads them costs at most the budget plus one reply. The node loop never
blocks on a client. A client that disconnects or sends garbage is closed and counted once.

With ``max_clients`` connected, a new client is not refused while one of them is not
reading (over ``client_backlog_bytes`` queued) or has been silent for ``client_idle_s``
(30 s; no message since it connected or since its last): the first such, else the one
silent longest, is closed for it (``igtl_evicted``). Silence alone never closes a client
while there is room: Slicer may only listen.

Publishes: ``heartbeat/<name>`` with counters ``igtl_clients`` (gauge), ``igtl_accepted``,
``igtl_client_closed``, ``igtl_sent_messages``, ``igtl_client_dropped``, ``igtl_refused``
(``max_clients`` reached, every client active), ``igtl_evicted``, ``rejected_igtl_<kind>``
(bad client messages), ``igtl_requests``, ``igtl_requests_held``.
Subscribes: ``topics`` (default ``pose/``) from ``subscribe``.
Control: ``ping``, ``status``, ``igtl.info`` -> ``{host, port, clients, models}``.
"""

from __future__ import annotations

import collections
import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import zmq

from nav.messages import Command, JsonValue, Reply, ToolPose, ToolStatus, TrackerFrame
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.transforms import invert_rigid
from tracking import igtl_codec as igtl

log = logging.getLogger(__name__)

RECV_BYTES = 1 << 16
MAX_REQUEST_BYTES = 1 << 20  # clients send requests, not data: a small framing limit
CAPABILITIES = ("TRANSFORM", "POLYDATA", "STATUS", "CAPABILITY", "GET_POLYDATA", "GET_CAPABIL")


@dataclass(frozen=True)
class Config:
    """Launch-file params (see the module docstring)."""

    port: int = igtl.DEFAULT_PORT
    host: str = "127.0.0.1"
    topics: tuple[str, ...] = ("pose/",)
    header_version: int = 2
    tracker_frame: str = "Tracker"
    reference_tool: str = "reference"
    max_clients: int = 8
    client_backlog_bytes: int = 1 << 18
    client_sndbuf_bytes: int = 1 << 16
    client_reply_budget_bytes: int = 4 << 20
    client_idle_s: float = 30.0
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"key 'port': {self.port} is not a TCP port (0: OS chooses)")
        if self.header_version not in (1, 2):
            raise ValueError(f"key 'header_version': {self.header_version} (1 or 2)")
        if not self.tracker_frame:
            raise ValueError("key 'tracker_frame': must not be empty")
        if not 1 <= self.max_clients <= 64:
            raise ValueError(f"key 'max_clients': {self.max_clients} is outside 1..64")
        for key in ("client_backlog_bytes", "client_sndbuf_bytes", "client_reply_budget_bytes"):
            if getattr(self, key) < 1024:
                raise ValueError(f"key {key!r}: {getattr(self, key)} is under 1024")
        if not (math.isfinite(self.client_idle_s) and self.client_idle_s >= 0):
            raise ValueError(f"key 'client_idle_s': {self.client_idle_s} (finite, >= 0)")
        self.model_paths()

    def model_paths(self) -> dict[str, str]:
        """``models`` as {device name: path}; ValueError names a bad entry."""
        out: dict[str, str] = {}
        for entry in self.models:
            name, eq, path = entry.partition("=")
            name, path = name.strip(), path.strip()
            if not eq or not name or not path or len(name.encode()) > 20:
                raise ValueError(f"key 'models': {entry!r} is not 'Name=path' (name <= 20 bytes)")
            out[name] = path
        return out


# --- pure helpers -----------------------------------------------------------------------


def camel_case(tool: str) -> str:
    """``us_probe`` -> ``UsProbe`` (PLUS names frames in CamelCase)."""
    return "".join(part[:1].upper() + part[1:] for part in tool.split("_") if part)


def device_name(tool: str, to_frame: str) -> str:
    """PLUS-style transform name: ``("us_probe", "Tracker")`` -> ``UsProbeToTracker``
    (cut to the 20 bytes of the header field)."""
    return f"{camel_case(tool)}To{to_frame}"[:20]


def frame_messages(
    frame: TrackerFrame,
    *,
    timestamp: int,
    header_version: int,
    tracker_frame: str,
    reference_tool: str,
) -> list[igtl.IgtlMessage]:
    """The TRANSFORM messages for one tracker sample (see the module docstring)."""
    poses: list[tuple[str, npt.NDArray[np.float64], ToolStatus]] = [
        (device_name(tool, tracker_frame), T, status)
        for tool, T, status in zip(
            frame.tools, frame.T_tracker_from_tools, frame.statuses, strict=True
        )
    ]
    if reference_tool in frame.tools:
        i_ref = frame.tools.index(reference_tool)
        ref_status = frame.statuses[i_ref]
        T_reference_from_tracker = invert_rigid(frame.T_tracker_from_tools[i_ref])
        reference_frame = camel_case(reference_tool)
        for tool, T, status in zip(
            frame.tools, frame.T_tracker_from_tools, frame.statuses, strict=True
        ):
            if tool == reference_tool:
                continue
            both = status if status is not ToolStatus.OK else ref_status
            poses.append((device_name(tool, reference_frame), T_reference_from_tracker @ T, both))
    out = []
    for name, T, status in poses:
        if header_version == 1 and status is not ToolStatus.OK:
            continue
        metadata = (
            (igtl.MetaItem.of("TransformStatus", status.value),) if header_version > 1 else ()
        )
        out.append(
            igtl.IgtlMessage(name, igtl.Transform(T), timestamp, header_version, metadata=metadata)
        )
    return out


def wall_timestamp(t_sensor_ns: int, *, now_ns: int, now_wall_ns: int) -> int:
    """The header timestamp (32.32 wall clock) of a sample taken at monotonic ``t_sensor_ns``."""
    return igtl.timestamp_from_ns(max(0, now_wall_ns - (now_ns - t_sensor_ns)))


def load_models(paths: dict[str, str]) -> dict[str, igtl.PolyData]:
    """Meshes as POLYDATA bodies (triangles, mm); ValueError names a file that fails."""
    import trimesh  # only this node needs it, and only with models configured

    out = {}
    for name, path in paths.items():
        try:
            mesh = trimesh.load(path, force="mesh")
        except Exception as error:  # trimesh raises many types for a bad file
            raise ValueError(f"key 'models': {name}: cannot load {path}: {error}") from None
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f"key 'models': {name}: {path} has no triangles")
        out[name] = igtl.PolyData.from_triangles(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    return out


# --- the node ---------------------------------------------------------------------------


class _Peer:
    """One connected client: its socket, a bounded send queue, a request decoder, the
    requests waiting for the send queue to drain, and when it last said anything."""

    def __init__(self, sock: socket.socket, address: str, now_ns: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()  # -1 once closed: the key must not depend on it
        self.address = address
        self.out = bytearray()
        self.decoder = igtl.StreamDecoder(max_body_bytes=MAX_REQUEST_BYTES)
        self.requests: collections.deque[igtl.IgtlMessage] = collections.deque()
        self.last_heard_ns = now_ns  # its last message, or its connection
        self.holding = False  # requests wait for the send queue (counted once per episode)
        self.closed = False

    def flush(self) -> None:
        """Send what the kernel takes now; OSError if the connection is gone."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            del self.out[:sent]


class _Server:
    def __init__(self, cfg: Config, runtime: NodeRuntime, models: dict[str, igtl.PolyData]) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.counters = runtime.counters
        self.models = models
        try:
            self.listener = socket.create_server((cfg.host, cfg.port), reuse_port=False, backlog=16)
        except OSError as error:  # a taken port: exit 3 and one line, like every bound socket
            raise bus.BindError(
                f"cannot bind tcp://{cfg.host}:{cfg.port}: {error.strerror}"
            ) from None
        self.listener.setblocking(False)
        self.port: int = self.listener.getsockname()[1]
        self.peers: dict[int, _Peer] = {}
        self.counters["igtl_clients"] = 0

    def accept(self) -> None:
        while True:
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            now_ns = time.monotonic_ns()
            if len(self.peers) >= self.cfg.max_clients:
                victim = self.eviction_candidate(now_ns)
                if victim is None:
                    self.counters["igtl_refused"] += 1
                    log.warning(
                        "refused client %s: %d clients, all active", address, len(self.peers)
                    )
                    sock.close()
                    continue
                self.counters["igtl_evicted"] += 1
                silent_s = (now_ns - victim.last_heard_ns) / 1e9
                why = f"{len(victim.out)} bytes unread, silent {silent_s:.1f} s"
                self.close_peer(victim, f"evicted for {address[0]}:{address[1]} ({why})")
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.cfg.client_sndbuf_bytes)
            peer = _Peer(sock, f"{address[0]}:{address[1]}", now_ns)
            self.peers[peer.fd] = peer
            self.counters["igtl_accepted"] += 1
            self.counters["igtl_clients"] = len(self.peers)
            log.info("client %s connected (%d now)", peer.address, len(self.peers))

    def eviction_candidate(self, now_ns: int) -> _Peer | None:
        """The client a new connection replaces when all ``max_clients`` are taken, or None.

        Slicer may only listen (it need not send anything), so silence alone cannot end a
        connection while there is room. With none left: first a client that does not read
        (more than ``client_backlog_bytes`` queued), else the one silent longest (no
        message since it connected or since its last one), if for ``client_idle_s``.
        """
        if not self.peers:
            return None
        stuck = [p for p in self.peers.values() if len(p.out) > self.cfg.client_backlog_bytes]
        if stuck:
            return min(stuck, key=lambda p: p.last_heard_ns)
        idlest = min(self.peers.values(), key=lambda p: p.last_heard_ns)
        if now_ns - idlest.last_heard_ns >= self.cfg.client_idle_s * 1e9:
            return idlest
        return None

    def close_peer(self, peer: _Peer, why: str) -> None:
        """Close and count a client, once (a second call, e.g. from a later send, is a no-op)."""
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer.fd, None)
        peer.sock.close()
        peer.out.clear()
        peer.requests.clear()
        self.counters["igtl_client_closed"] += 1
        self.counters["igtl_clients"] = len(self.peers)
        log.info("client %s closed: %s (%d left)", peer.address, why, len(self.peers))

    def broadcast(self, wire: bytes, n_messages: int) -> None:
        """Queue poses for every client that keeps up; drop for one that does not."""
        for peer in list(self.peers.values()):
            if len(peer.out) > self.cfg.client_backlog_bytes:
                self.counters["igtl_client_dropped"] += n_messages
                continue
            peer.out += wire
            self.counters["igtl_sent_messages"] += n_messages
            self.send(peer)

    def send(self, peer: _Peer) -> None:
        """Flush what the kernel takes; then answer held requests if there is room now."""
        if peer.closed:
            return
        try:
            peer.flush()
        except OSError as error:
            self.close_peer(peer, str(error))
            return
        if peer.requests and len(peer.out) < self.cfg.client_reply_budget_bytes:
            self.serve_requests(peer)

    def read(self, peer: _Peer) -> None:
        try:
            data = peer.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.close_peer(peer, str(error))
            return
        if not data:
            self.close_peer(peer, "disconnected")
            return
        for item in peer.decoder.feed(data):
            if isinstance(item, igtl.IgtlError):
                self.counters["rejected"] += 1
                self.counters[f"rejected_igtl_{item.kind}"] += 1
                if item.fatal:
                    self.close_peer(peer, f"unreadable request: {item}")
                    return
                continue
            self.counters["igtl_requests"] += 1
            peer.last_heard_ns = time.monotonic_ns()
            peer.requests.append(item)
        self.serve_requests(peer)

    def serve_requests(self, peer: _Peer) -> None:
        """Answer held requests in order while the client's send queue is under its budget.

        Over budget the rest wait, and the client is not read until they are answered
        (``_serve_sockets``): TCP then holds its further requests in the kernel, so a
        client that asks for meshes and never reads them costs at most the budget plus
        one reply, and a client that reads slowly still gets every answer.
        """
        while peer.requests and not peer.closed:
            if len(peer.out) >= self.cfg.client_reply_budget_bytes:
                if not peer.holding:
                    peer.holding = True
                    self.counters["igtl_requests_held"] += 1
                    log.warning(
                        "client %s asks faster than it reads: %d bytes queued, holding "
                        "its requests",
                        peer.address,
                        len(peer.out),
                    )
                return
            self.request(peer, peer.requests.popleft())
        peer.holding = False

    def request(self, peer: _Peer, message: igtl.IgtlMessage) -> None:
        replies: list[igtl.IgtlMessage] = []
        version = self.cfg.header_version
        stamp = igtl.timestamp_from_ns(time.time_ns())
        if message.type_id == "GET_POLYDATA":
            names = [message.device_name] if message.device_name else list(self.models)
            for name in names:
                mesh = self.models.get(name)
                if mesh is None:
                    body = igtl.Status(
                        igtl.StatusCode.NOT_FOUND, 0, "NOT_FOUND", f"no model {name!r}"
                    )
                    replies.append(igtl.IgtlMessage(name, body, stamp, version))
                else:
                    replies.append(igtl.IgtlMessage(name, mesh, stamp, version))
        elif message.type_id == "GET_CAPABIL":
            replies.append(igtl.IgtlMessage("", igtl.Capability(CAPABILITIES), stamp, version))
        else:
            self.counters["igtl_ignored"] += 1
            return
        peer.out += b"".join(igtl.encode(reply) for reply in replies)
        try:
            peer.flush()
        except OSError as error:
            self.close_peer(peer, str(error))

    def publish_frame(self, frame: TrackerFrame) -> None:
        if not self.peers:
            return
        stamp = wall_timestamp(
            frame.t_sensor_ns, now_ns=time.monotonic_ns(), now_wall_ns=time.time_ns()
        )
        messages = frame_messages(
            frame,
            timestamp=stamp,
            header_version=self.cfg.header_version,
            tracker_frame=self.cfg.tracker_frame,
            reference_tool=self.cfg.reference_tool,
        )
        if messages:
            self.broadcast(b"".join(igtl.encode(m) for m in messages), len(messages))

    def info(self, _command: Command) -> Reply:
        clients: list[JsonValue] = [peer.address for peer in self.peers.values()]
        models: list[JsonValue] = [name for name in sorted(self.models)]
        return Reply(
            ok=True,
            result={
                "host": self.cfg.host,
                "port": self.port,
                "clients": clients,
                "models": models,
            },
        )

    def close(self) -> None:
        for peer in list(self.peers.values()):
            peer.sock.close()
        self.peers.clear()
        self.listener.close()


def _as_frame(message: TrackerFrame | ToolPose) -> TrackerFrame:
    if isinstance(message, TrackerFrame):
        return message
    fit = np.array([message.fit_error_mm])
    return TrackerFrame(
        "pose", message.t_sensor_ns, 0, (message.tool,), message.T_tracker_from_tool[None],
        (message.status,), fit,
    )  # fmt: skip


def _serve_sockets(server: _Server, bus_socket: zmq.Socket[bytes]) -> None:
    """Wait (one poll period at most) for the bus or any TCP socket; serve the TCP side."""
    poller = zmq.Poller()
    poller.register(bus_socket, zmq.POLLIN)
    poller.register(server.listener.fileno(), zmq.POLLIN)
    for fd, peer in server.peers.items():
        # A client with requests held (its replies over budget) is not read until they
        # are answered: backpressure instead of memory.
        mask = (0 if peer.requests else zmq.POLLIN) | (zmq.POLLOUT if peer.out else 0)
        if mask:
            poller.register(fd, mask)
    events = dict(poller.poll(int(POLL_TIMEOUT_S * 1000)))
    if server.listener.fileno() in events:
        server.accept()
    for fd, mask in events.items():
        client = server.peers.get(fd) if isinstance(fd, int) else None
        if client is None:
            continue
        if mask & zmq.POLLIN:
            server.read(client)
        if mask & zmq.POLLOUT and fd in server.peers:
            server.send(client)


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    models = load_models(cfg.model_paths())
    with NodeRuntime(spec, stop) as runtime:
        server = _Server(cfg, runtime, models)
        sub = bus.LatestSubscriber(spec.subscribe_endpoints, cfg.topics)
        runtime.watch(sub.counters)
        runtime.on("igtl.info", server.info)
        log.info("OpenIGTLink server on %s:%d, %d models", cfg.host, server.port, len(models))
        runtime.ready()
        try:
            while not stop.is_set():
                _serve_sockets(server, sub.fileno_socket())
                for received in sub.poll(0.0):
                    message = received.message
                    if isinstance(message, TrackerFrame | ToolPose):
                        runtime.latency.add(received.t_recv_ns - message.t_sensor_ns)
                        server.publish_frame(_as_frame(message))
                runtime.service()
        finally:
            sub.close()
            server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

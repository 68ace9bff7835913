"""The ornav message bus: the only module (with ``*_node.py``) that talks to ZeroMQ.

Patterns, and why each:
- ``Publisher``: a bound PUB socket. Pose streams drop, never queue: a full send queue
  (SNDHWM) drops the newest for that subscriber rather than blocking the tracker loop.
- ``LatestSubscriber``: for pose streams. Each ``poll`` drains everything queued and hands
  back only the newest valid message per topic; the rest are counted as ``superseded``.
  A plain queue behind a slow consumer serves poses seconds old (measured in
  ``bench/latency.py``).
- ``QueueSubscriber``: every message in order, for recorders and anything that must not
  skip (registration results, alerts).
- ``CommandServer`` / ``CommandClient``: REQ/REP with a deadline; the client rebuilds its
  socket after a timeout (the "lazy pirate" pattern of the ZeroMQ guide), so one lost reply
  never wedges it.

Every socket keeps ``Counters``: sent, received, rejected by kind (see
``messages.MessageError``), superseded, and lost (gaps in the per-topic sequence numbers).
Nothing received is trusted before ``messages.decode`` has validated it.

Producer restarts: a publisher stamps every message with its process's ``epoch``
(``nav.runtime.roster``). Sequence numbers are compared only within one epoch; a new epoch resets
the order and is counted as ``producer_restarts``, never as loss. Under a supervisor, a
subscriber drops (``rejected_untrusted``) any epoch the supervisor's roster does not list,
so a stranger on a crashed node's port is not taken for that node.

Limits against hostile peers: a PUB socket refuses inbound frames (subscriptions) over
``MAX_SUBSCRIPTION_BYTES``, a control socket requests over ``MAX_PAYLOAD_BYTES`` and keeps
at most ``CONTROL_RCVHWM`` queued per peer; every handshake must finish in
``HANDSHAKE_S``.

Endpoints: ``ipc:///path`` on one host (in a 0700 directory), ``tcp://host:port`` across
hosts. Every ``tcp://`` socket of a node is CurveZMQ-encrypted and authenticated: the
process's ``Security`` (``use_security``; the supervisor hands it to its nodes in
``ORNAV_SECURITY``) gives servers this host's key pair and a ZAP handler over the
allow-list (``nav.runtime.bus_auth``: an unknown key is refused, counted as
``auth_refused`` and logged by fingerprint), and clients their own pair and the public
key of the host they connect to. A socket may be given explicit ``CurveKeys`` instead
(encryption, no allow-list). Without either, a tcp socket is refused
(``InsecureEndpointError``) once the process said ``use_security(None, insecure=False)``;
a launch file with ``insecure = true`` allows it in the clear with a warning, and a
process that said nothing (a library user, a test) gets the warning only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as _Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import zmq

from nav.messages import (
    MAX_PAYLOAD_BYTES,
    Command,
    Envelope,
    Message,
    MessageError,
    Reply,
    decode,
    encode,
)
from nav.runtime import roster
from nav.runtime.bus_auth import DOMAIN, AllowList, ZapHandler

log = logging.getLogger(__name__)

POSE_RCVHWM = 1000  # bounded backlog behind a slow reader; latest-wins drains it anyway
QUEUE_RCVHWM = 100_000  # recorder: about 100 s of a 1 kHz stream before ZeroMQ drops
PUB_SNDHWM = 1000
CONTROL_RCVHWM = 64  # queued requests per control peer: a flood is dropped by ZeroMQ, not served
MAX_SUBSCRIPTION_BYTES = 1024  # a topic prefix; a 4 MiB subscription cost the tracker 250 MB
HANDSHAKE_S = 2.0  # a peer that connects and never finishes the ZMTP handshake is dropped


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """The process-wide ZeroMQ context (one I/O thread is plenty for poses)."""
    return zmq.Context.instance()


@dataclass(frozen=True)
class CurveKeys:
    """CurveZMQ key pair (Z85 text, 40 chars each) and, for clients, the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None

    @staticmethod
    def generate() -> CurveKeys:
        public, secret = zmq.curve_keypair()
        return CurveKeys(public, secret)


@dataclass(frozen=True)
class Security:
    """CurveZMQ for every tcp socket of one process.

    ``own``: this host's key pair (servers present it; clients authenticate with it).
    ``server_keys``: tcp host (as written in endpoints) -> the public key of the host that
    binds there; a host not listed is this host (``own.public``).
    ``allow``: whom this process's servers let in (checked by the ZAP handler).
    """

    own: CurveKeys
    allow: AllowList
    server_keys: Mapping[str, bytes] = field(default_factory=dict)

    def client_keys(self, endpoint: str) -> CurveKeys:
        host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
        server = self.server_keys.get(host, self.own.public)
        return CurveKeys(self.own.public, self.own.secret, server)


class InsecureEndpointError(ValueError):
    """A tcp endpoint without CurveZMQ keys where the stack did not allow that."""


_security: Security | None = None
_insecure_ok = True  # until a process says otherwise (use_security): old callers warn
_zap: ZapHandler | None = None


def use_security(security: Security | None, *, insecure: bool = False) -> None:
    """Secure this process's tcp sockets with ``security`` from now on; with None, refuse
    tcp sockets without keys unless ``insecure`` (then they run in the clear, warned)."""
    global _security, _insecure_ok
    _security = security
    _insecure_ok = security is None and insecure


def auth_counters() -> dict[str, int]:
    """What this process's ZAP handler decided (``auth_accepted``, ``auth_refused``)."""
    return dict(_zap.counters) if _zap is not None else {}


def _start_zap(allow: AllowList) -> ZapHandler:
    global _zap
    if _zap is None:
        zap = ZapHandler(context(), allow)
        zap.start()  # bound before any CURVE server exists: none runs unauthenticated
        _zap = zap
    elif _zap.allow is not allow:
        _zap.allow = allow
    return _zap


def _secure(
    sock: zmq.Socket[bytes],
    endpoint: str,
    keys: CurveKeys | Security | None,
    *,
    server: bool,
) -> None:
    if not endpoint.startswith("tcp://"):
        return  # ipc is protected by file permissions on the run directory
    if keys is None:
        keys = _security
    if keys is None:
        if not _insecure_ok:
            raise InsecureEndpointError(
                f"{endpoint}: tcp needs CurveZMQ keys (`ornav keys init`), or "
                "insecure = true in the launch file's [stack]"
            )
        log.warning("%s is unencrypted: no CurveZMQ keys given", endpoint)
        return
    if isinstance(keys, Security):
        if server:
            _start_zap(keys.allow).watch(sock)
            sock.zap_domain = DOMAIN.encode()
            keys = keys.own
        else:
            keys = keys.client_keys(endpoint)
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    if server:
        sock.curve_server = True
    else:
        if keys.server_public is None:
            raise ValueError(f"{endpoint}: client keys need the server's public key")
        sock.curve_serverkey = keys.server_public


def secure_server(
    sock: zmq.Socket[bytes], endpoint: str, keys: CurveKeys | Security | None = None
) -> None:
    """Make a socket this process binds at ``endpoint`` CURVE (tcp) like the bus's own."""
    _secure(sock, endpoint, keys, server=True)


def secure_client(
    sock: zmq.Socket[bytes], endpoint: str, keys: CurveKeys | Security | None = None
) -> None:
    """Make a socket that connects to ``endpoint`` CURVE (tcp) like the bus's own."""
    _secure(sock, endpoint, keys, server=False)


class Counters(_Counter[str]):
    """Named event counts of one socket (a ``collections.Counter``; missing names are 0)."""

    def reject(self, error: MessageError) -> None:
        self["rejected"] += 1
        self[f"rejected_{error.kind}"] += 1


@dataclass(frozen=True, eq=False)
class Received:
    """One validated message as it arrived: topic, envelope, the raw payload, receive time."""

    topic: str
    envelope: Envelope
    payload: bytes
    t_recv_ns: int

    @property
    def message(self) -> Message:
        return self.envelope.message


def bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind, or raise ``BindError`` naming the endpoint; returns the endpoint really bound."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as error:
        sock.close(linger=0)
        raise BindError(f"cannot bind {endpoint}: {error.strerror}") from None
    # tcp://*:0 binds an OS-chosen port; report the real one.
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class BindError(OSError):
    """An endpoint this node must own is taken (another process, or a stale socket)."""


def _harden(sock: zmq.Socket[bytes], *, max_inbound_bytes: int) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_inbound_bytes)
    sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))


class Publisher:
    """A bound PUB socket that stamps each message with its epoch, a per-topic seq and
    ``t_pub_ns``. ``epoch`` defaults to this process's (``roster.own_epoch``)."""

    def __init__(
        self,
        endpoint: str,
        *,
        keys: CurveKeys | Security | None = None,
        sndhwm: int = PUB_SNDHWM,
        epoch: int | None = None,
    ) -> None:
        self._sock = context().socket(zmq.PUB)
        # Subscribers send only subscriptions (topic prefixes) upstream; anything longer is
        # an attack on this process's memory and drops that peer.
        _harden(self._sock, max_inbound_bytes=MAX_SUBSCRIPTION_BYTES)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        _secure(self._sock, endpoint, keys, server=True)
        self.endpoint: str = bind(self._sock, endpoint)
        self.epoch = roster.own_epoch() if epoch is None else epoch
        self._seq: dict[str, int] = {}
        self.counters = Counters()

    def publish(self, topic: str, message: Message, *, t_pub_ns: int | None = None) -> int:
        """Encode and send; returns the sequence number used for this topic."""
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        stamp = time.monotonic_ns() if t_pub_ns is None else t_pub_ns
        self.publish_raw(topic, encode(message, seq=seq, t_pub_ns=stamp, epoch=self.epoch))
        return seq

    def publish_raw(self, topic: str, payload: bytes) -> None:
        """Send an already-encoded payload unchanged (replay republishes recorded bytes)."""
        try:
            self._sock.send_multipart([topic.encode(), payload], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # only with no subscribers on some transports; a pose is disposable
            self.counters["dropped"] += 1
            return
        self.counters["sent"] += 1

    def close(self, *, linger_s: float = 0.0) -> None:
        """Close; ``linger_s`` > 0 gives queued messages that long to leave (end of a replay)."""
        self._sock.close(linger=int(linger_s * 1000))


class _Subscriber:
    def __init__(
        self,
        endpoints: Iterable[str],
        topics: Iterable[str],
        *,
        rcvhwm: int,
        keys: CurveKeys | Security | None,
        max_bytes: int,
        trust: roster.EpochTrust | None,
    ) -> None:
        self._sock = context().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        # No MAXMSGSIZE here: libzmq answers an over-limit frame by dropping the connection
        # for good, so one big message would leave this subscriber deaf to that publisher.
        # decode() refuses and counts it as "oversized" instead. Peers are our own nodes
        # (tcp needs CurveZMQ keys), so memory is bounded by what they may send.
        self._max_bytes = max_bytes
        self.endpoints = tuple(endpoints)
        # libzmq copies a socket's options at each connect: ipc endpoints connect before
        # any CURVE key is set on the socket (their servers are not CURVE), and each tcp
        # one after its own server's key (hosts differ).
        for endpoint in sorted(self.endpoints, key=lambda e: e.startswith("tcp://")):
            _secure(self._sock, endpoint, keys, server=False)
            self._sock.connect(endpoint)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._last: dict[str, tuple[int, int]] = {}  # topic -> (epoch, seq) last seen
        # Under a supervisor only the epochs on its roster are trusted (nav.runtime.roster).
        self._trust = trust if trust is not None else roster.trust_from_environment()
        self.counters = Counters()

    def fileno_socket(self) -> zmq.Socket[bytes]:
        """The underlying socket, for a node loop that polls several at once."""
        return self._sock

    def _recv_frames(self) -> tuple[str, bytes] | None:
        """One raw (topic, payload) without blocking; None when nothing is queued."""
        while True:
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return None
            self.counters["received"] += 1
            if len(frames) != 2:
                self.counters.reject(MessageError("malformed", f"{len(frames)} frames"))
                continue
            try:
                return frames[0].decode("utf-8"), frames[1]
            except UnicodeDecodeError:
                self.counters.reject(MessageError("malformed", "topic is not UTF-8"))

    def _decode(self, topic: str, payload: bytes, t_recv_ns: int) -> Received | None:
        try:
            envelope = decode(payload, max_bytes=self._max_bytes)
        except MessageError as error:
            self.counters.reject(error)
            log.debug("dropped a message on %r: %s", topic, error)
            return None
        if self._trust is not None and not self._trust(envelope.epoch):
            self.counters.reject(MessageError("untrusted", f"epoch {envelope.epoch}"))
            if self.counters["rejected_untrusted"] in (1, 100, 10_000):
                log.warning(
                    "dropping %r from a publisher the supervisor did not start (epoch %d): "
                    "%d so far",
                    topic,
                    envelope.epoch,
                    self.counters["rejected_untrusted"],
                )
            return None
        return Received(topic, envelope, payload, t_recv_ns)

    def _count_gap(self, topic: str, envelope: Envelope, skipped: int) -> None:
        # Sequence numbers are per topic and per publisher epoch, and ZeroMQ keeps order per
        # connection, so a jump beyond what this socket itself skipped was lost on the way
        # (HWM, reconnect). A new epoch is a restarted producer: its seq starts again.
        last = self._last.get(topic)
        if last is not None and last[0] != envelope.epoch:
            self.counters["producer_restarts"] += 1
        elif last is not None and envelope.seq > last[1] + 1:
            self.counters["lost"] += max(0, envelope.seq - last[1] - 1 - skipped)
        self._last[topic] = (envelope.epoch, envelope.seq)

    def _wait(self, timeout_s: float) -> bool:
        return bool(self._sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN))

    def close(self) -> None:
        self._sock.close(linger=0)


class LatestSubscriber(_Subscriber):
    """Latest-wins subscriber for pose streams: ``poll`` returns the newest per topic."""

    def __init__(
        self,
        endpoints: Iterable[str],
        topics: Iterable[str] = ("",),
        *,
        keys: CurveKeys | Security | None = None,
        rcvhwm: int = POSE_RCVHWM,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        trust: roster.EpochTrust | None = None,
    ) -> None:
        super().__init__(
            endpoints, topics, rcvhwm=rcvhwm, keys=keys, max_bytes=max_bytes, trust=trust
        )

    def poll(self, timeout_s: float) -> list[Received]:
        """Wait up to ``timeout_s`` for traffic, drain it, return the newest valid per topic."""
        if not self._wait(timeout_s):
            return []
        queued: dict[str, list[bytes]] = {}
        while (frames := self._recv_frames()) is not None:
            queued.setdefault(frames[0], []).append(frames[1])
        t_recv_ns = time.monotonic_ns()
        newest: list[Received] = []
        for topic, payloads in queued.items():
            # Decode newest first; older ones are only worth decoding if the newest is bad.
            for i in range(len(payloads) - 1, -1, -1):
                received = self._decode(topic, payloads[i], t_recv_ns)
                if received is not None:
                    self.counters["superseded"] += i
                    self._count_gap(topic, received.envelope, skipped=i)
                    newest.append(received)
                    break
        return newest


class QueueSubscriber(_Subscriber):
    """Every valid message in arrival order (recorders, reliable topics)."""

    def __init__(
        self,
        endpoints: Iterable[str],
        topics: Iterable[str] = ("",),
        *,
        keys: CurveKeys | Security | None = None,
        rcvhwm: int = QUEUE_RCVHWM,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        trust: roster.EpochTrust | None = None,
    ) -> None:
        super().__init__(
            endpoints, topics, rcvhwm=rcvhwm, keys=keys, max_bytes=max_bytes, trust=trust
        )

    def poll(self, timeout_s: float, *, max_messages: int = 10_000) -> list[Received]:
        """Wait up to ``timeout_s`` for traffic, then return up to ``max_messages`` in order."""
        if not self._wait(timeout_s):
            return []
        out: list[Received] = []
        while len(out) < max_messages and (frames := self._recv_frames()) is not None:
            received = self._decode(frames[0], frames[1], time.monotonic_ns())
            if received is not None:
                self._count_gap(received.topic, received.envelope, skipped=0)
                out.append(received)
        return out


class CommandServer:
    """A node's control socket (REP): one reply for every request, even a malformed one.

    Control is never allowed to starve the pose path: each peer may have at most
    ``CONTROL_RCVHWM`` requests queued (ZeroMQ holds the rest back at the sender), and the
    node answers a bounded number per loop pass (``nav.runtime.node``).
    """

    def __init__(self, endpoint: str, *, keys: CurveKeys | Security | None = None) -> None:
        self._sock = context().socket(zmq.REP)
        _harden(self._sock, max_inbound_bytes=MAX_PAYLOAD_BYTES)
        self._sock.setsockopt(zmq.RCVHWM, CONTROL_RCVHWM)
        _secure(self._sock, endpoint, keys, server=True)
        self.endpoint: str = bind(self._sock, endpoint)
        self._seq = 0
        self.counters = Counters()

    def socket(self) -> zmq.Socket[bytes]:
        return self._sock

    def receive(self, timeout_s: float = 0.0, *, max_requests: int = 16) -> Command | None:
        """The next valid command, or None. A bad request is answered here and counted.

        At most ``max_requests`` requests are read in one call, bad ones included, so a
        flood of junk cannot hold the caller's loop (20k junk requests once blanked the
        overlay for 0.4 s).
        """
        for _ in range(max_requests):
            if not self._sock.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
                return None
            timeout_s = 0.0
            try:
                frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:  # the peer left between poll and recv
                return None
            self.counters["received"] += 1
            try:
                if len(frames) != 1:
                    raise MessageError("malformed", f"{len(frames)} frames in a request")
                envelope = decode(frames[0])
                if not isinstance(envelope.message, Command):
                    raise MessageError("invalid", f"{envelope.type_name} is not a Command")
            except MessageError as error:
                self.counters.reject(error)
                self.reply(Reply(ok=False, error=f"rejected: {error}"))
                continue
            return envelope.message
        return None

    def reply(self, reply: Reply) -> None:
        """Answer the command last returned by ``receive`` (REP needs exactly one reply)."""
        self._sock.send(encode(reply, seq=self._seq, t_pub_ns=time.monotonic_ns()))
        self._seq += 1
        self.counters["sent"] += 1

    def close(self) -> None:
        self._sock.close(linger=0)


class CommandClient:
    """REQ client with a deadline per request; a timeout rebuilds the socket (lazy pirate)."""

    def __init__(self, endpoint: str, *, keys: CurveKeys | Security | None = None) -> None:
        self.endpoint = endpoint
        self._keys = keys
        self._seq = 0
        self._sock = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock = context().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        _secure(sock, self.endpoint, self._keys, server=False)
        sock.connect(self.endpoint)
        return sock

    def request(self, command: Command, *, timeout_s: float = 2.0) -> Reply:
        """Send and wait for the reply; TimeoutError if none within ``timeout_s``."""
        self._sock.send(encode(command, seq=self._seq, t_pub_ns=time.monotonic_ns()))
        self._seq += 1
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            self._sock.close(linger=0)
            self._sock = self._connect()
            raise TimeoutError(f"{self.endpoint}: no reply to {command.name!r} in {timeout_s} s")
        envelope = decode(self._sock.recv())
        if not isinstance(envelope.message, Reply):
            raise MessageError("invalid", f"{envelope.type_name} is not a Reply")
        return envelope.message

    def call(self, name: str, *, timeout_s: float = 2.0, **args: object) -> Reply:
        return self.request(Command(name, dict(args)), timeout_s=timeout_s)  # type: ignore[arg-type]

    def close(self) -> None:
        self._sock.close(linger=0)

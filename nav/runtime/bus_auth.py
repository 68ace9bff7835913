"""Who may connect to this process's tcp sockets: a ZAP handler over the allow-list.

ZeroMQ asks a process's ZAP handler (RFC 27, ``inproc://zeromq.zap.01`` in the socket's
context) about every CURVE handshake on a socket with ``curve_server`` set; the handler
answers 200 (in) or 400 (refused, the connection is closed before any message). We run
our own handler rather than ``zmq.auth.ThreadAuthenticator`` to count refusals
(``auth_refused``) and log each refused key by its fingerprint, to re-read the allow-list
when ``ornav keys authorize``/``revoke`` changes it, and to refuse any mechanism but
CURVE: pyzmq's authenticator does neither count nor re-read (``bench/curve.py`` times
both handlers' handshakes).

A client without CURVE (or with garbage for a handshake) never reaches ZAP: libzmq drops
it at the mechanism check. Each secured server socket's monitor reports those failed
handshakes to the same thread, which counts them as ``auth_refused`` too.

Without a handler bound, libzmq lets every CURVE client in (any key): ``start`` binds
the handler before it returns, and ``bus`` starts it before the first CURVE server binds.

Revoking a key refuses its *new* connections; one already open lasts until it
reconnects (libzmq cannot drop one peer of a socket): restart the node to cut it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from nav.runtime.keys import KeysError, KeyStore, fingerprint, z85_decode

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
DOMAIN = "ornav"
# Handshakes that failed before ZAP (no CURVE, a broken hello); AUTH failures are ZAP's own.
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
WARN_EVERY_S = 5.0  # one log line per refused key per this many seconds: a flood is one line
MAX_WARNED_KEYS = 10_000  # refused keys remembered for that; a flood of new keys resets it
LINES_PER_WINDOW = 10


class AllowList:
    """The raw 32-byte keys allowed in: fixed ones (this host, the stack's hosts) and the
    keys directory's ``authorized/`` files, re-read when that directory changes."""

    def __init__(self, store: KeyStore | None, fixed: Iterable[tuple[str, bytes]] = ()) -> None:
        self._store = store
        self._fixed = {z85_decode(key.decode("ascii")): name for name, key in fixed}
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[bytes, str] = dict(self._fixed)

    def name_of(self, raw_key: bytes) -> str | None:
        """The allowed name of a raw key, or None: not allowed."""
        self._reload()
        return self._keys.get(raw_key)

    def _reload(self) -> None:
        if self._store is None:
            return
        directory = self._store.authorized_dir
        try:
            info = directory.stat()
            stamp = (info.st_ino, info.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        if stamp == self._stamp:
            return
        try:
            listed = self._store.authorized()
        except KeysError as error:  # a bad file: keep the fixed keys only, and say so
            log.warning("allow-list unreadable, only this stack's hosts allowed: %s", error)
            listed = {}
        self._stamp = stamp
        keys = dict(self._fixed)
        for name, key in listed.items():
            keys.setdefault(z85_decode(key.decode("ascii")), name)
        self._keys = keys


class ZapHandler:
    """The ZAP handler thread of one ZeroMQ context; ``counters`` says what it decided."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], allow: AllowList) -> None:
        self.allow = allow
        self.counters: dict[str, int] = {"auth_accepted": 0, "auth_refused": 0}
        self._ctx = ctx
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._error: str | None = None
        self._warned: dict[bytes, float] = {}
        self._window_start = 0.0
        self._window_lines = 0
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._new_monitors: queue.SimpleQueue[zmq.Socket[bytes]] = queue.SimpleQueue()

    def watch(self, sock: zmq.Socket[bytes]) -> None:
        """Count ``sock``'s failed handshakes (call before it binds, from its thread)."""
        self._new_monitors.put(sock.get_monitor_socket(_HANDSHAKE_FAILED))

    def start(self) -> None:
        """Bind the handler and serve on a thread; returns once bound (RuntimeError if not)."""
        self._thread.start()
        self._bound.wait(5.0)
        if self._error is not None or not self._bound.is_set():
            raise RuntimeError(f"ZAP handler: cannot bind {ZAP_ENDPOINT}: {self._error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _serve(self) -> None:
        sock = self._ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as error:
            self._error = error.strerror
            sock.close()
            self._bound.set()
            return
        self._bound.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        monitors: list[zmq.Socket[bytes]] = []
        try:
            while not self._stop.is_set():
                while not self._new_monitors.empty():
                    monitor = self._new_monitors.get()
                    monitors.append(monitor)
                    poller.register(monitor, zmq.POLLIN)
                ready = dict(poller.poll(100))
                if sock in ready:
                    sock.send_multipart(self.decide(sock.recv_multipart()))
                for monitor in [m for m in monitors if m in ready]:
                    if not self._monitor_event(monitor):
                        poller.unregister(monitor)
                        monitors.remove(monitor)
                        monitor.close(linger=0)
        finally:
            for monitor in monitors:
                monitor.close(linger=0)
            sock.close(linger=0)

    def _monitor_event(self, monitor: zmq.Socket[bytes]) -> bool:
        """Count one failed handshake; False once the watched socket has closed."""
        try:
            event = recv_monitor_message(monitor, flags=zmq.NOBLOCK)
        except zmq.Again:
            return True
        except (zmq.ZMQError, ValueError, IndexError):  # not a monitor message
            return True
        if event["event"] == zmq.EVENT_MONITOR_STOPPED:
            return False
        if event["event"] & _HANDSHAKE_FAILED:
            endpoint = event.get("endpoint", b"")
            peer = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else ""
            self._refuse(None, f"a client of {peer}", "handshake failed: no CurveZMQ")
        return True

    def decide(self, frames: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request (RFC 27): 200 for an allowed CURVE key, else 400."""
        if len(frames) < 6:
            # Not from libzmq: nothing to answer sensibly, but REP must answer.
            return [ZAP_VERSION, b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        if version != ZAP_VERSION:
            return [ZAP_VERSION, request_id, b"500", b"unsupported ZAP version", b"", b""]
        peer = address.decode("utf-8", "replace")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._refuse(None, peer, f"mechanism {mechanism.decode('ascii', 'replace')}")
            return [ZAP_VERSION, request_id, b"400", b"CURVE only", b"", b""]
        key = credentials[0]
        name = self.allow.name_of(key)
        if name is None:
            self._refuse(key, peer, "key not on the allow-list")
            return [ZAP_VERSION, request_id, b"400", b"key not allowed", b"", b""]
        self.counters["auth_accepted"] += 1
        log.debug("CURVE client %s (%s) from %s allowed", name, fingerprint(key), peer)
        return [ZAP_VERSION, request_id, b"200", b"OK", name.encode("utf-8"), b""]

    def _refuse(self, key: bytes | None, peer: str, why: str) -> None:
        """Count a refusal; log it once per key per WARN_EVERY_S, and at most
        LINES_PER_WINDOW lines per window in all (a flood of fresh keys is a few lines)."""
        self.counters["auth_refused"] += 1
        now = time.monotonic()
        if now - self._window_start >= WARN_EVERY_S:
            self._window_start, self._window_lines = now, 0
        slot = key or b""
        if len(self._warned) > MAX_WARNED_KEYS:  # a flood of fresh keys must not grow memory
            self._warned.clear()
        if now - self._warned.get(slot, -WARN_EVERY_S) < WARN_EVERY_S:
            return
        self._warned[slot] = now
        if self._window_lines >= LINES_PER_WINDOW:
            return
        self._window_lines += 1
        who = fingerprint(key) if key is not None else "no key"
        log.warning(
            "refused a connection from %s (%s): %s; %d refused so far%s",
            peer or "?",
            who,
            why,
            self.counters["auth_refused"],
            "; further refusals this 5 s counted, not logged"
            if self._window_lines == LINES_PER_WINDOW
            else "",
        )


def allow_list_for(keys_dir: Path | None, fixed: Iterable[tuple[str, bytes]]) -> AllowList:
    """The allow-list of a keys directory (None: only ``fixed``) plus ``fixed`` keys."""
    return AllowList(KeyStore(keys_dir) if keys_dir is not None else None, fixed)

"""Hostile traffic at every CURVE socket of a secured stack, from a peer whose key is on
the allow-list and from strangers (issue 13): malformed, oversized and flooded frames at
the tracker's bus PUB and control socket and the render node's headset session socket.
Each is counted and dropped; the pose stream to a well-behaved client goes on.

(The OpenIGTLink server is plain TCP, not ZeroMQ: tests/process/test_igtl_nodes.py; the
web bridge has its own tests.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    MAX_PAYLOAD_BYTES,
    Hello,
    NavStatus,
    Reply,
    TrackerFrame,
    Welcome,
    decode,
    encode,
)
from nav.runtime import bus
from nav.runtime.keys import KeyStore
from nav.runtime.launchfile import load
from nav.runtime.supervisor import Supervisor
from tests.process.test_secure_stack import _launch, _new_pair, _tick_until


def _socket(kind: int, endpoint: str, keys: bus.CurveKeys | None) -> zmq.Socket[bytes]:
    sock = bus.context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 1000)
    if keys is not None:
        bus.secure_client(sock, endpoint, keys)
    sock.connect(endpoint)
    return sock


@pytest.mark.slow
def test_malformed_oversized_and_flooded_frames_are_counted_dropped_and_survived(
    tmp_path: Path, ipc_dir: Path
) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init(_new_pair)
    host = store.load().public
    known, good = _new_pair(), _new_pair()
    store.authorize("known-but-hostile", known.public)
    store.authorize("good-client", good.public)
    hostile = bus.CurveKeys(known.public, known.secret, host)
    friendly = bus.CurveKeys(good.public, good.secret, host)
    launch = load(_launch(tmp_path, ipc_dir, insecure=False), run_dir=tmp_path / "run")
    tracker_pub = launch.node("tracker").pub or ""
    tracker_ctl = launch.node("tracker").control or ""
    headset_ep = str(launch.node("render").params["headset_endpoint"])
    sup = Supervisor(launch, keys_dir=store.directory)
    # Every pose, queued (this test is busy attacking): lost ones show as seq gaps.
    poses = bus.QueueSubscriber([tracker_pub], ["pose/"], keys=friendly, trust=lambda _e: True)
    opened: list[zmq.Socket[bytes]] = []
    t_sensor_ns: list[int] = []

    def pump(seconds: float) -> None:
        """Tick the supervisor and read poses."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sup.tick(0.0)
            for received in poses.poll(0.01):
                if isinstance(received.message, TrackerFrame):
                    t_sensor_ns.append(received.message.t_sensor_ns)

    def counter(node: str, key: str) -> int:
        hb = sup.nodes[node].heartbeat
        return 0 if hb is None else int(hb.counters.get(key, 0))

    try:
        sup.start()
        _tick_until(
            sup,
            lambda: sup.nav_state is not None and sup.nav_state.status is NavStatus.OK,
            30,
            "nav OK",
        )
        pump(1.0)
        assert t_sensor_ns, "no poses to the good client"
        n_before = len(t_sensor_ns)

        # 1. Control, authorized peer: 50 junk requests, each answered "rejected".
        ctl = _socket(zmq.REQ, tracker_ctl, hostile)
        opened.append(ctl)
        for _ in range(50):
            ctl.send(b"\xc1 not msgpack")
            assert ctl.poll(5000), "no reply to a junk request"
            reply = decode(ctl.recv()).message
            assert isinstance(reply, Reply) and not reply.ok and "rejected" in reply.error
        # An oversized request: libzmq drops that connection (MAXMSGSIZE), nothing served.
        big = _socket(zmq.REQ, tracker_ctl, hostile)
        opened.append(big)
        big.send(b"\0" * (MAX_PAYLOAD_BYTES + 1024))
        assert not big.poll(1000), "an oversized request was answered"

        # 2. Bus PUB, authorized peer: a 64 KiB subscription drops that subscriber only.
        fat = _socket(zmq.SUB, tracker_pub, hostile)
        opened.append(fat)
        fat.setsockopt(zmq.SUBSCRIBE, b"p" * 65536)

        # 3. Headset session, authorized peer: junk, wrong framing, an oversized frame.
        junk = _socket(zmq.DEALER, headset_ep, hostile)
        opened.append(junk)
        for i in range(200):
            junk.send(b"\x93junk" + bytes([i]))
        junk.send_multipart([b"a", b"b", b"c"])
        junk.send(b"\0" * (4 * MAX_PAYLOAD_BYTES + 1))

        # 4. Strangers: 60 connections with unknown keys and 60 without CURVE, everywhere.
        for i in range(60):
            stranger = _new_pair()
            for endpoint in (tracker_pub, tracker_ctl, headset_ep):
                keys = bus.CurveKeys(stranger.public, stranger.secret, host) if i % 2 else None
                sock = _socket(zmq.DEALER if endpoint != tracker_pub else zmq.SUB, endpoint, keys)
                opened.append(sock)
            pump(0.01)
        pump(2.0)  # heartbeats carry the counts (every 0.5 s)

        # Counted: the control junk, the session junk, the strangers.
        assert counter("tracker", "rejected_malformed") >= 50
        assert counter("render", "headset_rejected") >= 200
        assert counter("tracker", "auth_refused") >= 100  # 60 x pub + 60 x control
        assert counter("render", "auth_refused") >= 60
        assert counter("nav", "auth_refused") == 0  # nobody attacked nav

        # Survived: the good client still gets poses and a session; nav still navigates.
        # The tracker sampled on through the attack (100 Hz: a 10 ms step) and the good
        # client lost none of it.
        during = t_sensor_ns[n_before - 1 :]
        assert len(during) > 100
        longest_ms = max(b - a for a, b in zip(during, during[1:], strict=False)) / 1e6
        assert longest_ms < 1000, f"the tracker stalled {longest_ms:.0f} ms"
        assert poses.counters["lost"] == 0, poses.counters
        ok = _socket(zmq.DEALER, headset_ep, friendly)
        opened.append(ok)
        ok.send(encode(Hello(HEADSET_PROTOCOL_VERSION, "ok"), seq=0, t_pub_ns=time.monotonic_ns()))
        deadline = time.monotonic() + 10
        while not ok.poll(100):
            assert time.monotonic() < deadline, "no Welcome for the good client"
            sup.tick(0.0)
        assert isinstance(decode(ok.recv()).message, Welcome)
        control = bus.CommandClient(tracker_ctl, keys=friendly)
        try:
            assert control.call("ping", timeout_s=5.0).ok
        finally:
            control.close()
        assert sup.all_running()
        assert sup.nav_state is not None and sup.nav_state.status is NavStatus.OK
    finally:
        for sock in opened:
            sock.close(linger=0)
        poses.close()
        sup.stop()

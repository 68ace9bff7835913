"""Tests for nav.runtime.bus over real ZeroMQ sockets, and a real relay node process.

Every endpoint is ``ipc://`` under the ``ipc_dir`` fixture. No test sleeps to wait out
ZeroMQ's slow joiner: before the real traffic, a warm-up message is published in a loop
until the subscriber has seen one, so the subscription is known to be in place. Every wait
is a poll against a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import msgpack
import numpy as np
import pytest
import zmq

from nav.messages import (
    MAX_PAYLOAD_BYTES,
    Command,
    Heartbeat,
    MessageError,
    Reply,
    ToolPose,
    ToolStatus,
    TrackerFrame,
    decode,
    encode,
)
from nav.runtime.bus import (
    CommandClient,
    CommandServer,
    LatestSubscriber,
    Publisher,
    QueueSubscriber,
    Received,
    context,
)
from nav.runtime.launchfile import NodeSpec
from nav.transforms import pose_from_quat
from tests.conftest import NodeProcess, start_node

WARM = "pose/warmup"
DEADLINE_S = 15.0


class Closable(Protocol):
    def close(self) -> None: ...


@pytest.fixture
def closing() -> Iterator[list[Closable]]:
    """Sockets appended here are closed at the end of the test, newest first."""
    owned: list[Closable] = []
    yield owned
    for thing in reversed(owned):
        thing.close()


def ipc(ipc_dir: Path, name: str) -> str:
    return f"ipc://{ipc_dir}/{name}"


def pose(i: int) -> ToolPose:
    """A valid OK pose whose translation and ``t_sensor_ns`` both carry ``i``."""
    return ToolPose("pointer", pose_from_quat([1, 0, 0, 0], [i, 0, 0]), i, ToolStatus.OK, 0.1)


def frame(number: int) -> TrackerFrame:
    Ts = np.stack([pose_from_quat([1, 0, 0, 0], [number, 1, 2]), np.eye(4)])
    return TrackerFrame(
        tracker="sim",
        t_sensor_ns=10_000 + number,
        frame_number=number,
        tools=("pointer", "reference"),
        T_tracker_from_tools=Ts,
        statuses=(ToolStatus.OK, ToolStatus.OUT_OF_VIEW),
        fit_errors_mm=np.array([0.1, np.nan]),
    )


def t_sensor_ns(received: Received) -> int:
    message = received.message
    assert isinstance(message, ToolPose | TrackerFrame)
    return message.t_sensor_ns


def raw_pub(endpoint: str, closing: list[Closable]) -> zmq.Socket[bytes]:
    """A bare PUB socket, for sending what ``Publisher`` never would."""
    sock = context().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    closing.append(sock)
    return sock


def collect(
    poll: Callable[[float], list[Received]],
    done: Callable[[list[Received]], bool],
    *,
    send: Callable[[], object] | None = None,
    timeout_s: float = DEADLINE_S,
) -> list[Received]:
    """Poll (sending with ``send`` before each poll, if given) until ``done(everything)``."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if send is not None:
            send()
        got.extend(poll(0.05))
        if done(got):
            return got
    raise AssertionError(f"gave up after {timeout_s} s with {len(got)} messages")


def seen(topic: str) -> Callable[[list[Received]], bool]:
    return lambda got: any(r.topic == topic for r in got)


def warm_up(send: Callable[[], object], poll: Callable[[float], list[Received]]) -> None:
    """Send on WARM until one arrives: from then on the subscription is in place."""
    collect(poll, seen(WARM), send=send)


def warm_up_publisher(pub: Publisher, poll: Callable[[float], list[Received]]) -> None:
    warm_up(lambda: pub.publish(WARM, pose(0)), poll)


def warm_up_raw(sock: zmq.Socket[bytes], poll: Callable[[float], list[Received]]) -> None:
    payload = encode(pose(0), seq=0, t_pub_ns=0)
    warm_up(lambda: sock.send_multipart([WARM.encode(), payload]), poll)


def tampered(message: Any, **changes: Any) -> bytes:
    """A valid payload of ``message`` with envelope keys replaced."""
    raw = msgpack.unpackb(encode(message, seq=0, t_pub_ns=0), raw=False)
    raw.update(changes)
    return msgpack.packb(raw, use_bin_type=True)


def not_rigid_ok_pose() -> bytes:
    T = pose_from_quat([1, 0, 0, 0], [0, 0, 0])
    T[0, 0] = -1.0  # a reflection, claiming status OK
    return encode(ToolPose("pointer", T, 1, ToolStatus.OK, 0.1), seq=0, t_pub_ns=0)


def bad_multiparts(topic: bytes) -> tuple[list[list[bytes]], dict[str, int]]:
    """Hostile multipart messages on ``topic`` and how many of each kind a subscriber rejects."""
    valid = encode(pose(1), seq=0, t_pub_ns=0)
    messages = [
        [topic, b"\xc1\xc1 not msgpack"],
        [topic, valid[: len(valid) // 2]],
        [topic, msgpack.packb([1, 2, 3])],
        [topic, valid, b"a third frame"],
        [topic],
        [topic, b"\x00" * (MAX_PAYLOAD_BYTES + 1)],
        [topic, tampered(pose(1), v=2)],
        [topic, tampered(pose(1), type="Bogus")],
        [topic, not_rigid_ok_pose()],
    ]
    kinds = {"malformed": 5, "oversized": 1, "version": 1, "unknown_type": 1, "invalid": 1}
    return messages, kinds


def rejections(counters: dict[str, int]) -> dict[str, int]:
    return {
        k[len("rejected_") :]: v for k, v in counters.items() if k.startswith("rejected_") and v
    }


# --- publish / subscribe -------------------------------------------------------------


def test_queue_subscriber_delivers_every_message_in_order_with_per_topic_seq(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    pub = Publisher(ipc(ipc_dir, "pub"))
    sub = QueueSubscriber([pub.endpoint])
    closing += [pub, sub]
    warm_up_publisher(pub, sub.poll)

    sent = []
    for i in range(300):
        topic = ("pose/a", "pose/b", "nav/state")[i % 3]
        sent.append((topic, pub.publish(topic, pose(i)), i))
    got = collect(sub.poll, lambda got: sum(r.topic != WARM for r in got) >= len(sent))

    arrived = [(r.topic, r.envelope.seq, t_sensor_ns(r)) for r in got if r.topic != WARM]
    assert arrived == sent
    for topic in ("pose/a", "pose/b", "nav/state"):
        assert [seq for t, seq, _ in arrived if t == topic] == list(range(100))
    assert sub.counters["lost"] == 0
    assert sub.counters["rejected"] == 0
    assert pub.counters["dropped"] == 0


def test_subscriber_receives_only_topics_starting_with_its_prefixes(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    pub = Publisher(ipc(ipc_dir, "pub"))
    sub = QueueSubscriber([pub.endpoint], ("pose/", "nav/state"))
    closing += [pub, sub]
    warm_up_publisher(pub, sub.poll)

    topics = ["pose/a", "heartbeat/x", "pose", "posex/y", "nav/state", "nav/registration"]
    topics += ["nav/statex", "Pose/a", "pose/b"]
    for i, topic in enumerate(topics):
        pub.publish(topic, pose(i))
    pub.publish("pose/fence", pose(99))
    # One publisher keeps order, so once the fence is here nothing else is still coming.
    got = collect(sub.poll, seen("pose/fence"))

    assert [r.topic for r in got if r.topic != WARM] == [
        "pose/a",
        "nav/state",
        "nav/statex",  # a subscription is a byte prefix, not a path component
        "pose/b",
        "pose/fence",
    ]


def test_latest_subscriber_returns_only_the_newest_per_topic_behind_a_slow_consumer(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    pub = Publisher(ipc(ipc_dir, "pub"))
    sub = LatestSubscriber([pub.endpoint])
    closing += [pub, sub]
    warm_up_publisher(pub, sub.poll)
    superseded_before = sub.counters["superseded"]
    # Seq 0 of each topic arrives on its own, so the burst's skipped seqs lie in a gap after
    # it: superseded poses must not also count as lost.
    pub.publish("pose/a", pose(0))
    pub.publish("pose/b", pose(10_000))
    polls = [collect(sub.poll, lambda got: {"pose/a", "pose/b"} <= {r.topic for r in got})]

    # The consumer is busy while the other 499 poses per topic arrive.
    for i in range(1, 500):
        pub.publish("pose/a", pose(i))
        pub.publish("pose/b", pose(10_000 + i))
    pub.publish("pose/fence", pose(0))

    deadline = time.monotonic() + DEADLINE_S
    while not any(r.topic == "pose/fence" for batch in polls for r in batch):
        assert time.monotonic() < deadline, "the fence never arrived"
        polls.append(sub.poll(0.05))

    for batch in polls[1:]:
        topics = [r.topic for r in batch]
        assert len(topics) == len(set(topics)), "at most one message per topic per poll"
    returned = {t: [r for b in polls for r in b if r.topic == t] for t in ("pose/a", "pose/b")}
    assert returned["pose/a"][-1].envelope.seq == 499
    assert t_sensor_ns(returned["pose/a"][-1]) == 499
    assert returned["pose/b"][-1].envelope.seq == 499
    assert t_sensor_ns(returned["pose/b"][-1]) == 10_499
    superseded = sub.counters["superseded"] - superseded_before
    assert superseded > 0
    assert superseded + len(returned["pose/a"]) + len(returned["pose/b"]) == 1000
    assert sub.counters["lost"] == 0


def test_latest_subscriber_falls_back_to_the_newest_valid_when_the_newest_is_bad(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    sock = raw_pub(ipc(ipc_dir, "raw"), closing)
    sub = LatestSubscriber([ipc(ipc_dir, "raw")])
    closing.append(sub)
    warm_up_raw(sock, sub.poll)
    superseded_before = sub.counters["superseded"]

    for payload in (
        encode(pose(0), seq=0, t_pub_ns=0),
        encode(pose(1), seq=1, t_pub_ns=0),
        b"\xc1 garbage",
    ):
        sock.send_multipart([b"pose/a", payload])
    sock.send_multipart([b"pose/fence", encode(pose(2), seq=0, t_pub_ns=0)])
    got = collect(sub.poll, seen("pose/fence"))

    newest = [r for r in got if r.topic == "pose/a"]
    assert newest[-1].envelope.seq == 1
    assert sub.counters["rejected_malformed"] == 1
    assert sub.counters["superseded"] - superseded_before + len(newest) == 2
    assert sub.counters["lost"] == 0


def test_queue_subscriber_behind_a_burst_counts_lost_messages_from_seq_gaps(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    pub = Publisher(ipc(ipc_dir, "pub"), sndhwm=10)
    sub = QueueSubscriber([pub.endpoint], rcvhwm=10)
    closing += [pub, sub]
    warm_up_publisher(pub, sub.poll)
    lost_before = sub.counters["lost"]

    last = -1
    for i in range(5000):  # far beyond both HWMs and the kernel's socket buffers
        last = pub.publish("pose/burst", pose(i))
    # Drain; keep publishing one more while the newest never arrives (it was dropped), so
    # the run ends on a received message and every drop lies inside a seq gap.
    got: list[Received] = []
    deadline = time.monotonic() + DEADLINE_S
    while not (got and got[-1].envelope.seq == last):
        assert time.monotonic() < deadline, f"seq {last} never arrived"
        batch = [r for r in sub.poll(0.1) if r.topic == "pose/burst"]
        got += batch
        if not batch:
            last = pub.publish("pose/burst", pose(last + 1))

    seqs = [r.envelope.seq for r in got]
    assert seqs[0] == 0
    assert seqs == sorted(set(seqs))
    lost = sub.counters["lost"] - lost_before
    assert lost > 0
    assert len(got) + lost == last + 1  # every published message: received or counted lost


def test_subscriber_counts_and_drops_bad_messages_and_still_delivers_the_next_valid_one(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    sock = raw_pub(ipc(ipc_dir, "raw"), closing)
    sub = QueueSubscriber([ipc(ipc_dir, "raw")])
    closing.append(sub)
    warm_up_raw(sock, sub.poll)
    received_before = sub.counters["received"]

    messages, kinds = bad_multiparts(b"pose/a")
    valid = encode(pose(7), seq=0, t_pub_ns=0)
    messages.append([b"\xff\xfe not utf-8", valid])
    kinds["malformed"] += 1
    for parts in messages:
        sock.send_multipart(parts)
    sock.send_multipart([b"pose/a", valid])
    got = collect(sub.poll, seen("pose/a"))

    assert [(r.topic, r.payload) for r in got if r.topic != WARM] == [("pose/a", valid)]
    assert rejections(sub.counters) == kinds
    assert sub.counters["rejected"] == sum(kinds.values())
    assert sub.counters["received"] - received_before == len(messages) + 1


def test_subscriber_refuses_payload_over_its_own_max_bytes(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    sock = raw_pub(ipc(ipc_dir, "raw"), closing)
    sub = QueueSubscriber([ipc(ipc_dir, "raw")], max_bytes=300)
    closing.append(sub)
    warm_up_raw(sock, sub.poll)

    sock.send_multipart([b"pose/a", encode(frame(1), seq=0, t_pub_ns=0)])  # > 300 bytes
    sock.send_multipart([b"pose/b", encode(pose(1), seq=0, t_pub_ns=0)])
    got = collect(sub.poll, seen("pose/b"))

    assert not seen("pose/a")(got)
    assert rejections(sub.counters) == {"oversized": 1}


def test_subscriber_hears_a_publisher_again_after_a_frame_over_the_socket_limit(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    pub = Publisher(ipc(ipc_dir, "pub"))
    sub = QueueSubscriber([pub.endpoint])
    closing += [pub, sub]
    warm_up_publisher(pub, sub.poll)

    # A legal message type from a well-behaved Publisher, just too big for this subscriber.
    pub.publish("asset/mesh", Reply(ok=True, result={"blob": "x" * (2 * MAX_PAYLOAD_BYTES)}))
    collect(
        sub.poll, seen("pose/after"), send=lambda: pub.publish("pose/after", pose(1)), timeout_s=5.0
    )
    assert sub.counters["rejected_oversized"] == 1


# --- a real relay node ---------------------------------------------------------------


def relay_spec(ipc_dir: Path, *subscribe: str) -> NodeSpec:
    return NodeSpec(
        name="relay",
        module="nav.runtime.relay_node",
        pub=ipc(ipc_dir, "relay.pub"),
        control=ipc(ipc_dir, "relay.ctl"),
        subscribe_endpoints=subscribe,
    )


def start_relay(spec: NodeSpec, node_processes: list[NodeProcess]) -> NodeProcess:
    node = start_node(spec)
    node_processes.append(node)
    assert node.ready == (
        f"READY relay pid={node.process.pid} pub={spec.pub} control={spec.control}"
    )
    return node


@pytest.mark.slow
def test_relay_node_drops_bad_messages_forwards_valid_ones_and_reports_rejections(
    ipc_dir: Path, closing: list[Closable], node_processes: list[NodeProcess]
) -> None:
    source = ipc(ipc_dir, "source")
    sock = raw_pub(source, closing)
    spec = relay_spec(ipc_dir, source)
    node = start_relay(spec, node_processes)
    assert spec.pub is not None and spec.control is not None
    downstream = QueueSubscriber([spec.pub], ("pose/", "heartbeat/"))
    client = CommandClient(spec.control)
    closing += [downstream, client]
    warm = encode(frame(0), seq=0, t_pub_ns=0)
    # Through the relay: both its subscription and ours are in place after this.
    warm_up(lambda: sock.send_multipart([WARM.encode(), warm]), downstream.poll)

    messages, kinds = bad_multiparts(b"pose/bad")
    for parts in messages:
        sock.send_multipart(parts)
    expected = sum(kinds.values())

    def reporting(got: list[Received]) -> Heartbeat | None:
        for r in got:
            if r.topic == "heartbeat/relay" and isinstance(r.message, Heartbeat):
                if r.message.counters.get("rejected", 0) >= expected:
                    return r.message
        return None

    heartbeat = reporting(collect(downstream.poll, lambda got: reporting(got) is not None))
    assert heartbeat is not None
    assert heartbeat.counters["rejected"] == expected
    assert (heartbeat.node, heartbeat.pid, heartbeat.state) == (
        "relay",
        node.process.pid,
        "running",
    )
    assert rejections(heartbeat.counters) == kinds
    status = client.call("status", timeout_s=10.0)
    assert status.ok
    assert status.result["rejected"] == expected
    assert rejections(status.result) == kinds  # type: ignore[arg-type]

    for k in range(5):
        sent = frame(100 + k)
        sock.send_multipart([b"pose/sim", encode(sent, seq=k, t_pub_ns=k)])
        got = collect(downstream.poll, seen("pose/sim"))
        forwarded = [r for r in got if r.topic == "pose/sim"]
        assert len(forwarded) == 1
        out = forwarded[0].message
        assert isinstance(out, TrackerFrame)
        assert forwarded[0].envelope.seq == k  # the relay's own per-topic seq
        assert out.frame_number == sent.frame_number
        assert out.t_sensor_ns == sent.t_sensor_ns  # kept across the hop
        assert out.tools == sent.tools and out.statuses == sent.statuses
        assert out.T_tracker_from_tools.tobytes() == sent.T_tracker_from_tools.tobytes()
        assert out.fit_errors_mm.tobytes() == sent.fit_errors_mm.tobytes()

    # A frame far over the limit is counted as oversized and dropped; the relay lives on.
    sock.send_multipart([b"pose/bad", b"\x00" * (4 * MAX_PAYLOAD_BYTES)])
    assert client.call("ping", timeout_s=10.0).ok
    assert node.process.poll() is None

    assert node.terminate() == 0


def test_relay_node_answers_ping_with_its_name_and_pid(
    ipc_dir: Path, closing: list[Closable], node_processes: list[NodeProcess]
) -> None:
    spec = relay_spec(ipc_dir)
    node = start_relay(spec, node_processes)
    assert spec.control is not None
    client = CommandClient(spec.control)
    closing.append(client)

    reply = client.call("ping", timeout_s=10.0)

    assert reply.ok and reply.error == ""
    assert reply.result == {"node": "relay", "pid": node.process.pid}
    assert node.terminate() == 0


def test_node_answers_an_unknown_command_with_an_error_and_keeps_serving(
    ipc_dir: Path, closing: list[Closable], node_processes: list[NodeProcess]
) -> None:
    spec = relay_spec(ipc_dir)
    node = start_relay(spec, node_processes)
    assert spec.control is not None
    client = CommandClient(spec.control)
    closing.append(client)

    reply = client.call("frobnicate", timeout_s=10.0, level=3)

    assert not reply.ok
    assert "frobnicate" in reply.error
    assert reply.result == {}
    assert client.call("ping", timeout_s=10.0).ok
    assert node.terminate() == 0


# --- commands ------------------------------------------------------------------------


@contextmanager
def serving(endpoint: str, handler: Callable[[Command], Reply]) -> Iterator[CommandServer]:
    """A CommandServer answering with ``handler`` on a thread (the socket stays on it)."""
    server = CommandServer(endpoint)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            command = server.receive(0.05)
            if command is not None:
                server.reply(handler(command))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5.0)
        server.close()


def echo(command: Command) -> Reply:
    if command.name == "echo":
        return Reply(ok=True, result={"name": command.name, "args": command.args})
    return Reply(ok=False, error=f"unknown command {command.name!r}")


def test_command_client_gets_the_reply_to_each_command(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    endpoint = ipc(ipc_dir, "ctl")
    with serving(endpoint, echo):
        client = CommandClient(endpoint)
        closing.append(client)
        for i in range(20):
            reply = client.call("echo", timeout_s=10.0, i=i, nested={"xs": [1, 2.5, None]})
            assert reply.ok
            assert reply.result == {
                "name": "echo",
                "args": {"i": i, "nested": {"xs": [1, 2.5, None]}},
            }
        refused = client.call("nope", timeout_s=10.0)
        assert not refused.ok and "nope" in refused.error


def test_command_client_times_out_without_a_server_then_works_once_one_appears(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    endpoint = ipc(ipc_dir, "ctl")
    client = CommandClient(endpoint)
    closing.append(client)

    for _ in range(2):  # a second request after a timeout must not hit REQ's send/recv lock
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            client.call("echo", timeout_s=0.3)
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 0.3 + 2.0

    handled: list[Command] = []

    def record(command: Command) -> Reply:
        handled.append(command)
        return echo(command)

    with serving(endpoint, record):
        reply = client.call("echo", timeout_s=10.0, late=True)
    assert reply.ok and reply.result["args"] == {"late": True}
    # The requests that timed out went down with their sockets: none reached the server.
    assert [c.args for c in handled] == [{"late": True}]


def test_command_server_survives_an_oversized_request_and_serves_the_next_client(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    endpoint = ipc(ipc_dir, "ctl")
    with serving(endpoint, echo):
        client = CommandClient(endpoint)
        closing.append(client)
        assert client.call("echo", timeout_s=10.0).ok
        # Over the REP socket's MAXMSGSIZE: libzmq drops that connection, no reply comes.
        with pytest.raises(TimeoutError):
            client.call("echo", timeout_s=1.0, blob="x" * (MAX_PAYLOAD_BYTES + 1))
        # The client rebuilt its socket after the timeout; the server still answers.
        assert client.call("echo", timeout_s=10.0, n=2).result["args"] == {"n": 2}


def _raw_request(sock: zmq.Socket[bytes], *parts: bytes) -> Reply:
    sock.send_multipart(list(parts))
    assert sock.poll(int(DEADLINE_S * 1000), zmq.POLLIN), "no reply to a bad request"
    reply = decode(sock.recv()).message
    assert isinstance(reply, Reply)
    return reply


def test_command_server_answers_a_malformed_request_and_keeps_serving(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    endpoint = ipc(ipc_dir, "ctl")
    with serving(endpoint, echo) as server:
        sock = context().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        closing.append(sock)

        garbage = _raw_request(sock, b"\xc1 not a command")
        two_frames = _raw_request(sock, encode(Command("echo"), seq=0, t_pub_ns=0), b"extra")
        not_a_command = _raw_request(sock, encode(Reply(ok=True), seq=0, t_pub_ns=0))
        old_version = _raw_request(sock, tampered(Command("echo"), v=0))

        for reply, kind in [
            (garbage, "malformed"),
            (two_frames, "malformed"),
            (not_a_command, "invalid"),
            (old_version, "version"),
        ]:
            assert not reply.ok
            assert kind in reply.error
        assert rejections(server.counters) == {"malformed": 2, "invalid": 1, "version": 1}

        client = CommandClient(endpoint)
        closing.append(client)
        assert client.call("echo", timeout_s=10.0, after=1).result["args"] == {"after": 1}


def test_command_client_raises_message_error_on_a_reply_that_is_not_a_reply(
    ipc_dir: Path, closing: list[Closable]
) -> None:
    endpoint = ipc(ipc_dir, "ctl")
    rep = context().socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(endpoint)
    closing.append(rep)
    client = CommandClient(endpoint)
    closing.append(client)

    answers = [
        encode(Command("ping"), seq=0, t_pub_ns=0),
        b"\xc1",
        encode(Reply(ok=True), seq=1, t_pub_ns=0),
    ]

    def answer() -> None:
        for payload in answers:
            assert rep.poll(int(DEADLINE_S * 1000), zmq.POLLIN)
            rep.recv()
            rep.send(payload)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with pytest.raises(MessageError, match="invalid"):
        client.call("echo", timeout_s=10.0)
    with pytest.raises(MessageError, match="malformed"):
        client.call("echo", timeout_s=10.0)
    assert client.call("echo", timeout_s=10.0).ok  # the socket is still in step
    thread.join(timeout=5.0)

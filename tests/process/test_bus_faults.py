"""The bus under producer restarts, strangers and hostile peers (issue 10, items 1-4).

Real sockets throughout; the node tests start the simulated tracker as a real process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.messages import Command, Heartbeat, TrackerFrame, encode
from nav.runtime import bus, roster
from nav.runtime.launchfile import NodeSpec
from tests.conftest import NodeProcess, start_node


def _heartbeat(i: int) -> Heartbeat:
    return Heartbeat(
        node="tracker",
        pid=1,
        state="running",
        uptime_s=float(i),
        counters={},
        rates_hz={},
        latency_ms={},
    )


def _drain(sub: bus.QueueSubscriber, n: int, timeout_s: float = 5.0) -> list[bus.Received]:
    out: list[bus.Received] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out += sub.poll(0.05)
    return out


def _joined(pub: bus.Publisher, sub: bus.QueueSubscriber, topic: str) -> None:
    """Publish probes until the subscriber hears one (the slow-joiner handshake)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish(topic + "/probe", _heartbeat(0))
        if sub.poll(0.05):
            return
    raise AssertionError("subscriber never joined")


def test_a_restarted_publisher_starts_a_new_order_counted_as_a_restart_not_as_loss(
    ipc_dir: Path,
) -> None:
    endpoint = f"ipc://{ipc_dir}/pose"
    sub = bus.QueueSubscriber([endpoint], ["pose"])
    first = bus.Publisher(endpoint, epoch=101)
    try:
        _joined(first, sub, "pose")
        for i in range(50):
            first.publish("pose/sim", _heartbeat(i))
        before = _drain(sub, 50)
        first.close()
        second = bus.Publisher(endpoint, epoch=202)  # the tracker restarted: seq from 0
        _joined(second, sub, "pose")
        for i in range(20):
            second.publish("pose/sim", _heartbeat(i))
        after = _drain(sub, 20)
        second.close()
    finally:
        sub.close()
    assert [r.envelope.epoch for r in before] == [101] * 50
    assert [(r.envelope.epoch, r.envelope.seq) for r in after] == [(202, i) for i in range(20)]
    assert sub.counters["lost"] == 0
    assert sub.counters["producer_restarts"] == 2  # pose/sim and pose/probe each restarted


@settings(max_examples=25)
@given(
    runs=st.lists(
        st.tuples(st.integers(2, 30), st.lists(st.integers(1, 29), max_size=5)),
        min_size=1,
        max_size=4,
    )
)
def test_lost_counts_exactly_the_gaps_inside_each_epoch(
    runs: list[tuple[int, list[int]]],
) -> None:
    """Runs of seq 0..n-1 under new epochs, some dropped: lost = drops after each run's start."""
    context = bus.context()
    endpoint = f"inproc://gaps-{time.monotonic_ns()}"
    raw = context.socket(zmq.PUB)
    raw.bind(endpoint)
    sub = bus.QueueSubscriber([endpoint], ["t"])
    try:
        deadline = time.monotonic() + 5
        while not sub.poll(0.01):  # inproc joins at once, but keep the handshake honest
            raw.send_multipart([b"t", encode(_heartbeat(0), seq=0, t_pub_ns=1, epoch=1)])
            assert time.monotonic() < deadline
        sub.poll(0.01)
        sub.counters.clear()
        expected_lost = 0
        for k, (n, drops) in enumerate(runs):
            dropped = {d for d in drops if d < n}
            expected_lost += len([d for d in dropped if d < max(set(range(n)) - dropped)])
            for seq in range(n):
                if seq not in dropped:
                    payload = encode(_heartbeat(seq), seq=seq, t_pub_ns=1, epoch=1000 + k)
                    raw.send_multipart([b"t", payload])
        got = _drain(sub, sum(n - len({d for d in drops if d < n}) for n, drops in runs))
    finally:
        sub.close()
        raw.close(linger=0)
    assert len(got) == sum(n - len({d for d in drops if d < n}) for n, drops in runs)
    assert sub.counters["lost"] == expected_lost
    assert sub.counters["producer_restarts"] == len(runs)  # the first run follows epoch 1


def test_under_a_roster_a_publisher_the_supervisor_did_not_start_is_dropped_and_counted(
    ipc_dir: Path,
) -> None:
    roster_path = ipc_dir / "roster.json"
    roster.write_roster(roster_path, {"tracker": 11})
    assert roster_path.stat().st_mode & 0o777 == 0o600
    endpoint = f"ipc://{ipc_dir}/pose"
    sub = bus.QueueSubscriber([endpoint], ["pose"], trust=roster.RosterTrust(roster_path))
    try:
        real = bus.Publisher(endpoint, epoch=11)
        _joined(real, sub, "pose")
        real.close()
        forger = bus.Publisher(endpoint, epoch=66)  # took the port after the tracker died
        accepted: list[bus.Received] = []
        deadline = time.monotonic() + 5
        while sub.counters["rejected_untrusted"] < 30 and time.monotonic() < deadline:
            forger.publish("pose/sim", _heartbeat(1))
            accepted += sub.poll(0.005)
        assert accepted == []
        assert sub.counters["rejected_untrusted"] >= 30
        forger.close()
        roster.write_roster(roster_path, {"tracker": 12})  # the supervisor's own restart
        restarted = bus.Publisher(endpoint, epoch=12)
        _joined(restarted, sub, "pose")
        restarted.publish("pose/sim", _heartbeat(1))
        assert [r.envelope.epoch for r in _drain(sub, 1)] == [12]
        restarted.close()
    finally:
        sub.close()


def test_a_roster_that_is_not_a_roster_is_refused_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "roster.json"
    path.write_text('{"format": "ornav-roster", "version": 1, "epochs": {"tracker": -1}}')
    try:
        roster.read_roster(path)
    except ValueError as error:
        assert str(path) in str(error)
    else:
        raise AssertionError("a negative epoch was accepted")
    assert not roster.RosterTrust(path)(1)  # unreadable: nothing is trusted


def test_a_second_node_on_a_taken_endpoint_fails_loudly_with_exit_3(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    holder = bus.Publisher("tcp://127.0.0.1:0")  # a stranger holds the tracker's port
    spec = _tracker_spec(ipc_dir, pub=holder.endpoint)
    try:
        done = subprocess.run(
            [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"cannot bind {spec.pub}" in done.stderr
    assert "Traceback" not in done.stderr


# --- a real tracker process under hostile peers ---------------------------------------


def _tracker_spec(ipc_dir: Path, *, pub: str | None = None) -> NodeSpec:
    return NodeSpec(
        name="tracker",
        module="tracking.sim_node",
        pub=pub or f"ipc://{ipc_dir}/tracker.pub",
        control=f"ipc://{ipc_dir}/tracker.ctl",
        rate_hz=100.0,
        params={"seed": 5},
    )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _pose_gaps_ms(sub: bus.QueueSubscriber, until_s: float) -> list[float]:
    """Arrival gaps between consecutive tracker frames until ``until_s`` (monotonic)."""
    arrivals: list[int] = []
    while time.monotonic() < until_s:
        arrivals += [r.t_recv_ns for r in sub.poll(0.01) if isinstance(r.message, TrackerFrame)]
    return list(np.diff(arrivals) / 1e6) if len(arrivals) > 1 else [float("inf")]


_ATTACKER = """
import os, socket, sys, time
import zmq
endpoint, port = sys.argv[1], int(sys.argv[2])
hostile = zmq.Context.instance().socket(zmq.SUB)
hostile.connect(endpoint)
hostile.setsockopt(zmq.SUBSCRIBE, b"x" * (4 << 20))
garbage = []
for i in range(50):
    conn = socket.create_connection(("127.0.0.1", port), timeout=2)
    conn.sendall(bytes([0xFF]) + bytes(9) + bytes([i]) * 4096)
    garbage.append(conn)
time.sleep(30)
os._exit(0)
"""


def test_a_4_mib_subscription_and_50_garbage_connections_neither_bloat_nor_wedge_the_tracker(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    """Before: +250 MB and the tracker stopped for > 12 s, deaf to SIGTERM."""
    node = start_node(_tracker_spec(ipc_dir, pub="tcp://127.0.0.1:0"))
    node_processes.append(node)
    endpoint = node.ready.split("pub=")[1].split()[0]
    port = int(endpoint.rsplit(":", 1)[1])
    sub = bus.QueueSubscriber([endpoint], ["pose/sim"])
    assert _drain(sub, 10), "no poses before the attack"
    rss_before = _rss_mb(node.process.pid)
    # The attacker is a process of its own: libzmq itself crashes at exit in a process that
    # holds a 4 MiB subscription, so it leaves with os._exit.
    attacker = subprocess.Popen([sys.executable, "-c", _ATTACKER, endpoint, str(port)])
    try:
        gaps = _pose_gaps_ms(sub, time.monotonic() + 3.0)
        rss_after = _rss_mb(node.process.pid)
    finally:
        attacker.kill()
        attacker.wait()
        sub.close()
    assert max(gaps) < 1000, f"poses stopped for {max(gaps):.0f} ms"
    assert rss_after - rss_before < 25, f"tracker grew {rss_after - rss_before:.0f} MB"
    t0 = time.monotonic()
    assert node.terminate(timeout_s=10) == 0
    assert time.monotonic() - t0 < 5


def _flood(endpoint: str, payload: bytes, count: int) -> None:
    """``count`` requests as fast as a DEALER sends them (REQ would wait for each reply)."""
    dealer = bus.context().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.SNDHWM, count)
    dealer.setsockopt(zmq.SNDTIMEO, 0)
    dealer.connect(endpoint)
    sent = 0
    try:
        for _ in range(count):
            try:
                dealer.send_multipart([b"", payload], flags=zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                break
    finally:
        time.sleep(0.2)  # let the queue leave before the socket closes
        dealer.close(linger=0)


def test_a_control_flood_does_not_stall_the_pose_stream(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    """Before: 20k junk requests at tracker.ctl left a 344 ms gap in poses."""
    node = start_node(_tracker_spec(ipc_dir))
    node_processes.append(node)
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/sim"])
    ping = encode(Command("ping", {}), seq=0, t_pub_ns=1)
    try:
        assert _drain(sub, 10), "no poses before the flood"
        sub.poll(0.0)
        worst: dict[str, float] = {}
        for name, payload in (("junk", b"\x00junk" * 8), ("ping", ping)):
            flooder = threading.Thread(target=_flood, args=(node.spec.control, payload, 20_000))
            flooder.start()
            gaps = _pose_gaps_ms(sub, time.monotonic() + 1.5)
            flooder.join()
            worst[name] = max(gaps)
        client = bus.CommandClient(node.spec.control or "")
        reply = client.call("ping", timeout_s=10)  # control still answers after the flood
        client.close()
    finally:
        sub.close()
    assert reply.ok
    # 100 Hz: 10 ms between poses. Stale is 100 ms; a gap beyond it is a visible stall.
    assert worst["junk"] < 100 and worst["ping"] < 100, worst
    assert node.terminate() == 0


def test_a_subscriber_trusts_only_the_epochs_of_the_nodes_it_reads(ipc_dir: Path) -> None:
    """A stranger who copied the nav node's epoch (it travels in the clear) and took the
    tracker's port is not taken for the tracker by a node that reads only the tracker."""
    roster_path = ipc_dir / "roster.json"
    roster.write_roster(roster_path, {"tracker": 11, "nav": 22})
    endpoint = f"ipc://{ipc_dir}/tracker.pub"
    skew_ns = [0]  # moves this trust's clock past its reload interval at the end
    trust = roster.RosterTrust(
        roster_path, nodes=["tracker"], clock_ns=lambda: time.monotonic_ns() + skew_ns[0]
    )
    sub = bus.QueueSubscriber([endpoint], ["pose"], trust=trust)
    try:
        forger = bus.Publisher(endpoint, epoch=22)
        deadline = time.monotonic() + 5
        accepted: list[bus.Received] = []
        while sub.counters["rejected_untrusted"] < 5 and time.monotonic() < deadline:
            forger.publish("pose/sim", _heartbeat(1))
            accepted += sub.poll(0.005)
        forger.close()
        assert accepted == [] and sub.counters["rejected_untrusted"] >= 5
        tracker = bus.Publisher(endpoint, epoch=11)
        _joined(tracker, sub, "pose")
        tracker.close()
    finally:
        sub.close()
    # A roster that cannot be read any more trusts nothing (fail closed), not the old set.
    roster_path.unlink()
    skew_ns[0] = 2 * roster.RELOAD_INTERVAL_NS
    assert not trust(11)


def test_a_node_whose_supervisor_died_before_it_started_does_not_start(
    ipc_dir: Path,
) -> None:
    """It would otherwise skip PR_SET_PDEATHSIG and run on as an orphan (the pid given is
    not its parent: the supervisor died and it was re-parented before it looked)."""
    spec = _tracker_spec(ipc_dir)
    done = subprocess.run(
        [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORNAV_SUPERVISOR_PID": "1"},  # init, never our parent here
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout == ""  # never READY
    assert "is gone before start" in done.stderr and "Traceback" not in done.stderr


def test_the_openigtlink_server_on_a_taken_port_fails_loudly_with_exit_3(ipc_dir: Path) -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    spec = NodeSpec(
        name="slicer",
        module="tracking.igtl_server_node",
        pub=f"ipc://{ipc_dir}/slicer.pub",
        control=f"ipc://{ipc_dir}/slicer.ctl",
        subscribe=("tracker",),
        subscribe_endpoints=(f"ipc://{ipc_dir}/tracker.pub",),
        params={"host": "127.0.0.1", "port": port},
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert done.returncode == 3, done.stderr[-2000:]
    assert f"cannot bind tcp://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr

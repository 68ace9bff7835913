"""Three "hosts" on loopback addresses, each with its own keys and supervisor (issue 13).

tracker-pc (127.0.0.2) runs the tracker under `ornav launch --host tracker-pc` (a real
CLI process), render-pc (127.0.0.4) the render node the same way, and nav-pc (127.0.0.3)
the nav node under a Supervisor in this process, so the test reads its table. Every
stream crosses hosts over tcp with CurveZMQ, each host pinned by the key the launch file
gives for it. The test process is a headset whose key render-pc has authorized.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cli.demo.sim_registration import write_true_registration
from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    Hello,
    NavState,
    NavStatus,
    OverlayState,
    SceneUpdate,
    TrackerFrame,
    Welcome,
    decode,
    encode,
)
from nav.runtime import bus, roster
from nav.runtime import status as stack_status
from nav.runtime.keys import KeyPair, KeyStore
from nav.runtime.launchfile import LaunchError, load
from nav.runtime.recording import damage_report, iter_recording
from nav.runtime.supervisor import StartupError, Supervisor

REPO = Path(__file__).resolve().parents[2]
ADDRESSES = {"tracker-pc": "127.0.0.2", "nav-pc": "127.0.0.3", "render-pc": "127.0.0.4"}

STACK = """
[stack]
name = "three-hosts"
stop_grace_s = 1.0
heartbeat_timeout_s = 3.0  # a 2-core machine shared by four test runs (load 13 seen)

[hosts.tracker-pc]
address = "127.0.0.2"
public_key = "{tracker_key}"
[hosts.nav-pc]
address = "127.0.0.3"
public_key = "{nav_key}"
[hosts.render-pc]
address = "127.0.0.4"
public_key = "{render_key}"

[nodes.tracker]
host = "tracker-pc"
module = "tracking.sim_node"
pub = "tcp://{{host}}:{tracker}"
control = "ipc://{{ipc_dir}}/tracker.ctl"
rate_hz = 100
restart = "on-failure"
restart_delay_s = 0.2
[nodes.tracker.params]
seed = 3
dropout_rate_hz = 0.0

[nodes.nav]
host = "nav-pc"
module = "nav.nav_node"
pub = "tcp://{{host}}:{nav}"
control = "ipc://{{ipc_dir}}/nav.ctl"
subscribe = ["tracker"]
restart = "on-failure"
restart_delay_s = 0.2
[nodes.nav.params]
registration_file = "{registration}"

[nodes.recorder]
host = "nav-pc"
module = "nav.runtime.recorder_node"
pub = "ipc://{{ipc_dir}}/recorder.pub"
control = "ipc://{{ipc_dir}}/recorder.ctl"
subscribe = ["tracker", "nav"]
[nodes.recorder.params]
path = "{{run_dir}}/session.mcap"
topics = ["pose/", "nav/state"]
flush_period_s = 0.5

[nodes.render]
host = "render-pc"
module = "render.render_node"
pub = "tcp://{{host}}:{render}"
control = "ipc://{{ipc_dir}}/render.ctl"
subscribe = ["tracker", "nav"]
[nodes.render.params]
headset_endpoint = "tcp://{{host}}:{headset}"
scene_endpoint = "tcp://{{host}}:{render}"
"""


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _pair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def _loopback_aliases_work() -> bool:
    try:
        _free_port("127.0.0.4")
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _loopback_aliases_work(), reason="this OS does not route 127.0.0.2-4 to loopback"
)


class Host:
    """One host's `ornav launch --host NAME` process with its own keys directory."""

    def __init__(self, name: str, launch: Path, keys: Path, run_dir: Path) -> None:
        self.name, self.launch, self.keys, self.run_dir = name, launch, keys, run_dir
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.launch",  # `ornav launch` without importing every other verb
                str(self.launch),
                "--host",
                self.name,
                "--no-table",
                "--run-dir",
                str(self.run_dir),
            ],
            cwd=REPO,
            env={**os.environ, "ORNAV_KEYS": str(self.keys), "ORNAV_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=open(self.run_dir.parent / f"{self.name}.log", "a"),  # noqa: SIM115
            text=True,
        )

    def kill(self) -> None:
        """The whole host: its supervisor by SIGKILL (its nodes die with it, PDEATHSIG)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def three_hosts(tmp_path: Path) -> Iterator[tuple[Path, dict[str, KeyStore], dict[str, Host]]]:
    stores = {name: KeyStore(tmp_path / f"keys-{name}") for name in ADDRESSES}
    keys = {name: store.init(_pair).public.decode() for name, store in stores.items()}
    registration = tmp_path / "registration.json"
    write_true_registration(registration)
    ports = {
        "tracker": _free_port(ADDRESSES["tracker-pc"]),
        "nav": _free_port(ADDRESSES["nav-pc"]),
        "render": _free_port(ADDRESSES["render-pc"]),
        "headset": _free_port(ADDRESSES["render-pc"]),
    }
    path = tmp_path / "three.toml"
    path.write_text(
        STACK.format(
            tracker_key=keys["tracker-pc"],
            nav_key=keys["nav-pc"],
            render_key=keys["render-pc"],
            registration=registration,
            **ports,
        )
    )
    hosts = {
        name: Host(name, path, stores[name].directory, tmp_path / f"run-{name}")
        for name in ("tracker-pc", "render-pc")
    }
    yield path, stores, hosts
    for host in hosts.values():
        host.stop()


class Headset:
    """A keyed headset of render-pc: session (DEALER) and scene updates (SUB)."""

    def __init__(self, launch: Any, keys: KeyPair, server: bytes) -> None:
        render = launch.node("render")
        client = bus.CurveKeys(keys.public, keys.secret, server)
        self.session = bus.context().socket(zmq.DEALER)
        self.session.setsockopt(zmq.LINGER, 0)
        bus.secure_client(self.session, str(render.params["headset_endpoint"]), client)
        self.session.connect(str(render.params["headset_endpoint"]))
        self.scene = bus.QueueSubscriber(
            [render.pub or ""], ["scene/update"], keys=client, trust=lambda _e: True
        )
        # (render's t_pub_ns, update): when render sent it, not when this busy test read it
        self.updates: list[tuple[int, SceneUpdate]] = []

    def join(self, sup: Supervisor, timeout_s: float = 40) -> None:
        hello = encode(Hello(HEADSET_PROTOCOL_VERSION, "h"), seq=0, t_pub_ns=time.monotonic_ns())
        self.session.send(hello, flags=zmq.NOBLOCK)
        # Render heartbeats while it loads its case: READY (and its session socket) may
        # come seconds later on a loaded machine. The Hello waits in the queue.
        deadline = time.monotonic() + timeout_s
        while not self.session.poll(100, zmq.POLLIN):
            assert time.monotonic() < deadline, "no Welcome from render-pc"
            sup.tick(0.0)
        assert isinstance(decode(self.session.recv()).message, Welcome)

    def read(self, sup: Supervisor, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sup.tick(0.0)
            for received in self.scene.poll(0.02):
                if isinstance(received.message, SceneUpdate):
                    self.updates.append((received.envelope.t_pub_ns, received.message))

    def until(self, sup: Supervisor, want: OverlayState, timeout_s: float) -> float:
        t0 = time.monotonic()
        n = len(self.updates)
        while time.monotonic() - t0 < timeout_s:
            self.read(sup, 0.05)
            if any(u.overlay is want for _, u in self.updates[n:]):
                return time.monotonic() - t0
        raise AssertionError(f"overlay never {want} within {timeout_s} s")

    def close(self) -> None:
        self.scene.close()
        self.session.close()


def _tick_until(sup: Supervisor, done: Callable[[], bool], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        sup.tick(0.05)
        if done():
            return time.monotonic() - t0
    table = stack_status.summary(stack_status.snapshot(sup, time.monotonic_ns()))
    raise AssertionError(f"{what} not within {timeout_s} s: {table['nodes']}")


@pytest.mark.slow
@pytest.mark.timeout(300)  # three stacks' start-up on a shared 2-core machine
def test_three_hosts_share_one_secured_stack_and_survive_a_host_dying(
    tmp_path: Path,
    ipc_dir: Path,
    three_hosts: tuple[Path, dict[str, KeyStore], dict[str, Host]],
) -> None:
    path, stores, hosts = three_hosts
    headset = _pair()
    stores["render-pc"].authorize("headset-1", headset.public)
    for host in hosts.values():
        host.start()
    launch = load(path, run_dir=tmp_path / "run-nav-pc", ipc_dir=ipc_dir)
    sup = Supervisor(launch, host="nav-pc", keys_dir=stores["nav-pc"].directory)
    try:
        sup.start()
        assert sup.nodes["nav"].state == "running"

        def navigating() -> bool:
            state = sup.nav_state
            return (
                state is not None
                and state.status is NavStatus.OK
                and sup.nodes["tracker"].state == "remote"
                and sup.nodes["render"].state == "remote"
            )

        _tick_until(sup, navigating, 60, "nav-pc navigating on tracker-pc's frames")
        rows = {r.name: r for r in stack_status.snapshot(sup, time.monotonic_ns()).nodes}
        assert rows["tracker"].host == "tracker-pc" and rows["tracker"].publish_hz

        # The headset on render-pc: allowed key in, the scene follows the tracker.
        render = launch.node("render")
        client = bus.CurveKeys(headset.public, headset.secret, stores["render-pc"].load().public)
        session = bus.context().socket(zmq.DEALER)
        session.setsockopt(zmq.LINGER, 0)
        bus.secure_client(session, str(render.params["headset_endpoint"]), client)
        session.connect(str(render.params["headset_endpoint"]))
        scene = bus.QueueSubscriber(
            [render.pub or ""], ["scene/update"], keys=client, trust=lambda _e: True
        )
        try:
            session.send(
                encode(Hello(HEADSET_PROTOCOL_VERSION, "h"), seq=0, t_pub_ns=time.monotonic_ns())
            )
            # Render heartbeats while it loads its case: READY (and its session socket)
            # may come seconds later on a loaded machine. The Hello waits in the queue.
            deadline = time.monotonic() + 40
            while not session.poll(100, zmq.POLLIN):
                assert time.monotonic() < deadline, "no Welcome from render-pc"
                sup.tick(0.0)
            assert isinstance(decode(session.recv()).message, Welcome)

            def overlay(want: OverlayState, timeout_s: float) -> float:
                t0 = time.monotonic()
                while time.monotonic() - t0 < timeout_s:
                    sup.tick(0.0)
                    for received in scene.poll(0.05):
                        update = received.message
                        if isinstance(update, SceneUpdate) and update.overlay is want:
                            return time.monotonic() - t0
                raise AssertionError(f"overlay never {want} within {timeout_s} s")

            overlay(OverlayState.CURRENT, 20)

            # tracker-pc dies whole: its tracker goes STALE here, the overlay leaves CURRENT.
            hosts["tracker-pc"].kill()
            t_dead = time.monotonic()
            _tick_until(sup, lambda: sup.nodes["tracker"].state == "stale", 10, "tracker STALE")
            assert "tracker" not in roster.read_roster(sup.roster_path)  # nav drops it now
            overlay(OverlayState.HIDDEN, 10)
            table = stack_status.snapshot(sup, time.monotonic_ns())
            assert "silent" in {r.name: r for r in table.nodes}["tracker"].reason

            # Back: the tracker's new process is heard, nav and the overlay recover.
            hosts["tracker-pc"].start()
            _tick_until(sup, navigating, 60, "navigating again after tracker-pc came back")
            overlay(OverlayState.CURRENT, 20)
            restored_s = time.monotonic() - t_dead
        finally:
            scene.close()
            session.close()
        print(f"tracker-pc killed -> navigating and CURRENT again in {restored_s:.1f} s")
        assert sup.all_running()
    finally:
        sup.stop()


def test_a_multi_host_file_refuses_ipc_across_hosts_and_a_wrong_host(tmp_path: Path) -> None:
    keys = {name: _pair().public.decode() for name in ADDRESSES}
    text = STACK.format(
        tracker_key=keys["tracker-pc"],
        nav_key=keys["nav-pc"],
        render_key=keys["render-pc"],
        registration=tmp_path / "r.json",
        tracker=5001,
        nav=5002,
        render=5003,
        headset=5004,
    )
    path = tmp_path / "s.toml"
    path.write_text(text.replace('pub = "tcp://{host}:5001"', 'pub = "ipc://{ipc_dir}/t.pub"'))
    with pytest.raises(LaunchError, match="must be tcp to cross hosts"):
        load(path, run_dir=tmp_path)
    path.write_text(text.replace('host = "nav-pc"\n', ""))
    with pytest.raises(LaunchError, match="node 'nav': key 'host': this stack has"):
        load(path, run_dir=tmp_path)
    path.write_text(text)
    launch = load(path, run_dir=tmp_path)
    assert launch.node("nav").pub == "tcp://127.0.0.3:5002"
    assert [s.name for s in launch.nodes_on("render-pc")] == ["render"]
    with pytest.raises(StartupError, match="--host"):
        Supervisor(launch)
    with pytest.raises(StartupError, match="--host"):
        Supervisor(launch, host="laptop")
    # This machine's key is not the one the file gives for nav-pc: refused, one line.
    store = KeyStore(tmp_path / "k")
    store.init(_pair)
    sup = Supervisor(launch, host="nav-pc", keys_dir=store.directory)
    with pytest.raises(StartupError, match="host 'nav-pc' lists public key"):
        sup.start()


@pytest.mark.slow
@pytest.mark.timeout(300)  # three stacks' start-up on a shared 2-core machine
def test_sigkill_of_each_node_on_its_host_is_restarted_and_never_shows_an_old_overlay(
    tmp_path: Path,
    ipc_dir: Path,
    three_hosts: tuple[Path, dict[str, KeyStore], dict[str, Host]],
) -> None:
    """tracker on tracker-pc, nav on nav-pc: each SIGKILLed in a session, restarted by its
    own host's supervisor; no CURRENT overlay from before a kill once the stale limit has
    passed; nav's registration comes back needing verification."""
    path, stores, hosts = three_hosts
    headset = _pair()
    stores["render-pc"].authorize("headset-1", headset.public)
    for host in hosts.values():
        host.start()
    launch = load(path, run_dir=tmp_path / "run-nav-pc", ipc_dir=ipc_dir)
    sup = Supervisor(launch, host="nav-pc", keys_dir=stores["nav-pc"].directory)
    client = Headset(launch, headset, stores["render-pc"].load().public)
    figures: dict[str, float] = {}
    try:
        sup.start()

        def navigating() -> bool:
            state = sup.nav_state
            return (
                state is not None
                and state.status is NavStatus.OK
                and all(sup.nodes[n].state == "remote" for n in ("tracker", "render"))
            )

        _tick_until(sup, navigating, 90, "navigating across hosts")
        client.join(sup)
        client.until(sup, OverlayState.CURRENT, 20)

        outages: dict[str, tuple[int, int]] = {}  # victim -> (kill, heard again), ns
        for victim in ("tracker", "nav"):
            node = sup.nodes[victim]
            old_epoch = node.epoch
            assert node.pid is not None
            t_kill_ns = time.monotonic_ns()
            os.kill(node.pid, signal.SIGKILL)  # tracker's is on tracker-pc, nav's here
            figures[f"{victim}_restart_s"] = _tick_until(
                sup,
                lambda n=node, e=old_epoch: (
                    n.epoch not in (None, e) and n.state in ("running", "remote")
                ),
                30,
                f"{victim} restarted",
            )
            outages[victim] = (t_kill_ns, time.monotonic_ns())
            figures[f"{victim}_navigating_s"] = _tick_until(sup, navigating, 60, "navigating")
            client.until(sup, OverlayState.CURRENT, 30)
            # The usual rule, across hosts: render sends nothing sampled before the kill as
            # CURRENT once the stale limit (100 ms) and a hop have passed (one monotonic
            # clock: the "hosts" share this machine).
            limit_ns = t_kill_ns + 250_000_000
            old = [
                u
                for t_pub, u in client.updates
                if t_pub > limit_ns
                and u.overlay is OverlayState.CURRENT
                and u.t_sensor_ns < t_kill_ns
            ]
            assert old == [], f"{victim}: {len(old)} CURRENT updates of pre-kill samples"
        state = sup.nav_state
        assert state is not None and state.needs_verification  # restored, not yet confirmed

        def recorder_saw_both_restarts() -> bool:
            # A new epoch on pose/sim and on nav/state: the recorder reads both new processes.
            hb = sup.nodes["recorder"].heartbeat
            return hb is not None and hb.counters.get("producer_restarts", 0) >= 2

        _tick_until(sup, recorder_saw_both_restarts, 20, "the recorder on both new processes")
        client.read(sup, 1.0)  # past its 0.5 s flush
        assert sup.nodes["nav"].restarts == 1
    finally:
        client.close()
        sup.stop()
    print(" ".join(f"{k}={v:.1f}" for k, v in figures.items()))
    # The recording on nav-pc is readable and has no hole longer than the outages: the
    # tracker's frames (from another host) and nav's states around each kill.
    reader = iter_recording(tmp_path / "run-nav-pc" / "session.mcap")
    sensor_ns: dict[str, list[int]] = {"pose/": [], "nav/state": []}
    for recorded in reader:
        message = decode(recorded.payload).message
        if isinstance(message, TrackerFrame):
            sensor_ns["pose/"].append(message.t_sensor_ns)
        elif isinstance(message, NavState):
            sensor_ns["nav/state"].append(recorded.publish_time_ns)
    assert not reader.problem and reader.corrupt_chunks == 0, damage_report(reader)
    for topic, victim in (("pose/", "tracker"), ("nav/state", "nav")):
        stamps = sorted(sensor_ns[topic])
        assert len(stamps) > 100, topic
        longest_ns = max(b - a for a, b in zip(stamps, stamps[1:], strict=False))
        kill_ns, heard_ns = outages[victim]
        # The hole spans the outage (kill -> heard again) plus one sample period's slack
        # and the 0.5 s heartbeat that announced the new process.
        assert longest_ns <= heard_ns - kill_ns + 600_000_000, (topic, longest_ns / 1e9)
        assert stamps[-1] > heard_ns, f"nothing of the restarted {victim} was recorded"

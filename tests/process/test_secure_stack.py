"""A tcp stack is CurveZMQ-encrypted and authenticated (issue 13), with real processes.

tracker (tcp pub and control), nav (tcp pub), render (tcp pub, tcp headset sessions) on
127.0.0.1 with this host's keys: the nodes reach each other with the host key; a client
whose key is on the allow-list gets the stream and a headset session; an unknown key and
no key get nothing and are counted (``auth_refused``), in heartbeats, the status table
and the summary. Without keys the stack refuses to start unless ``insecure = true``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from rich.console import Console

from cli.demo.sim_registration import write_true_registration
from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    Hello,
    NavStatus,
    SceneUpdate,
    TrackerFrame,
    Welcome,
    decode,
    encode,
)
from nav.runtime import bus
from nav.runtime import status as stack_status
from nav.runtime.keys import KeyPair, KeyStore
from nav.runtime.launchfile import load
from nav.runtime.supervisor import StartupError, Supervisor

STACK = """
[stack]
name = "secure"
stop_grace_s = 2.0
{insecure}

[nodes.tracker]
module = "tracking.sim_node"
pub = "tcp://127.0.0.1:{tracker}"
control = "tcp://127.0.0.1:{tracker_ctl}"
rate_hz = 100
[nodes.tracker.params]
seed = 3
dropout_rate_hz = 0.0

[nodes.nav]
module = "nav.nav_node"
pub = "tcp://127.0.0.1:{nav}"
control = "ipc://{{ipc_dir}}/nav.ctl"
subscribe = ["tracker"]
[nodes.nav.params]
registration_file = "{registration}"

[nodes.render]
module = "render.render_node"
pub = "tcp://127.0.0.1:{render}"
control = "ipc://{{ipc_dir}}/render.ctl"
subscribe = ["tracker", "nav"]
[nodes.render.params]
headset_endpoint = "tcp://127.0.0.1:{headset}"
scene_endpoint = "tcp://127.0.0.1:{render}"
"""


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _new_pair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def _launch(tmp_path: Path, ipc_dir: Path, *, insecure: bool, nodes: int = 3) -> Path:
    registration = tmp_path / "registration.json"
    write_true_registration(registration)
    ports = {k: _free_tcp_port() for k in ("tracker", "tracker_ctl", "nav", "render", "headset")}
    text = STACK.format(
        insecure="insecure = true" if insecure else "", registration=registration, **ports
    )
    if nodes == 1:
        text = text[: text.index("[nodes.nav]")]
    path = tmp_path / "secure.toml"
    path.write_text(text)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(tmp_path / "keys")
    store.init(_new_pair)
    return store


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    running: list[Supervisor] = []
    yield running
    for sup in running:
        sup.stop()


def _tick_until(sup: Supervisor, done: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sup.tick(0.05)
        if done():  # type: ignore[operator]
            return
    raise AssertionError(f"{what} not within {timeout_s} s")


def test_a_tcp_stack_without_keys_refuses_to_start_unless_insecure(
    tmp_path: Path, ipc_dir: Path, supervisors: list[Supervisor]
) -> None:
    secure = load(_launch(tmp_path, ipc_dir, insecure=False, nodes=1), run_dir=tmp_path / "r")
    sup = Supervisor(secure, keys_dir=tmp_path / "no-keys")
    with pytest.raises(StartupError, match=r"ornav keys init.*insecure = true"):
        sup.start()
    assert all(node.pid is None for node in sup.nodes.values())  # nothing was started

    insecure = load(_launch(tmp_path, ipc_dir, insecure=True, nodes=1), run_dir=tmp_path / "r")
    sup = Supervisor(insecure, keys_dir=tmp_path / "no-keys")
    supervisors.append(sup)
    sup.start()
    assert sup.all_running()
    status = stack_status.snapshot(sup, time.monotonic_ns())
    assert stack_status.summary(status)["security"] == "insecure"
    console = Console(width=200, record=True)
    console.print(stack_status.render(status))
    assert stack_status.INSECURE_BANNER in console.export_text()


class _Session:
    """A headset session socket (DEALER) with the given CURVE keys (None: no CURVE)."""

    def __init__(self, endpoint: str, keys: bus.CurveKeys | None) -> None:
        self.sock = bus.context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            bus.secure_client(self.sock, endpoint, keys)
        self.sock.connect(endpoint)

    def hello(self, timeout_s: float) -> object | None:
        hello = encode(Hello(HEADSET_PROTOCOL_VERSION, "t"), seq=0, t_pub_ns=time.monotonic_ns())
        try:  # never block: a refused peer may leave the DEALER with no pipe to queue on
            self.sock.send(hello, flags=zmq.NOBLOCK)
        except zmq.Again:
            return None
        if not self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return decode(self.sock.recv()).message

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.mark.slow
@pytest.mark.timeout(300)  # three stacks' start-up on a shared 2-core machine
def test_only_allowed_keys_get_the_stream_and_a_headset_session_others_are_counted(
    tmp_path: Path, ipc_dir: Path, keys: KeyStore, supervisors: list[Supervisor]
) -> None:
    launch = load(_launch(tmp_path, ipc_dir, insecure=False), run_dir=tmp_path / "run")
    sup = Supervisor(launch, keys_dir=keys.directory)
    supervisors.append(sup)
    sup.start()
    # The nodes reach each other over tcp with the host key: nav navigates on the
    # tracker's frames, render on nav's state.
    _tick_until(
        sup,
        lambda: sup.nav_state is not None and sup.nav_state.status is NavStatus.OK,
        30,
        "nav OK over CURVE",
    )
    host = keys.load().public
    headset = _new_pair()
    keys.authorize("headset-1", headset.public)  # while the stack runs: re-read on change
    stranger = _new_pair()
    allowed = bus.CurveKeys(headset.public, headset.secret, host)
    unknown = bus.CurveKeys(stranger.public, stranger.secret, host)
    tracker_pub = launch.node("tracker").pub or ""
    render_pub = launch.node("render").pub or ""
    headset_endpoint = str(launch.node("render").params["headset_endpoint"])

    trust_all = lambda _epoch: True  # noqa: E731 - the test process has no roster
    subs = {
        name: bus.QueueSubscriber(
            [tracker_pub, render_pub], ["pose/", "scene/"], keys=k, trust=trust_all
        )
        for name, k in (("allowed", allowed), ("unknown", unknown), ("none", None))
    }
    sessions = {
        name: _Session(headset_endpoint, k)
        for name, k in (("allowed", allowed), ("unknown", unknown), ("none", None))
    }
    try:
        replies = {name: s.hello(3.0 if name == "allowed" else 1.0) for name, s in sessions.items()}
        got: dict[str, list[object]] = {name: [] for name in subs}
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            sup.tick(0.02)
            for name, sub in subs.items():
                got[name] += [r.message for r in sub.poll(0.0)]
    finally:
        for sub in subs.values():
            sub.close()
        for session in sessions.values():
            session.close()
    assert isinstance(replies["allowed"], Welcome)
    assert replies["unknown"] is None and replies["none"] is None
    assert any(isinstance(m, TrackerFrame) for m in got["allowed"])
    assert any(isinstance(m, SceneUpdate) for m in got["allowed"])
    assert got["unknown"] == [] and got["none"] == []

    def refused(node: str) -> int:
        hb = sup.nodes[node].heartbeat
        return 0 if hb is None else hb.counters.get("auth_refused", 0)

    # tracker: the unknown key and the keyless client; render: the same on its pub and
    # on its headset socket. Heartbeats come every 0.5 s.
    _tick_until(sup, lambda: refused("tracker") >= 2 and refused("render") >= 4, 5, "counts")
    status = stack_status.snapshot(sup, time.monotonic_ns())
    assert stack_status.summary(status)["auth_refused"] >= 6
    assert stack_status.summary(status)["security"] == "curve"
    rows = {row.name: row for row in status.nodes}
    assert rows["tracker"].auth_refused >= 2 and rows["nav"].auth_refused == 0
    log = (launch.run_dir / "logs" / "tracker.log").read_text()
    assert f"({_fingerprint(stranger.public)}): key not on the allow-list" in log

    # Revoked: its next connection is refused (one already open lasts until it reconnects).
    keys.revoke("headset-1")
    late = _Session(headset_endpoint, allowed)
    try:
        assert late.hello(1.5) is None
    finally:
        late.close()
    assert sup.all_running()


def _fingerprint(public: bytes) -> str:
    from nav.runtime.keys import fingerprint

    return fingerprint(public)

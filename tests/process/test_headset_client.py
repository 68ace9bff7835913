"""The reference headset client: clock sync and the overlay rule (pure), then the session
against a small in-test server (ROUTER + PUB in a thread), then against the real render node
between the simulated tracker and the nav node (real processes), and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.demo.sim_registration import write_true_registration
from nav.case import load_case
from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    Alert,
    AlertAck,
    AlertSeverity,
    AssetData,
    AssetRequest,
    ClockPing,
    ClockPong,
    Command,
    HeadsetTelemetry,
    Hello,
    Message,
    NavStatus,
    OccludeTool,
    OverlayState,
    Reply,
    SceneUpdate,
    SnapshotRequest,
    ToolOccluded,
    Welcome,
    decode,
    encode,
)
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from render.assets import AssetSet, build_assets, with_confidence
from render.headset_client import (
    ClientConfig,
    ClockSample,
    ClockSync,
    HeadsetClient,
    HeadsetError,
    OverlayEvents,
    Phase,
    client_overlay,
)
from tests.conftest import REPO, NodeProcess, start_node

MS = 1_000_000


# --- clock sync -------------------------------------------------------------------------


@settings(derandomize=True, max_examples=200)
@given(
    offset_ns=st.integers(-(10**15), 10**15),
    delays=st.lists(
        st.tuples(st.integers(10_000, 50 * MS), st.integers(10_000, 50 * MS)),
        min_size=1,
        max_size=20,
    ),
)
def test_clock_sync_recovers_the_offset_within_half_the_best_round_trip(
    offset_ns: int, delays: list[tuple[int, int]]
) -> None:
    """Asymmetric up/down delays: the error is half the asymmetry of the fastest exchange."""
    sync = ClockSync(window=32)
    t_client = 10**12
    for up, down in delays:
        t_server = t_client + up + offset_ns  # the server stamps on arrival of the ping
        sync.add(ClockSample(t_client, t_server, t_client + up + down))
        t_client += up + down + 1_000_000
    best_up, best_down = min(delays, key=lambda d: d[0] + d[1])
    error = sync.offset_ns - offset_ns
    assert abs(error) <= (best_up + best_down) // 2 + 1
    assert error == pytest.approx((best_up - best_down) / 2, abs=1)
    assert sync.error_bound_ns == (best_up + best_down) // 2


def test_clock_sync_is_exact_with_symmetric_delays_and_ignores_slow_exchanges() -> None:
    sync = ClockSync(window=4)
    assert sync.offset_ns == 0 and sync.best() is None
    offset = 123_456_789
    sync.add(ClockSample(0, 5 * MS + offset + 40 * MS, 10 * MS))  # queued on the way back
    sync.add(ClockSample(100 * MS, 101 * MS + offset, 102 * MS))  # fast and symmetric
    sync.add(ClockSample(200 * MS, 190 * MS, 199 * MS))  # negative RTT: a broken echo
    assert len(sync) == 2
    assert sync.offset_ns == offset


def test_clock_sync_window_forgets_old_samples() -> None:
    sync = ClockSync(window=2)
    sync.add(ClockSample(0, 500, 1000))  # best RTT, offset 0
    sync.add(ClockSample(10_000, 20_000, 20_000))
    sync.add(ClockSample(30_000, 40_000, 40_000))
    assert sync.offset_ns == 5_000  # the first sample fell out of the window


# --- overlay rule on the client's clock ---------------------------------------------------


def _update(
    *,
    overlay: OverlayState = OverlayState.CURRENT,
    status: NavStatus = NavStatus.OK,
    t_sensor_ns: int = 1_000 * MS,
    frame_number: int = 1,
    session: str = "a" * 32,
    names: tuple[str, ...] = ("liver",),
) -> SceneUpdate:
    return SceneUpdate(
        session=session,
        scene_version=1,
        t_sensor_ns=t_sensor_ns,
        frame_number=frame_number,
        status=status,
        overlay=overlay,
        headset_ok=True,
        needs_verification=False,
        registration_id=1,
        structure_names=names,
        T_tracker_from_structures=np.stack([np.eye(4)] * len(names)),
        p_tip_tracker=np.full(3, np.nan),
        T_tracker_from_headset=np.eye(4),
        target_names=("T1",),
        target_distances_mm=np.array([12.5]),
        critical_names=(),
        critical_distances_mm=np.zeros(0),
        predicted_tre_mm=1.5,
        age_ms=1.0,
    )


@pytest.mark.parametrize(
    ("age_ms", "server", "status", "expected"),
    [
        (5.0, OverlayState.CURRENT, NavStatus.OK, OverlayState.CURRENT),
        (100.0, OverlayState.CURRENT, NavStatus.OK, OverlayState.CURRENT),  # at the limit
        (100.5, OverlayState.CURRENT, NavStatus.OK, OverlayState.STALE),
        (300.5, OverlayState.CURRENT, NavStatus.OK, OverlayState.HIDDEN),
        (5.0, OverlayState.STALE, NavStatus.STALE, OverlayState.STALE),
        (5.0, OverlayState.HIDDEN, NavStatus.REFERENCE_LOST, OverlayState.HIDDEN),
        (500.0, OverlayState.STALE, NavStatus.OK, OverlayState.HIDDEN),
    ],
)
def test_client_overlay_is_the_worse_of_the_server_verdict_and_the_age_on_its_own_clock(
    age_ms: float, server: OverlayState, status: NavStatus, expected: OverlayState
) -> None:
    update = _update(overlay=server, status=status)
    offset = 7 * 10**9  # the server clock runs 7 s ahead of the client's
    now = update.t_sensor_ns - offset + int(age_ms * MS)
    state, reason = client_overlay(update, now_ns=now, clock_offset_ns=offset)
    assert state is expected
    assert (reason == "") == (expected is OverlayState.CURRENT)
    if status is NavStatus.REFERENCE_LOST:
        assert reason == "REFERENCE_LOST"


def test_overlay_events_count_entries_into_stale_and_hidden_but_not_the_start() -> None:
    events = OverlayEvents()
    seq = [
        OverlayState.HIDDEN,  # start: nothing drawn yet, not an event
        OverlayState.CURRENT,
        OverlayState.STALE,
        OverlayState.HIDDEN,
        OverlayState.STALE,  # back, marked: a stale event
        OverlayState.CURRENT,
        OverlayState.CURRENT,
    ]
    for t, state in enumerate(seq):
        events.observe(state, "", t_ns=t)
    assert (events.stale_events, events.hidden_events) == (2, 1)
    assert [e.state for e in events.history] == seq[1:6]


def test_bad_client_config_is_one_line_error() -> None:
    with pytest.raises(HeadsetError, match="not a ZeroMQ endpoint"):
        ClientConfig(endpoint="localhost:5555")
    with pytest.raises(HeadsetError, match="--name"):
        ClientConfig(endpoint="ipc:///tmp/x", name="has space")


# --- against a small in-test server -------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_assets() -> AssetSet:
    return build_assets(load_case(SHIPPED_PHANTOM_DIR))


class FakeServer:
    """The render node's session protocol in a thread, from docs/headset-protocol.md."""

    def __init__(
        self, ipc_dir: Path, assets: AssetSet, *, protocol: int = HEADSET_PROTOCOL_VERSION
    ) -> None:
        self.session_endpoint = f"ipc://{ipc_dir}/fake.headset"
        self.scene_endpoint = f"ipc://{ipc_dir}/fake.pub"
        self.assets = assets
        self.protocol = protocol
        self.session = secrets.token_hex(16)
        self.stop = threading.Event()
        self.publishing = threading.Event()
        self.publishing.set()
        self.requests: list[str] = []
        self.acks: list[int] = []
        self.telemetry: list[HeadsetTelemetry] = []
        self.alerts_to_send: list[Alert] = []
        self.frame = 0
        self.latest: SceneUpdate | None = None
        self.scene_version = 1
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(self.session_endpoint)
        pub = bus.Publisher(self.scene_endpoint)
        clients: set[bytes] = set()
        next_pub = time.monotonic()
        next_resend = time.monotonic()
        seq = 0

        def send(identity: bytes, message: Message) -> None:
            nonlocal seq
            router.send_multipart(
                [identity, encode(message, seq=seq, t_pub_ns=time.monotonic_ns())]
            )
            seq += 1

        try:
            while not self.stop.is_set():
                if router.poll(2):
                    identity, payload = router.recv_multipart()
                    message = decode(payload).message
                    self.requests.append(message.TYPE)
                    if isinstance(message, Hello):
                        if message.protocol != self.protocol:
                            send(identity, Reply(ok=False, error="protocol mismatch"))
                            continue
                        clients.add(identity)
                        send(identity, self._welcome())
                    elif isinstance(message, ClockPing):
                        send(identity, ClockPong(message.t_client_ns, time.monotonic_ns()))
                    elif isinstance(message, AssetRequest):
                        data = self.assets.data_by_sha256.get(message.sha256)
                        info = next(i for i in self.assets.infos if i.sha256 == message.sha256)
                        assert data is not None
                        send(identity, AssetData(message.sha256, info.name, data))
                    elif isinstance(message, SnapshotRequest):
                        if self.latest is None:
                            send(identity, Reply(ok=False, error="no scene yet"))
                        else:
                            send(identity, self.latest)
                    elif isinstance(message, AlertAck):
                        self.acks.append(message.alert_id)
                    elif isinstance(message, HeadsetTelemetry):
                        self.telemetry.append(message)
                now = time.monotonic()
                if now >= next_resend:
                    next_resend = now + 0.5
                    for alert in self.alerts_to_send:
                        if alert.alert_id not in self.acks:
                            for identity in clients:
                                send(identity, alert)
                if self.publishing.is_set() and now >= next_pub:
                    next_pub = now + 0.01
                    self.frame += 1
                    self.latest = self._scene_update(time.monotonic_ns())
                    pub.publish("scene/update", self.latest)
        finally:
            router.close(linger=0)
            pub.close()

    def _welcome(self) -> Welcome:
        return Welcome(
            protocol=self.protocol,
            session=self.session,
            scene_endpoint=self.scene_endpoint,
            scene_version=self.scene_version,
            t_server_ns=time.monotonic_ns(),
            assets=self.assets.infos,
            T_xr_from_tracker=np.eye(4),
            xr_rms_mm=float("nan"),
        )

    def _scene_update(self, t_sensor_ns: int) -> SceneUpdate:
        names = self.assets.names
        return SceneUpdate(
            session=self.session,
            scene_version=self.scene_version,
            t_sensor_ns=t_sensor_ns,
            frame_number=self.frame,
            status=NavStatus.OK,
            overlay=OverlayState.CURRENT,
            headset_ok=True,
            needs_verification=False,
            registration_id=1,
            structure_names=names,
            T_tracker_from_structures=np.stack([np.eye(4)] * len(names)),
            p_tip_tracker=np.array([0.0, 0.0, 500.0]),
            T_tracker_from_headset=np.eye(4),
            target_names=(),
            target_distances_mm=np.zeros(0),
            critical_names=(),
            critical_distances_mm=np.zeros(0),
            predicted_tre_mm=1.0,
            age_ms=0.0,
        )

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)


def step_until(
    client: HeadsetClient, condition: Callable[[], bool], timeout_s: float = 10.0
) -> float:
    """Step the client until ``condition`` holds; returns the seconds it took."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, client.status_line()
        client.step(0.01)
    return time.monotonic() - t0


@pytest.fixture
def ipc() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ornav-h-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_client_joins_fetches_verified_assets_gets_a_snapshot_and_measures_latency(
    ipc: Path, phantom_assets: AssetSet
) -> None:
    server = FakeServer(ipc, phantom_assets)
    client = HeadsetClient(ClientConfig(endpoint=server.session_endpoint, name="t1"))
    try:
        step_until(client, lambda: client.phase is Phase.LIVE and client.stats.frames >= 30)
        step_until(client, lambda: server.telemetry != [])
    finally:
        client.close()
        server.close()
    assets = client.assets()
    assert set(assets) == set(phantom_assets.names)
    for info, data in assets.values():
        assert hashlib.sha256(data).hexdigest() == info.sha256
    assert client.stats.snapshots == 1 and "SnapshotRequest" in server.requests
    assert server.requests.count("AssetRequest") == len(phantom_assets.infos)
    summary = client.summary()
    assert summary["latency_ms"]["n"] >= 30 and summary["latency_ms"]["p50"] < 1000
    assert summary["assets"]["count"] == 5 and summary["assets"]["fetch_ms"] > 0
    assert summary["assets"]["bytes"] == phantom_assets.total_bytes
    assert summary["reconnects"] == 0 and summary["stale_events"] == 0
    assert abs(summary["clock_offset_ns"]) < 50 * MS  # one host: the same clock
    assert summary["overlay"] == "CURRENT"
    batch = server.telemetry[0]
    assert batch.client == "t1" and len(batch.frame_numbers) > 0
    assert (batch.t_display_ns >= batch.t_receive_ns).all()


def test_client_goes_stale_then_hidden_on_its_own_clock_when_updates_stop(
    ipc: Path, phantom_assets: AssetSet
) -> None:
    server = FakeServer(ipc, phantom_assets)
    client = HeadsetClient(ClientConfig(endpoint=server.session_endpoint))
    try:
        step_until(client, lambda: client.events.state is OverlayState.CURRENT)
        server.publishing.clear()  # the pings still get answered: not silence
        t_stop = time.monotonic_ns()
        step_until(client, lambda: client.events.state is OverlayState.HIDDEN, timeout_s=5)
    finally:
        client.close()
        server.close()
    stale, hidden = (
        next(e for e in client.events.history if e.state is s)
        for s in (OverlayState.STALE, OverlayState.HIDDEN)
    )
    assert stale.t_ns < hidden.t_ns
    assert 90 * MS <= stale.t_ns - t_stop <= 600 * MS  # the rule fires at 100 ms age
    assert 290 * MS <= hidden.t_ns - t_stop <= 900 * MS
    assert client.reconnects == 0
    assert client.summary()["stale_events"] == 1 and client.summary()["hidden_events"] == 1


def test_client_acks_every_copy_of_an_alert_and_shows_it_once(
    ipc: Path, phantom_assets: AssetSet
) -> None:
    server = FakeServer(ipc, phantom_assets)
    server.alerts_to_send.append(
        Alert(server.session, 3, AlertSeverity.CRITICAL, "REFERENCE_LOST", "reference lost", 1)
    )
    client = HeadsetClient(ClientConfig(endpoint=server.session_endpoint))
    try:
        step_until(client, lambda: 3 in server.acks)
        step_until(client, lambda: client.phase is Phase.LIVE)
    finally:
        client.close()
        server.close()
    assert client.stats.alerts == ["REFERENCE_LOST"]


def test_client_rejoins_a_restarted_server_without_fetching_cached_assets(
    ipc: Path, phantom_assets: AssetSet
) -> None:
    server = FakeServer(ipc, phantom_assets)
    client = HeadsetClient(ClientConfig(endpoint=server.session_endpoint))
    try:
        step_until(client, lambda: client.phase is Phase.LIVE and client.stats.frames > 5)
        first = client.session
        server.close()  # dead: after 1 s of silence the client says Hello again
        step_until(client, lambda: client.events.state is OverlayState.HIDDEN, timeout_s=5)
        server = FakeServer(ipc, phantom_assets)  # a new process: a new session id
        step_until(client, lambda: client.session == server.session, timeout_s=10)
        step_until(client, lambda: client.events.state is OverlayState.CURRENT, timeout_s=10)
    finally:
        client.close()
        server.close()
    assert client.session != first and client.reconnects == 1
    assert client.stats.assets_fetched == len(phantom_assets.infos)  # cached by hash
    assert "AssetRequest" not in server.requests


def test_a_new_scene_version_makes_the_client_hello_again_and_fetch_only_new_assets(
    ipc: Path, phantom_assets: AssetSet
) -> None:
    server = FakeServer(ipc, phantom_assets)
    client = HeadsetClient(ClientConfig(endpoint=server.session_endpoint))
    case = load_case(SHIPPED_PHANTOM_DIR)
    liver = case.structure("liver")
    coloured = with_confidence(phantom_assets, liver, lambda v: np.full(len(v), 2.5))
    try:
        step_until(client, lambda: client.phase is Phase.LIVE and client.stats.frames > 5)
        assert client.stats.assets_fetched == len(phantom_assets.infos)
        server.assets = coloured  # what the render node does after a point registration
        server.scene_version = 2
        step_until(
            client,
            lambda: (
                client.phase is Phase.LIVE
                and client.latest is not None
                and client.latest.scene_version == 2
            ),
        )
    finally:
        client.close()
        server.close()
    assert client.welcome is not None and client.welcome.scene_version == 2
    assert client.assets()["liver"][0].sha256 == coloured.info("liver").sha256
    assert client.stats.assets_fetched == len(phantom_assets.infos) + 1  # the liver only
    summary = client.summary()
    assert summary["scene_reloads"] == 1 and summary["reconnects"] == 0
    assert client.session == server.session


def test_a_protocol_mismatch_is_a_one_line_error(ipc: Path, phantom_assets: AssetSet) -> None:
    server = FakeServer(ipc, phantom_assets, protocol=HEADSET_PROTOCOL_VERSION + 1)
    client = HeadsetClient(ClientConfig(endpoint=server.session_endpoint))
    try:
        with pytest.raises(HeadsetError, match="refused the session"):
            client.run(threading.Event(), duration_s=5)
    finally:
        client.close()
        server.close()


# --- against the real render node ---------------------------------------------------------

RATE_HZ = 100.0


def tracker_spec(ipc: Path) -> NodeSpec:
    return NodeSpec(
        name="tracker",
        module="tracking.sim_node",
        pub=f"ipc://{ipc}/tracker.pub",
        control=f"ipc://{ipc}/tracker.ctl",
        rate_hz=RATE_HZ,
        params={"seed": 3, "dropout_rate_hz": 0.0},
    )


def nav_spec(ipc: Path) -> NodeSpec:
    registration = ipc / "registration.json"
    if not registration.exists():
        write_true_registration(registration, registration_id=7)
    return NodeSpec(
        name="nav",
        module="nav.nav_node",
        pub=f"ipc://{ipc}/nav.pub",
        control=f"ipc://{ipc}/nav.ctl",
        subscribe=("tracker",),
        subscribe_endpoints=(f"ipc://{ipc}/tracker.pub",),
        params={"registration_file": str(registration)},
    )


def render_spec(ipc: Path) -> NodeSpec:
    return NodeSpec(
        name="render",
        module="render.render_node",
        pub=f"ipc://{ipc}/render.pub",
        control=f"ipc://{ipc}/render.ctl",
        subscribe=("tracker", "nav"),
        subscribe_endpoints=(f"ipc://{ipc}/tracker.pub", f"ipc://{ipc}/nav.pub"),
        params={"headset_endpoint": f"ipc://{ipc}/render.headset"},
    )


@pytest.fixture
def stack(ipc: Path, node_processes: list[NodeProcess]) -> dict[str, NodeProcess]:
    if not (REPO / "render" / "render_node.py").exists():
        pytest.skip("render/render_node.py is not there yet")
    nodes = {
        "tracker": start_node(tracker_spec(ipc)),
        "nav": start_node(nav_spec(ipc)),
        "render": start_node(render_spec(ipc)),
    }
    node_processes.extend(nodes.values())
    return nodes


@pytest.mark.slow
def test_client_joins_the_render_node_rebuilds_the_scene_and_follows_a_restart(
    ipc: Path, stack: dict[str, NodeProcess], node_processes: list[NodeProcess]
) -> None:
    client = HeadsetClient(ClientConfig(endpoint=f"ipc://{ipc}/render.headset"))
    try:
        step_until(client, lambda: client.events.state is OverlayState.CURRENT, timeout_s=20)
        step_until(client, lambda: client.stats.frames >= 50)
        first = client.session
        assets = client.assets()
        case = load_case(SHIPPED_PHANTOM_DIR)
        assert set(assets) == {s.name for s in case.structures}
        for info, data in assets.values():
            assert hashlib.sha256(data).hexdigest() == info.sha256
        assert client.summary()["latency_ms"]["p50"] is not None
        # Kill the render node and start it again: the client rejoins by itself.
        stack["render"].process.kill()
        stack["render"].process.wait()
        step_until(client, lambda: client.events.state is OverlayState.HIDDEN, timeout_s=5)
        restarted = start_node(render_spec(ipc))
        node_processes.append(restarted)
        step_until(client, lambda: client.session not in (None, first), timeout_s=20)
        step_until(client, lambda: client.events.state is OverlayState.CURRENT, timeout_s=20)
    finally:
        client.close()
    # Joined the first session and the restarted one (``reconnects`` subtracts scene
    # reloads, whose number depends on when the restored registration arrives).
    assert client.stats.joins >= 2
    # Same hashes after the restart: nothing fetched again. The one possible extra is the
    # liver in confidence colours, once the restored registration reached the render node
    # (before or after the client joined: a race this test does not fix).
    n = len(case.structures)
    assert n <= client.stats.assets_fetched <= n + 1, client.stats
    assert restarted.terminate() == 0


@pytest.mark.slow
def test_client_sees_reference_lost_after_an_occlusion_and_stale_hidden_after_a_tracker_kill(
    ipc: Path, stack: dict[str, NodeProcess]
) -> None:
    client = HeadsetClient(ClientConfig(endpoint=f"ipc://{ipc}/render.headset"))
    control = bus.CommandClient(f"ipc://{ipc}/tracker.ctl")
    try:
        step_until(client, lambda: client.events.state is OverlayState.CURRENT, timeout_s=20)
        step_until(client, lambda: client.stats.frames >= 20)
        t_cause = time.monotonic_ns()
        occlude = OccludeTool(tool="reference", duration_s=1.0)
        reply = control.request(Command(occlude.NAME, occlude.to_args()))
        assert reply.ok, reply.error
        assert ToolOccluded.from_result(reply.result).tool == "reference"
        step_until(client, lambda: client.events.state is OverlayState.HIDDEN, timeout_s=5)
        hidden = client.events.history[-1]
        assert hidden.status is NavStatus.REFERENCE_LOST and hidden.reason == "REFERENCE_LOST"
        # The issue asks for 100 ms; a shared 2-core machine gets a 5x margin here, and
        # bench/headset.py measures the real figure.
        assert hidden.t_ns - t_cause < 500 * MS, (hidden.t_ns - t_cause) / MS
        step_until(client, lambda: "REFERENCE_LOST" in client.stats.alerts, timeout_s=5)
        step_until(client, lambda: client.events.state is OverlayState.CURRENT, timeout_s=10)
        # Now the tracker dies without a word: STALE, then HIDDEN.
        stale_before = client.events.stale_events
        t_kill = time.monotonic_ns()
        stack["tracker"].process.kill()
        step_until(client, lambda: client.events.state is OverlayState.HIDDEN, timeout_s=5)
    finally:
        control.close()
        client.close()
    assert client.events.stale_events == stale_before + 1
    stale = [e for e in client.events.history if e.state is OverlayState.STALE][-1]
    assert 0 < stale.t_ns - t_kill < 1000 * MS
    assert client.stats.alert_acks >= 1
    assert client.reconnects == 0  # pongs kept the session alive while the tracker was dead


# --- the CLI ------------------------------------------------------------------------------


def _ornav(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connect", "localhost:1"], "not a ZeroMQ endpoint"),
        (["--connect", "ipc:///tmp/x", "--display-calibration", "/nonexistent.toml"], "no such"),
        (["--connect", "ipc:///tmp/x", "--duration", "0"], "--duration"),
    ],
)
def test_headset_cli_refuses_bad_input_with_one_line_and_exit_2(
    args: list[str], message: str
) -> None:
    result = _ornav("headset", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ornav: ") and message in lines[0]


@pytest.mark.slow
def test_headset_cli_runs_against_the_stack_and_writes_summary_and_snapshot(
    ipc: Path, stack: dict[str, NodeProcess], tmp_path: Path
) -> None:
    summary_path, snapshot_path = tmp_path / "summary.json", tmp_path / "view.png"
    result = _ornav(
        "headset",
        "--connect",
        f"ipc://{ipc}/render.headset",
        "--duration",
        "3",
        "--snapshot",
        str(snapshot_path),
        "--summary",
        str(summary_path),
        "--renderer",
        "raycast",
        timeout_s=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "latency p50" in result.stdout
    summary = json.loads(summary_path.read_text())
    for key in (
        "latency_ms",
        "pose_age_ms",
        "frames",
        "lost",
        "stale_events",
        "hidden_events",
        "reconnects",
        "alerts",
        "assets",
        "snapshot",
        "clock_offset_ns",
    ):
        assert key in summary, key
    assert summary["frames"] > 100 and summary["latency_ms"]["p50"] is not None
    assert summary["assets"]["count"] == 5
    assert summary["snapshot"]["path"] == str(snapshot_path)
    assert summary["snapshot"]["renderer"] == "raycast"
    assert snapshot_path.stat().st_size > 1000
    assert stack["render"].process.poll() is None
    stack["render"].process.send_signal(signal.SIGTERM)

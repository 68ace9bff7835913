"""The nav node as a real process, fed by the simulated tracker as a real process.

The phantom is placed on the simulated patient reference by ``TRUTH``
(``T_reference_from_image``): the simulated pointer touches the phantom's fiducials at
``TRUTH @ p_image`` in the reference frame, riding on the breathing patient, so the
registration the nav node computes can be compared with the truth.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from cli.demo.sim_registration import SimRegistration, TouchPlan
from nav.case import Case, load_case
from nav.messages import (
    Command,
    Heartbeat,
    NavState,
    NavStatus,
    PointerTouch,
    RegistrationResult,
    Reply,
    ToolStatus,
    TrackerFrame,
)
from nav.navigation import Registration, case_id
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration_store import load_registration, save_registration
from nav.runtime import bus
from nav.runtime.config import ConfigError
from nav.runtime.launchfile import NodeSpec, node_config
from nav.transforms import apply, axis_angle_to_matrix, make_rigid
from tests.conftest import NodeProcess, start_node
from tracking.sim_model import (
    DEFAULT_T_TRACKER_FROM_REFERENCE_BASE,
    SimConfig,
    SimulatedTracker,
)

FloatArray = npt.NDArray[np.float64]

pytestmark = pytest.mark.slow

# The sim's reference sits 1.3 m from the camera facing it, +z out of the patient. The
# phantom lies under it (LPS posterior -> reference -z), turned 15 degrees about the
# marker's z, its organ 15-250 mm from the marker origin (centre ~130 mm): in the
# tracker's volume, reachable by the pointer, far enough for a lever arm to matter.
TRUTH = make_rigid(
    axis_angle_to_matrix([0.0, 0.0, 1.0], math.radians(15.0))
    @ axis_angle_to_matrix([1.0, 0.0, 0.0], math.radians(-90.0)),
    [160.0, -30.0, -70.0],
)
STALE_AFTER_MS = 50.0


@pytest.fixture(scope="module")
def phantom() -> Case:
    return load_case(SHIPPED_PHANTOM_DIR)


def _tracker_spec(ipc_dir: Path) -> NodeSpec:
    return NodeSpec(
        name="tracker",
        module="tracking.sim_node",
        pub=f"ipc://{ipc_dir}/tracker.pub",
        control=f"ipc://{ipc_dir}/tracker.ctl",
        rate_hz=100.0,
        params={"seed": 4, "dropout_rate_hz": 0.0},
    )


def _nav_spec(ipc_dir: Path, registration_file: Path, **params: object) -> NodeSpec:
    return NodeSpec(
        name="nav",
        module="nav.nav_node",
        pub=f"ipc://{ipc_dir}/nav.pub",
        control=f"ipc://{ipc_dir}/nav.ctl",
        subscribe=("tracker",),
        subscribe_endpoints=(f"ipc://{ipc_dir}/tracker.pub",),
        params={
            "registration_file": str(registration_file),
            "truth_T_reference_from_image": TRUTH.ravel().tolist(),
            "stale_after_ms": STALE_AFTER_MS,
            **params,
        },
    )


class Listener:
    """Every message a node publishes on the topics given, kept in order, with deadlines."""

    def __init__(self, endpoint: str, topics: tuple[str, ...]) -> None:
        self.sub = bus.QueueSubscriber([endpoint], topics)
        self.received: list[bus.Received] = []

    def pump(self, timeout_s: float = 0.05) -> list[bus.Received]:
        new = self.sub.poll(timeout_s)
        self.received += new
        return new

    def wait_for(
        self, predicate: Callable[[bus.Received], bool], *, timeout_s: float, what: str
    ) -> bus.Received:
        """The first message from now on that satisfies ``predicate``; fails at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for received in self.pump(0.05):
                if predicate(received):
                    return received
        raise AssertionError(f"no {what} within {timeout_s} s")

    def until(self, t_monotonic_s: float) -> None:
        """Keep receiving until the given time (a scripted instant, not a wait for a socket)."""
        while (left := t_monotonic_s - time.monotonic()) > 0:
            self.pump(min(left, 0.05))

    def close(self) -> None:
        self.sub.close()


def _state_is(status: NavStatus) -> Callable[[bus.Received], bool]:
    return lambda r: isinstance(r.message, NavState) and r.message.status is status


def _registration_is(state: str) -> Callable[[bus.Received], bool]:
    return lambda r: isinstance(r.message, RegistrationResult) and r.message.state == state


def _ok(reply: Reply) -> dict[str, object]:
    assert reply.ok, reply.error
    return dict(reply.result)


def _send(client: bus.CommandClient, request: PointerTouch) -> Reply:
    """A typed simulated-tracker request as its Command."""
    return client.request(Command(request.NAME, request.to_args()))


def _start_pair(
    ipc_dir: Path, registration_file: Path, node_processes: list[NodeProcess], **params: object
) -> tuple[NodeProcess, NodeProcess]:
    tracker = start_node(_tracker_spec(ipc_dir))
    node_processes.append(tracker)
    nav = start_node(_nav_spec(ipc_dir, registration_file, **params))
    node_processes.append(nav)
    return tracker, nav


def test_registration_by_dwell_on_the_simulator_is_accurate_and_the_model_follows_breathing(
    ipc_dir: Path, tmp_path: Path, node_processes: list[NodeProcess], phantom: Case
) -> None:
    registration_file = tmp_path / "registration.json"
    tracker, nav = _start_pair(ipc_dir, registration_file, node_processes)
    nav_client = bus.CommandClient(nav.spec.control or "")
    tracker_client = bus.CommandClient(tracker.spec.control or "")
    listener = Listener(nav.spec.pub or "", ("nav/", "heartbeat/nav"))
    frames = Listener(tracker.spec.pub or "", ("pose/sim",))
    try:
        listener.wait_for(_state_is(NavStatus.UNREGISTERED), timeout_s=10, what="first state")

        registration = SimRegistration(
            nav=nav_client,
            tracker=tracker_client,
            p_reference_fiducials=apply(TRUTH, phantom.fiducials.points_lps),
            plan=TouchPlan(travel_s=0.8, dwell_s=1.0),
        )
        started = registration.start()
        assert started.total == 8 and started.next_label == "F-1"
        # Poll the progress as an operator's UI would, receiving the nav node meanwhile.
        progress = registration.wait_collected(
            timeout_s=registration.plan.duration_s(8) + 5.0, between=lambda: listener.pump(0.1)
        )
        assert progress.done, progress

        figures = registration.compute()
        proposed = listener.wait_for(_registration_is("proposed"), timeout_s=5, what="proposal")
        assert isinstance(proposed.message, RegistrationResult)
        print(
            f"\nFRE {figures.fre_mm:.3f} mm; true TRE {figures.true_tre_mm}; "
            f"predicted TRE {figures.predicted_tre_mm}"
        )
        # Sim noise: 0.25 mm RMS per marker; each fiducial averages ~20 samples.
        assert figures.n_fiducials == 8
        assert figures.fre_mm < 0.5
        assert figures.true_tre_max_mm is not None and figures.true_tre_max_mm < 1.0
        assert set(figures.predicted_tre_mm) == set(phantom.targets.labels)
        np.testing.assert_allclose(proposed.message.fre_mm, figures.fre_mm)
        # A proposal is not shown: navigation waits for accept.
        listener.wait_for(_state_is(NavStatus.UNREGISTERED), timeout_s=2, what="unregistered")

        accepted = registration.accept()
        assert accepted.saved_to == str(registration_file)
        message = listener.wait_for(_registration_is("accepted"), timeout_s=5, what="accepted")
        assert isinstance(message.message, RegistrationResult)
        T_reference_from_image = message.message.T_reference_from_image
        stored = load_registration(registration_file)
        np.testing.assert_array_equal(
            stored.registration.T_reference_from_image, T_reference_from_image
        )
        assert stored.case_name == "phantom"

        # The model in the tracker frame follows the breathing reference, frame by frame.
        listener.wait_for(_state_is(NavStatus.OK), timeout_s=5, what="OK state")
        frames.pump(0.0)
        listener.until(time.monotonic() + 2.0)  # 2 s: half a breath at 0.25 Hz
        frames.pump(0.2)
        T_reference_by_frame = {
            r.message.frame_number: r.message.pose("reference").T_tracker_from_tool
            for r in frames.received
            if isinstance(r.message, TrackerFrame)
        }
        origins = []
        for r in listener.received:
            state = r.message
            if not isinstance(state, NavState) or state.status is not NavStatus.OK:
                continue
            T_ref = T_reference_by_frame.get(state.frame_number)
            if T_ref is None:
                continue
            np.testing.assert_allclose(
                state.T_tracker_from_image, T_ref @ T_reference_from_image, atol=1e-9
            )
            # and where the truth puts the model, within the registration's error
            assert np.linalg.norm(state.T_tracker_from_image[:3, 3] - (T_ref @ TRUTH)[:3, 3]) < 1.0
            origins.append(state.T_tracker_from_image[:3, 3])
        assert len(origins) > 100
        breathing_axis = np.array(DEFAULT_T_TRACKER_FROM_REFERENCE_BASE)[:3, 2]
        span_mm = float(np.ptp(np.array(origins) @ breathing_axis))
        assert span_mm > 1.5  # 4 mm peak to peak: at least 2 mm in any half breath

        # Touch a target: its distance reads ~0.
        target = phantom.targets.points_lps[0]
        _ok(
            _send(
                tracker_client,
                PointerTouch(points=[apply(TRUTH, target).tolist()], dwell_s=3.0, travel_s=0.3),
            )
        )
        on_target = listener.wait_for(
            lambda r: (
                isinstance(r.message, NavState)
                and r.message.pointer_status is ToolStatus.OK
                and r.message.target_distances_mm[0] < 1.0
            ),
            timeout_s=5,
            what="tip on the target",
        )
        assert isinstance(on_target.message, NavState)
        np.testing.assert_allclose(on_target.message.p_tip_image, target, atol=1.0)

        beat = listener.wait_for(
            lambda r: isinstance(r.message, Heartbeat) and r.message.counters["status_OK"] > 0,
            timeout_s=3,
            what="heartbeat",
        )
        assert isinstance(beat.message, Heartbeat)
        assert beat.message.counters["fiducials_collected"] == 8
        assert beat.message.counters["registrations_accepted"] == 1
        assert "p50" in beat.message.latency_ms
    finally:
        for closeable in (nav_client, tracker_client, listener, frames):
            closeable.close()
    assert tracker.terminate() == 0
    assert nav.terminate() == 0


def _write_registration(path: Path, phantom: Case) -> Registration:
    n = len(phantom.targets)
    registration = Registration(
        registration_id=123456789,
        state="accepted",
        method="points",
        T_reference_from_image=TRUTH,
        fre_mm=0.1,
        fiducial_errors_mm=np.full(8, 0.1),
        fle_mm=0.25,
        target_names=phantom.targets.labels,
        predicted_tre_mm=np.full(n, 0.2),
        true_tre_mm=np.full(n, np.nan),
        fiducial_labels=phantom.fiducials.labels,
    )
    save_registration(path, registration, case_name="phantom", created_unix_s=time.time())
    return registration


def test_stale_within_100_ms_of_the_last_frame_and_a_restart_restores_needing_verification(
    ipc_dir: Path, tmp_path: Path, node_processes: list[NodeProcess], phantom: Case
) -> None:
    registration_file = tmp_path / "registration.json"
    _write_registration(registration_file, phantom)
    tracker, nav = _start_pair(ipc_dir, registration_file, node_processes)
    listener = Listener(nav.spec.pub or "", ("nav/",))
    try:
        restored = listener.wait_for(_registration_is("restored"), timeout_s=5, what="restored")
        assert isinstance(restored.message, RegistrationResult)
        assert restored.message.needs_verification
        assert restored.message.registration_id == 123456789
        # The file names its fiducials and FLE; it names no case id (as a version 1 file):
        # checked by name and targets, it travels as a registration of the case loaded.
        assert restored.message.fle_mm == 0.25
        assert restored.message.fiducial_labels == phantom.fiducials.labels
        assert restored.message.case_id == case_id(phantom)
        assert np.all(restored.message.true_tre_mm < 1e-9)  # the truth it was written from
        ok = listener.wait_for(_state_is(NavStatus.OK), timeout_s=5, what="OK state")
        assert isinstance(ok.message, NavState) and ok.message.needs_verification

        tracker.process.send_signal(signal.SIGTERM)
        # Keep receiving while the tracker exits: a message's t_recv_ns is when it is read.
        deadline = time.monotonic() + 10
        while tracker.process.poll() is None and time.monotonic() < deadline:
            listener.pump(0.005)
        assert tracker.process.poll() == 0
        listener.wait_for(_state_is(NavStatus.STALE), timeout_s=5, what="STALE state")
        listener.until(time.monotonic() + 0.3)  # and it keeps saying so
        states = [r for r in listener.received if isinstance(r.message, NavState)]
        last_ok = max(i for i, r in enumerate(states) if r.message.status is NavStatus.OK)  # type: ignore[union-attr]
        after = [r.message for r in states[last_ok + 1 :]]
        assert all(m.status is NavStatus.STALE for m in after)  # type: ignore[union-attr]
        assert len(after) >= 4  # re-published every 50 ms while nothing arrives
        first_stale = states[last_ok + 1]
        t_last_frame_ns = states[last_ok].message.t_sensor_ns  # type: ignore[union-attr]
        assert first_stale.message.t_sensor_ns == t_last_frame_ns  # type: ignore[union-attr]
        delay_ms = (first_stale.t_recv_ns - t_last_frame_ns) / 1e6
        published_ms = (first_stale.envelope.t_pub_ns - t_last_frame_ns) / 1e6
        print(f"\nSTALE published {published_ms:.1f} ms, arrived {delay_ms:.1f} ms after t_sensor")
        assert STALE_AFTER_MS < delay_ms < 100.0

        nav.process.kill()  # SIGKILL: no clean-up, the file is all that survives
        assert nav.process.wait(timeout=10) == -signal.SIGKILL
        listener.close()
        nav = start_node(_nav_spec(ipc_dir, registration_file))
        node_processes.append(nav)
        listener = Listener(nav.spec.pub or "", ("nav/",))
        client = bus.CommandClient(nav.spec.control or "")
        try:
            restored = listener.wait_for(
                _registration_is("restored"), timeout_s=5, what="restored after restart"
            )
            assert isinstance(restored.message, RegistrationResult)
            assert restored.message.needs_verification
            state = listener.wait_for(
                lambda r: isinstance(r.message, NavState), timeout_s=5, what="state"
            )
            assert isinstance(state.message, NavState)
            assert state.message.needs_verification
            assert state.message.status is NavStatus.STALE  # registered, but no tracker
            assert state.message.registration_id == 123456789

            _ok(client.call("registration.verify"))
            verified = listener.wait_for(
                lambda r: (
                    isinstance(r.message, RegistrationResult) and not r.message.needs_verification
                ),
                timeout_s=5,
                what="verified registration",
            )
            assert isinstance(verified.message, RegistrationResult)
            assert verified.message.registration_id == 123456789
            listener.wait_for(
                lambda r: isinstance(r.message, NavState) and not r.message.needs_verification,
                timeout_s=2,
                what="verified state",
            )
        finally:
            client.close()
    finally:
        listener.close()
    assert nav.terminate() == 0


def test_pedal_collection_compute_reject_and_the_errors_an_operator_can_meet(
    ipc_dir: Path, tmp_path: Path, node_processes: list[NodeProcess], phantom: Case
) -> None:
    registration_file = tmp_path / "registration.json"
    tracker, nav = _start_pair(ipc_dir, registration_file, node_processes)
    nav_client = bus.CommandClient(nav.spec.control or "")
    tracker_client = bus.CommandClient(tracker.spec.control or "")
    listener = Listener(nav.spec.pub or "", ("nav/",))
    try:
        for name, error in (
            ("registration.collect", "registration.start first"),
            ("registration.compute", "registration.start first"),
            ("registration.accept", "registration.compute first"),
            ("registration.reject", "no proposed"),
            ("registration.verify", "no registration"),
        ):
            reply = nav_client.call(name)
            assert not reply.ok and error in reply.error, (name, reply.error)
        assert not nav_client.call("registration.start", method="deformable").ok
        misspelt = nav_client.call("registration.start", method="points", dwel=False)
        assert not misspelt.ok and "unknown argument 'dwel'" in misspelt.error
        assert _ok(nav_client.call("registration.status"))["collecting"] is False
        bad_case = nav_client.call("case.load", path=str(tmp_path / "nowhere"))
        assert not bad_case.ok and "case.toml" in bad_case.error

        _ok(nav_client.call("registration.start", method="points", dwell=False))
        n, travel_s, dwell_s = 4, 0.6, 1.0
        p_reference = apply(TRUTH, phantom.fiducials.points_lps[:n])
        _ok(
            _send(
                tracker_client,
                PointerTouch(points=p_reference.tolist(), dwell_s=dwell_s, travel_s=travel_s),
            )
        )
        t_script = time.monotonic()
        too_few = nav_client.call("registration.compute")
        assert not too_few.ok and "fiducials" in too_few.error
        for k in range(n):
            # 0.7 s into the k-th held touch: the last 0.4 s were all still.
            listener.until(t_script + (k + 1) * travel_s + k * dwell_s + 0.7 * dwell_s)
            collected = _ok(nav_client.call("registration.collect"))
            assert collected["label"] == phantom.fiducials.labels[k]
            assert collected["collected"] == k + 1
        computed = _ok(nav_client.call("registration.compute"))
        assert computed["n_fiducials"] == n
        assert float(computed["fre_mm"]) < 0.5  # type: ignore[arg-type]
        true_tre = computed["true_tre_mm"]
        assert isinstance(true_tre, dict)
        assert max(float(v) for v in true_tre.values()) < 1.5
        proposed = listener.wait_for(_registration_is("proposed"), timeout_s=5, what="proposal")
        # The facts a consumer needs travel with it: the 4 fiducials used, the FLE the
        # predicted TRE was computed with (the node's fle_mm), the case.
        assert isinstance(proposed.message, RegistrationResult)
        assert proposed.message.fiducial_labels == phantom.fiducials.labels[:n]
        assert proposed.message.fle_mm == 0.25 and proposed.message.method == "points"
        assert proposed.message.case_id == case_id(phantom)
        assert computed["fiducial_labels"] == list(phantom.fiducials.labels[:n])

        _ok(nav_client.call("registration.reject"))
        listener.wait_for(_registration_is("rejected"), timeout_s=5, what="rejection")
        listener.wait_for(_state_is(NavStatus.UNREGISTERED), timeout_s=2, what="unregistered")
        status = _ok(nav_client.call("registration.status"))
        assert status["active"] is None and status["proposal"] is None
        assert not registration_file.exists()  # nothing accepted, nothing written

        loaded = _ok(nav_client.call("case.load", path=str(SHIPPED_PHANTOM_DIR)))
        assert loaded["case"] == "phantom" and loaded["restored"] is False
        assert loaded["case_id"] == case_id(phantom)
        assert loaded["critical"] == ["portal_vein", "hepatic_vein", "bile_duct"]
        assert _ok(nav_client.call("registration.status"))["collecting"] is False
    finally:
        for closeable in (nav_client, tracker_client, listener):
            closeable.close()
    assert tracker.terminate() == 0
    assert nav.terminate() == 0


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"truth_T_reference_from_image": [1.0] * 16}, "truth_T_reference_from_image"),
        ({"truth_T_reference_from_image": [1.0, 0.0]}, "truth_T_reference_from_image"),
        ({"p_tip_in_pointer": [0.0, 0.0]}, "p_tip_in_pointer"),
        ({"p_tip_in_pointer": [0.0, 0.0, 0.0]}, "p_tip_in_pointer"),
        ({"pointer_tool": "Pointer"}, "pointer_tool"),
        ({"stale_after_ms": 0.0}, "stale_after_ms"),
        ({"fle_mm": -0.1}, "fle_mm"),
        ({"dwell_s": 0.0}, "dwell_s"),
        ({"tracker_topic": ""}, "tracker_topic"),
        ({"stale_after": 100.0}, "stale_after"),  # unknown keys are errors
    ],
)
def test_a_bad_nav_config_is_refused_naming_the_key(params: dict[str, object], key: str) -> None:
    spec = NodeSpec(name="nav", module="nav.nav_node", pub="ipc:///tmp/x", params=params)
    with pytest.raises(ConfigError, match=key):
        node_config(spec)


def _not_rigid(document: dict[str, Any]) -> None:
    document["T_reference_from_image"][0][0] = 2.0


def _of_a_changed_case(document: dict[str, Any]) -> None:
    # Same case name and targets, but the case it registered had other content.
    document["case_id"] = "0" * 64


def _with_a_fiducial_the_case_lacks(document: dict[str, Any]) -> None:
    document["fiducial_labels"] = [f"F-{i}" for i in range(1, 8)] + ["F-99"]


@pytest.mark.parametrize(
    "corrupt", [_not_rigid, _of_a_changed_case, _with_a_fiducial_the_case_lacks]
)
def test_a_corrupt_registration_file_is_ignored_and_the_node_runs_unregistered(
    ipc_dir: Path,
    tmp_path: Path,
    node_processes: list[NodeProcess],
    phantom: Case,
    corrupt: Callable[[dict[str, Any]], None],
) -> None:
    registration_file = tmp_path / "registration.json"
    _write_registration(registration_file, phantom)
    document = json.loads(registration_file.read_text())
    corrupt(document)
    registration_file.write_text(json.dumps(document))
    nav = start_node(_nav_spec(ipc_dir, registration_file))  # no tracker at all
    node_processes.append(nav)
    listener = Listener(nav.spec.pub or "", ("nav/", "heartbeat/nav"))
    try:
        listener.wait_for(_state_is(NavStatus.UNREGISTERED), timeout_s=5, what="state")
        beat = listener.wait_for(
            lambda r: isinstance(r.message, Heartbeat), timeout_s=3, what="heartbeat"
        )
        assert isinstance(beat.message, Heartbeat)
        assert beat.message.counters["registration_file_refused"] == 1
        assert not any(isinstance(r.message, RegistrationResult) for r in listener.received)
    finally:
        listener.close()
    assert nav.terminate() == 0


def test_a_restarted_tracker_whose_clock_maps_earlier_is_followed_at_once(
    ipc_dir: Path, tmp_path: Path, node_processes: list[NodeProcess]
) -> None:
    """Issue 10 item 1: order holds within one tracker process (epoch), not across a restart.

    The first tracker stamps its samples 2 s ahead (a device clock mapped onto the host);
    its restart maps the clock anew, onto now. Before epochs, nav dropped every sample of the
    new tracker as out of order until its clock passed the old one's: a 2 s freeze.
    """
    nav = start_node(_nav_spec(ipc_dir, tmp_path / "registration.json"))
    node_processes.append(nav)
    states = Listener(nav.spec.pub or "", ("nav/state",))
    tracker = SimulatedTracker(SimConfig(seed=9, dropout_rate_hz=0.0))
    endpoint = f"ipc://{ipc_dir}/tracker.pub"
    try:
        first = bus.Publisher(endpoint, epoch=1)
        ahead_ns = 2_000_000_000
        n = 0
        seen_first = False
        deadline = time.monotonic() + 10
        while not seen_first:
            assert time.monotonic() < deadline, "nav never followed the first tracker"
            first.publish(
                "pose/sim",
                tracker.sample(0.0, frame_number=n, t_sensor_ns=time.monotonic_ns() + ahead_ns),
            )
            n += 1
            seen_first = any(
                isinstance(r.message, NavState) and r.message.frame_number > 0
                for r in states.pump(0.01)
            )
        first.close()
        second = bus.Publisher(endpoint, epoch=2)  # restarted: frame numbers and clock anew
        t_restart = time.monotonic()
        followed_after_s = None
        for k in range(300):  # 3 s at 100 Hz
            second.publish(
                "pose/sim",
                tracker.sample(0.0, frame_number=100_000 + k, t_sensor_ns=time.monotonic_ns()),
            )
            if any(
                isinstance(r.message, NavState) and r.message.frame_number >= 100_000
                for r in states.pump(0.01)
            ):
                followed_after_s = time.monotonic() - t_restart
                break
        second.close()
        client = bus.CommandClient(nav.spec.control or "")
        status = client.call("status", timeout_s=5)
        client.close()
    finally:
        states.close()
    assert followed_after_s is not None, "nav never followed the restarted tracker"
    assert followed_after_s < 1.0, f"nav froze {followed_after_s:.2f} s after the restart"
    assert status.result.get("frames_out_of_order", 0) == 0  # type: ignore[union-attr]
    assert nav.terminate() == 0

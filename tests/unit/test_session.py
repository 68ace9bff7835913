"""The navigator session without sockets or clocks: frames fed by hand, every time given.

The reference marker sits at the tracker origin, so a tip at ``p`` in the tracker is at
``p`` in the reference frame; the simulation's truth (``TRUTH``, as in the node tests)
puts the case's fiducials there. What the session emits is kept, as the node would
publish it; its replies are the typed control messages.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nav.case import Case, CaseError, load_case
from nav.messages import (
    AcceptRegistration,
    CollectFiducial,
    ComputeRegistration,
    FiducialProgress,
    FiducialsProposed,
    GetRegistrationStatus,
    LoadCase,
    NavStatus,
    RejectRegistration,
    StartCollection,
    ToolStatus,
    TrackerFrame,
    VerifyRegistration,
)
from nav.nav_node import Config
from nav.navigation import Registration
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration_store import load_registration
from nav.runtime import bus
from nav.session import NavigatorSession
from nav.transforms import apply, axis_angle_to_matrix, make_rigid

P_TIP = np.array([0.0, 0.0, -160.0])
TRUTH = make_rigid(
    axis_angle_to_matrix([0.0, 0.0, 1.0], math.radians(15.0))
    @ axis_angle_to_matrix([1.0, 0.0, 0.0], math.radians(-90.0)),
    [160.0, -30.0, -70.0],
)
STEP_NS = 10_000_000  # 100 Hz
T0_NS = 5_000_000_000


@pytest.fixture(scope="module")
def phantom() -> Case:
    return load_case(SHIPPED_PHANTOM_DIR)


class _Run:
    """A session and its simulated pointer: ``hold`` keeps the tip at a point."""

    def __init__(self, case: Case, tmp_path: Path, **params: object) -> None:
        cfg = Config(
            truth_T_reference_from_image=tuple(TRUTH.ravel().tolist()),
            registration_file=str(tmp_path / "registration.json"),
            **params,  # type: ignore[arg-type]
        )
        self.emitted: list[Registration] = []
        self.counters = bus.Counters()
        self.session = NavigatorSession(
            cfg.session_settings(P_TIP), case, emit=self.emitted.append, counters=self.counters
        )
        self.t_ns = T0_NS
        self.frame_number = 0

    def hold(self, p_reference: np.ndarray, seconds: float) -> None:
        for _ in range(round(seconds * 1e9 / STEP_NS)):
            self.t_ns += STEP_NS
            self.frame_number += 1
            T_pointer = make_rigid(np.eye(3), np.asarray(p_reference) - P_TIP)
            self.session.on_frame(
                TrackerFrame(
                    "sim",
                    self.t_ns,
                    self.frame_number,
                    ("pointer", "reference"),
                    np.stack([T_pointer, np.eye(4)]),
                    (ToolStatus.OK, ToolStatus.OK),
                    np.zeros(2),
                )
            )


def _fiducials(case: Case) -> np.ndarray:
    return apply(TRUTH, case.fiducials.points_lps)


def test_dwelling_on_each_fiducial_collects_them_in_order_and_the_proposal_is_the_truth(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    started = run.session.start(StartCollection(method="points", dwell=True))
    assert started == FiducialProgress(
        collected=0, total=8, labels=phantom.fiducials.labels, next_label="F-1"
    )
    for p in _fiducials(phantom)[:4]:
        run.hold(p + 50.0, 0.2)  # the approach, away from the fiducial
        run.hold(p, 0.6)  # a dwell longer than the 0.4 s window
    assert run.counters["fiducials_collected"] == 4
    proposed = run.session.compute(ComputeRegistration(), now_unix_ns=1_700_000_000_000_000_000)
    assert isinstance(proposed, FiducialsProposed)
    assert proposed.n_fiducials == 4
    assert proposed.summary.registration_id == 1_700_000_000_000_000_000  # the time given
    assert proposed.summary.fiducial_labels == phantom.fiducials.labels[:4]
    assert proposed.summary.fre_mm < 1e-6  # noiseless touches
    true_tre = [v for v in proposed.summary.true_tre_mm.values() if v is not None]
    assert len(true_tre) == len(phantom.targets) and max(true_tre) < 1e-6
    (emitted,) = run.emitted
    assert emitted.state == "proposed" and emitted.registration_id == 1_700_000_000_000_000_000


def test_registration_ids_grow_even_when_the_wall_clock_steps_back(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    run.session.start(StartCollection(dwell=False))
    for p in _fiducials(phantom)[:3]:
        run.hold(p, 0.5)
        run.session.collect(CollectFiducial(), now_ns=run.t_ns)
    first = run.session.compute(ComputeRegistration(), now_unix_ns=2_000)
    second = run.session.compute(ComputeRegistration(), now_unix_ns=1_000)  # NTP stepped back
    assert isinstance(first, FiducialsProposed) and isinstance(second, FiducialsProposed)
    assert second.summary.registration_id == first.summary.registration_id + 1


def test_a_pedal_press_takes_the_time_given_and_refuses_a_tip_not_seen_since(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    with pytest.raises(ValueError, match="registration.start first"):
        run.session.collect(CollectFiducial(), now_ns=run.t_ns)
    run.session.start(StartCollection(dwell=False))
    p = _fiducials(phantom)[0]
    run.hold(p, 0.5)  # no dwell recording: pedal only
    assert run.counters["fiducials_collected"] == 0
    with pytest.raises(ValueError, match="not seen"):  # 1 s after the last sample
        run.session.collect(CollectFiducial(), now_ns=run.t_ns + 1_000_000_000)
    collected = run.session.collect(CollectFiducial(), now_ns=run.t_ns)
    assert collected.label == "F-1" and collected.progress.collected == 1
    with pytest.raises(ValueError, match="fiducials"):  # 1 of 3 at least: nothing changes
        run.session.compute(ComputeRegistration(), now_unix_ns=1)
    assert run.session.proposal is None and run.emitted == []


def test_accept_writes_the_file_dated_as_given_and_a_new_session_restores_it_for_verification(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    run.session.start(StartCollection(dwell=False))
    for p in _fiducials(phantom)[:4]:
        run.hold(p, 0.5)
        run.session.collect(CollectFiducial(), now_ns=run.t_ns)
    run.session.compute(ComputeRegistration(), now_unix_ns=42)
    accepted = run.session.accept(AcceptRegistration(), now_unix_s=1_700_000_000.5)
    assert accepted.registration_id == 42
    assert accepted.saved_to == str(tmp_path / "registration.json")
    assert load_registration(tmp_path / "registration.json").created_unix_s == 1_700_000_000.5
    assert run.session.status(GetRegistrationStatus()).collecting is False
    assert run.session.state(run.t_ns).status is NavStatus.OK

    again = _Run(phantom, tmp_path)
    again.session.restore()
    (restored,) = again.emitted
    assert restored.state == "restored" and restored.needs_verification
    status = again.session.status(GetRegistrationStatus())
    assert status.active is not None and status.active.needs_verification
    assert again.session.verify(VerifyRegistration()).registration_id == 42
    assert not again.emitted[-1].needs_verification
    with pytest.raises(ValueError, match="no proposed registration to reject"):
        again.session.reject(RejectRegistration())


def test_the_state_turns_stale_at_the_time_given_not_at_a_clock_read(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path, stale_after_ms=100.0)
    run.session.start(StartCollection(dwell=False))
    for p in _fiducials(phantom)[:3]:
        run.hold(p, 0.5)
        run.session.collect(CollectFiducial(), now_ns=run.t_ns)
    run.session.compute(ComputeRegistration(), now_unix_ns=7)
    run.session.accept(AcceptRegistration(), now_unix_s=0.0)
    last_ns = run.t_ns
    assert run.session.state(last_ns + 100_000_000).status is NavStatus.OK
    assert run.session.state(last_ns + 100_000_001).status is NavStatus.STALE


def test_a_case_that_cannot_be_loaded_changes_nothing(phantom: Case, tmp_path: Path) -> None:
    run = _Run(phantom, tmp_path)
    run.session.start(StartCollection())
    with pytest.raises(CaseError):
        run.session.load(LoadCase(path=str(tmp_path / "nowhere")))
    status = run.session.status(GetRegistrationStatus())
    assert status.case == "phantom" and status.collecting and status.method == "points"
    loaded = run.session.load(LoadCase(path=str(SHIPPED_PHANTOM_DIR)))
    assert loaded.case == "phantom" and loaded.restored is False
    assert run.session.status(GetRegistrationStatus()).collecting is False

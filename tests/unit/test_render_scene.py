"""The headset scene: poses in the tracker frame, the overlay rule, debounced alerts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nav.messages import (
    AlertSeverity,
    NavState,
    NavStatus,
    OverlayState,
    RegistrationResult,
    SceneUpdate,
    ToolStatus,
    TrackerFrame,
    decode,
    encode,
)
from nav.transforms import axis_angle_to_matrix, invert_rigid, make_rigid
from render.render_node import load_display_calibration
from render.scene import (
    CONDITION_ALERTS,
    MAX_KNOWN_REGISTRATIONS,
    AlertMachine,
    HeadsetSample,
    OverlayLimits,
    SceneState,
    condition_code,
    headset_sample,
    overlay_state,
)
from render.snapshot import DisplayCamera

SESSION = "0123456789abcdef0123456789abcdef"
MS = 1_000_000
T0 = 10_000 * MS  # a sensor time well after the clock's origin
STRUCTURES = ("liver", "tumor", "portal_vein")
SIM_DISPLAY = load_display_calibration("")  # the shipped simulated headset's calibration
CASE = "c" * 64  # the case whose models the scene draws
OTHER_CASE = "d" * 64


def rigid(axis: tuple[float, float, float], angle_deg: float, t: tuple[float, ...]) -> np.ndarray:
    return make_rigid(axis_angle_to_matrix(list(axis), math.radians(angle_deg)), list(t))


def nav(
    status: NavStatus = NavStatus.OK,
    *,
    t_sensor_ns: int = T0,
    T_tracker_from_image: np.ndarray | None = None,
    p_tip_image: tuple[float, float, float] = (10.0, 20.0, 30.0),
    registration_id: int = 7,
    needs_verification: bool = False,
    case_id: str = "",
) -> NavState:
    ok = status is NavStatus.OK
    return NavState(
        t_sensor_ns=t_sensor_ns,
        frame_number=t_sensor_ns // MS,
        status=status,
        needs_verification=needs_verification,
        registration_id=registration_id if status is not NavStatus.UNREGISTERED else 0,
        T_tracker_from_image=(
            T_tracker_from_image
            if ok and T_tracker_from_image is not None
            else (rigid((0, 0, 1), 20, (100, -50, 1200)) if ok else np.eye(4))
        ),
        pointer_status=ToolStatus.OK,
        p_tip_image=np.array(p_tip_image if ok else (np.nan,) * 3),
        target_names=("t1", "t2"),
        target_distances_mm=np.array([5.0, 9.0]) if ok else np.full(2, np.nan),
        critical_names=("portal_vein",),
        critical_distances_mm=np.array([3.0]) if ok else np.full(1, np.nan),
        predicted_tre_mm=0.4,
        case_id=case_id,
    )


def headset(
    t_sensor_ns: int = T0, status: ToolStatus = ToolStatus.OK, T: np.ndarray | None = None
) -> HeadsetSample:
    T_default = rigid((1, 0, 0), -30, (0, 300, 400))
    return HeadsetSample(T_default if T is None else T, status, t_sensor_ns)


def state() -> SceneState:
    """A scene of ``CASE`` that has seen registrations 2, 7 and 8, all of ``CASE``."""
    s = SceneState(
        session=SESSION,
        scene_version=5,
        structure_names=STRUCTURES,
        case_id=CASE,
    )
    for registration_id in (2, 7, 8):
        s.on_registration(_registration("accepted", registration_id))
    return s


def roundtrip(update: SceneUpdate) -> SceneUpdate:
    message = decode(encode(update, seq=0, t_pub_ns=1)).message
    assert isinstance(message, SceneUpdate)
    return message


# --- the chain ---------------------------------------------------------------------------


def _camera(T_display_from_headset: np.ndarray) -> DisplayCamera:
    return DisplayCamera(np.eye(3), 640, 480, T_display_from_headset)


def test_structure_pose_is_the_composed_chain_in_closed_form() -> None:
    # Protocol 2 sends the model in the tracker frame; a marker-placed client composes the
    # display chain. Headset marker 1 m in front of the tracker, turned 180 deg about y;
    # display = marker shifted 50 mm; model 100 mm right of the tracker origin: the model
    # ends up 1000 mm ahead of the display, mirrored in x, shifted by the display offset.
    T_tracker_from_headset = rigid((0, 1, 0), 180, (0, 0, 1000))
    T_display_from_headset = rigid((0, 0, 1), 0, (0, 50, 0))
    T_tracker_from_image = rigid((0, 0, 1), 0, (100, 0, 0))
    s = state()
    s.on_headset(headset(T=T_tracker_from_headset))
    s.on_nav(nav(T_tracker_from_image=T_tracker_from_image, p_tip_image=(0.0, 0.0, 0.0)))
    update = roundtrip(s.update(T0 + 5 * MS))
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-1.0, 1.0, -1.0])
    expected[:3, 3] = [-100.0, 50.0, 1000.0]
    assert update.overlay is OverlayState.CURRENT and update.status is NavStatus.OK
    assert update.structure_names == STRUCTURES
    np.testing.assert_allclose(update.T_tracker_from_headset, T_tracker_from_headset, atol=1e-12)
    np.testing.assert_allclose(update.p_tip_tracker, [100.0, 0.0, 0.0], atol=1e-9)
    T_display_from_tracker = _camera(T_display_from_headset).display_from_tracker(update)
    assert T_display_from_tracker is not None
    for T in update.T_tracker_from_structures:
        np.testing.assert_allclose(T, T_tracker_from_image, atol=1e-12)
        np.testing.assert_allclose(T_display_from_tracker @ T, expected, atol=1e-9)
    np.testing.assert_allclose(
        T_display_from_tracker @ np.append(update.p_tip_tracker, 1.0),
        [-100.0, 50.0, 1000.0, 1.0],
        atol=1e-9,
    )
    assert update.age_ms == pytest.approx(5.0)
    assert update.t_sensor_ns == T0 and update.frame_number == T0 // MS
    np.testing.assert_array_equal(update.target_distances_mm, [5.0, 9.0])
    assert update.session == SESSION and update.scene_version == 5


def _rigid_strategy() -> st.SearchStrategy[np.ndarray]:
    unit = st.floats(-1.0, 1.0, allow_nan=False)
    return st.builds(
        lambda ax, ay, az, angle, tx, ty, tz: make_rigid(
            axis_angle_to_matrix(
                [ax, ay, az] if abs(ax) + abs(ay) + abs(az) > 1e-3 else [0, 0, 1], angle
            ),
            [tx, ty, tz],
        ),
        unit,
        unit,
        unit,
        st.floats(-math.pi, math.pi),
        *(st.floats(-2000.0, 2000.0),) * 3,
    )


@given(
    T_display_from_headset=_rigid_strategy(),
    T_tracker_from_headset=_rigid_strategy(),
    T_tracker_from_image=_rigid_strategy(),
    p_image=st.tuples(*(st.floats(-300.0, 300.0),) * 3),
)
def test_a_point_of_the_model_lands_where_the_chain_puts_it(
    T_display_from_headset: np.ndarray,
    T_tracker_from_headset: np.ndarray,
    T_tracker_from_image: np.ndarray,
    p_image: tuple[float, float, float],
) -> None:
    s = state()
    s.on_headset(headset(T=T_tracker_from_headset))
    s.on_nav(nav(T_tracker_from_image=T_tracker_from_image, p_tip_image=p_image))
    update = roundtrip(s.update(T0))
    # Differential: a general inverse rather than the rigid one the client uses.
    T = T_display_from_headset @ np.linalg.inv(T_tracker_from_headset) @ T_tracker_from_image
    p = np.append(p_image, 1.0)
    T_display_from_tracker = _camera(T_display_from_headset).display_from_tracker(update)
    assert T_display_from_tracker is not None
    for T_structure in update.T_tracker_from_structures:
        np.testing.assert_allclose(T_structure @ p, T_tracker_from_image @ p, atol=1e-6)
        np.testing.assert_allclose(T_display_from_tracker @ T_structure @ p, T @ p, atol=1e-6)
    np.testing.assert_allclose(update.p_tip_tracker, (T_tracker_from_image @ p)[:3], atol=1e-6)
    # And back: display -> headset -> tracker recovers the model's tracker position.
    p_display = T_display_from_tracker @ np.append(update.p_tip_tracker, 1.0)
    back = T_tracker_from_headset @ invert_rigid(T_display_from_headset) @ p_display
    np.testing.assert_allclose(back, T_tracker_from_image @ p, atol=1e-6)


def test_headset_sample_is_taken_from_the_tracker_frame() -> None:
    T = rigid((0, 0, 1), 10, (1, 2, 3))
    frame = TrackerFrame(
        tracker="sim",
        t_sensor_ns=T0,
        frame_number=3,
        tools=("pointer", "headset"),
        T_tracker_from_tools=np.stack([np.eye(4), T]),
        statuses=(ToolStatus.OK, ToolStatus.OUT_OF_VIEW),
        fit_errors_mm=np.array([0.1, np.nan]),
    )
    sample = headset_sample(frame, "headset")
    assert sample is not None and sample.status is ToolStatus.OUT_OF_VIEW
    np.testing.assert_array_equal(sample.T_tracker_from_headset, T)
    assert sample.t_sensor_ns == T0
    assert headset_sample(frame, "other") is None


# --- the overlay rule --------------------------------------------------------------------

LIMITS = OverlayLimits()


@pytest.mark.parametrize(
    ("status", "headset_ok", "has_pose", "age_ms", "expected"),
    [
        (NavStatus.OK, True, True, 0.0, OverlayState.CURRENT),
        (NavStatus.OK, True, True, 100.0, OverlayState.CURRENT),  # at the limit: still current
        (NavStatus.OK, True, True, 100.000001, OverlayState.STALE),
        (NavStatus.OK, True, True, 300.0, OverlayState.STALE),
        (NavStatus.OK, True, True, 300.000001, OverlayState.HIDDEN),
        (NavStatus.STALE, True, True, 50.0, OverlayState.STALE),  # nav says stale: never current
        (NavStatus.STALE, True, True, 300.000001, OverlayState.HIDDEN),
        (NavStatus.STALE, True, False, 50.0, OverlayState.HIDDEN),  # nothing OK to draw
        (NavStatus.REFERENCE_LOST, True, True, 0.0, OverlayState.HIDDEN),
        (NavStatus.UNREGISTERED, True, True, 0.0, OverlayState.HIDDEN),
        (NavStatus.OK, False, True, 0.0, OverlayState.HIDDEN),  # headset lost
        (NavStatus.STALE, False, True, 150.0, OverlayState.HIDDEN),
    ],
)
def test_overlay_rule_table(
    status: NavStatus, headset_ok: bool, has_pose: bool, age_ms: float, expected: OverlayState
) -> None:
    age_ns = round(age_ms * MS)
    got = overlay_state(
        status, headset_ok=headset_ok, has_pose=has_pose, age_ns=age_ns, limits=LIMITS
    )
    assert got is expected


def test_limits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="stale_after"):
        OverlayLimits(stale_after_ns=300 * MS, hide_after_ns=100 * MS)


def test_a_silent_nav_node_turns_the_overlay_stale_then_hidden_by_age_alone() -> None:
    s = state()
    s.on_headset(headset())
    s.on_nav(nav())
    assert s.update(T0 + 100 * MS).overlay is OverlayState.CURRENT
    stale = roundtrip(s.update(T0 + 100 * MS + 1))
    assert stale.overlay is OverlayState.STALE
    assert stale.status is NavStatus.STALE  # OK from nav, but too old: stale as seen here
    assert np.isfinite(stale.T_tracker_from_structures).all()
    hidden = roundtrip(s.update(T0 + 300 * MS + 1))
    assert hidden.overlay is OverlayState.HIDDEN
    np.testing.assert_array_equal(hidden.T_tracker_from_structures, np.stack([np.eye(4)] * 3))
    assert np.isnan(hidden.p_tip_tracker).all() and np.isnan(hidden.target_distances_mm).all()
    assert s.transition_times_ns() == (T0 + 100 * MS, T0 + 300 * MS)


def test_nav_stale_draws_the_last_ok_pose_of_the_same_registration_only() -> None:
    s = state()
    s.on_headset(headset())
    s.on_nav(nav(t_sensor_ns=T0))
    current = s.update(T0)
    s.on_nav(nav(NavStatus.STALE, t_sensor_ns=T0))  # nav's stale state carries identity
    stale = roundtrip(s.update(T0 + 120 * MS))
    assert stale.overlay is OverlayState.STALE
    np.testing.assert_array_equal(
        stale.T_tracker_from_structures, current.T_tracker_from_structures
    )
    # A different registration's STALE must not bring back the old pose.
    s.on_nav(nav(NavStatus.STALE, t_sensor_ns=T0, registration_id=8))
    assert s.update(T0 + 120 * MS).overlay is OverlayState.HIDDEN


def test_reference_lost_forgets_the_last_pose_so_it_never_comes_back_as_stale() -> None:
    s = state()
    s.on_headset(headset())
    s.on_nav(nav(t_sensor_ns=T0))
    s.on_nav(nav(NavStatus.REFERENCE_LOST, t_sensor_ns=T0 + 10 * MS))
    lost = roundtrip(s.update(T0 + 10 * MS))
    assert (lost.overlay, lost.status) == (OverlayState.HIDDEN, NavStatus.REFERENCE_LOST)
    s.on_nav(nav(NavStatus.STALE, t_sensor_ns=T0 + 10 * MS))
    assert s.update(T0 + 20 * MS).overlay is OverlayState.HIDDEN


def test_age_counts_from_the_older_of_the_nav_and_headset_samples() -> None:
    s = state()
    s.on_headset(headset(t_sensor_ns=T0 - 150 * MS))  # headset from a stalled source
    s.on_nav(nav(t_sensor_ns=T0))
    update = s.update(T0)
    assert update.overlay is OverlayState.STALE and update.age_ms == pytest.approx(150.0)
    assert update.t_sensor_ns == T0 - 150 * MS


def test_headset_lost_hides_and_nothing_at_all_is_hidden_and_still_encodes() -> None:
    s = state()
    empty = roundtrip(s.update(T0))
    assert empty.overlay is OverlayState.HIDDEN and empty.headset_ok is False
    s.on_nav(nav())
    s.on_headset(headset(status=ToolStatus.OUT_OF_VIEW))
    lost = roundtrip(s.update(T0))
    assert (lost.overlay, lost.headset_ok, lost.status) == (
        OverlayState.HIDDEN,
        False,
        NavStatus.OK,
    )


# --- alerts ------------------------------------------------------------------------------


def _update(
    overlay: OverlayState,
    status: NavStatus = NavStatus.OK,
    *,
    headset_ok: bool = True,
    needs_verification: bool = False,
    registration_id: int = 7,
) -> SceneUpdate:
    s = state()
    s.on_headset(headset(status=ToolStatus.OK if headset_ok else ToolStatus.MISSING))
    n = nav(status, registration_id=registration_id, needs_verification=needs_verification)
    s.on_nav(n)
    age = {OverlayState.CURRENT: 0, OverlayState.STALE: 200 * MS, OverlayState.HIDDEN: 400 * MS}
    update = s.update(T0 + (age[overlay] if status is NavStatus.OK and headset_ok else 0))
    if status is NavStatus.OK and headset_ok:
        assert update.overlay is overlay
    return update


def test_a_flapping_reference_raises_one_alert_not_hundreds() -> None:
    machine = AlertMachine()
    ok = _update(OverlayState.CURRENT)
    lost = _update(OverlayState.HIDDEN, NavStatus.REFERENCE_LOST)
    codes: list[str] = []
    t = T0
    for i in range(400):  # 20 s of a marker flapping at 10 Hz, one update per 25 ms
        t += 25 * MS
        codes += [e.code for e in machine.on_scene(lost if (i // 2) % 2 else ok, t)]
    # One alert, then one reminder per repeat_after (10 s): never RECOVERED mid-flap.
    assert codes[0] == "REFERENCE_LOST"
    assert codes.count("REFERENCE_LOST") <= 2 and "RECOVERED" not in codes
    for _ in range(40):  # steady for a second: the episode closes, once
        t += 25 * MS
        codes += [e.code for e in machine.on_scene(ok, t)]
    assert codes[-1] == "RECOVERED" and codes.count("RECOVERED") == 1


def test_stale_then_hidden_then_recovered_each_raise_once_with_severity() -> None:
    machine = AlertMachine()
    t = T0
    events = []
    for overlay, n in (
        (OverlayState.CURRENT, 5),
        (OverlayState.STALE, 5),
        (OverlayState.HIDDEN, 5),
    ):
        for _ in range(n):
            t += 30 * MS
            events += machine.on_scene(_update(overlay), t)
    assert [(e.code, e.severity) for e in events] == [
        ("STALE", AlertSeverity.WARNING),
        ("HIDDEN", AlertSeverity.CRITICAL),
    ]
    assert machine.standing_codes() == ("HIDDEN",)
    recovered = []
    for _ in range(30):
        t += 30 * MS
        recovered += machine.on_scene(_update(OverlayState.CURRENT), t)
    assert [e.code for e in recovered] == ["RECOVERED"]
    assert machine.standing_codes() == ()


def test_headset_lost_and_unregistered_are_their_own_codes() -> None:
    machine = AlertMachine()
    first = machine.on_scene(_update(OverlayState.HIDDEN, NavStatus.UNREGISTERED), T0)
    second = machine.on_scene(_update(OverlayState.CURRENT, headset_ok=False), T0 + MS)
    assert [e.code for e in first + second] == ["UNREGISTERED", "HEADSET_LOST"]


def _registration(
    state_: str, registration_id: int, needs: bool = False, case_id: str = CASE
) -> RegistrationResult:
    return RegistrationResult(
        registration_id=registration_id,
        state=state_,
        method="points",
        needs_verification=needs,
        T_reference_from_image=np.eye(4),
        fre_mm=0.123,
        fiducial_errors_mm=np.array([0.1]),
        target_names=(),
        predicted_tre_mm=np.zeros(0),
        true_tre_mm=np.zeros(0),
        case_id=case_id,
    )


def test_registration_events_alert_once_though_the_nav_node_republishes_them() -> None:
    machine = AlertMachine()
    events = []
    for _ in range(3):  # nav republishes the active registration every second
        events += machine.on_registration(_registration("proposed", 1))
        events += machine.on_registration(_registration("accepted", 1))
    assert [(e.code, e.text) for e in events] == [
        ("REGISTRATION_ACCEPTED", "Registration accepted: FRE 0.12 mm")
    ]
    restored = machine.on_registration(_registration("restored", 2, needs=True))
    restored += machine.on_registration(_registration("restored", 2, needs=True))
    # The same fact seen on nav/state does not raise it again.
    restored += machine.on_scene(
        _update(OverlayState.CURRENT, needs_verification=True, registration_id=2), T0
    )
    assert [e.code for e in restored] == ["NEEDS_VERIFICATION"]
    assert "NEEDS_VERIFICATION" in machine.standing_codes()
    machine.on_scene(_update(OverlayState.CURRENT, registration_id=2), T0 + MS)
    assert "NEEDS_VERIFICATION" not in machine.standing_codes()


# --- one case ----------------------------------------------------------------------------


def test_a_registration_of_another_case_is_never_drawn_until_the_case_is_loaded() -> None:
    s = state()
    s.on_headset(headset())
    s.on_nav(nav(t_sensor_ns=T0))
    assert s.update(T0).overlay is OverlayState.CURRENT
    # The nav node loaded another case and registered it: registration 9 of OTHER_CASE.
    s.on_registration(_registration("accepted", 9, case_id=OTHER_CASE))
    s.on_nav(nav(t_sensor_ns=T0 + MS, registration_id=9))
    hidden = roundtrip(s.update(T0 + MS))
    assert (hidden.overlay, hidden.status) == (OverlayState.HIDDEN, NavStatus.OK)
    assert hidden.registration_id == 9
    np.testing.assert_array_equal(
        hidden.T_tracker_from_structures, np.repeat(np.eye(4)[None], 3, 0)
    )
    assert np.isnan(hidden.p_tip_tracker).all()
    assert s.case_code(9) == "CASE_MISMATCH" and s.transition_times_ns() == ()
    # Its STALE state does not bring back the old case's pose either.
    s.on_nav(nav(NavStatus.STALE, t_sensor_ns=T0 + MS, registration_id=9))
    assert s.update(T0 + 2 * MS).overlay is OverlayState.HIDDEN
    # The render node loaded that case: drawn, with its structures and scene version.
    s.set_case(OTHER_CASE, ("liver", "tumor"), 6)
    s.on_nav(nav(t_sensor_ns=T0 + 3 * MS, registration_id=9))
    shown = roundtrip(s.update(T0 + 3 * MS))
    assert shown.overlay is OverlayState.CURRENT
    assert (shown.structure_names, shown.scene_version) == (("liver", "tumor"), 6)
    assert shown.T_tracker_from_structures.shape == (2, 4, 4)
    # ... and now a registration of the first case is the foreign one.
    s.on_nav(nav(t_sensor_ns=T0 + 4 * MS, registration_id=7))
    assert (
        s.update(T0 + 4 * MS).overlay is OverlayState.HIDDEN and s.case_code(7) == "CASE_MISMATCH"
    )


def test_an_unseen_or_caseless_registration_is_hidden_until_its_case_is_confirmed() -> None:
    s = state()
    s.on_headset(headset())
    s.on_nav(nav(t_sensor_ns=T0, registration_id=10))  # its RegistrationResult not yet here
    assert s.update(T0).overlay is OverlayState.HIDDEN
    assert s.case_code(10) == "CASE_UNCONFIRMED"
    s.on_registration(_registration("restored", 10, case_id=""))  # recorded before case ids
    assert s.update(T0).overlay is OverlayState.HIDDEN
    assert s.case_code(10) == "CASE_UNCONFIRMED"
    s.on_registration(_registration("restored", 10))
    assert s.update(T0).overlay is OverlayState.CURRENT and s.case_code(10) is None
    assert s.case_code(0) is None  # no registration: UNREGISTERED says it already


def test_a_nav_state_of_another_case_is_hidden_though_its_registration_id_is_known() -> None:
    """A restored file without a case id keeps its registration id across a case change:
    the nav state, which names its case, may arrive before the new registration does."""
    s = state()
    s.on_headset(headset())
    s.on_nav(nav(t_sensor_ns=T0, case_id=CASE))
    assert s.update(T0).overlay is OverlayState.CURRENT
    s.on_nav(nav(t_sensor_ns=T0 + MS, case_id=OTHER_CASE))  # same registration id 7
    hidden = roundtrip(s.update(T0 + MS))
    assert hidden.overlay is OverlayState.HIDDEN and s.case_code(7) == "CASE_MISMATCH"
    s.on_nav(nav(t_sensor_ns=T0 + 2 * MS))  # "" (a recording before case ids): as before
    assert s.update(T0 + 2 * MS).overlay is OverlayState.CURRENT


def test_a_registration_whose_models_could_not_be_built_is_hidden_with_its_own_alert() -> None:
    """A deformable registration whose field the render node could not draw: the undeformed
    models must never be drawn under its pose."""
    s = state()
    s.on_headset(headset())
    s.on_registration(_registration("accepted", 7))
    s.on_nav(nav(t_sensor_ns=T0))
    assert s.update(T0).overlay is OverlayState.CURRENT
    s.refuse_models(7)
    hidden = roundtrip(s.update(T0))
    assert hidden.overlay is OverlayState.HIDDEN and s.case_code(7) == "MODELS_UNAVAILABLE"
    assert np.all(np.isnan(hidden.p_tip_tracker))
    assert condition_code(hidden, s.case_code(7)) == "MODELS_UNAVAILABLE"
    assert CONDITION_ALERTS["MODELS_UNAVAILABLE"].severity is AlertSeverity.CRITICAL


def test_the_scene_remembers_a_bounded_number_of_registrations() -> None:
    s = state()
    for registration_id in range(100, 100 + MAX_KNOWN_REGISTRATIONS):
        s.on_registration(_registration("proposed", registration_id))
    assert s.case_code(100) is None
    s.on_registration(_registration("proposed", 1000))
    assert s.case_code(2) == "CASE_UNCONFIRMED"  # the oldest is forgotten
    assert s.case_code(1000) is None and s.case_code(100 + MAX_KNOWN_REGISTRATIONS - 1) is None


def test_a_case_mismatch_raises_its_own_critical_alert_then_recovered() -> None:
    machine = AlertMachine()
    s = state()
    s.on_headset(headset())
    s.on_registration(_registration("accepted", 9, case_id=OTHER_CASE))
    s.on_nav(nav(t_sensor_ns=T0, registration_id=9))
    hidden = s.update(T0)
    events = machine.on_scene(hidden, T0, s.case_code(hidden.registration_id))
    assert [(e.code, e.severity) for e in events] == [("CASE_MISMATCH", AlertSeverity.CRITICAL)]
    assert machine.standing_codes() == ("CASE_MISMATCH",)
    s.on_headset(headset(t_sensor_ns=T0 + 600 * MS))
    s.on_nav(nav(t_sensor_ns=T0 + 600 * MS, registration_id=7))
    current = s.update(T0 + 600 * MS)
    assert current.overlay is OverlayState.CURRENT
    later = machine.on_scene(current, T0 + 600 * MS, s.case_code(current.registration_id))
    later += machine.on_scene(current, T0 + 1200 * MS, s.case_code(current.registration_id))
    assert [e.code for e in later] == ["RECOVERED"]

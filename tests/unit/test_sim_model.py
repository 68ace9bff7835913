"""Tests of the simulated tracker: determinism, noise statistics, breathing, occlusions,
the scripted pointer, and that its frames survive the wire."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.messages import ToolStatus, TrackerFrame, decode, encode
from nav.transforms import apply, invert_rigid, is_rigid, make_rigid, rotation_distance_rad
from tracking.sim_model import (
    IDLE,
    PointerScript,
    SimConfig,
    SimulatedTracker,
)

SETTINGS = settings(derandomize=True, deadline=None, max_examples=25)

FIDUCIALS = np.array([[0.0, 0.0, 0.0], [60.0, -20.0, 5.0], [-40.0, 70.0, 12.0], [25.0, 35.0, -8.0]])
PATH = np.array([[-50.0, -50.0, 0.0], [50.0, -50.0, 2.0], [50.0, 50.0, 4.0], [-50.0, 50.0, 0.0]])


def _script() -> PointerScript:
    return (
        PointerScript()
        .touch(FIDUCIALS, dwell_s=1.0, travel_s=1.5)
        .trace(PATH, speed_mm_s=25.0, travel_s=1.0)
    )


def _frames(tracker: SimulatedTracker, frame_numbers: list[int], dt_s: float = 1e-3) -> list:
    return [
        tracker.sample(n * dt_s, frame_number=n, t_sensor_ns=n * 1_000_000) for n in frame_numbers
    ]


def _same_frames(a: TrackerFrame, b: TrackerFrame) -> bool:
    return (
        a.tools == b.tools
        and a.statuses == b.statuses
        and a.frame_number == b.frame_number
        and a.t_sensor_ns == b.t_sensor_ns
        and np.array_equal(a.T_tracker_from_tools, b.T_tracker_from_tools)
        and np.array_equal(a.fit_errors_mm, b.fit_errors_mm, equal_nan=True)
    )


# --- determinism ----------------------------------------------------------------------


def test_same_seed_and_frames_give_bit_identical_frames() -> None:
    cfg = SimConfig(seed=7, dropout_rate_hz=2.0)
    numbers = list(range(0, 3000, 7))
    first = _frames(SimulatedTracker(cfg, _script()), numbers)
    second = _frames(SimulatedTracker(cfg, _script()), numbers)
    assert all(_same_frames(a, b) for a, b in zip(first, second, strict=True))
    # The occlusion rate is high enough that the comparison covered non-OK tools too.
    assert any(s is not ToolStatus.OK for f in first for s in f.statuses)


def test_sample_does_not_depend_on_the_order_of_calls() -> None:
    cfg = SimConfig(seed=3, dropout_rate_hz=2.0)
    numbers = list(range(0, 2000, 11))
    forward = _frames(SimulatedTracker(cfg, _script()), numbers)
    backward = _frames(SimulatedTracker(cfg, _script()), numbers[::-1])[::-1]
    assert all(_same_frames(a, b) for a, b in zip(forward, backward, strict=True))


def test_different_seeds_give_different_noise() -> None:
    a = SimulatedTracker(SimConfig(seed=1)).sample(1.0, frame_number=5, t_sensor_ns=0)
    b = SimulatedTracker(SimConfig(seed=2)).sample(1.0, frame_number=5, t_sensor_ns=0)
    assert not np.array_equal(a.T_tracker_from_tools, b.T_tracker_from_tools)


def test_different_frame_numbers_give_different_noise_at_the_same_time() -> None:
    tracker = SimulatedTracker(SimConfig())
    a = tracker.sample(1.0, frame_number=5, t_sensor_ns=0)
    b = tracker.sample(1.0, frame_number=6, t_sensor_ns=0)
    assert not np.array_equal(a.T_tracker_from_tools, b.T_tracker_from_tools)


# --- noise ----------------------------------------------------------------------------


def _errors(cfg: SimConfig, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Translation errors (K, 3) mm, rotation errors (K,) rad, fit errors (K,) of OK tools."""
    tracker = SimulatedTracker(cfg, _script())
    dt, dr, fit = [], [], []
    for n in range(n_frames):
        t_s = 0.01 * n
        frame = tracker.sample(t_s, frame_number=n, t_sensor_ns=0)
        truth = tracker.true_poses(t_s)
        for i, status in enumerate(frame.statuses):
            if status is ToolStatus.OK:
                dt.append(frame.T_tracker_from_tools[i][:3, 3] - truth[i][:3, 3])
                dr.append(rotation_distance_rad(frame.T_tracker_from_tools[i], truth[i]))
                fit.append(frame.fit_errors_mm[i])
    return np.array(dt), np.array(dr), np.array(fit)


@pytest.mark.parametrize("noise_mm_rms", [0.25, 1.0])
def test_translation_noise_rms_matches_the_config(noise_mm_rms: float) -> None:
    # 3000 frames x 3 tools x 3 axes = 27000 squared normals: the RMS estimate has a
    # relative standard error of 1/sqrt(2 * 27000) = 0.43 %, so 3 % is a 7-sigma band.
    dt, _, _ = _errors(SimConfig(noise_mm_rms=noise_mm_rms, dropout_rate_hz=0.0), 3000)
    assert len(dt) == 9000
    rms = math.sqrt(np.mean(np.sum(dt**2, axis=1)))
    assert rms == pytest.approx(noise_mm_rms, rel=0.03)
    # Isotropic: each axis carries a third of the variance.
    per_axis = np.sqrt(np.mean(dt**2, axis=0))
    np.testing.assert_allclose(per_axis, noise_mm_rms / math.sqrt(3.0), rtol=0.05)


def test_rotation_noise_rms_matches_the_config() -> None:
    _, dr, _ = _errors(SimConfig(noise_deg_rms=0.1, dropout_rate_hz=0.0), 3000)
    assert math.degrees(math.sqrt(np.mean(dr**2))) == pytest.approx(0.1, rel=0.03)


def test_fit_error_is_positive_and_near_the_noise_level_for_ok_tools() -> None:
    _, _, fit = _errors(SimConfig(noise_mm_rms=0.25, dropout_rate_hz=0.0), 1000)
    assert np.all(np.isfinite(fit)) and np.all(fit > 0)
    assert math.sqrt(np.mean(fit**2)) == pytest.approx(0.25, rel=0.05)


def test_zero_noise_reports_the_true_poses() -> None:
    tracker = SimulatedTracker(SimConfig(noise_mm_rms=0.0, noise_deg_rms=0.0, dropout_rate_hz=0))
    frame = tracker.sample(3.3, frame_number=1, t_sensor_ns=0)
    np.testing.assert_array_equal(frame.T_tracker_from_tools, tracker.true_poses(3.3))
    np.testing.assert_array_equal(frame.fit_errors_mm, 0.0)


# --- ground truth motion --------------------------------------------------------------


def test_reference_pose_follows_the_worked_example_in_the_module_docstring() -> None:
    tracker = SimulatedTracker(SimConfig())
    T0 = tracker.true_pose("reference", 0.0)
    np.testing.assert_allclose(T0[:3, 3], [0.0, 150.0, -1300.0], atol=1e-12)
    np.testing.assert_allclose(T0[:3, 2], [0.0, -0.342, 0.940], atol=5e-4)
    np.testing.assert_allclose(
        tracker.true_pose("reference", 1.0)[:3, 3], [0.0, 149.316, -1298.121], atol=5e-4
    )


@SETTINGS
@given(
    ptp_mm=st.floats(0.5, 20.0),
    hz=st.floats(0.1, 0.5),
    axis=st.tuples(*[st.floats(-1.0, 1.0)] * 3).filter(lambda a: math.hypot(*a) > 0.1),
)
def test_breathing_amplitude_and_frequency_are_recovered_from_the_true_reference_pose(
    ptp_mm: float, hz: float, axis: tuple[float, float, float]
) -> None:
    cfg = SimConfig(
        breathing_peak_to_peak_mm=ptp_mm, breathing_hz=hz, breathing_axis_in_reference=axis
    )
    tracker = SimulatedTracker(cfg)
    t = np.arange(0.0, 24.0, 0.01)
    base = np.array(cfg.T_tracker_from_reference_base)
    d = np.array([tracker.true_pose("reference", ti)[:3, 3] for ti in t]) - base[:3, 3]
    # Pure translation along the configured axis, fixed in the tracker frame.
    direction = base[:3, :3] @ (np.array(axis) / np.linalg.norm(axis))
    np.testing.assert_allclose(np.cross(d, direction), 0.0, atol=1e-9)
    for ti in t[::500]:
        R = tracker.true_pose("reference", ti)[:3, :3]
        np.testing.assert_array_equal(R, base[:3, :3])
    s = d @ direction
    assert s.max() - s.min() == pytest.approx(ptp_mm, rel=1e-3)
    # Frequency from the up-crossings of zero, interpolated between samples.
    up = np.flatnonzero((s[:-1] < 0) & (s[1:] >= 0))
    t_up = t[up] - s[up] * (t[up + 1] - t[up]) / (s[up + 1] - s[up])
    assert (len(t_up) - 1) / (t_up[-1] - t_up[0]) == pytest.approx(hz, rel=1e-3)


def test_headset_sways_a_few_millimetres_and_degrees_about_1_5_m_away() -> None:
    cfg = SimConfig()
    tracker = SimulatedTracker(cfg)
    base = np.array(cfg.T_tracker_from_headset_base)
    poses = [tracker.true_pose("headset", t) for t in np.arange(0.0, 120.0, 0.1)]
    shift = [np.linalg.norm(T[:3, 3] - base[:3, 3]) for T in poses]
    angle = [math.degrees(rotation_distance_rad(T, base)) for T in poses]
    assert 1400 < np.linalg.norm(base[:3, 3]) < 1600
    assert 2.0 < max(shift) <= math.sqrt(2.25) * cfg.head_sway_mm + 1e-9
    assert 1.0 < max(angle) <= math.sqrt(3.0) * cfg.head_sway_deg + 1e-9


def test_extra_tools_are_named_in_order_and_static() -> None:
    tracker = SimulatedTracker(SimConfig(extra_tools=3, dropout_rate_hz=0.0))
    assert tracker.tools == ("pointer", "reference", "headset", "tool1", "tool2", "tool3")
    np.testing.assert_array_equal(tracker.true_pose("tool2", 0.0), tracker.true_pose("tool2", 9.0))
    frame = tracker.sample(1.0, frame_number=0, t_sensor_ns=0)
    assert frame.statuses == (ToolStatus.OK,) * 6


def test_unknown_tool_raises_key_error() -> None:
    with pytest.raises(KeyError):
        SimulatedTracker(SimConfig()).true_pose("tool1", 0.0)


# --- rigidity and status ---------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32),
    t_s=st.floats(-100.0, 1e5),
    frame_number=st.integers(0, 2**40),
    noise_deg=st.floats(0.0, 5.0),
)
def test_every_ok_pose_is_rigid(seed: int, t_s: float, frame_number: int, noise_deg: float) -> None:
    tracker = SimulatedTracker(
        SimConfig(seed=seed, noise_deg_rms=noise_deg, extra_tools=2), _script()
    )
    frame = tracker.sample(t_s, frame_number=frame_number, t_sensor_ns=1)
    for T, status in zip(frame.T_tracker_from_tools, frame.statuses, strict=True):
        if status is ToolStatus.OK:
            assert is_rigid(T, tol=1e-12)
    for T in tracker.true_poses(t_s):
        assert is_rigid(T, tol=1e-12)


def test_occluded_tools_carry_identity_and_nan_fit_error() -> None:
    tracker = SimulatedTracker(SimConfig(dropout_rate_hz=1.0, dropout_duration_s=0.5))
    seen_out = 0
    for n in range(2000):
        frame = tracker.sample(0.05 * n, frame_number=n, t_sensor_ns=0)
        for i, status in enumerate(frame.statuses):
            if status is ToolStatus.OK:
                assert np.isfinite(frame.fit_errors_mm[i])
            else:
                assert status is ToolStatus.OUT_OF_VIEW
                np.testing.assert_array_equal(frame.T_tracker_from_tools[i], np.eye(4))
                assert math.isnan(frame.fit_errors_mm[i])
                seen_out += 1
    assert seen_out > 100


def test_a_tool_beyond_the_volume_is_out_of_volume_with_identity_and_nan_fit() -> None:
    far = make_rigid(np.eye(3), [0.0, 0.0, -3000.0])
    behind = make_rigid(np.eye(3), [0.0, 0.0, 1500.0])
    tracker = SimulatedTracker(
        SimConfig(T_tracker_from_reference_base=far, T_tracker_from_headset_base=behind)
    )
    frame = tracker.sample(0.0, frame_number=0, t_sensor_ns=0)
    assert frame.statuses[1:] == (ToolStatus.OUT_OF_VOLUME, ToolStatus.OUT_OF_VOLUME)
    np.testing.assert_array_equal(frame.T_tracker_from_tools[1:], np.stack([np.eye(4)] * 2))
    assert np.isnan(frame.fit_errors_mm[1:]).all()
    # With the volume check off the same poses are seen.
    unchecked = SimulatedTracker(
        SimConfig(
            T_tracker_from_reference_base=far,
            T_tracker_from_headset_base=behind,
            volume_range_mm=None,
            dropout_rate_hz=0.0,
        )
    )
    assert unchecked.status("reference", 0.0) is ToolStatus.OK


def test_default_tools_are_all_inside_the_volume() -> None:
    tracker = SimulatedTracker(SimConfig(dropout_rate_hz=0.0, extra_tools=61), _script())
    for t_s in np.arange(-1.0, _script().duration_s + 1.0, 0.25):
        frame = tracker.sample(float(t_s), frame_number=0, t_sensor_ns=0)
        assert set(frame.statuses) == {ToolStatus.OK}


@pytest.mark.parametrize(("rate_hz", "duration_s"), [(0.05, 0.4), (0.5, 1.5)])
def test_dropout_fraction_matches_rate_times_duration(rate_hz: float, duration_s: float) -> None:
    tracker = SimulatedTracker(SimConfig(dropout_rate_hz=rate_hz, dropout_duration_s=duration_s))
    horizon_s = 20_000.0
    fractions = [
        sum(b - a for a, b in tracker.occlusion_intervals(tool, t_start_s=0.0, t_end_s=horizon_s))
        / horizon_s
        for tool in tracker.tools
    ]
    # Poisson events of fixed length cover a fraction 1 - exp(-rate * duration), which is
    # rate * duration when events rarely overlap. With >= 3000 events the relative
    # standard error is below 2 %, so 10 % is a safe band.
    expected = 1.0 - math.exp(-rate_hz * duration_s)
    assert np.mean(fractions) == pytest.approx(expected, rel=0.10)


def test_sampled_statuses_follow_the_occlusion_intervals() -> None:
    tracker = SimulatedTracker(SimConfig(dropout_rate_hz=0.5, dropout_duration_s=0.4))
    intervals = {
        tool: tracker.occlusion_intervals(tool, t_start_s=0.0, t_end_s=200.0)
        for tool in tracker.tools
    }
    for n in range(0, 200_000, 37):
        t_s = n * 1e-3
        frame = tracker.sample(t_s, frame_number=n, t_sensor_ns=0)
        for tool, status in zip(frame.tools, frame.statuses, strict=True):
            hidden = any(a <= t_s < b for a, b in intervals[tool])
            assert (status is ToolStatus.OUT_OF_VIEW) == hidden, (tool, t_s)


def test_dropout_schedule_does_not_depend_on_the_sample_rate() -> None:
    cfg = SimConfig(dropout_rate_hz=2.0, dropout_duration_s=0.3)
    fast, slow = SimulatedTracker(cfg), SimulatedTracker(cfg)
    fast_status = {
        n: fast.sample(n * 1e-3, frame_number=n, t_sensor_ns=0).statuses for n in range(10_000)
    }
    assert any(ToolStatus.OUT_OF_VIEW in s for s in fast_status.values())
    for k in range(0, 10_000, 20):  # 50 Hz, its own frame numbers
        assert slow.sample(k * 1e-3, frame_number=k // 20, t_sensor_ns=0).statuses == fast_status[k]


# --- the scripted pointer --------------------------------------------------------------


@SETTINGS
@given(
    points=st.lists(st.tuples(*[st.floats(-150.0, 150.0)] * 3), min_size=1, max_size=6),
    dwell_s=st.floats(0.1, 3.0),
    travel_s=st.floats(0.1, 3.0),
    start_s=st.floats(0.0, 20.0),
)
def test_during_a_dwell_the_tip_is_the_target_mapped_through_the_breathing_reference(
    points: list[tuple[float, float, float]], dwell_s: float, travel_s: float, start_s: float
) -> None:
    script = PointerScript().touch(points, dwell_s=dwell_s, travel_s=travel_s)
    tracker = SimulatedTracker(SimConfig(), script, script_start_s=start_s)
    dwells = script.dwells()
    assert [d.index for d in dwells] == list(range(len(points)))
    for dwell, p in zip(dwells, points, strict=True):
        assert dwell.t_end_s - dwell.t_start_s == pytest.approx(dwell_s)
        for frac in (0.0, 0.3, 0.999):
            t_script = dwell.t_start_s + frac * dwell_s
            phase = script.phase(t_script)
            assert (phase.kind, phase.index, phase.dwelling, phase.contact) == (
                "touch",
                dwell.index,
                True,
                True,
            )
            np.testing.assert_array_equal(script.tip_in_reference(t_script), p)
            t_s = start_s + t_script
            expected = apply(tracker.true_pose("reference", t_s), np.array(p))
            np.testing.assert_allclose(tracker.true_tip_in_tracker(t_s), expected, atol=1e-9)


def test_the_held_tip_moves_with_breathing_in_the_tracker_frame() -> None:
    script = PointerScript().touch(FIDUCIALS[:1], dwell_s=4.0, travel_s=1.0)
    tracker = SimulatedTracker(SimConfig(breathing_peak_to_peak_mm=6.0), script)
    tips = np.array([tracker.true_tip_in_tracker(t) for t in np.arange(1.0, 5.0, 0.01)])
    assert np.ptp(np.linalg.norm(tips - tips[0], axis=1)) == pytest.approx(6.0, rel=1e-3)


@SETTINGS
@given(
    polyline=st.lists(st.tuples(*[st.floats(-100.0, 100.0)] * 3), min_size=2, max_size=6).filter(
        lambda p: all(math.dist(a, b) > 1.0 for a, b in zip(p, p[1:], strict=False))
    ),
    speed_mm_s=st.floats(2.0, 100.0),
)
def test_the_trace_moves_the_tip_along_the_path_at_the_given_speed(
    polyline: list[tuple[float, float, float]], speed_mm_s: float
) -> None:
    poly = np.array(polyline)
    script = PointerScript().trace(poly, speed_mm_s=speed_mm_s, travel_s=1.0)
    legs = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    assert script.duration_s == pytest.approx(1.0 + legs.sum() / speed_mm_s)
    dt = 1e-3
    for t in np.linspace(1.0, script.duration_s - dt, 200):
        a, b = script.phase(t), script.phase(t + dt)
        assert a.kind == "trace" and a.contact and not a.dwelling
        if a.index == b.index:  # a chord across a corner is shorter than the path
            step = np.linalg.norm(script.tip_in_reference(t + dt) - script.tip_in_reference(t))
            assert step / dt == pytest.approx(speed_mm_s, rel=1e-6)
            # On the current leg, between its two vertices.
            p = script.tip_in_reference(t)
            u = poly[a.index + 1] - poly[a.index]
            np.testing.assert_allclose(
                np.cross(p - poly[a.index], u), 0.0, atol=1e-9 * np.linalg.norm(u) * 200
            )
    np.testing.assert_allclose(script.tip_in_reference(script.duration_s), poly[-1], atol=1e-9)


def test_the_tip_path_is_continuous_and_lifts_off_between_touches() -> None:
    script = _script()
    t = np.arange(0.0, script.duration_s, 1e-3)
    tips = np.array([script.tip_in_reference(ti) for ti in t])
    # 1 ms steps: no jump larger than a fast hand could make (1 m/s).
    assert np.max(np.linalg.norm(np.diff(tips, axis=0), axis=1)) < 1.0
    # Between the first two fiducials (both near z = 0) the tip rises above them.
    between = (t > script.dwells()[0].t_end_s) & (t < script.dwells()[1].t_start_s)
    assert tips[between, 2].max() > FIDUCIALS[:2, 2].max() + 10.0


def test_the_pointer_shaft_points_down_at_the_surface_with_mild_variation() -> None:
    cfg = SimConfig()
    tracker = SimulatedTracker(cfg, _script())
    tilts = []
    for t_s in np.arange(0.0, _script().duration_s, 0.1):
        T_reference_from_pointer = invert_rigid(tracker.true_pose("reference", t_s)) @ (
            tracker.true_pose("pointer", t_s)
        )
        shaft = T_reference_from_pointer[:3, :3] @ np.array(cfg.p_tip_in_pointer)
        tilts.append(math.degrees(math.acos(-shaft[2] / np.linalg.norm(shaft))))
    assert 8.0 < min(tilts) and max(tilts) < 22.0 and max(tilts) - min(tilts) > 5.0


def test_the_pointer_rests_before_and_after_the_script() -> None:
    cfg = SimConfig()
    script = _script()
    tracker = SimulatedTracker(cfg, script, script_start_s=5.0)
    rest = np.array(cfg.T_tracker_from_pointer_rest)
    for t_s in (0.0, 4.999, 5.0 + script.duration_s + 1e-6, 1e4):
        np.testing.assert_array_equal(tracker.true_pose("pointer", t_s), rest)
        assert tracker.phase(t_s) == IDLE
    assert tracker.phase(5.0).kind == "touch"
    np.testing.assert_array_equal(SimulatedTracker(cfg).true_pose("pointer", 3.0), rest)


def test_the_script_starts_hovering_above_the_first_target() -> None:
    script = PointerScript(hover_mm=40.0).touch(FIDUCIALS)
    np.testing.assert_array_equal(script.tip_in_reference(0.0), FIDUCIALS[0] + [0.0, 0.0, 40.0])
    assert script.phase(-0.1) == IDLE
    assert script.phase(script.duration_s + 0.1) == IDLE


def test_a_different_tip_offset_still_puts_the_tip_on_the_target() -> None:
    cfg = SimConfig(p_tip_in_pointer=(-180.0, 10.0, 5.0))
    script = PointerScript().touch(FIDUCIALS, dwell_s=1.0, travel_s=1.0)
    tracker = SimulatedTracker(cfg, script)
    for dwell in script.dwells():
        t_s = dwell.t_start_s + 0.5
        expected = apply(tracker.true_pose("reference", t_s), np.array(dwell.p_reference))
        np.testing.assert_allclose(tracker.true_tip_in_tracker(t_s), expected, atol=1e-9)


# --- wire round trip --------------------------------------------------------------------


def test_frames_round_trip_through_encode_and_decode() -> None:
    tracker = SimulatedTracker(SimConfig(dropout_rate_hz=1.0, extra_tools=3), _script())
    seen_non_ok = False
    for n in range(0, 20_000, 97):
        frame = tracker.sample(n * 1e-3, frame_number=n, t_sensor_ns=10**12 + n)
        envelope = decode(encode(frame, seq=n, t_pub_ns=1))
        decoded = envelope.message
        assert isinstance(decoded, TrackerFrame)
        assert _same_frames(frame, decoded)
        assert decoded.tracker == "sim"
        seen_non_ok |= any(s is not ToolStatus.OK for s in frame.statuses)
    assert seen_non_ok


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_mm_rms": -0.1}, "noise_mm_rms"),
        ({"noise_deg_rms": -1.0}, "noise_deg_rms"),
        ({"noise_mm_rms": float("nan")}, "noise_mm_rms"),
        ({"breathing_hz": 0.0}, "breathing_hz"),
        ({"breathing_hz": -0.25}, "breathing_hz"),
        ({"breathing_peak_to_peak_mm": -4.0}, "breathing_peak_to_peak_mm"),
        ({"breathing_axis_in_reference": (0.0, 0.0, 0.0)}, "breathing_axis"),
        ({"dropout_rate_hz": -0.05}, "dropout_rate_hz"),
        ({"dropout_duration_s": 0.0}, "dropout_duration_s"),
        ({"volume_range_mm": (2400.0, 950.0)}, "volume_range_mm"),
        ({"volume_range_mm": (0.0,)}, "volume_range_mm"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"tracker_name": "Sim Tracker"}, "tracker_name"),
        ({"extra_tools": -1}, "extra_tools"),
        ({"extra_tools": 62}, "extra_tools"),
        ({"p_tip_in_pointer": (0.0, 0.0)}, "p_tip_in_pointer"),
        ({"p_tip_in_pointer": (0.0, 0.0, 0.0)}, "p_tip_in_pointer"),
        ({"T_tracker_from_reference_base": np.diag([1.0, 1.0, -1.0, 1.0])}, "reference_base"),
        ({"T_tracker_from_pointer_rest": np.eye(3)}, "pointer_rest"),
        ({"head_sway_mm": float("inf")}, "head_sway_mm"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimConfig(**kwargs)


def test_config_stores_array_likes_as_hashable_tuples() -> None:
    cfg = SimConfig(T_tracker_from_reference_base=np.eye(4), p_tip_in_pointer=np.array([0, 0, -1]))
    assert cfg == SimConfig(
        T_tracker_from_reference_base=np.eye(4).tolist(), p_tip_in_pointer=(0, 0, -1)
    )
    hash(cfg)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: s.touch(np.zeros((0, 3))),
        lambda s: s.touch(np.zeros((2, 2))),
        lambda s: s.touch([[0.0, 0.0, float("nan")]]),
        lambda s: s.touch(FIDUCIALS, dwell_s=0.0),
        lambda s: s.touch(FIDUCIALS, travel_s=-1.0),
        lambda s: s.trace(PATH[:1]),
        lambda s: s.trace([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
        lambda s: s.trace(PATH, speed_mm_s=0.0),
        lambda s: s.trace(PATH, speed_mm_s=float("inf")),
        # Finite arguments whose script never ends: the legs' lengths or times overflow.
        lambda s: s.trace([[0.0, 0.0, 0.0], [1e300, 1e300, 0.0]]),
        lambda s: s.trace(PATH, speed_mm_s=1e-320),
        lambda s: s.touch(FIDUCIALS, dwell_s=1e308, travel_s=1e308),
    ],
)
def test_invalid_script_segment_raises_value_error(
    build: Callable[[PointerScript], PointerScript],
) -> None:
    with pytest.raises(ValueError):
        build(PointerScript())


def test_invalid_sample_arguments_raise_value_error() -> None:
    tracker = SimulatedTracker(SimConfig())
    with pytest.raises(ValueError):
        tracker.sample(float("nan"), frame_number=0, t_sensor_ns=0)
    with pytest.raises(ValueError):
        tracker.sample(0.0, frame_number=-1, t_sensor_ns=0)
    with pytest.raises(ValueError):
        PointerScript().tip_in_reference(0.0)
    with pytest.raises(ValueError):
        PointerScript(lift_mm=-1.0)


# --- forced occlusions (the node's tool.occlude command) -----------------------------


def test_a_forced_occlusion_hides_only_that_tool_for_exactly_its_interval() -> None:
    base = SimulatedTracker(SimConfig(dropout_rate_hz=0.0), _script())
    tracker = base.with_occlusion("reference", start_s=2.0, duration_s=0.5)
    assert base.forced_occlusions == ()  # immutable: the original is unchanged
    for t_s, hidden in ((1.999, False), (2.0, True), (2.3, True), (2.4999, True), (2.5, False)):
        frame = tracker.sample(t_s, frame_number=1, t_sensor_ns=0)
        statuses = dict(zip(frame.tools, frame.statuses, strict=True))
        assert (statuses["reference"] is ToolStatus.OUT_OF_VIEW) == hidden, t_s
        assert statuses["pointer"] is ToolStatus.OK and statuses["headset"] is ToolStatus.OK
        if hidden:
            assert np.array_equal(frame.pose("reference").T_tracker_from_tool, np.eye(4))
    assert tracker.occlusion_intervals("reference", t_start_s=0.0, t_end_s=10.0) == ((2.0, 2.5),)
    assert tracker.occlusion_intervals("pointer", t_start_s=0.0, t_end_s=10.0) == ()
    # The script and the rest of the model are the same; only the status differs.
    a = base.sample(3.0, frame_number=7, t_sensor_ns=0)
    b = tracker.sample(3.0, frame_number=7, t_sensor_ns=0)
    assert _same_frames(a, b)


def test_forced_occlusions_merge_with_the_random_schedule() -> None:
    tracker = SimulatedTracker(SimConfig(dropout_rate_hz=0.5, dropout_duration_s=0.4))
    random_only = tracker.occlusion_intervals("headset", t_start_s=0.0, t_end_s=60.0)
    start, _ = random_only[0]
    forced = tracker.with_occlusion("headset", start_s=start + 0.2, duration_s=1.0)
    merged = forced.occlusion_intervals("headset", t_start_s=0.0, t_end_s=60.0)
    assert merged[0] == pytest.approx((start, start + 1.2)) or merged[0][1] > start + 1.2
    assert len(merged) <= len(random_only)


def test_a_forced_occlusion_of_an_unknown_tool_or_a_bad_interval_is_refused() -> None:
    tracker = SimulatedTracker(SimConfig())
    with pytest.raises(ValueError, match="unknown tool"):
        tracker.with_occlusion("nope", start_s=0.0, duration_s=1.0)
    with pytest.raises(ValueError, match="duration_s"):
        tracker.with_occlusion("reference", start_s=0.0, duration_s=-1.0)
    with pytest.raises(ValueError, match="interval"):
        SimulatedTracker(SimConfig(), forced_occlusions=[("reference", 2.0, 1.0)])

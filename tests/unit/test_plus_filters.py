"""PLUS's timestamp jitter filter and pose interpolation: known clocks and poses recovered."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation, Slerp

from nav.messages import ToolStatus
from nav.transforms import (
    axis_angle_to_matrix,
    is_rigid,
    make_rigid,
    matrix_to_quat,
    rotation_distance_rad,
    translation_distance_mm,
)
from tests.conftest import shared_data
from tracking.plus_filters import (
    TimestampJitterFilter,
    filter_timestamps,
    interpolate_pose,
    interpolate_rigid,
    slerp,
)
from tracking.plus_sequence import read_plus_sequence

# --- timestamp jitter filter ---------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    period_s=st.floats(0.005, 0.1),
    offset_s=st.floats(0.0, 2e6),
    jitter_s=st.floats(0.0005, 0.02),
    seed=st.integers(0, 2**32 - 1),
)
def test_jitter_filter_recovers_a_known_linear_clock_from_jittered_arrival_times(
    period_s: float, offset_s: float, jitter_s: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Frame numbers with occasional drops (the device counts what it sent, not what arrived).
    numbers = np.cumsum(rng.choice([1, 1, 1, 1, 2, 3], size=400))
    acquired = offset_s + period_s * numbers
    arrived = acquired + rng.uniform(0.0, jitter_s, size=numbers.size)  # delays only
    filtered, valid = filter_timestamps(numbers, arrived)
    assert valid.all()
    np.testing.assert_array_equal(filtered[:19], arrived[:19])  # window not full yet
    # Against the true clock plus the mean delay (which no filter can know): the filtered
    # stamps scatter less than half as much as the raw ones (a line through 20 points,
    # read at its end: sqrt(1/20 + 9.5**2/665) = 0.43 of the raw scatter) ...
    truth = acquired[19:] + jitter_s / 2

    def rms(error: np.ndarray) -> float:
        return float(np.sqrt(np.mean(error**2)))

    assert rms(filtered[19:] - truth) < 0.65 * rms(arrived[19:] - truth)
    assert np.abs(filtered[19:] - truth).max() < jitter_s

    # ... and the frame period is steady: PLUS's own criterion, 3x less spread.
    def period_spread(t: np.ndarray) -> float:
        return float(np.std(np.diff(t) / np.diff(numbers[19:])))

    assert period_spread(filtered[19:]) < period_spread(arrived[19:]) / 3


def test_jitter_filter_is_plus_least_squares_line_evaluated_at_the_current_frame() -> None:
    rng = np.random.default_rng(1)
    numbers = np.arange(100, 160) * 2
    arrived = 1000.0 + 0.02 * numbers + rng.normal(0.0, 0.003, numbers.size)
    jitter = TimestampJitterFilter(window=20)
    for i, (n, t) in enumerate(zip(numbers, arrived, strict=True)):
        out = jitter.update(int(n), float(t))
        if i >= 19:
            slope, intercept = np.polyfit(numbers[i - 19 : i + 1], arrived[i - 19 : i + 1], 1)
            assert out.t_s == pytest.approx(slope * n + intercept, abs=1e-9)


def test_a_sample_far_from_the_fitted_line_is_flagged_probably_invalid() -> None:
    numbers = np.arange(40)
    arrived = 0.1 * numbers
    arrived[30] += 1.0  # a one-second hiccup in the host's stamping
    _filtered, valid = filter_timestamps(numbers, arrived, max_difference_s=0.5)
    assert not valid[30] and valid[:30].all()


def test_jitter_filter_meets_plus_own_criteria_on_its_recorded_test_sequence() -> None:
    # PLUS's TimestampFilteringTest: window 20, |filtered - unfiltered| < 80 ms everywhere,
    # and the frame period's standard deviation at least 3x smaller after filtering.
    path = shared_data("PlusLibData/TestImages/TimestampFilteringTest.igs.mha")
    _header, frames = read_plus_sequence(path)
    numbers = np.array([f.frame_number for f in frames])
    unfiltered = np.array([f.unfiltered_timestamp_ns for f in frames], dtype=np.float64) / 1e9
    filtered, valid = filter_timestamps(numbers, unfiltered, window=20)
    assert valid.all()
    assert np.abs(filtered - unfiltered).max() < 0.080

    def period_std(t: np.ndarray) -> float:
        return float(np.std(np.diff(t) / np.diff(numbers)))

    assert period_std(unfiltered) / period_std(filtered) > 3.0


def test_jitter_filter_refuses_a_window_below_one() -> None:
    with pytest.raises(ValueError, match="window"):
        TimestampJitterFilter(window=0)
    with pytest.raises(ValueError, match="frame_numbers"):
        filter_timestamps([1, 2, 3], [0.1, 0.2])


# --- interpolation -------------------------------------------------------------------

unit = st.floats(-1.0, 1.0, allow_nan=False)
mm = st.floats(-1000.0, 1000.0, allow_nan=False)


@st.composite
def quats(draw: st.DrawFn) -> np.ndarray:
    q = np.array([draw(unit) for _ in range(4)])
    return q / np.linalg.norm(q) if np.linalg.norm(q) > 1e-2 else np.array([1.0, 0, 0, 0])


@st.composite
def poses(draw: st.DrawFn) -> np.ndarray:
    R = Rotation.from_quat(np.roll(draw(quats()), -1)).as_matrix()
    return make_rigid(R, [draw(mm) for _ in range(3)])


@settings(max_examples=100, deadline=None)
@given(q0=quats(), q1=quats(), u=st.floats(0.0, 1.0))
def test_slerp_matches_scipy(q0: np.ndarray, q1: np.ndarray, u: float) -> None:
    assume(abs(float(q0 @ q1)) > 1e-3)  # 180 degrees apart: both ways round are shortest
    ours = Rotation.from_quat(np.roll(slerp(q0, q1, u), -1))
    key = Rotation.from_quat(np.stack([np.roll(q0, -1), np.roll(q1, -1)]))
    theirs = Slerp([0.0, 1.0], key)([u])[0]
    assert (ours.inv() * theirs).magnitude() < 1e-6


@settings(max_examples=100, deadline=None)
@given(T0=poses(), T1=poses())
def test_interpolated_midpoint_is_halfway_in_rotation_and_translation(
    T0: np.ndarray, T1: np.ndarray
) -> None:
    result = interpolate_pose(0.5, [0.0, 1.0], np.stack([T0, T1]), [ToolStatus.OK] * 2)
    assert result.status is ToolStatus.OK and result.T is not None
    T = result.T
    assert is_rigid(T, tol=1e-9)
    np.testing.assert_allclose(T[:3, 3], (T0[:3, 3] + T1[:3, 3]) / 2, atol=1e-9)
    assert rotation_distance_rad(T0, T) == pytest.approx(rotation_distance_rad(T, T1), abs=1e-6)
    assert rotation_distance_rad(T0, T) == pytest.approx(
        rotation_distance_rad(T0, T1) / 2, abs=1e-6
    )


def test_interpolation_turns_at_a_constant_rate_about_one_axis() -> None:
    T0 = make_rigid(np.eye(3), [0.0, 0.0, 0.0])
    T1 = make_rigid(axis_angle_to_matrix([0, 0, 1], np.radians(90)), [100.0, 0.0, 0.0])
    T = interpolate_rigid(T0, T1, 0.25)
    expected = make_rigid(axis_angle_to_matrix([0, 0, 1], np.radians(22.5)), [25.0, 0.0, 0.0])
    np.testing.assert_allclose(T, expected, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(T[:3, :3])[0], np.cos(np.radians(11.25)))


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    t=st.floats(-1.0, 13.0),
)
def test_interpolation_never_crosses_a_sample_that_is_not_ok(n: int, seed: int, t: float) -> None:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.1, 1.0, n))
    Ts = np.stack([make_rigid(np.eye(3), rng.normal(0, 10, 3)) for _ in range(n)])
    statuses = [ToolStatus.OK if ok else ToolStatus.OUT_OF_VIEW for ok in rng.random(n) < 0.6]
    result = interpolate_pose(t, times, Ts, statuses)
    if t < times[0] - 1e-5 or t > times[-1] + 1e-5:
        assert result.status is ToolStatus.MISSING and result.T is None
        return
    right = int(np.searchsorted(times, t))
    around = {i for i in (right - 1, right) if 0 <= i < n and abs(times[i] - t) <= 1e-5} or {
        right - 1,
        right,
    }
    if all(statuses[i] is ToolStatus.OK for i in around):
        assert result.status is ToolStatus.OK and result.T is not None
        lo, hi = min(around), max(around)
        assert (
            translation_distance_mm(result.T, Ts[lo])
            <= translation_distance_mm(Ts[lo], Ts[hi]) + 1e-9
        )
    else:
        assert result.status is ToolStatus.OUT_OF_VIEW and result.T is None


def test_interpolation_at_a_sample_returns_it_and_across_a_long_gap_returns_missing() -> None:
    Ts = np.stack([make_rigid(np.eye(3), [float(i), 0, 0]) for i in range(3)])
    times = [0.0, 1.0, 5.0]
    ok = [ToolStatus.OK] * 3
    at = interpolate_pose(1.0 + 1e-7, times, Ts, ok)
    assert at.T is not None and np.array_equal(at.T, Ts[1])
    between = interpolate_pose(3.0, times, Ts, ok)
    assert between.T is not None and between.T[0, 3] == pytest.approx(1.5)
    assert interpolate_pose(3.0, times, Ts, ok, max_gap_s=2.0).status is ToolStatus.MISSING
    assert interpolate_pose(0.5, [], np.empty((0, 4, 4)), []).status is ToolStatus.MISSING
    with pytest.raises(ValueError, match="non-decreasing"):
        interpolate_pose(0.5, [1.0, 0.0], Ts[:2], ok[:2])


def test_interpolating_a_recorded_probe_never_uses_its_invalid_sample() -> None:
    path = shared_data("PlusLibData/TestImages/TransformInterpolationTest.igs.mha")
    _header, frames = read_plus_sequence(path)
    times = np.array([f.timestamp_s for f in frames])
    Ts = np.stack([f.transforms["ProbeToTracker"] for f in frames])
    statuses = [
        ToolStatus.OK if f.statuses["ProbeToTracker"] == "OK" else ToolStatus.INVALID
        for f in frames
    ]
    bad = statuses.index(ToolStatus.INVALID)
    for t in (times[bad] - 0.3 * (times[bad] - times[bad - 1]), times[bad]):
        assert interpolate_pose(float(t), times, Ts, statuses).T is None
    mid = float((times[bad + 2] + times[bad + 3]) / 2)
    good = interpolate_pose(mid, times, Ts, statuses)
    assert good.status is ToolStatus.OK and good.T is not None
    assert translation_distance_mm(good.T, Ts[bad + 2]) <= translation_distance_mm(
        Ts[bad + 2], Ts[bad + 3]
    )

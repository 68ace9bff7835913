"""Tests for calibration.temporal: the clock offset between two streams of one motion.

A smooth random motion (a sum of sinusoids, 0.1-1.5 Hz, tens of mm, like a hand
waving a tool) is sampled by two streams at their own rates and stamped on
their own clocks, with a known offset; each test recovers it. Stream a may see
the motion in another frame (a camera versus the tracker), so positions are
compared by speed. Property tests are derandomised.
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from calibration import temporal
from calibration.errors import CalibrationError
from calibration.temporal import temporal_calibration

seeded = settings(derandomize=True, max_examples=60, deadline=None)

FloatArray = npt.NDArray[np.float64]
Motion = Callable[[FloatArray], FloatArray]

EPOCH_S = 1.7e9  # timestamps as a host clock gives them: large, so precision matters


def smooth_motion(rng: np.random.Generator, *, components: int = 6) -> Motion:
    """p(t) (N, 3) mm: a sum of random sinusoids per axis, 0.1-1.5 Hz, 5-40 mm each."""
    freq_hz = rng.uniform(0.1, 1.5, (3, components))
    amp_mm = rng.uniform(5.0, 40.0, (3, components))
    phase = rng.uniform(0.0, 2.0 * math.pi, (3, components))

    def p(t: FloatArray) -> FloatArray:
        arg = 2.0 * math.pi * freq_hz * np.asarray(t)[:, None, None] + phase
        return np.asarray((amp_mm * np.sin(arg)).sum(axis=-1))

    return p


def two_streams(
    rng: np.random.Generator,
    *,
    rate_a_hz: float,
    rate_b_hz: float,
    dt_a_from_b_s: float,
    duration_s: float = 20.0,
    jitter: float = 0.0,
    noise_mm: float = 0.0,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(t_a, positions_a, t_b, positions_b) of one motion; b's clock is the true time.

    Stream a samples at true times tau and stamps them tau + dt_a_from_b_s, in a
    rotated and shifted frame. ``jitter`` is the fraction of a sample period by which
    each sample time wanders (stamps stay exact, as with hardware timestamps).
    """
    p = smooth_motion(rng)

    def times(rate_hz: float, start_s: float) -> FloatArray:
        n = int(duration_s * rate_hz)
        wander = rng.uniform(-jitter / 2, jitter / 2, n) / rate_hz
        return np.asarray(start_s + np.arange(n) / rate_hz + wander)

    t_b = times(rate_b_hz, 0.0)
    tau_a = times(rate_a_hz, rng.uniform(0.0, 0.05))
    R = Rotation.random(random_state=rng).as_matrix()
    x_a = (
        p(tau_a) @ R.T + rng.uniform(-500.0, 500.0, 3) + rng.normal(0.0, noise_mm, (len(tau_a), 3))
    )
    x_b = p(t_b) + rng.normal(0.0, noise_mm, (len(t_b), 3))
    return EPOCH_S + tau_a + dt_a_from_b_s, x_a, EPOCH_S + t_b, x_b


def test_the_worked_example_in_the_module_docstring_holds() -> None:
    failures, tried = doctest.testmod(temporal, raise_on_error=False)
    assert tried > 0 and failures == 0


def test_recovers_37_3_ms_between_a_60_hz_and_a_100_hz_stream_within_a_tenth_of_a_sample() -> None:
    rng = np.random.default_rng(373)
    t_a, x_a, t_b, x_b = two_streams(
        rng, rate_a_hz=60.0, rate_b_hz=100.0, dt_a_from_b_s=0.0373, jitter=0.2, noise_mm=0.1
    )

    result = temporal_calibration(t_a, x_a, t_b, x_b, max_lag_s=0.5)

    assert result.resample_hz == pytest.approx(100.0, rel=0.01)
    assert abs(result.dt_a_from_b_s - 0.0373) < 0.1 / result.resample_hz
    assert result.confidence > 0.99
    assert result.residual_rms < 0.15
    assert 0.0 < result.peak_width_s < 0.5


@seeded
@given(
    seed=st.integers(0, 2**32 - 1),
    rates=st.sampled_from(
        [(60.0, 100.0), (100.0, 60.0), (30.0, 120.0), (120.0, 120.0), (40.0, 90.0)]
    ),
    dt_s=st.floats(-0.3, 0.3),
)
def test_recovers_a_known_lag_to_a_small_fraction_of_a_sample(
    seed: int, rates: tuple[float, float], dt_s: float
) -> None:
    rng = np.random.default_rng(seed)
    t_a, x_a, t_b, x_b = two_streams(
        rng, rate_a_hz=rates[0], rate_b_hz=rates[1], dt_a_from_b_s=dt_s
    )

    result = temporal_calibration(t_a, x_a, t_b, x_b, max_lag_s=0.5)

    assert abs(result.dt_a_from_b_s - dt_s) < 0.05 / result.resample_hz
    assert result.confidence > 0.99
    assert result.sign == 1  # speeds are never mirrored


def test_sign_convention_adding_the_offset_to_a_b_stamp_gives_the_a_stamp_of_the_event() -> None:
    # The pointer stops: stream b stamps it 10.000 s, stream a 10.037 s.
    t = np.arange(0.0, 20.0, 0.01)

    def moving_until(t_stop_s: float, t: FloatArray) -> FloatArray:
        return np.asarray(np.clip(t_stop_s - t, 0.0, None) ** 2)  # positions; stops at t_stop

    a = moving_until(10.037, t)
    b = moving_until(10.000, t)

    result = temporal_calibration(t, a, t, b, max_lag_s=0.2)

    assert result.dt_a_from_b_s == pytest.approx(0.037, abs=1e-4)
    assert 10.000 + result.dt_a_from_b_s == pytest.approx(10.037, abs=1e-4)


def test_a_scalar_signal_is_used_as_given() -> None:
    # One coordinate in a shared frame, 60 Hz against 100 Hz: no speed is taken.
    rng = np.random.default_rng(21)
    p = smooth_motion(rng)
    t_b = np.arange(0.0, 15.0, 0.01)
    tau_a = np.arange(0.0, 15.0, 1.0 / 60.0)

    result = temporal_calibration(tau_a - 0.021, p(tau_a)[:, 0], t_b, p(t_b)[:, 0], max_lag_s=0.3)

    assert result.dt_a_from_b_s == pytest.approx(-0.021, abs=0.05 / result.resample_hz)


def up_and_down(t: FloatArray) -> FloatArray:
    """A probe moved up and down about every 0.9 s (PLUS's protocol), mm; pace and depth drift."""
    phase = 2.0 * math.pi * (t / 0.914 + 0.03 * np.sin(2.0 * math.pi * t / 7.0))
    return np.asarray((30.0 + 8.0 * np.sin(2.0 * math.pi * t / 5.3)) * np.sin(phase))


@seeded
@given(
    seed=st.integers(0, 2**32 - 1),
    rates=st.sampled_from([(60.0, 100.0), (100.0, 60.0), (30.0, 120.0), (120.0, 120.0)]),
    dt_s=st.floats(-0.3, 0.3),
    axis_sign=st.sampled_from([1, -1]),
)
def test_recovers_a_known_lag_from_a_scalar_signal_whichever_way_its_axis_points(
    seed: int, rates: tuple[float, float], dt_s: float, axis_sign: int
) -> None:
    rng = np.random.default_rng(seed)
    p = smooth_motion(rng)
    tau_a = np.arange(0.0, 20.0, 1.0 / rates[0]) + rng.uniform(0.0, 0.05)
    t_b = np.arange(0.0, 20.0, 1.0 / rates[1])
    # One coordinate of one motion; in stream b the axis may point the other way.
    a, b = p(tau_a)[:, 0], axis_sign * p(t_b)[:, 0]

    result = temporal_calibration(EPOCH_S + tau_a + dt_s, a, EPOCH_S + t_b, b, max_lag_s=0.5)

    assert result.sign == axis_sign
    assert abs(result.dt_a_from_b_s - dt_s) < 0.05 / result.resample_hz
    assert result.confidence > 0.99


def test_a_flipped_axis_gives_the_true_lag_not_a_confident_one_half_a_period_away() -> None:
    # Regression: the probe moves up and down; the video (a) sees it 40 ms after the
    # tracker (b), whose axis points down. Searching positive correlation only, the
    # mirrored motion matched itself half a period on: +0.497 s at confidence 0.994.
    t_a = np.arange(0.0, 20.0, 1.0 / 60.0)
    t_b = np.arange(0.0, 20.0, 1.0 / 100.0)

    flipped = temporal_calibration(
        t_a, up_and_down(t_a - 0.040), t_b, -up_and_down(t_b), max_lag_s=1.0
    )
    same = temporal_calibration(t_a, up_and_down(t_a - 0.040), t_b, up_and_down(t_b), max_lag_s=1.0)

    assert flipped.dt_a_from_b_s == pytest.approx(0.040, abs=0.05 / flipped.resample_hz)
    assert flipped.sign == -1 and flipped.confidence > 0.99
    assert same.dt_a_from_b_s == pytest.approx(flipped.dt_a_from_b_s, abs=1e-4)
    assert same.sign == 1
    # The curve keeps its own sign: the true offset is its trough.
    assert flipped.lags_s[np.nanargmin(flipped.correlations)] == pytest.approx(0.04)


def test_refuses_a_motion_too_regular_to_tell_a_flipped_axis_from_an_offset() -> None:
    # A pure sine mirrored is itself half a period on: both peaks score 1.000.
    t = np.arange(0.0, 20.0, 0.01)
    wave = np.sin(2.0 * math.pi * t / 0.914)
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t, wave, t, -wave, max_lag_s=1.0)
    assert info.value.kind == "degenerate"
    assert "too regular to tell a flipped axis from an offset" in str(info.value)
    # Searched within less than half a period, the mirrored peak is out of the window.
    result = temporal_calibration(t, wave, t, -wave, max_lag_s=0.3)
    assert result.sign == -1 and result.dt_a_from_b_s == pytest.approx(0.0, abs=1e-4)


def test_the_correlation_curve_spans_the_lag_window_and_peaks_at_the_offset() -> None:
    rng = np.random.default_rng(4)
    t_a, x_a, t_b, x_b = two_streams(rng, rate_a_hz=50.0, rate_b_hz=50.0, dt_a_from_b_s=0.1)

    result = temporal_calibration(t_a, x_a, t_b, x_b, max_lag_s=0.4)

    assert result.lags_s.shape == result.correlations.shape == (41,)
    assert result.lags_s[0] == pytest.approx(-0.4) and result.lags_s[-1] == pytest.approx(0.4)
    assert result.lags_s[np.nanargmax(result.correlations)] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        result.correlations[0] = 0.0


def test_explicit_resample_rate_is_used() -> None:
    rng = np.random.default_rng(5)
    t_a, x_a, t_b, x_b = two_streams(rng, rate_a_hz=60.0, rate_b_hz=100.0, dt_a_from_b_s=0.0123)

    result = temporal_calibration(t_a, x_a, t_b, x_b, max_lag_s=0.2, resample_hz=500.0)

    assert result.resample_hz == 500.0
    assert result.lags_s.shape == (201,)
    assert abs(result.dt_a_from_b_s - 0.0123) < 0.1 / 100.0


# ---------------------------------------------------------------------------- refusals


def test_refuses_a_flat_signal_as_degenerate() -> None:
    t = np.arange(0.0, 10.0, 0.01)
    still = np.tile([10.0, 20.0, 30.0], (len(t), 1))
    moving = smooth_motion(np.random.default_rng(1))(t)
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t, still, t, moving, max_lag_s=0.3)
    assert info.value.kind == "degenerate"
    assert str(info.value) == "signal a is flat: the tool must move during the recording"


def test_refuses_a_peak_at_the_edge_of_the_lag_window_as_degenerate() -> None:
    # One stop event 0.5 s apart, searched within 0.2 s: the correlation climbs to the edge.
    t = np.arange(0.0, 20.0, 0.01)
    a = np.clip(10.5 - t, 0.0, None) ** 2
    b = np.clip(10.0 - t, 0.0, None) ** 2
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t, a, t, b, max_lag_s=0.2)
    assert info.value.kind == "degenerate"
    assert "edge of the lag window (+0.200 s): widen max_lag_s" in str(info.value)


def test_refuses_a_side_lobe_when_the_true_offset_lies_outside_the_window() -> None:
    # A quasi-periodic motion offset by 0.6 s correlates 0.65 with itself at +0.17 s.
    rng = np.random.default_rng(2)
    t_a, x_a, t_b, x_b = two_streams(rng, rate_a_hz=100.0, rate_b_hz=100.0, dt_a_from_b_s=0.6)
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t_a, x_a, t_b, x_b, max_lag_s=0.2)
    assert info.value.kind == "degenerate"
    assert "do not show the same motion" in str(info.value)
    # With a window wide enough, the same streams give the offset.
    result = temporal_calibration(t_a, x_a, t_b, x_b, max_lag_s=1.0)
    assert result.dt_a_from_b_s == pytest.approx(0.6, abs=0.001)


def test_refuses_unrelated_motions_as_degenerate() -> None:
    t = np.arange(0.0, 20.0, 0.01)
    a = smooth_motion(np.random.default_rng(11))(t)
    b = smooth_motion(np.random.default_rng(12))(t)
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t, a, t, b, max_lag_s=0.3)
    assert info.value.kind == "degenerate"
    assert "do not show the same motion" in str(info.value)


def test_refuses_streams_shorter_than_the_lag_window_as_too_few_poses() -> None:
    t = np.arange(0.0, 0.5, 0.01)
    x = smooth_motion(np.random.default_rng(3))(t)
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t, x, t, x, max_lag_s=0.4)
    assert info.value.kind == "too_few_poses"
    assert "record longer than the lag window" in str(info.value)


@pytest.mark.parametrize(
    ("t_a", "signal_a", "kwargs", "needle"),
    [
        (np.array([0.0, 0.1, 0.1, 0.2]), np.zeros(4), {}, "must increase strictly; sample 2"),
        (np.arange(4.0), np.array([0.0, np.nan, 0.0, 1.0]), {}, "non-finite"),
        (np.arange(4.0), np.zeros(5), {}, "signal_a must have shape (4,) or (4, D)"),
        (np.zeros((4, 1)), np.zeros(4), {}, "t_a_s must have shape (N,)"),
        (np.arange(40.0), np.arange(40.0), {"max_lag_s": 0.0}, "max_lag_s must be finite and > 0"),
        (np.arange(40.0), np.arange(40.0), {"resample_hz": -1.0}, "resample_hz must be"),
    ],
)
def test_refuses_malformed_streams_as_bad_input(
    t_a: FloatArray, signal_a: FloatArray, kwargs: dict[str, float], needle: str
) -> None:
    t_b = np.arange(0.0, 40.0, 0.5)
    options = {"max_lag_s": 1.0, **kwargs}
    with pytest.raises(CalibrationError) as info:
        temporal_calibration(t_a, signal_a, t_b, np.sin(t_b), **options)
    assert info.value.kind == "bad_input"
    assert needle in str(info.value)

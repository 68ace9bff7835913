"""Tests for calibration.pivot (pivot and spin calibration) and calibration.errors.

Synthetic poses are built from a known tip and pivot (or shaft), so every
property test recovers a ground truth; the regression test reproduces
scikit-surgery's published figures on its recorded NDI pivot data. Property
tests are derandomised (the same examples every run) and draw a seed for a
numpy Generator, which builds the poses.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from calibration.errors import CALIBRATION_ERROR_KINDS, CalibrationError
from calibration.pivot import (
    MAX_POSITION_MM,
    pivot_calibration,
    pivot_calibration_ransac,
    spin_calibration,
)
from nav.transforms import apply, axis_angle_to_matrix, invert_rigid, make_rigid
from tests.conftest import shared_data

seeded = settings(derandomize=True, max_examples=60, deadline=None)

FloatArray = npt.NDArray[np.float64]

seeds = st.integers(0, 2**32 - 1)


def random_tip(rng: np.random.Generator) -> FloatArray:
    """A tip 100-400 mm from the marker origin, as on real pointers, in any direction."""
    direction = rng.normal(size=3)
    return np.asarray(direction / np.linalg.norm(direction) * rng.uniform(100.0, 400.0))


def pivot_poses(
    rng: np.random.Generator,
    *,
    n: int,
    p_tip: FloatArray,
    p_pivot: FloatArray,
    max_angle_deg: float,
    noise_mm: float = 0.0,
) -> FloatArray:
    """Poses (n, 4, 4) pivoting about p_pivot: random axes, angles up to max_angle_deg."""
    R_base = Rotation.random(random_state=rng).as_matrix()
    Ts = np.empty((n, 4, 4))
    for i in range(n):
        R = R_base @ axis_angle_to_matrix(
            rng.normal(size=3), math.radians(rng.uniform(0.0, 1.0) * max_angle_deg)
        )
        t = p_pivot - R @ p_tip + rng.normal(0.0, noise_mm, 3)
        Ts[i] = make_rigid(R, t)
    return Ts


def least_squares_std(Ts: FloatArray, noise_mm: float) -> FloatArray:
    """Standard deviation (6,) of the algebraic solution for isotropic translation noise.

    Noise of sigma on every t_i enters b = -t with covariance sigma^2 I, so the
    least-squares solution has covariance sigma^2 (A^T A)^-1 (Gauss-Markov).
    """
    n = len(Ts)
    A = np.hstack([Ts[:, :3, :3].reshape(3 * n, 3), np.tile(-np.eye(3), (n, 1))])
    return np.asarray(noise_mm * np.sqrt(np.diag(np.linalg.inv(A.T @ A))))


# ---------------------------------------------------------------------------- algebraic


@seeded
@given(seed=seeds, n=st.integers(30, 200), max_angle_deg=st.floats(30.0, 70.0))
def test_pivot_recovers_tip_and_pivot_exactly_from_noise_free_poses(
    seed: int, n: int, max_angle_deg: float
) -> None:
    rng = np.random.default_rng(seed)
    p_tip = random_tip(rng)
    p_pivot = rng.uniform(-1000.0, 1000.0, 3)
    Ts = pivot_poses(rng, n=n, p_tip=p_tip, p_pivot=p_pivot, max_angle_deg=max_angle_deg)
    # The construction itself: every pose maps the tip onto the pivot.
    assert np.allclose([apply(T, p_tip) for T in Ts], p_pivot, atol=1e-9)

    result = pivot_calibration(Ts)

    np.testing.assert_allclose(result.p_tip_in_pointer, p_tip, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.p_pivot_in_tracker, p_pivot, rtol=0, atol=1e-9)
    assert result.rms_error_mm < 1e-9
    assert result.max_residual_norm_mm < 1e-9
    assert result.method == "algebraic"
    assert result.n_poses == result.n_inliers == n
    assert result.inlier_mask.all()


@seeded
@given(
    seed=seeds,
    n=st.integers(30, 300),
    max_angle_deg=st.floats(30.0, 60.0),
    noise_mm=st.floats(0.05, 1.0),
)
def test_pivot_error_with_noisy_poses_stays_within_the_least_squares_bound(
    seed: int, n: int, max_angle_deg: float, noise_mm: float
) -> None:
    rng = np.random.default_rng(seed)
    p_tip = random_tip(rng)
    p_pivot = rng.uniform(-1000.0, 1000.0, 3)
    Ts = pivot_poses(
        rng, n=n, p_tip=p_tip, p_pivot=p_pivot, max_angle_deg=max_angle_deg, noise_mm=noise_mm
    )

    result = pivot_calibration(Ts)

    # Each of the 6 unknowns within 5 standard deviations of its Gauss-Markov spread.
    bound = 5.0 * least_squares_std(Ts, noise_mm)
    error = np.concatenate([result.p_tip_in_pointer - p_tip, result.p_pivot_in_tracker - p_pivot])
    assert np.all(np.abs(error) < bound), (error, bound)
    # RMS over 3n components with 6 fitted: sigma^2 chi^2(3n - 6) / 3n; its relative
    # spread is 1 / sqrt(2 (3n - 6)). This pins down the RMS definition too.
    expected_rms = noise_mm * math.sqrt((3 * n - 6) / (3 * n))
    assert abs(result.rms_error_mm / expected_rms - 1.0) < 5.0 / math.sqrt(2 * (3 * n - 6))
    # Per-pose distances of Gaussian residuals: mean |r| = sqrt(8 / pi) sigma ~ 1.6 RMS.
    ratio = result.mean_residual_norm_mm / result.rms_error_mm
    assert 1.3 < ratio < 1.9
    assert result.max_residual_norm_mm >= result.mean_residual_norm_mm


def test_rotation_spread_and_weakest_rotation_follow_their_definitions() -> None:
    # Symmetric tilts of 30 deg about x and about y: the mean rotation is I, so the spread
    # is 30 deg; the mean matrix is diag((1 + c) / 2, (1 + c) / 2, c), c = cos 30 deg.
    angle = math.radians(30.0)
    rotations = [
        axis_angle_to_matrix(axis, sign * angle) for axis in np.eye(3)[:2] for sign in (1, -1)
    ]
    p_tip = np.array([0.0, 0.0, 150.0])
    Ts = np.stack([make_rigid(R, -R @ p_tip) for R in rotations * 10])

    result = pivot_calibration(Ts)

    assert result.rotation_spread_deg == pytest.approx(30.0, abs=1e-9)
    s1 = (1.0 + math.cos(angle)) / 2.0
    assert result.weakest_rotation_deg == pytest.approx(
        math.degrees(math.asin(math.sqrt(1 - s1**2)))
    )
    np.testing.assert_allclose(result.p_tip_in_pointer, p_tip, atol=1e-9)


def test_pivot_result_arrays_are_read_only() -> None:
    rng = np.random.default_rng(7)
    Ts = pivot_poses(rng, n=40, p_tip=random_tip(rng), p_pivot=np.zeros(3), max_angle_deg=40.0)
    result = pivot_calibration(Ts)
    with pytest.raises(ValueError):
        result.p_tip_in_pointer[0] = 0.0
    with pytest.raises(ValueError):
        result.inlier_mask[0] = False


# ---------------------------------------------------------------------------- real data

PIVOT_DATA = "scikit-surgerycore/tests/data/PivotCalibration"


def load_pivot_data() -> FloatArray:
    folder: Path = shared_data(PIVOT_DATA)
    files = sorted(folder.glob("*.txt"))
    assert len(files) == 1151, f"expected 1151 matrices in {folder}, found {len(files)}"
    return np.stack([np.loadtxt(f) for f in files])


def test_pivot_reproduces_scikit_surgery_on_its_recorded_ndi_data() -> None:
    # scikit-surgerycalibration's test_pivot expects these to 3 decimals (mm).
    Ts = load_pivot_data()

    result = pivot_calibration(Ts)

    np.testing.assert_allclose(result.p_tip_in_pointer, [-14.476, 395.143, -7.558], atol=0.01)
    np.testing.assert_allclose(result.p_pivot_in_tracker, [-805.285, -85.448, -2112.066], atol=0.01)
    assert result.rms_error_mm == pytest.approx(1.838, abs=0.01)
    # The larger per-pose figure, and the spreads, for the record (this hand-held sweep
    # pivots 27 deg from its mean orientation, 10 deg in its least-turned direction).
    assert result.mean_residual_norm_mm == pytest.approx(2.531, abs=0.01)
    assert result.rotation_spread_deg == pytest.approx(27.06, abs=0.01)
    assert result.weakest_rotation_deg == pytest.approx(10.46, abs=0.01)


def test_ransac_on_recorded_ndi_data_drops_the_worst_poses_and_stays_near_the_full_fit() -> None:
    Ts = load_pivot_data()

    full = pivot_calibration(Ts)
    robust = pivot_calibration_ransac(Ts)

    assert 0.8 * len(Ts) < robust.n_inliers < len(Ts)
    assert robust.rms_error_mm < full.rms_error_mm
    assert robust.max_residual_norm_mm < 4.0  # the default inlier threshold
    assert np.linalg.norm(robust.p_tip_in_pointer - full.p_tip_in_pointer) < 3.0
    assert np.linalg.norm(robust.p_pivot_in_tracker - full.p_pivot_in_tracker) < 3.0


# ---------------------------------------------------------------------------- RANSAC


def slipping_pointer_poses(
    rng: np.random.Generator, *, n: int, outlier_fraction: float, noise_mm: float
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """Pivot poses where a share of them have the tip slipped 10-20 mm out of the divot.

    The slip is one consistent offset (the tip slid into a neighbouring groove) plus a
    2 mm wander, so it biases plain least squares instead of averaging out.
    """
    p_tip = random_tip(rng)
    p_pivot = rng.uniform(-1000.0, 1000.0, 3)
    Ts = pivot_poses(rng, n=n, p_tip=p_tip, p_pivot=p_pivot, max_angle_deg=40.0, noise_mm=noise_mm)
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, size=round(outlier_fraction * n), replace=False)] = True
    direction = rng.normal(size=3)
    slip = direction / np.linalg.norm(direction) * rng.uniform(10.0, 20.0)
    offsets = slip + rng.normal(0.0, 2.0, (int(outlier.sum()), 3))
    # A slipped pose must be a gross outlier: one that wanders back to within 6 mm of the
    # divot (seen: 4.02 mm, against RANSAC's 4 mm threshold) is a borderline case that no
    # exact inlier mask can be asked to classify. Redraw those.
    while (near := np.linalg.norm(offsets, axis=1) < 6.0).any():
        offsets[near] = slip + rng.normal(0.0, 2.0, (int(near.sum()), 3))
    Ts[outlier, :3, 3] += offsets
    return Ts, p_tip, p_pivot, ~outlier


@seeded
@given(seed=seeds, n=st.integers(50, 300))
def test_ransac_recovers_the_truth_with_20_percent_slipped_poses_where_least_squares_does_not(
    seed: int, n: int
) -> None:
    rng = np.random.default_rng(seed)
    noise_mm = 0.2
    Ts, p_tip, p_pivot, inlier = slipping_pointer_poses(
        rng, n=n, outlier_fraction=0.2, noise_mm=noise_mm
    )

    robust = pivot_calibration_ransac(Ts, seed=seed)
    plain = pivot_calibration(Ts)

    np.testing.assert_array_equal(robust.inlier_mask, inlier)
    assert robust.method == "ransac" and robust.n_inliers == inlier.sum()
    bound = 5.0 * least_squares_std(Ts[inlier], noise_mm)
    error = np.concatenate([robust.p_tip_in_pointer - p_tip, robust.p_pivot_in_tracker - p_pivot])
    assert np.all(np.abs(error) < bound), (error, bound)
    plain_error = max(
        np.linalg.norm(plain.p_tip_in_pointer - p_tip),
        np.linalg.norm(plain.p_pivot_in_tracker - p_pivot),
    )
    assert plain_error > 1.0


def test_ransac_is_repeatable_for_a_seed() -> None:
    rng = np.random.default_rng(3)
    Ts, *_ = slipping_pointer_poses(rng, n=100, outlier_fraction=0.3, noise_mm=0.3)
    first = pivot_calibration_ransac(Ts, seed=11)
    second = pivot_calibration_ransac(Ts, seed=11)
    np.testing.assert_array_equal(first.p_tip_in_pointer, second.p_tip_in_pointer)
    np.testing.assert_array_equal(first.inlier_mask, second.inlier_mask)


def test_ransac_refuses_when_most_poses_slipped() -> None:
    rng = np.random.default_rng(5)
    Ts, *_ = slipping_pointer_poses(rng, n=100, outlier_fraction=0.6, noise_mm=0.2)
    with pytest.raises(CalibrationError) as info:
        pivot_calibration_ransac(Ts, min_inlier_fraction=0.5)
    assert info.value.kind == "error_above_threshold"
    assert "of 100 poses" in str(info.value) and "need 50%" in str(info.value)


def test_ransac_refuses_a_sample_smaller_than_three_poses() -> None:
    rng = np.random.default_rng(5)
    Ts = pivot_poses(rng, n=40, p_tip=random_tip(rng), p_pivot=np.zeros(3), max_angle_deg=40.0)
    with pytest.raises(CalibrationError) as info:
        pivot_calibration_ransac(Ts, sample_size=2)
    assert info.value.kind == "bad_input"


# ---------------------------------------------------------------------------- pivot gates


def well_spread_poses(n: int = 60, *, noise_mm: float = 0.0, seed: int = 1) -> FloatArray:
    rng = np.random.default_rng(seed)
    return pivot_poses(
        rng, n=n, p_tip=random_tip(rng), p_pivot=np.zeros(3), max_angle_deg=40.0, noise_mm=noise_mm
    )


def test_pivot_refuses_too_few_poses() -> None:
    with pytest.raises(CalibrationError) as info:
        pivot_calibration(well_spread_poses(12))
    assert info.value.kind == "too_few_poses"
    assert str(info.value) == "only 12 poses, need at least 30"


def test_pivot_refuses_a_pointer_that_was_barely_pivoted() -> None:
    rng = np.random.default_rng(2)
    Ts = pivot_poses(rng, n=60, p_tip=random_tip(rng), p_pivot=np.zeros(3), max_angle_deg=4.0)
    with pytest.raises(CalibrationError) as info:
        pivot_calibration(Ts)
    assert info.value.kind == "not_enough_rotation"
    message = str(info.value)
    assert message.startswith("rotation spread ") and message.endswith(
        "deg, need at least 20 deg: pivot the pointer further"
    )


def test_pivot_refuses_a_pointer_pivoted_about_one_axis_only() -> None:
    # Tilting within one plane leaves the tip's component along the plane normal free.
    p_tip = np.array([10.0, 20.0, 200.0])
    rotations = [
        axis_angle_to_matrix([1.0, 0.0, 0.0], math.radians(a)) for a in np.linspace(-40, 40, 50)
    ]
    Ts = np.stack([make_rigid(R, -R @ p_tip) for R in rotations])
    with pytest.raises(CalibrationError) as info:
        pivot_calibration(Ts)
    assert info.value.kind == "not_enough_rotation"
    assert "one axis only" in str(info.value)


def test_pivot_reports_a_rank_deficient_system_as_degenerate_when_gates_are_off() -> None:
    Ts = np.stack([make_rigid(np.eye(3), [1.0, 2.0, 3.0])] * 40)
    with pytest.raises(CalibrationError) as info:
        pivot_calibration(Ts, min_rotation_deg=0.0, min_weakest_rotation_deg=0.0)
    assert info.value.kind == "degenerate"
    assert "rank 3" in str(info.value)


def _moved(Ts: FloatArray, x_mm: float) -> FloatArray:
    """The poses with every translation moved by ``x_mm`` along the tracker's x."""
    moved = np.array(Ts)
    moved[:, 0, 3] += x_mm
    return moved


@seeded
@given(exponent=st.floats(4.1, 308.0), sign=st.sampled_from([-1.0, 1.0]))
def test_pivot_refuses_poses_beyond_ten_metres_whatever_the_distance(
    exponent: float, sign: float
) -> None:
    """1e308 mm used to solve into a tip 1e308 mm long, printed with 300 digits."""
    Ts = _moved(well_spread_poses(), sign * 10.0**exponent)
    for calibrate in (pivot_calibration, pivot_calibration_ransac):
        with pytest.raises(CalibrationError) as info:
            calibrate(Ts)
        assert info.value.kind == "bad_input"
        assert f"beyond the {MAX_POSITION_MM:g} mm limit" in str(info.value)


def test_pivot_about_a_pivot_point_nine_metres_away_is_still_solved() -> None:
    rng = np.random.default_rng(3)
    p_tip, p_pivot = random_tip(rng), np.array([0.0, 0.0, -9000.0])
    Ts = pivot_poses(rng, n=60, p_tip=p_tip, p_pivot=p_pivot, max_angle_deg=40.0)
    result = pivot_calibration(Ts)
    np.testing.assert_allclose(result.p_tip_in_pointer, p_tip, atol=1e-6)
    np.testing.assert_allclose(result.p_pivot_in_tracker, p_pivot, atol=1e-6)


def test_pivot_refuses_a_tip_beyond_ten_metres_from_poses_turning_about_one_axis() -> None:
    """Gates off, a wobble of 1e-6 rad keeps rank 6, and 0.3 mm noise throws the tip 64 m."""
    rng = np.random.default_rng(0)
    p_tip, p_pivot = np.array([0.0, 0.0, 150.0]), np.array([10.0, 20.0, -1000.0])
    Ts = []
    for i in range(60):
        R = axis_angle_to_matrix(
            [1.0, 0.0, 0.0], math.radians(40.0) * math.sin(i / 60 * 2 * math.pi)
        )
        R = R @ axis_angle_to_matrix([0.0, 1.0, 0.0], 1e-6 * math.cos(i))
        Ts.append(make_rigid(R, p_pivot - R @ p_tip + rng.normal(scale=0.3, size=3)))
    with pytest.raises(CalibrationError) as info:
        pivot_calibration(np.array(Ts), min_rotation_deg=0.0, min_weakest_rotation_deg=0.0)
    assert info.value.kind == "degenerate"
    assert str(info.value).startswith("the tip comes out 6.4e+04 mm from the origin, beyond")


def test_pivot_refuses_an_rms_error_above_the_limit() -> None:
    Ts = well_spread_poses(noise_mm=2.7)
    with pytest.raises(CalibrationError) as info:
        pivot_calibration(Ts, max_rms_mm=1.5)
    assert info.value.kind == "error_above_threshold"
    assert str(info.value).startswith("RMS error ")
    assert str(info.value).endswith(" mm is above the 1.5 mm limit")
    # The same data pass a looser limit.
    assert pivot_calibration(Ts, max_rms_mm=5.0).rms_error_mm > 1.5


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda Ts: Ts[:, :3, :], "shape (N, 4, 4)"),
        (lambda Ts: np.where(np.arange(4) == 3, np.nan, Ts), "non-finite"),
        (lambda Ts: Ts * np.array([1.01, 1.0, 1.0, 1.0])[:, None], "not a rigid transform"),
        (lambda Ts: "not poses", "not a numeric array"),
        (lambda Ts: _moved(Ts, 1e308), "pose[0] has a translation of 1e+308 mm, beyond the 10000"),
    ],
)
def test_pivot_and_spin_refuse_malformed_poses_as_bad_input(
    mutate: Callable[[FloatArray], npt.ArrayLike], needle: str
) -> None:
    Ts = mutate(well_spread_poses())
    for calibrate in (pivot_calibration, pivot_calibration_ransac, spin_calibration):
        with pytest.raises(CalibrationError) as info:
            calibrate(Ts)
        assert info.value.kind == "bad_input"
        assert needle in str(info.value)


# ---------------------------------------------------------------------------- spin


def spin_poses(
    rng: np.random.Generator,
    *,
    n: int,
    shaft: FloatArray,
    spin_range_deg: float,
    wobble_deg: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Poses (n, 4, 4) spun about ``shaft`` (pointer frame) with the tip fixed; and the angles.

    The tip is on the shaft, 150 mm out; pose i is R_0 @ Rot(shaft, phi_i), so that
    R_i @ shaft = R_0 @ shaft for every i; ``wobble_deg`` tilts each pose by a random
    rotation vector with that standard deviation per component.
    """
    p_tip = 150.0 * shaft
    p_pivot = rng.uniform(-500.0, 500.0, 3)
    R_0 = Rotation.random(random_state=rng).as_matrix()
    # Evenly spread angles in shuffled order: for spin_range_deg <= 300 and n >= 30 no
    # gap between neighbours exceeds the gap left unswept, so the arc is spin_range_deg.
    phi = rng.permutation(np.linspace(0.0, math.radians(spin_range_deg), n))
    Ts = np.empty((n, 4, 4))
    for i in range(n):
        tilt = Rotation.from_rotvec(rng.normal(0.0, math.radians(wobble_deg), 3)).as_matrix()
        R = tilt @ R_0 @ axis_angle_to_matrix(shaft, phi[i])
        Ts[i] = make_rigid(R, p_pivot - R @ p_tip)
    return Ts, phi


unit_vectors = (
    st.tuples(*[st.floats(-1.0, 1.0)] * 3)
    .filter(lambda v: np.linalg.norm(v) > 0.1)
    .map(lambda v: np.array(v) / np.linalg.norm(v))
)


@seeded
@given(
    seed=seeds, shaft=unit_vectors, n=st.integers(30, 200), spin_range_deg=st.floats(95.0, 300.0)
)
def test_spin_recovers_a_known_shaft_axis_and_the_spin_range(
    seed: int, shaft: FloatArray, n: int, spin_range_deg: float
) -> None:
    rng = np.random.default_rng(seed)
    Ts, _ = spin_poses(rng, n=n, shaft=shaft, spin_range_deg=spin_range_deg)

    result = spin_calibration(Ts, p_tip_in_pointer=150.0 * shaft)

    np.testing.assert_allclose(result.shaft_direction_in_pointer, shaft, atol=1e-9)
    np.testing.assert_allclose(result.shaft_direction_in_tracker, Ts[0, :3, :3] @ shaft, atol=1e-9)
    assert result.spin_range_deg == pytest.approx(spin_range_deg, abs=1e-6)
    assert result.axis_spread_deg < 1e-6
    assert result.n_poses == n
    # The tip stays put: the spin axis through the tip is the shaft, seen from the tracker.
    tips = np.stack([apply(T, 150.0 * shaft) for T in Ts])
    assert np.ptp(tips, axis=0).max() < 1e-9


@seeded
@given(seed=seeds, shaft=unit_vectors, wobble_deg=st.floats(0.2, 2.0))
def test_spin_with_a_wobbling_shaft_stays_close_and_reports_the_wobble(
    seed: int, shaft: FloatArray, wobble_deg: float
) -> None:
    rng = np.random.default_rng(seed)
    n = 100
    Ts, _ = spin_poses(rng, n=n, shaft=shaft, spin_range_deg=180.0, wobble_deg=wobble_deg)

    result = spin_calibration(Ts, p_tip_in_pointer=150.0 * shaft)

    error_deg = math.degrees(math.acos(min(1.0, float(result.shaft_direction_in_pointer @ shaft))))
    assert error_deg < wobble_deg
    # Two of the three tilt components move the shaft: RMS wobble ~ sqrt(2) * wobble_deg.
    assert result.axis_spread_deg == pytest.approx(math.sqrt(2.0) * wobble_deg, rel=0.3)


def test_spin_without_a_tip_orients_the_shaft_by_its_largest_component() -> None:
    rng = np.random.default_rng(4)
    shaft = np.array([0.2, -0.9, 0.3]) / np.linalg.norm([0.2, -0.9, 0.3])
    Ts, _ = spin_poses(rng, n=50, shaft=shaft, spin_range_deg=200.0)

    np.testing.assert_allclose(spin_calibration(Ts).shaft_direction_in_pointer, -shaft, atol=1e-9)
    np.testing.assert_allclose(
        spin_calibration(Ts, p_tip_in_pointer=shaft).shaft_direction_in_pointer, shaft, atol=1e-9
    )


def test_spin_of_more_than_a_full_turn_reports_nearly_360_degrees() -> None:
    rng = np.random.default_rng(10)
    Ts, _ = spin_poses(rng, n=100, shaft=np.array([0.0, 1.0, 0.0]), spin_range_deg=720.0)
    result = spin_calibration(Ts)
    assert 350.0 < result.spin_range_deg < 360.0
    np.testing.assert_allclose(result.shaft_direction_in_pointer, [0.0, 1.0, 0.0], atol=1e-9)


def test_spin_refuses_too_little_spin() -> None:
    rng = np.random.default_rng(6)
    Ts, _ = spin_poses(rng, n=50, shaft=np.array([0.0, 0.0, 1.0]), spin_range_deg=35.0)
    with pytest.raises(CalibrationError) as info:
        spin_calibration(Ts)
    assert info.value.kind == "not_enough_rotation"
    assert str(info.value) == (
        "spin range 35.0 deg, need at least 90 deg: turn the pointer further about its shaft"
    )


def test_spin_refuses_too_few_poses() -> None:
    rng = np.random.default_rng(6)
    Ts, _ = spin_poses(rng, n=10, shaft=np.array([0.0, 0.0, 1.0]), spin_range_deg=180.0)
    with pytest.raises(CalibrationError) as info:
        spin_calibration(Ts)
    assert info.value.kind == "too_few_poses"


def test_spin_refuses_a_wobble_above_the_limit() -> None:
    rng = np.random.default_rng(8)
    Ts, _ = spin_poses(
        rng, n=80, shaft=np.array([1.0, 0.0, 0.0]), spin_range_deg=180.0, wobble_deg=3.0
    )
    with pytest.raises(CalibrationError) as info:
        spin_calibration(Ts, max_axis_spread_deg=2.0)
    assert info.value.kind == "error_above_threshold"
    assert "above the 2 deg limit" in str(info.value)


def test_spin_reports_poses_that_do_not_turn_as_degenerate_when_the_gate_is_off() -> None:
    T = make_rigid(Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(), [1.0, 2.0, 3.0])
    with pytest.raises(CalibrationError) as info:
        spin_calibration(np.stack([T] * 40), min_spin_deg=0.0)
    assert info.value.kind == "degenerate"


def test_spin_refuses_a_zero_tip_as_bad_input() -> None:
    rng = np.random.default_rng(6)
    Ts, _ = spin_poses(rng, n=40, shaft=np.array([0.0, 0.0, 1.0]), spin_range_deg=180.0)
    with pytest.raises(CalibrationError) as info:
        spin_calibration(Ts, p_tip_in_pointer=np.zeros(3))
    assert info.value.kind == "bad_input"


def test_pivot_then_spin_gives_a_tip_frame_whose_z_runs_along_the_shaft() -> None:
    # The calibrations chain: the tip from pivoting, the shaft from spinning the same pointer.
    rng = np.random.default_rng(9)
    shaft = np.array([0.1, 0.2, 1.0]) / np.linalg.norm([0.1, 0.2, 1.0])
    p_tip = 150.0 * shaft
    pivot = pivot_calibration(
        pivot_poses(rng, n=60, p_tip=p_tip, p_pivot=np.zeros(3), max_angle_deg=40.0)
    )
    spun, _ = spin_poses(rng, n=60, shaft=shaft, spin_range_deg=180.0)
    spin = spin_calibration(spun, p_tip_in_pointer=pivot.p_tip_in_pointer)

    z = spin.shaft_direction_in_pointer
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    T_pointer_from_pointer_tip = make_rigid(
        np.column_stack([x, np.cross(z, x), z]), pivot.p_tip_in_pointer
    )
    np.testing.assert_allclose(
        apply(invert_rigid(T_pointer_from_pointer_tip), p_tip), 0.0, atol=1e-9
    )
    # A point 10 mm behind the tip, on the shaft, sits at z = -10 in the tip frame.
    behind = apply(invert_rigid(T_pointer_from_pointer_tip), p_tip - 10.0 * shaft)
    np.testing.assert_allclose(behind, [0.0, 0.0, -10.0], atol=1e-9)


# ---------------------------------------------------------------------------- errors


def test_calibration_error_is_a_value_error_with_a_kind_and_one_line() -> None:
    err = CalibrationError("too_few_poses", "only 12 poses,\n need at least 30")
    assert isinstance(err, ValueError)
    assert err.kind == "too_few_poses"
    assert str(err) == "only 12 poses, need at least 30"
    assert CALIBRATION_ERROR_KINDS == {
        "too_few_poses",
        "not_enough_rotation",
        "error_above_threshold",
        "degenerate",
        "bad_input",
    }


def test_calibration_error_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown CalibrationError kind"):
        CalibrationError("oops", "message")  # type: ignore[arg-type]


def test_calibration_error_keeps_its_kind_through_pickling() -> None:
    # A worker process raising it must reach the parent with the kind intact.
    err = pickle.loads(pickle.dumps(CalibrationError("degenerate", "rank 5")))
    assert err.kind == "degenerate" and str(err) == "rank 5"

"""Tests for nav.registration.paired_point (fiducial registration, FRE, predicted TRE).

Property tests recover a known rigid transform from noise-free fiducials; the
statistical tests compare FRE and the predicted TRE (Fitzpatrick, West &
Maurer 1998, eq. 46) with Monte-Carlo estimates over a few thousand noisy
registrations. Hypothesis runs derandomised and numpy draws from seeded
Generators, so every run sees the same numbers.
"""

from __future__ import annotations

import doctest
import math
import pickle

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

import nav.registration.paired_point as paired_point
from nav.registration.errors import REGISTRATION_ERROR_KINDS, RegistrationError
from nav.registration.paired_point import (
    COLLINEARITY_TOLERANCE,
    PairedPointResult,
    predicted_tre_mm,
    register_paired_points,
    tre_field_mm,
)
from nav.transforms import apply, is_rigid, make_rigid, quat_to_matrix

FloatArray = npt.NDArray[np.float64]

seeded = settings(derandomize=True, max_examples=100, deadline=None)

seeds = st.integers(0, 2**32 - 1)
unit_interval = st.floats(-1.0, 1.0, allow_nan=False)
quaternions = st.tuples(unit_interval, unit_interval, unit_interval, unit_interval).filter(
    lambda q: math.fsum(c * c for c in q) > 1e-3
)
translations_mm = st.tuples(*[st.floats(-2000.0, 2000.0, allow_nan=False)] * 3)


def well_spread_points(rng: np.random.Generator, n: int) -> FloatArray:
    """n fiducials (n, 3) mm around a random centre within 300 mm, spread about 50 mm.

    Redrawn until the spread ratio s2/s1 is at least 0.2, far from collinear.
    """
    centre = rng.uniform(-300.0, 300.0, size=3)
    while True:
        p = centre + rng.normal(scale=50.0, size=(n, 3))
        s = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
        if s[1] / s[0] >= 0.2:
            return p


def random_rigid(rng: np.random.Generator) -> FloatArray:
    """A uniformly random rotation and a translation within 1 m per axis."""
    return make_rigid(Rotation.random(random_state=rng).as_matrix(), rng.uniform(-1e3, 1e3, 3))


def naive_rotation(p_model: FloatArray, p_patient: FloatArray) -> FloatArray:
    """Arun's R = V U^T without the reflection correction (the oracle for 'naive')."""
    x_c = p_model - p_model.mean(axis=0)
    y_c = p_patient - p_patient.mean(axis=0)
    U, _, Vt = np.linalg.svd(x_c.T @ y_c)
    return np.asarray(Vt.T @ U.T)


def best_rotation_scipy(
    p_model: FloatArray, p_patient: FloatArray, weights: FloatArray | None = None
) -> FloatArray:
    """The least-squares proper rotation by scipy's Kabsch (an independent implementation)."""
    w = np.ones(len(p_model)) if weights is None else weights
    x_c = p_model - w @ p_model / w.sum()
    y_c = p_patient - w @ p_patient / w.sum()
    rotation, _ = Rotation.align_vectors(y_c, x_c, weights=w)
    return np.asarray(rotation.as_matrix())


# --- recovery of a known transform ---------------------------------------------------------


@seeded
@given(
    seed=seeds,
    n=st.integers(3, 20),
    q=quaternions,
    t_mm=translations_mm,
    weighted=st.booleans(),
)
def test_noise_free_fiducials_recover_any_rigid_transform_to_1e_9(
    seed: int, n: int, q: tuple[float, ...], t_mm: tuple[float, ...], weighted: bool
) -> None:
    rng = np.random.default_rng(seed)
    T_patient_from_model = make_rigid(quat_to_matrix(q), t_mm)
    p_model = well_spread_points(rng, n)
    p_patient = apply(T_patient_from_model, p_model)
    weights = rng.uniform(0.1, 10.0, size=n) if weighted else None

    result = register_paired_points(p_model, p_patient, weights=weights)

    np.testing.assert_allclose(result.T_patient_from_model, T_patient_from_model, rtol=0, atol=1e-9)
    assert is_rigid(result.T_patient_from_model, tol=1e-12)
    assert result.fre_mm < 1e-9
    assert result.fiducial_errors_mm.shape == (n,)
    assert np.all(result.fiducial_errors_mm < 1e-9)
    assert result.fle_source == "estimated_from_fre"


def test_result_is_frozen_and_its_arrays_read_only() -> None:
    rng = np.random.default_rng(1)
    p_model = well_spread_points(rng, 5)
    result: PairedPointResult = register_paired_points(p_model, apply(random_rigid(rng), p_model))
    with pytest.raises(AttributeError):
        result.fre_mm = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        result.T_patient_from_model[0, 3] = 1.0


# --- reflection safety ---------------------------------------------------------------------


def test_mirrored_point_set_gives_the_best_proper_rotation_not_a_reflection() -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):
        p_model = rng.normal(scale=(80.0, 40.0, 20.0), size=(8, 3))
        p_patient = apply(random_rigid(rng), p_model * (-1.0, 1.0, 1.0))  # a mirror image
        assert np.linalg.det(naive_rotation(p_model, p_patient)) < 0.0  # the trap is set

        R = register_paired_points(p_model, p_patient).T_patient_from_model[:3, :3]

        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(R, best_rotation_scipy(p_model, p_patient), atol=1e-9)


def test_coplanar_fiducials_recover_the_rotation_where_the_naive_svd_reflects() -> None:
    # Four coplanar fiducials, as on a flat reference frame: H has rank 2, the
    # sign of its third singular pair is arbitrary and V U^T is a reflection
    # for about half of the configurations.
    rng = np.random.default_rng(11)
    n_reflected = 0
    for _ in range(40):
        p_model = np.column_stack([rng.uniform(-60.0, 60.0, size=(4, 2)), np.zeros(4)])
        T_patient_from_model = random_rigid(rng)
        p_patient = apply(T_patient_from_model, p_model)
        n_reflected += np.linalg.det(naive_rotation(p_model, p_patient)) < 0.0

        result = register_paired_points(p_model, p_patient)

        np.testing.assert_allclose(
            result.T_patient_from_model, T_patient_from_model, rtol=0, atol=1e-9
        )
    assert n_reflected >= 5, "the configurations no longer exercise the reflection case"


def test_noisy_coplanar_fiducials_match_scipys_least_squares_rotation() -> None:
    rng = np.random.default_rng(12)
    n_reflected = 0
    for _ in range(40):
        p_model = np.column_stack([rng.uniform(-60.0, 60.0, size=(5, 2)), np.zeros(5)])
        p_patient = apply(random_rigid(rng), p_model) + rng.normal(scale=0.5, size=(5, 3))
        n_reflected += np.linalg.det(naive_rotation(p_model, p_patient)) < 0.0

        R = register_paired_points(p_model, p_patient).T_patient_from_model[:3, :3]

        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(R, best_rotation_scipy(p_model, p_patient), atol=1e-9)
    assert n_reflected >= 5, "the configurations no longer exercise the reflection case"


# --- weights -------------------------------------------------------------------------------


def test_zero_weight_on_a_gross_outlier_makes_the_result_exact_again() -> None:
    rng = np.random.default_rng(3)
    p_model = well_spread_points(rng, 6)
    T_patient_from_model = random_rigid(rng)
    p_patient = apply(T_patient_from_model, p_model)
    p_patient[2] += (30.0, -40.0, 0.0)  # a mis-touched fiducial, 50 mm off
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])

    unweighted = register_paired_points(p_model, p_patient)
    weighted = register_paired_points(p_model, p_patient, weights=weights)

    assert unweighted.fre_mm > 5.0  # the outlier spoils the unweighted fit
    np.testing.assert_allclose(weighted.T_patient_from_model, T_patient_from_model, atol=1e-9)
    assert weighted.fre_mm < 1e-9
    # The excluded fiducial still shows its residual: how the mix-up is found.
    assert weighted.fiducial_errors_mm[2] == pytest.approx(50.0, abs=1e-9)
    assert len(weighted.p_model_fiducials) == 5


def test_uniform_weights_give_the_unweighted_result() -> None:
    rng = np.random.default_rng(4)
    p_model = well_spread_points(rng, 7)
    p_patient = apply(random_rigid(rng), p_model) + rng.normal(scale=0.4, size=(7, 3))

    plain = register_paired_points(p_model, p_patient)
    uniform = register_paired_points(p_model, p_patient, weights=np.full(7, 3.7))

    np.testing.assert_allclose(uniform.T_patient_from_model, plain.T_patient_from_model, atol=1e-12)
    assert uniform.fre_mm == pytest.approx(plain.fre_mm, rel=1e-12)
    assert uniform.fle_mm == pytest.approx(plain.fle_mm, rel=1e-12)
    np.testing.assert_allclose(uniform.fiducial_errors_mm, plain.fiducial_errors_mm, rtol=1e-12)


@seeded
@given(seed=seeds, n=st.integers(3, 12))
def test_weighted_rotation_matches_scipys_weighted_least_squares(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    p_model = well_spread_points(rng, n)
    p_patient = apply(random_rigid(rng), p_model) + rng.normal(scale=1.0, size=(n, 3))
    weights = rng.uniform(0.05, 5.0, size=n)

    R = register_paired_points(p_model, p_patient, weights=weights).T_patient_from_model[:3, :3]

    np.testing.assert_allclose(R, best_rotation_scipy(p_model, p_patient, weights), atol=1e-9)


# --- FRE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 6, 10])
def test_mean_fre_squared_is_1_minus_2_over_n_times_fle_squared(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    sigma_mm = 0.3  # Gaussian FLE per axis: <FLE^2> = 3 sigma^2
    p_model = well_spread_points(rng, n)
    T_patient_from_model = random_rigid(rng)
    p_true = apply(T_patient_from_model, p_model)
    trials = 4000
    fre_sq = np.empty(trials)
    fle_sq_estimated = np.empty(trials)
    for i in range(trials):
        p_patient = p_true + rng.normal(scale=sigma_mm, size=(n, 3))
        result = register_paired_points(p_model, p_patient)
        fre_sq[i] = result.fre_mm**2
        fle_sq_estimated[i] = result.fle_mm**2

    fle_sq = 3.0 * sigma_mm**2
    assert fre_sq.mean() == pytest.approx((1.0 - 2.0 / n) * fle_sq, rel=0.03)
    assert fle_sq_estimated.mean() == pytest.approx(fle_sq, rel=0.03)


def test_given_fle_is_used_and_labelled() -> None:
    rng = np.random.default_rng(5)
    p_model = well_spread_points(rng, 5)
    result = register_paired_points(p_model, apply(random_rigid(rng), p_model), fle_mm=0.35)
    assert (result.fle_mm, result.fle_source) == (0.35, "given")


# --- predicted TRE -------------------------------------------------------------------------


def fiducial_configurations() -> dict[str, FloatArray]:
    """Configurations from flat and few to many and anisotropic, model frame, mm."""
    rng = np.random.default_rng(2024)
    azimuth, polar = rng.uniform(0.0, 2.0 * np.pi, 10), rng.uniform(0.1, 1.2, 10)  # a cap, r 90 mm
    return {
        "square_4_coplanar": np.array(
            [[50.0, 0.0, 0.0], [0.0, 50.0, 0.0], [-50.0, 0.0, 0.0], [0.0, -50.0, 0.0]]
        ),
        "triangle_3": np.array([[0.0, 0.0, 0.0], [90.0, 10.0, 0.0], [30.0, 70.0, 5.0]]),
        "anisotropic_6": rng.normal(scale=(60.0, 40.0, 15.0), size=(6, 3)) + (100.0, 0.0, -50.0),
        "skull_cap_10": 90.0
        * np.column_stack(
            [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)]
        ),
    }


@pytest.mark.parametrize("name", list(fiducial_configurations()))
def test_predicted_tre_matches_monte_carlo_within_10_percent(name: str) -> None:
    p_model = fiducial_configurations()[name]
    n = len(p_model)
    centroid = p_model.mean(axis=0)
    targets = centroid + np.array(
        [
            [0.0, 0.0, 0.0],  # the centroid: TRE = FLE / sqrt(N)
            [10.0, -5.0, 8.0],  # near it, inside the fiducials
            [0.0, 0.0, 150.0],  # deep, off the fiducials' plane
            [250.0, -200.0, 120.0],  # far outside the fiducials
        ]
    )
    rng = np.random.default_rng(sum(map(ord, name)))
    sigma_mm = 0.25
    fle_mm = math.sqrt(3.0) * sigma_mm
    T_patient_from_model = random_rigid(rng)
    p_true = apply(T_patient_from_model, p_model)
    targets_true = apply(T_patient_from_model, targets)
    trials = 3000
    tre_sq = np.zeros(len(targets))
    for _ in range(trials):
        p_patient = p_true + rng.normal(scale=sigma_mm, size=(n, 3))
        result = register_paired_points(p_model, p_patient, fle_mm=fle_mm)
        tre_sq += np.sum((apply(result.T_patient_from_model, targets) - targets_true) ** 2, axis=1)
    tre_monte_carlo = np.sqrt(tre_sq / trials)

    tre_predicted = predicted_tre_mm(targets, p_model, fle_mm=fle_mm)

    np.testing.assert_allclose(tre_predicted, tre_monte_carlo, rtol=0.10)
    assert tre_predicted[0] == pytest.approx(fle_mm / math.sqrt(n), rel=1e-12)
    np.testing.assert_allclose(result.predicted_tre_mm(targets), tre_predicted, rtol=1e-12)


def test_predicted_tre_grows_with_distance_from_the_fiducial_centroid() -> None:
    rng = np.random.default_rng(8)
    p_model = rng.normal(scale=(60.0, 40.0, 15.0), size=(6, 3))
    centroid = p_model.mean(axis=0)
    distances_mm = np.linspace(0.0, 500.0, 51)
    for direction in rng.normal(size=(20, 3)):
        direction /= np.linalg.norm(direction)
        tre = predicted_tre_mm(centroid + np.outer(distances_mm, direction), p_model, fle_mm=0.5)
        assert np.all(np.diff(tre) > 0.0)
        assert tre[0] == pytest.approx(0.5 / math.sqrt(6), rel=1e-12)


def test_predicted_tre_is_the_same_in_model_and_patient_coordinates() -> None:
    rng = np.random.default_rng(9)
    p_model = well_spread_points(rng, 5)
    targets = p_model.mean(axis=0) + rng.normal(scale=150.0, size=(30, 3))
    T = random_rigid(rng)
    np.testing.assert_allclose(
        predicted_tre_mm(apply(T, targets), apply(T, p_model), fle_mm=0.4),
        predicted_tre_mm(targets, p_model, fle_mm=0.4),
        rtol=1e-9,
    )


def test_tre_field_equals_predicted_tre_at_every_vertex() -> None:
    rng = np.random.default_rng(10)
    p_model = well_spread_points(rng, 6)
    p_patient = apply(random_rigid(rng), p_model) + rng.normal(scale=0.3, size=(6, 3))
    result = register_paired_points(p_model, p_patient)
    vertices_model = p_model.mean(axis=0) + rng.normal(scale=120.0, size=(500, 3))

    field = tre_field_mm(vertices_model, result)

    assert field.shape == (500,)
    pointwise = [result.predicted_tre_mm(v) for v in vertices_model]
    assert all(isinstance(v, float) for v in pointwise)
    np.testing.assert_allclose(field, np.array(pointwise, dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(
        field, predicted_tre_mm(vertices_model, p_model, fle_mm=result.fle_mm), rtol=1e-12
    )


def test_module_docstring_worked_example_holds() -> None:
    assert doctest.testmod(paired_point, raise_on_error=False).failed == 0
    p_model = np.array([[50.0, 0, 0], [0, 50, 0], [-50, 0, 0], [0, -50, 0]])
    tre = predicted_tre_mm([[0.0, 0.0, 100.0]], p_model, fle_mm=1.0)
    assert tre[0] == pytest.approx(math.sqrt(19.0 / 12.0), rel=1e-12)


# --- refusals ------------------------------------------------------------------------------

GOOD = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 80.0, 0.0], [20.0, 30.0, 60.0]])


def _with(a: FloatArray, index: tuple[int, int], value: float) -> FloatArray:
    b = a.copy()
    b[index] = value
    return b


@pytest.mark.parametrize(
    ("p_model", "p_patient", "weights", "kind"),
    [
        pytest.param(GOOD[:2], GOOD[:2], None, "too_few_points", id="two_points"),
        pytest.param(
            np.outer(np.arange(5.0), (10.0, 20.0, -5.0)),
            np.outer(np.arange(5.0), (10.0, 20.0, -5.0)),
            None,
            "collinear",
            id="collinear",
        ),
        pytest.param(
            np.outer(np.arange(5.0), (10.0, 20.0, -5.0)) + np.eye(5, 3) * 1e-3,
            np.outer(np.arange(5.0), (10.0, 20.0, -5.0)),
            None,
            "collinear",
            id="nearly_collinear",
        ),
        pytest.param(np.ones((4, 3)), np.ones((4, 3)), None, "collinear", id="coincident"),
        pytest.param(GOOD, GOOD[:3], None, "mismatched", id="mismatched_counts"),
        pytest.param(GOOD[:, :2], GOOD[:, :2], None, "mismatched", id="not_n_by_3"),
        pytest.param(_with(GOOD, (1, 2), np.nan), GOOD, None, "non_finite", id="nan_model"),
        pytest.param(GOOD, _with(GOOD, (3, 0), np.inf), None, "non_finite", id="inf_patient"),
        pytest.param(GOOD * 1e300, GOOD, None, "out_of_range", id="model_x1e300"),
        pytest.param(GOOD, GOOD + 1e200, None, "out_of_range", id="patient_1e200_away"),
        pytest.param(GOOD, GOOD, [1.0, -0.5, 1.0, 1.0], "bad_weights", id="negative_weight"),
        pytest.param(GOOD, GOOD, [0.0, 0.0, 0.0, 0.0], "bad_weights", id="all_zero_weights"),
        pytest.param(GOOD, GOOD, [1.0, 0.0, 0.0, 1.0], "too_few_points", id="two_weighted"),
        pytest.param(GOOD, GOOD, [1.0, 1.0, 1.0], "mismatched", id="weights_too_short"),
        pytest.param(GOOD, GOOD, [1.0, np.nan, 1.0, 1.0], "non_finite", id="nan_weight"),
    ],
)
def test_degenerate_input_is_refused_with_its_kind(
    p_model: FloatArray, p_patient: FloatArray, weights: list[float] | None, kind: str
) -> None:
    with pytest.raises(RegistrationError) as info:
        register_paired_points(p_model, p_patient, weights=weights)
    assert info.value.kind == kind
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_collinear_patient_points_are_refused_even_when_the_model_is_not() -> None:
    line = np.outer(np.arange(4.0), (1.0, 2.0, 3.0))
    with pytest.raises(RegistrationError) as info:
        register_paired_points(GOOD, line)
    assert info.value.kind == "collinear"
    assert "patient" in str(info.value)


def test_spread_ratio_just_above_the_collinearity_tolerance_is_accepted() -> None:
    # s2/s1 for points (+-a, 0, 0), (0, +-b, 0) is b/a.
    a, b = 100.0, 100.0 * COLLINEARITY_TOLERANCE * 1.01
    p_model = np.array([[a, 0, 0], [-a, 0, 0], [0, b, 0], [0, -b, 0]])
    register_paired_points(p_model, p_model)
    with pytest.raises(RegistrationError, match="collinear"):
        register_paired_points(p_model * (1.0, 0.98, 1.0), p_model)


@pytest.mark.parametrize("fle_mm", [-0.1, math.nan, math.inf])
def test_invalid_fle_is_a_value_error(fle_mm: float) -> None:
    with pytest.raises(ValueError, match="fle_mm"):
        register_paired_points(GOOD, GOOD, fle_mm=fle_mm)
    with pytest.raises(ValueError, match="fle_mm"):
        predicted_tre_mm(GOOD, GOOD, fle_mm=fle_mm)


def test_predicted_tre_refuses_collinear_or_too_few_fiducials() -> None:
    with pytest.raises(RegistrationError) as info:
        predicted_tre_mm(GOOD, np.outer(np.arange(4.0), (1.0, 0.0, 0.0)), fle_mm=0.3)
    assert info.value.kind == "collinear"
    with pytest.raises(RegistrationError) as info:
        predicted_tre_mm(GOOD, GOOD[:2], fle_mm=0.3)
    assert info.value.kind == "too_few_points"


def test_registration_error_keeps_its_kind_through_pickle_and_rejects_unknown_kinds() -> None:
    err = RegistrationError("collinear", "fiducials\n  are collinear")
    assert str(err) == "fiducials are collinear"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.kind, str(copy)) == ("collinear", str(err))
    assert REGISTRATION_ERROR_KINDS == {
        "too_few_points",
        "collinear",
        "mismatched",
        "non_finite",
        "out_of_range",
        "bad_weights",
        "bad_mesh",
        "insufficient_overlap",
        "not_converged",
        "implausible",
        "contradicts_landmarks",
    }
    with pytest.raises(ValueError, match="unknown"):
        RegistrationError("wobbly", "x")  # type: ignore[arg-type]

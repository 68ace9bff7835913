"""Tests for nav.transforms (and the frame vocabulary in nav.frames).

Property tests are derandomised, so every run draws the same examples; scipy's
``Rotation`` is the differential reference for the quaternion and axis-angle
conversions (scipy orders quaternions x, y, z, w; ours are w, x, y, z).
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from nav import frames, transforms
from nav.transforms import (
    MAX_PROJECTED_DEVIATION,
    Mat4,
    apply,
    axis_angle_to_matrix,
    compose,
    invert_rigid,
    is_rigid,
    make_rigid,
    matrix_to_quat,
    nearest_rigid,
    nearest_rigids,
    pose_from_quat,
    quat_to_matrix,
    rigidity_error,
    rotation_angle_rad,
    rotation_distance_rad,
    translation_distance_mm,
)

# Seeded: the same examples every run, no flaky shrinking on CI; no deadline
# because a shared machine's timing is not what these tests check.
seeded = settings(derandomize=True, max_examples=200, deadline=None)

ATOL = 1e-9

unit = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
quats = st.tuples(unit, unit, unit, unit).map(np.array).filter(lambda q: np.linalg.norm(q) > 0.1)
unit_quats = quats.map(lambda q: q / np.linalg.norm(q))
axes = st.tuples(unit, unit, unit).map(np.array).filter(lambda a: np.linalg.norm(a) > 0.1)
translations_mm = st.tuples(*[st.floats(-2000.0, 2000.0)] * 3).map(np.array)
poses = st.builds(pose_from_quat, quats, translations_mm)
points_mm = (
    st.integers(0, 20)
    .flatmap(
        lambda n: st.lists(st.tuples(*[st.floats(-2000.0, 2000.0)] * 3), min_size=n, max_size=n)
    )
    .map(lambda rows: np.array(rows, dtype=np.float64).reshape(-1, 3))
)


def scipy_quat_wxyz(R: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """scipy's quaternion of R, reordered from x, y, z, w to w, x, y, z."""
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z])


def assert_same_rotation_quat(q1: npt.ArrayLike, q2: npt.ArrayLike) -> None:
    """q and -q are the same rotation."""
    q1, q2 = np.asarray(q1), np.asarray(q2)
    assert np.allclose(q1, q2, atol=ATOL) or np.allclose(q1, -q2, atol=ATOL), (q1, q2)


# --- the module docstring's worked example ---------------------------------


def test_docstring_worked_example_maps_image_point_to_tracker_coordinates() -> None:
    R_z90 = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    T_tracker_from_reference = make_rigid(R_z90, [0.0, 0.0, 1000.0])
    T_reference_from_image = make_rigid(np.eye(3), [-50.0, 0.0, 100.0])
    T_tracker_from_image = T_tracker_from_reference @ T_reference_from_image

    np.testing.assert_array_equal(T_tracker_from_image[:3, 3], [0.0, -50.0, 1100.0])
    np.testing.assert_array_equal(
        apply(T_reference_from_image, [10.0, 0.0, 0.0]), [-40.0, 0.0, 100.0]
    )
    np.testing.assert_array_equal(
        apply(T_tracker_from_image, [10.0, 0.0, 0.0]), [0.0, -40.0, 1100.0]
    )
    np.testing.assert_array_equal(
        apply(invert_rigid(T_tracker_from_image), [0.0, -40.0, 1100.0]), [10.0, 0.0, 0.0]
    )
    s = math.sqrt(0.5)
    np.testing.assert_allclose(matrix_to_quat(R_z90), [s, 0.0, 0.0, s], atol=1e-15)


def test_docstring_doctest_runs_clean() -> None:
    result = doctest.testmod(transforms, raise_on_error=False, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


# --- nearest_rigid: projecting a nearly rigid tracker matrix ------------------------

small = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
noise_sizes = st.floats(1e-8, 1e-3)
noise_3x3 = st.lists(small, min_size=9, max_size=9).map(lambda v: np.array(v).reshape(3, 3))


def _perturbed(T: Mat4, E: npt.NDArray[np.float64]) -> Mat4:
    """``T`` with ``E`` (3, 3) added to its rotation block."""
    noisy = T.copy()
    noisy[:3, :3] += E
    return noisy


@given(poses)
@seeded
def test_nearest_rigid_keeps_a_rigid_transform_bit_for_bit_with_deviation_0(T: Mat4) -> None:
    T_rigid, deviation = nearest_rigid(T)
    assert np.array_equal(T_rigid, T) and T_rigid is not T
    assert deviation == 0.0


@given(poses, noise_3x3, noise_sizes)
@seeded
def test_a_rotation_stretched_symmetrically_projects_back_exactly_with_deviation_the_stretch(
    T: Mat4, A: npt.NDArray[np.float64], e: float
) -> None:
    # Closed form (polar decomposition): R (I + S) with S symmetric, |eig S| < 1, has the
    # nearest rotation R and singular values 1 + eig(S), so the deviation is max |eig S|.
    S = e * (A + A.T) / 2.0
    T_rigid, deviation = nearest_rigid(_perturbed(T, T[:3, :3] @ S))
    np.testing.assert_allclose(T_rigid, T, atol=1e-12, rtol=0)
    assert deviation == pytest.approx(np.abs(np.linalg.eigvalsh(S)).max(), abs=1e-12)


@given(poses, noise_3x3, noise_sizes)
@seeded
def test_a_rigid_transform_plus_noise_of_size_e_projects_within_2e_of_it_with_deviation_at_most_e(
    T: Mat4, A: npt.NDArray[np.float64], e: float
) -> None:
    E = e * A
    T_rigid, deviation = nearest_rigid(_perturbed(T, E))
    assert rigidity_error(T_rigid) <= 1e-12 and np.linalg.det(T_rigid[:3, :3]) > 0.0
    assert np.array_equal(T_rigid[:3, 3], T[:3, 3]) and np.array_equal(T_rigid[3], [0, 0, 0, 1])
    # R_rigid is the rotation nearest R + E, so no farther from it than R is: by the
    # triangle inequality ||R_rigid - R||_F <= 2 ||E||_F. Weyl: |s_i - 1| <= ||E||_2.
    norm_E = np.linalg.norm(E)
    assert np.linalg.norm(T_rigid[:3, :3] - T[:3, :3]) <= 2.0 * norm_E + 1e-12
    assert deviation <= np.linalg.norm(E, 2) + 1e-12
    assert deviation <= MAX_PROJECTED_DEVIATION * 1.8  # e <= 1e-3, |A|_2 <= 3: nearly rigid


@given(poses, st.floats(0.01, 0.5), st.sampled_from([-1.0, 1.0]))
@seeded
def test_a_scaled_matrix_deviates_by_its_scale_error_and_is_refused(
    T: Mat4, error: float, sign: float
) -> None:
    scaled = T.copy()
    scaled[:3, :3] *= 1.0 + sign * error  # a 1 % (or worse) scale error: not a pose
    _T, deviation = nearest_rigid(scaled)
    assert deviation == pytest.approx(error, rel=1e-9)
    assert deviation > 4.9 * MAX_PROJECTED_DEVIATION


@given(poses, st.floats(1.0, 45.0), st.integers(0, 2), st.integers(1, 2))
@seeded
def test_a_sheared_matrix_is_refused(T: Mat4, angle_deg: float, row: int, step: int) -> None:
    shear = np.eye(3)
    shear[row, (row + step) % 3] = math.tan(math.radians(angle_deg))
    # A shear k = tan(angle) has singular values sqrt(1 + k^2/4) +- k/2 (and 1).
    k = math.tan(math.radians(angle_deg))
    _T, deviation = nearest_rigid(_perturbed(T, T[:3, :3] @ shear - T[:3, :3]))
    assert deviation == pytest.approx(math.sqrt(1 + k * k / 4) + k / 2 - 1, rel=1e-9)
    assert deviation > 4 * MAX_PROJECTED_DEVIATION


def test_a_reflection_a_broken_last_row_or_a_non_finite_matrix_is_refused() -> None:
    reflected, deviation = nearest_rigid(np.diag([1.0, 1.0, -1.0, 1.0]))
    assert deviation == pytest.approx(2.0) and np.linalg.det(reflected[:3, :3]) > 0
    perspective = np.eye(4)
    perspective[3, 0] = 0.01
    T_rigid, deviation = nearest_rigid(perspective)
    assert deviation == pytest.approx(0.01) and np.array_equal(T_rigid, np.eye(4))
    for bad in (np.full((4, 4), np.nan), np.diag([np.inf, 1.0, 1.0, 1.0]), np.zeros((4, 4))):
        assert not nearest_rigid(bad)[1] <= MAX_PROJECTED_DEVIATION
    with pytest.raises(ValueError, match="shape"):
        nearest_rigid(np.eye(3))


@given(st.lists(st.tuples(poses, noise_3x3, noise_sizes), min_size=1, max_size=6))
@seeded
def test_nearest_rigids_of_a_stack_matches_nearest_rigid_of_each(
    draws: list[tuple[Mat4, npt.NDArray[np.float64], float]],
) -> None:
    Ts = np.stack([_perturbed(T, e * A) for T, A, e in draws] + [np.full((4, 4), np.nan)])
    rigid, deviations = nearest_rigids(Ts)
    for i, T in enumerate(Ts):
        one, deviation = nearest_rigid(T)
        np.testing.assert_allclose(rigid[i], one, atol=1e-15, rtol=0)
        assert deviations[i] == pytest.approx(deviation, abs=1e-15)
    assert deviations[-1] == math.inf and np.isnan(rigid[-1]).all()


# --- make_rigid, compose, invert, apply --------------------------------------


def test_make_rigid_places_rotation_and_translation() -> None:
    R = axis_angle_to_matrix([1.0, 2.0, 3.0], 0.7)
    T = make_rigid(R, [1.0, 2.0, 3.0])
    assert T.dtype == np.float64 and T.shape == (4, 4)
    np.testing.assert_array_equal(T[:3, :3], R)
    np.testing.assert_array_equal(T[:3, 3], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(T[3], [0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize(
    ("R", "t"),
    [
        (np.eye(2), np.zeros(3)),
        (np.eye(3), np.zeros(4)),
        (np.eye(3), [0.0, np.nan, 0.0]),
        (np.full((3, 3), np.inf), np.zeros(3)),
    ],
)
def test_make_rigid_rejects_wrong_shape_or_non_finite(R: npt.ArrayLike, t: npt.ArrayLike) -> None:
    with pytest.raises(ValueError):
        make_rigid(R, t)


@seeded
@given(poses, poses, poses)
def test_compose_is_left_to_right_matrix_product(A: Mat4, B: Mat4, C: Mat4) -> None:
    np.testing.assert_array_equal(compose(A), A)
    np.testing.assert_array_equal(compose(A, B), A @ B)
    np.testing.assert_allclose(compose(A, B, C), A @ B @ C, atol=ATOL)


def test_compose_with_one_argument_returns_a_copy() -> None:
    A = np.eye(4)
    out = compose(A)
    out[0, 3] = 5.0
    assert A[0, 3] == 0.0


def test_compose_without_arguments_raises() -> None:
    with pytest.raises(TypeError):
        compose()


def test_compose_rejects_non_4x4() -> None:
    with pytest.raises(ValueError):
        compose(np.eye(4), np.eye(3))


@seeded
@given(poses)
def test_transform_times_its_inverse_is_identity(T: Mat4) -> None:
    np.testing.assert_allclose(T @ invert_rigid(T), np.eye(4), atol=ATOL)
    np.testing.assert_allclose(invert_rigid(T) @ T, np.eye(4), atol=ATOL)


@seeded
@given(poses)
def test_invert_rigid_matches_general_inverse_and_stays_rigid(T: Mat4) -> None:
    T_inv = invert_rigid(T)
    np.testing.assert_allclose(T_inv, np.linalg.inv(T), atol=ATOL)
    assert is_rigid(T_inv, tol=1e-12)
    np.testing.assert_allclose(invert_rigid(T_inv), T, atol=ATOL)


@seeded
@given(poses, poses)
def test_inverse_of_composition_is_reversed_composition_of_inverses(A: Mat4, B: Mat4) -> None:
    np.testing.assert_allclose(
        invert_rigid(compose(A, B)), compose(invert_rigid(B), invert_rigid(A)), atol=ATOL
    )


@seeded
@given(poses, points_mm)
def test_apply_agrees_with_homogeneous_multiplication(T: Mat4, p: npt.NDArray[np.float64]) -> None:
    homogeneous = np.hstack([p, np.ones((len(p), 1))])
    expected = (T @ homogeneous.T).T[:, :3]
    out = apply(T, p)
    assert out.shape == p.shape
    np.testing.assert_allclose(out, expected, atol=ATOL)


@seeded
@given(poses, translations_mm)
def test_apply_to_single_point_returns_single_point(T: Mat4, p: npt.NDArray[np.float64]) -> None:
    out = apply(T, p)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, apply(T, p[None, :])[0], atol=ATOL)


@seeded
@given(poses, poses, points_mm)
def test_apply_of_composition_equals_nested_apply(
    A: Mat4, B: Mat4, p: npt.NDArray[np.float64]
) -> None:
    np.testing.assert_allclose(apply(compose(A, B), p), apply(A, apply(B, p)), atol=1e-8)


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 4)), np.zeros((2, 3, 3)), 1.0])
def test_apply_rejects_points_that_are_not_3_or_nx3(bad: npt.ArrayLike) -> None:
    with pytest.raises(ValueError):
        apply(np.eye(4), bad)


# --- quaternions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("R", "q_wxyz"),
    [
        (np.eye(3), [1.0, 0.0, 0.0, 0.0]),
        ([[0, -1, 0], [1, 0, 0], [0, 0, 1]], [math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]),
        ([[1, 0, 0], [0, 0, -1], [0, 1, 0]], [math.sqrt(0.5), math.sqrt(0.5), 0.0, 0.0]),
        ([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], [math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0]),
        ([[1, 0, 0], [0, -1, 0], [0, 0, -1]], [0.0, 1.0, 0.0, 0.0]),
        ([[-1, 0, 0], [0, 1, 0], [0, 0, -1]], [0.0, 0.0, 1.0, 0.0]),
        ([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], [0.0, 0.0, 0.0, 1.0]),
    ],
    ids=["identity", "90deg_z", "90deg_x", "90deg_y", "180deg_x", "180deg_y", "180deg_z"],
)
def test_quaternion_of_known_rotations(R: npt.ArrayLike, q_wxyz: list[float]) -> None:
    np.testing.assert_allclose(matrix_to_quat(R), q_wxyz, atol=1e-15)
    np.testing.assert_allclose(quat_to_matrix(q_wxyz), np.asarray(R, dtype=np.float64), atol=1e-15)


def test_quaternion_order_is_scalar_first() -> None:
    # 90 degrees about z: the scalar cos(45 deg) comes first, sin(45 deg) on z last.
    q = matrix_to_quat(axis_angle_to_matrix([0.0, 0.0, 1.0], math.pi / 2))
    np.testing.assert_allclose(q, [math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)], atol=1e-15)


@seeded
@given(quats)
def test_quat_to_matrix_normalises_and_returns_a_rotation(q: npt.NDArray[np.float64]) -> None:
    R = quat_to_matrix(q)
    np.testing.assert_allclose(R, quat_to_matrix(q / np.linalg.norm(q)), atol=1e-12)
    np.testing.assert_allclose(R, quat_to_matrix(-3.0 * q), atol=1e-12)
    assert is_rigid(make_rigid(R, np.zeros(3)), tol=1e-12)


@seeded
@given(unit_quats)
def test_quat_to_matrix_to_quat_round_trips_up_to_sign(q: npt.NDArray[np.float64]) -> None:
    q_back = matrix_to_quat(quat_to_matrix(q))
    assert_same_rotation_quat(q_back, q)
    assert q_back[0] >= 0.0
    assert abs(np.linalg.norm(q_back) - 1.0) < 1e-12


@seeded
@given(quats)
def test_matrix_to_quat_to_matrix_round_trips(q: npt.NDArray[np.float64]) -> None:
    R = quat_to_matrix(q)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)


@seeded
@given(axes, st.floats(math.pi - 1e-6, math.pi))
def test_matrix_to_quat_is_accurate_near_180_degrees(
    axis: npt.NDArray[np.float64], angle_rad: float
) -> None:
    # Where w ~ 0 a trace-only formula divides by ~0; Shepperd's does not.
    R = axis_angle_to_matrix(axis, angle_rad)
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)
    assert_same_rotation_quat(matrix_to_quat(R), scipy_quat_wxyz(R))


def test_matrix_to_quat_sign_is_canonical_at_exactly_180_degrees() -> None:
    # w == 0: q and -q both have w = 0, so the first non-zero component is positive.
    R = quat_to_matrix([0.0, -0.6, 0.8, 0.0])
    np.testing.assert_allclose(matrix_to_quat(R), [0.0, 0.6, -0.8, 0.0], atol=1e-15)


@pytest.mark.parametrize(
    "bad", [np.zeros(4), [np.nan, 0.0, 0.0, 1.0], [np.inf, 0.0, 0.0, 0.0], np.zeros(3)]
)
def test_quat_to_matrix_rejects_zero_non_finite_or_wrong_shape(bad: npt.ArrayLike) -> None:
    with pytest.raises(ValueError):
        quat_to_matrix(bad)


@pytest.mark.parametrize(
    "bad", [np.diag([-1.0, 1.0, 1.0]), np.zeros((3, 3)), np.eye(4), np.full((3, 3), np.nan)]
)
def test_matrix_to_quat_rejects_reflection_singular_non_finite_or_wrong_shape(
    bad: npt.ArrayLike,
) -> None:
    with pytest.raises(ValueError):
        matrix_to_quat(bad)


@seeded
@given(quats, translations_mm)
def test_pose_from_quat_builds_rotation_and_translation(
    q: npt.NDArray[np.float64], t: npt.NDArray[np.float64]
) -> None:
    T = pose_from_quat(q, t)
    np.testing.assert_array_equal(T[:3, :3], quat_to_matrix(q))
    np.testing.assert_array_equal(T[:3, 3], t)
    assert is_rigid(T, tol=1e-12)


# --- axis-angle and angles ----------------------------------------------------


@seeded
@given(axes, st.floats(-2 * math.pi, 2 * math.pi))
def test_axis_angle_agrees_with_half_angle_quaternion(
    axis: npt.NDArray[np.float64], angle_rad: float
) -> None:
    n = axis / np.linalg.norm(axis)
    q = np.concatenate([[math.cos(angle_rad / 2)], math.sin(angle_rad / 2) * n])
    np.testing.assert_allclose(axis_angle_to_matrix(axis, angle_rad), quat_to_matrix(q), atol=1e-12)


@seeded
@given(axes, st.floats(0.0, math.pi))
def test_rotation_angle_recovers_axis_angle_angle(
    axis: npt.NDArray[np.float64], angle_rad: float
) -> None:
    assert rotation_angle_rad(axis_angle_to_matrix(axis, angle_rad)) == pytest.approx(
        angle_rad, abs=ATOL
    )


@seeded
@given(axes, st.floats(math.pi, 2 * math.pi))
def test_rotation_angle_of_reflex_angle_is_its_complement(
    axis: npt.NDArray[np.float64], angle_rad: float
) -> None:
    assert rotation_angle_rad(axis_angle_to_matrix(axis, angle_rad)) == pytest.approx(
        2 * math.pi - angle_rad, abs=ATOL
    )


def test_rotation_angle_is_accurate_for_tiny_angles() -> None:
    # arccos((trace - 1) / 2) would return 0 here: 1e-9 rad is below its resolution.
    R = axis_angle_to_matrix([0.0, 1.0, 0.0], 1e-9)
    assert rotation_angle_rad(R) == pytest.approx(1e-9, rel=1e-6)


def test_axis_angle_to_matrix_rejects_zero_axis_or_non_finite_angle() -> None:
    with pytest.raises(ValueError):
        axis_angle_to_matrix([0.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError):
        axis_angle_to_matrix([0.0, 0.0, 1.0], math.nan)


# --- scipy as differential reference --------------------------------------------


@seeded
@given(quats)
def test_quat_to_matrix_matches_scipy(q: npt.NDArray[np.float64]) -> None:
    w, x, y, z = q
    np.testing.assert_allclose(
        quat_to_matrix(q), Rotation.from_quat([x, y, z, w]).as_matrix(), atol=1e-12
    )


@seeded
@given(quats)
def test_matrix_to_quat_matches_scipy_up_to_sign(q: npt.NDArray[np.float64]) -> None:
    R = quat_to_matrix(q)
    assert_same_rotation_quat(matrix_to_quat(R), scipy_quat_wxyz(R))


@seeded
@given(axes, st.floats(-2 * math.pi, 2 * math.pi))
def test_axis_angle_and_rotation_angle_match_scipy(
    axis: npt.NDArray[np.float64], angle_rad: float
) -> None:
    rotvec = angle_rad * axis / np.linalg.norm(axis)
    R = axis_angle_to_matrix(axis, angle_rad)
    np.testing.assert_allclose(R, Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-12)
    assert rotation_angle_rad(R) == pytest.approx(
        Rotation.from_rotvec(rotvec).magnitude(), abs=1e-9
    )


# --- rigidity ---------------------------------------------------------------------


@seeded
@given(poses)
def test_is_rigid_accepts_rotations_with_any_translation(T: Mat4) -> None:
    assert is_rigid(T)
    assert rigidity_error(T) < 1e-12


@seeded
@given(poses)
def test_is_rigid_rejects_reflections(T: Mat4) -> None:
    T_reflected = T @ np.diag([-1.0, 1.0, 1.0, 1.0])
    # R^T R is still I: only the determinant gives a reflection away.
    np.testing.assert_allclose(T_reflected[:3, :3].T @ T_reflected[:3, :3], np.eye(3), atol=1e-12)
    assert not is_rigid(T_reflected)
    assert rigidity_error(T_reflected) == pytest.approx(2.0, abs=1e-9)


@seeded
@given(poses, st.sampled_from([0.5, 0.99, 1.001, 2.0]))
def test_is_rigid_rejects_scaled_matrices(T: Mat4, scale: float) -> None:
    T_scaled = T.copy()
    T_scaled[:3, :3] *= scale
    assert not is_rigid(T_scaled)
    assert rigidity_error(T_scaled) >= abs(scale**2 - 1.0) - 1e-9


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("index", [(0, 0), (1, 3), (3, 3)])
def test_is_rigid_rejects_non_finite(value: float, index: tuple[int, int]) -> None:
    T = np.eye(4)
    T[index] = value
    assert not is_rigid(T)
    assert rigidity_error(T) == math.inf


@pytest.mark.parametrize(
    "last_row", [[0.0, 0.0, 0.0, 2.0], [1e-3, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
)
def test_is_rigid_rejects_bad_last_row(last_row: list[float]) -> None:
    T = np.eye(4)
    T[3] = last_row
    assert not is_rigid(T)


@pytest.mark.parametrize(
    "bad",
    [np.eye(3), np.eye(4)[:3], np.eye(4)[None], np.eye(5), [[1, 0], [0, 1, 2]], "not a matrix"],
    ids=["3x3", "3x4", "1x4x4", "5x5", "ragged", "string"],
)
def test_is_rigid_rejects_wrong_shape(bad: object) -> None:
    assert not is_rigid(bad)  # type: ignore[arg-type]
    assert rigidity_error(bad) == math.inf  # type: ignore[arg-type]


def test_rigidity_error_reports_how_far_off_within_tolerance() -> None:
    T = np.eye(4)
    T[3, 0] = 5e-7
    assert rigidity_error(T) == pytest.approx(5e-7)
    assert is_rigid(T)
    assert not is_rigid(T, tol=1e-7)


# --- distances --------------------------------------------------------------------


def test_translation_and_rotation_distance_of_known_pair() -> None:
    T_a = make_rigid(np.eye(3), [0.0, 0.0, 0.0])
    T_b = make_rigid(axis_angle_to_matrix([1.0, 0.0, 0.0], math.radians(3.0)), [3.0, 4.0, 0.0])
    assert translation_distance_mm(T_a, T_b) == pytest.approx(5.0)
    assert rotation_distance_rad(T_a, T_b) == pytest.approx(math.radians(3.0))


@seeded
@given(poses, axes, st.floats(0.0, math.pi), translations_mm)
def test_distances_recover_a_known_perturbation(
    T: Mat4, axis: npt.NDArray[np.float64], angle_rad: float, dt_mm: npt.NDArray[np.float64]
) -> None:
    # Turn the rotation by a known angle and shift the translation by a known vector.
    T_perturbed = np.eye(4)
    T_perturbed[:3, :3] = axis_angle_to_matrix(axis, angle_rad) @ T[:3, :3]
    T_perturbed[:3, 3] = T[:3, 3] + dt_mm
    assert rotation_distance_rad(T, T_perturbed) == pytest.approx(angle_rad, abs=1e-9)
    assert rotation_distance_rad(T_perturbed, T) == pytest.approx(angle_rad, abs=1e-9)
    assert translation_distance_mm(T, T_perturbed) == pytest.approx(
        float(np.linalg.norm(dt_mm)), abs=1e-9
    )


# --- frame vocabulary (nav.frames) ------------------------------------------------


def test_fixed_frames_are_the_architecture_vocabulary() -> None:
    assert frames.FIXED_FRAMES == {
        "tracker",
        "reference",
        "image",
        "headset",
        "display",
        "camera",
    }
    assert set(frames.FRAME_MEANINGS) == frames.FIXED_FRAMES
    assert all(frames.FRAME_MEANINGS.values())


@pytest.mark.parametrize(
    "name",
    [
        "tracker",
        "image",
        "camera",
        "pointer",
        "pointer_tip",
        "us_probe2",
        "a" * 32,
        "a" * 32 + "_tip",
    ],
)
def test_is_valid_frame_accepts_fixed_tool_and_tip_frames(name: str) -> None:
    assert frames.is_valid_frame(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Pointer",
        "2pointer",
        "_pointer",
        "pointer-1",
        "pointer\n",
        "a" * 33,
        "pointer_tip_tip",
        "_tip",
    ],
)
def test_is_valid_frame_rejects_malformed_names(name: str) -> None:
    assert not frames.is_valid_frame(name)


def test_tip_frame_appends_tip_and_rejects_invalid_tools() -> None:
    assert frames.tip_frame("pointer") == "pointer_tip"
    with pytest.raises(ValueError):
        frames.tip_frame("pointer_tip")
    with pytest.raises(ValueError):
        frames.tip_frame("Pointer")

"""Rigid transforms as 4x4 float64 arrays: build, compose, invert, apply, convert.

``T_a_from_b`` maps coordinates in frame ``b`` into frame ``a`` (frame names:
``nav.frames``). Composition reads right to left, so the inner names meet
across ``@``: ``T_tracker_from_image = T_tracker_from_reference @
T_reference_from_image``. Points are ``p_<frame>``, shape (N, 3) or (3,), in
millimetres. Angles are radians. Quaternions are (4,) arrays in the order
``w, x, y, z`` (scalar FIRST; scipy's ``Rotation`` uses ``x, y, z, w``).

Worked example (asserted by ``tests/unit/test_transforms.py``, and a doctest).
The patient reference marker sits 1000 mm along the tracker's z axis, turned
90 degrees about that axis, so the reference's x axis points along the
tracker's +y. The image origin lies at (-50, 0, 100) mm in reference
coordinates, with the image axes parallel to the reference's. The image point
(10, 0, 0) mm is then (-40, 0, 100) mm in the reference frame, and turning
that by 90 degrees about z and adding 1000 mm in z gives (0, -40, 1100) mm in
the tracker frame:

>>> import numpy as np
>>> R_z90 = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
>>> T_tracker_from_reference = make_rigid(R_z90, [0.0, 0.0, 1000.0])
>>> T_reference_from_image = make_rigid(np.eye(3), [-50.0, 0.0, 100.0])
>>> T_tracker_from_image = T_tracker_from_reference @ T_reference_from_image
>>> T_tracker_from_image[:3, 3].tolist()  # the image origin, in the tracker frame
[0.0, -50.0, 1100.0]
>>> apply(T_tracker_from_image, [10.0, 0.0, 0.0]).tolist()
[0.0, -40.0, 1100.0]
>>> apply(invert_rigid(T_tracker_from_image), [0.0, -40.0, 1100.0]).tolist()
[10.0, 0.0, 0.0]
>>> matrix_to_quat(R_z90).round(6).tolist()  # w, x, y, z = cos 45 deg, 0, 0, sin 45 deg
[0.707107, 0.0, 0.0, 0.707107]
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from nav.arrays import Mat3, Mat4, Points, Quat

"""A rigid transform ``T_a_from_b``, shape (4, 4), float64, translation in mm."""

"""A rotation matrix ``R``, shape (3, 3), float64."""

"""Points ``p_<frame>`` in mm, shape (N, 3); a single point may be shape (3,)."""

"""A unit quaternion, shape (4,), order ``w, x, y, z`` (scalar first)."""


def _as_array(x: npt.ArrayLike, shape: tuple[int, ...], name: str) -> npt.NDArray[np.float64]:
    """Return ``x`` as a finite float64 array of ``shape``; raise ValueError otherwise."""
    a = np.asarray(x, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a!r}")
    return a


def make_rigid(R: npt.ArrayLike, t: npt.ArrayLike) -> Mat4:
    """Return the 4x4 transform with rotation ``R`` (3, 3) and translation ``t`` (3,) in mm.

    ``R`` is assumed to be a rotation and is not re-orthonormalised; check the
    result with :func:`is_rigid` where ``R`` comes from outside. Raises
    ValueError for a wrong shape or a non-finite entry.
    """
    T = np.eye(4)
    T[:3, :3] = _as_array(R, (3, 3), "R")
    T[:3, 3] = _as_array(t, (3,), "t")
    return T


def compose(*Ts: Mat4) -> Mat4:
    """Return the product ``Ts[0] @ Ts[1] @ ... @ Ts[-1]`` of one or more 4x4 transforms.

    The names must chain: ``compose(T_a_from_b, T_b_from_c)`` is ``T_a_from_c``.
    Raises TypeError with no argument, ValueError for a non-(4, 4) argument.
    """
    if not Ts:
        raise TypeError("compose() needs at least one transform")
    mats = [np.asarray(T, dtype=np.float64) for T in Ts]
    for i, T in enumerate(mats):
        if T.shape != (4, 4):
            raise ValueError(f"compose() argument {i} must have shape (4, 4), got {T.shape}")
    # Copy so that compose(T) never aliases its argument.
    return functools.reduce(np.matmul, mats[1:], mats[0].copy())


def invert_rigid(T_a_from_b: Mat4) -> Mat4:
    """Return ``T_b_from_a``, using R^T rather than a general inverse.

    Exact for a rigid ``T_a_from_b`` and cheaper and better conditioned than
    ``np.linalg.inv``; for a non-rigid matrix the result is not an inverse.
    """
    T_a_from_b = _as_array(T_a_from_b, (4, 4), "T_a_from_b")
    R, t = T_a_from_b[:3, :3], T_a_from_b[:3, 3]
    T_b_from_a = np.eye(4)
    T_b_from_a[:3, :3] = R.T
    T_b_from_a[:3, 3] = -R.T @ t
    return T_b_from_a


def apply(T_a_from_b: Mat4, p_b: npt.ArrayLike) -> Points:
    """Map points from frame b into frame a: ``p_a = R @ p_b + t``.

    ``p_b`` is (N, 3) or a single point (3,), in mm; the result has the same
    shape. Raises ValueError for any other shape.
    """
    T = np.asarray(T_a_from_b, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_a_from_b must have shape (4, 4), got {T.shape}")
    p = np.asarray(p_b, dtype=np.float64)
    if p.ndim not in (1, 2) or p.shape[-1] != 3:
        raise ValueError(f"p_b must have shape (3,) or (N, 3), got {p.shape}")
    # Row vectors: (R @ p.T).T == p @ R.T, without transposing the points.
    p_a: Points = p @ T[:3, :3].T + T[:3, 3]
    return p_a


def quat_to_matrix(q_wxyz: npt.ArrayLike) -> Mat3:
    """Return the rotation matrix (3, 3) of the quaternion ``q_wxyz`` (scalar first).

    ``q_wxyz`` is normalised first, so any non-zero multiple of a unit
    quaternion gives the same rotation. Raises ValueError for a wrong shape,
    a non-finite entry or a zero quaternion.
    """
    q = _as_array(q_wxyz, (4,), "q_wxyz")
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise ValueError("q_wxyz is zero and has no rotation")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=np.float64,
    )


def matrix_to_quat(R: npt.ArrayLike) -> Quat:
    """Return the unit quaternion ``w, x, y, z`` of the rotation matrix ``R`` (3, 3).

    Shepperd's method (S. W. Shepperd, "Quaternion from rotation matrix",
    J. Guidance and Control 1(3):223-224, 1978): take the square root of the
    largest of 1 + trace, 1 + 2 R_ii - trace, so no division by a small number
    occurs, near 180 degrees included. The sign is canonical: ``w >= 0``, and
    when ``w == 0`` (exactly 180 degrees) the first non-zero of x, y, z is
    positive. Raises ValueError for a wrong shape, a non-finite entry or
    ``det(R) <= 0`` (a reflection has no quaternion).
    """
    R = _as_array(R, (3, 3), "R")
    if np.linalg.det(R) <= 0.0:
        raise ValueError(f"R is not a rotation: det(R) = {np.linalg.det(R):.3g}")
    r00, r11, r22 = R[0, 0], R[1, 1], R[2, 2]
    trace = r00 + r11 + r22
    # 4w^2 = 1 + trace and 4x^2 = 1 + 2 r00 - trace (likewise y, z), so the
    # largest of (trace, r00, r11, r22) picks the largest component, which is
    # >= 1/2 for a unit quaternion: s >= 2 and the divisions are well conditioned.
    k = int(np.argmax([trace, r00, r11, r22]))
    if k == 0:
        s = 2.0 * math.sqrt(1.0 + trace)  # s = 4 w
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif k == 1:
        s = 2.0 * math.sqrt(1.0 + r00 - r11 - r22)  # s = 4 x
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif k == 2:
        s = 2.0 * math.sqrt(1.0 + r11 - r00 - r22)  # s = 4 y
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r22 - r00 - r11)  # s = 4 z
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q_wxyz = np.array(q, dtype=np.float64)
    # A slightly non-orthonormal R (accumulated round-off) gives a near-unit q.
    q_wxyz /= np.linalg.norm(q_wxyz)
    # q and -q are the same rotation; pick one so that outputs compare equal.
    lead = q_wxyz[0] if q_wxyz[0] != 0.0 else q_wxyz[np.flatnonzero(q_wxyz)[0]]
    if lead < 0.0:
        q_wxyz = -q_wxyz
    # -0.0 would print and serialise as "-0.0"; it is the same number.
    q_wxyz += 0.0
    return q_wxyz


def pose_from_quat(q_wxyz: npt.ArrayLike, t: npt.ArrayLike) -> Mat4:
    """Return the 4x4 transform with rotation ``q_wxyz`` (scalar first) and translation ``t`` (mm).

    This is how trackers (NDI, PLUS/OpenIGTLink) report poses. Raises
    ValueError as :func:`quat_to_matrix` and :func:`make_rigid` do.
    """
    return make_rigid(quat_to_matrix(q_wxyz), t)


def rigidity_error(T: npt.ArrayLike) -> float:
    """Return how far ``T`` is from a rigid 4x4 transform, as a max absolute deviation.

    The maximum over: the last row against [0, 0, 0, 1], ``R^T R`` against I,
    and ``det(R)`` against +1 (so a reflection scores about 2). Returns inf
    for a wrong shape, a non-numeric array or a non-finite entry.
    """
    try:
        a = np.asarray(T)
    except (TypeError, ValueError):  # ragged nested sequences
        return math.inf
    if a.shape != (4, 4) or a.dtype.kind not in "biuf":
        return math.inf
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf
    R = a[:3, :3]
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries overflow: not rigid
        errors = (
            float(np.max(np.abs(a[3] - (0.0, 0.0, 0.0, 1.0)))),
            float(np.max(np.abs(R.T @ R - np.eye(3)))),
            abs(float(np.linalg.det(R)) - 1.0),
        )
    # max() would pass over a NaN; an overflowed check is a failed check.
    return math.inf if any(math.isnan(e) for e in errors) else max(errors)


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_I3 = np.eye(3)


def rigidity_errors(Ts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``rigidity_error`` of each matrix of a finite float (N, 4, 4) stack, vectorised.

    For the per-message check of a batched tracker frame, where N small matrices one by one
    cost more than the rest of the decode.
    """
    Ts = np.asarray(Ts, dtype=np.float64)
    R = Ts[:, :3, :3]
    last_row = np.abs(Ts[:, 3, :] - _LAST_ROW).max(axis=1)
    orthogonality = np.abs(np.matmul(R.transpose(0, 2, 1), R) - _I3).reshape(-1, 9).max(axis=1)
    # det by cofactors, written out: np.linalg.det and np.cross cost more on a small stack.
    r = R.reshape(-1, 9).T
    det = (
        r[0] * (r[4] * r[8] - r[5] * r[7])
        - r[1] * (r[3] * r[8] - r[5] * r[6])
        + r[2] * (r[3] * r[7] - r[4] * r[6])
    )
    errors: npt.NDArray[np.float64] = np.maximum(
        np.maximum(last_row, orthogonality), np.abs(det - 1.0)
    )
    return errors


def is_rigid(T: npt.ArrayLike, *, tol: float = 1e-6) -> bool:
    """Return True if ``T`` is a finite (4, 4) rigid transform within ``tol``.

    See :func:`rigidity_error` for what is measured; ``tol`` is dimensionless
    (the translation is not checked, any finite translation is rigid).
    """
    return rigidity_error(T) <= tol


def rotation_angle_rad(R: npt.ArrayLike) -> float:
    """Return the angle in [0, pi] of the rotation matrix ``R`` (3, 3).

    ``atan2(sin, cos)`` with sin from the antisymmetric part and cos from the
    trace, so the angle stays accurate near 0 and near pi, where ``arccos``
    of the trace alone loses half the digits.
    """
    R = _as_array(R, (3, 3), "R")
    sin_angle = 0.5 * math.hypot(R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1])
    cos_angle = 0.5 * (float(np.trace(R)) - 1.0)
    return math.atan2(sin_angle, cos_angle)


def axis_angle_to_matrix(axis: npt.ArrayLike, angle_rad: float) -> Mat3:
    """Return the rotation (3, 3) by ``angle_rad`` about ``axis`` (Rodrigues' formula).

    ``axis`` (3,) is normalised first; the rotation is right-handed (positive
    angles turn counter-clockwise looking down the axis). Raises ValueError
    for a zero or non-finite axis or a non-finite angle.
    """
    a = _as_array(axis, (3,), "axis")
    norm = float(np.linalg.norm(a))
    if norm == 0.0:
        raise ValueError("axis is zero and has no direction")
    if not math.isfinite(angle_rad):
        raise ValueError(f"angle_rad must be finite, got {angle_rad}")
    x, y, z = a / norm
    K = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    R: Mat3 = np.eye(3) + math.sin(angle_rad) * K + (1.0 - math.cos(angle_rad)) * (K @ K)
    return R


def translation_distance_mm(T_a: Mat4, T_b: Mat4) -> float:
    """Return the distance in mm between the translations of two 4x4 transforms.

    Meant for two estimates of the same ``T_x_from_y`` (jitter, error).
    """
    Ta = _as_array(T_a, (4, 4), "T_a")
    Tb = _as_array(T_b, (4, 4), "T_b")
    return float(np.linalg.norm(Ta[:3, 3] - Tb[:3, 3]))


def rotation_distance_rad(T_a: Mat4, T_b: Mat4) -> float:
    """Return the angle in [0, pi] of the rotation between two 4x4 transforms.

    The angle of ``R_a^T R_b``; meant for two estimates of the same ``T_x_from_y``.
    """
    Ta = _as_array(T_a, (4, 4), "T_a")
    Tb = _as_array(T_b, (4, 4), "T_b")
    return rotation_angle_rad(Ta[:3, :3].T @ Tb[:3, :3])


# Where "nearly rigid" ends. Real tracker matrices are not exactly rigid: PLUS writes each
# entry with about six significant digits and an NDI tracker reports its quaternion to four
# decimals. Measured on PlusLibData's OK matrices (tests/unit/test_transforms.py reports
# them), the deviation below reaches 3.6e-4 (EightLandmarkPointsTrackedForPhantomRegistration,
# 2000 matrices), 2.8e-4 (WaterTankBottomTranslationTrackerBuffer, 15000), 2.0e-4
# (Prostate10_tracker) and 4e-6 at most in the others. A real fault is far larger: an
# ImageToProbe carries the pixel spacing (deviation 0.5-0.9), a mistaken unit a factor 1000,
# a 1 % scale error in a calibration is 1e-2, a 1 degree shear 8.7e-3, a reflection 2.
# 2e-3 sits 5x above the worst real matrix and 5x below a 1 % scale error; projecting a
# matrix at that limit moves a point 100 mm from the tool's origin by at most 0.2 mm.
MAX_PROJECTED_DEVIATION = 2e-3
"""The largest :func:`nearest_rigid` deviation still projected and kept; above: not a pose."""

# An already rigid matrix (round-off only) is kept bit for bit, deviation 0, so a clean
# recording passes through unchanged and is not counted as projected.
_ROUND_OFF = 1e-12


def nearest_rigids(Ts: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """:func:`nearest_rigid` of each matrix of an (N, 4, 4) stack, vectorised.

    Returns ``(Ts_rigid (N, 4, 4), deviations (N,))``; a non-finite matrix comes back
    unchanged with deviation inf. Raises ValueError for a shape other than (N, 4, 4).
    """
    a = np.array(Ts, dtype=np.float64)  # a copy: the result never aliases the argument
    if a.ndim != 3 or a.shape[1:] != (4, 4):
        raise ValueError(f"Ts must have shape (N, 4, 4), got {a.shape}")
    deviations = np.full(len(a), math.inf)
    finite = np.isfinite(a).all(axis=(1, 2))
    if not finite.any():
        return a, deviations
    with np.errstate(over="ignore", invalid="ignore"):
        already = np.zeros(len(a), dtype=bool)
        already[finite] = rigidity_errors(a[finite]) <= _ROUND_OFF
        todo = finite & ~already
        deviations[already] = 0.0
        if todo.any():
            try:
                U, s, Vt = np.linalg.svd(a[todo, :3, :3])
            except np.linalg.LinAlgError:  # no convergence (huge entries): not a pose
                return a, deviations
            # det(U Vt) is +-1; D = diag(1, 1, det) keeps a proper rotation (Umeyama 1991).
            d = np.sign(np.linalg.det(U @ Vt))
            d[d == 0.0] = 1.0
            target = np.ones_like(s)
            target[:, 2] = d
            U[:, :, 2] *= d[:, None]
            a[todo, :3, :3] = U @ Vt
            # ||R - U D Vt||_2 = max |s_i - d_i|: the most any unit vector is moved.
            spectral = np.abs(s - target).max(axis=1)
            last_row = np.abs(a[todo, 3, :] - _LAST_ROW).max(axis=1)
            a[todo, 3, :] = _LAST_ROW
            deviation = np.maximum(spectral, last_row)
            deviations[todo] = np.where(np.isfinite(deviation), deviation, math.inf)
    return a, deviations


def nearest_rigid(T: npt.ArrayLike) -> tuple[Mat4, float]:
    """Return ``(T_rigid, deviation)``: the rigid transform nearest ``T`` and how far it is.

    The rotation block is projected onto the nearest rotation in the Frobenius norm,
    ``R -> U diag(1, 1, det(U V^T)) V^T`` from the SVD ``R = U S V^T`` (Umeyama, IEEE
    PAMI 13(4):376-380, 1991, eq. 39, the same det fix against a reflection); the
    translation is kept and the last row set to exactly [0, 0, 0, 1]. ``deviation``
    (dimensionless) is the larger of ``||R - R_rigid||_2`` (= max |s_i - d_i|: a point at
    distance r from the origin of the tool frame moves by at most deviation * r) and the last
    row's largest difference from [0, 0, 0, 1]. A matrix rigid to round-off (1e-12) comes
    back unchanged with deviation 0; a non-finite one unchanged with deviation inf; a
    reflection scores about 2. Callers keep the result as a pose only for a deviation up to
    :data:`MAX_PROJECTED_DEVIATION`. Raises ValueError for a shape other than (4, 4).

    >>> T = np.diag([1.0002, 0.9999, 1.0, 1.0])
    >>> T_rigid, deviation = nearest_rigid(T)
    >>> T_rigid.tolist() == np.eye(4).tolist(), round(deviation, 6)
    (True, 0.0002)
    """
    a = np.asarray(T, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"T must have shape (4, 4), got {a.shape}")
    Ts, deviations = nearest_rigids(a[None])
    T_rigid: Mat4 = Ts[0]
    return T_rigid, float(deviations[0])

"""Hand-eye calibration of a tracked camera: where the camera sits on its tracking marker.

A camera is rigidly fixed to a tracked marker and looks at a calibration target
(a chessboard or ChArUco board) that stays still while the camera moves. For
every pose ``i`` the tracker reports ``T_tracker_from_marker[i]`` and the camera
sees ``T_camera_from_target[i]`` (solvePnP, or ``CameraCalibration.
T_camera_from_target``). The unknown ``X = T_marker_from_camera`` closes the
loop to the same fixed ``T_tracker_from_target`` at every pose::

    T_tracker_from_target = T_tracker_from_marker[i] @ X @ T_camera_from_target[i]

Eliminating ``T_tracker_from_target`` between two poses ``i`` and ``j`` gives
the classic ``A X = X B`` (Y. C. Shiu and S. Ahmad, IEEE Trans. Robot. Autom.
5(1):16-29, 1989) with the relative motions::

    A_ij = inv(T_tracker_from_marker[j]) @ T_tracker_from_marker[i]   # T_marker_j_from_marker_i
    B_ij = T_camera_from_target[j] @ inv(T_camera_from_target[i])     # T_camera_j_from_camera_i
    A_ij @ X = X @ B_ij                            # both sides: T_marker_j_from_camera_i

Mapping onto OpenCV's ``calibrateHandEye`` names (robot gripper = our marker,
robot base = our tracker): ``R/t_gripper2base`` is ``T_tracker_from_marker``,
``R/t_target2cam`` is ``T_camera_from_target``, and the returned
``R/t_cam2gripper`` is ``T_marker_from_camera``. The five methods below are the
five that function offers, written here in numpy from the papers because the
installed OpenCV (5.0.0, opencv-python wheel) ships the method constants but not
the function. Every method uses all ``N (N - 1) / 2`` pairs ``i < j`` as OpenCV
does, and all five are exact (to rounding) on noise-free data.

Frames: ``tracker``, the camera's marker (``marker`` here), ``camera`` (OpenCV:
x right, y down, z forward) and the calibration ``target``. Lengths in mm;
angles are degrees only in result fields whose names say ``_deg``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from calibration.errors import CalibrationError
from calibration.poses import check_pose_stack
from nav.arrays import FloatArray
from nav.transforms import make_rigid

HandEyeMethod: TypeAlias = Literal["tsai", "park", "horaud", "andreff", "daniilidis"]
HAND_EYE_METHODS: Final[tuple[HandEyeMethod, ...]] = get_args(HandEyeMethod)
"""The method names, in OpenCV's ``CALIB_HAND_EYE_*`` order."""


MIN_POSES: Final = 3
"""Two poses give one motion, which leaves a rotation about its axis unobservable."""


@dataclass(frozen=True, eq=False, kw_only=True)
class HandEyeResult:
    """The camera's pose on its marker from a hand-eye calibration, and how well it fits.

    Fields:

    - ``T_marker_from_camera`` (4, 4) mm: maps camera coordinates (OpenCV
      optical frame) into the marker frame; OpenCV's ``R/t_cam2gripper``.
    - ``method``: one of :data:`HAND_EYE_METHODS`.
    - ``rotation_residual_deg``: RMS over all pairs ``i < j`` of the angle of
      ``R(A_ij X)^T R(X B_ij)``, i.e. how far apart the two sides of
      ``A X = X B`` are in rotation (see the module docstring for ``A``, ``B``).
    - ``translation_residual_mm``: RMS over the same pairs of
      ``|t(A_ij X) - t(X B_ij)|``, the distance between the two predictions of
      the camera-``i`` origin in the marker-``j`` frame:
      ``|R_A t_X + t_A - R_X t_B - t_X|``.
    - ``n_poses``: poses used; the residuals are over ``n_poses (n_poses - 1) / 2`` pairs.
    """

    T_marker_from_camera: FloatArray
    method: HandEyeMethod
    rotation_residual_deg: float
    translation_residual_mm: float
    n_poses: int


# ---------------------------------------------------------------------------- input and gates


def _invert_stack(Ts: FloatArray) -> FloatArray:
    """``invert_rigid`` of each matrix of a (N, 4, 4) stack."""
    R_T = Ts[:, :3, :3].transpose(0, 2, 1)
    inv = np.zeros_like(Ts)
    inv[:, :3, :3] = R_T
    inv[:, :3, 3] = -np.einsum("nij,nj->ni", R_T, Ts[:, :3, 3])
    inv[:, 3, 3] = 1.0
    return inv


def _motions(
    T_tracker_from_marker: FloatArray, T_camera_from_target: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Return ``A_ij``, ``B_ij`` (K, 4, 4) for all pairs ``i < j`` (K = N (N - 1) / 2)."""
    i, j = np.triu_indices(len(T_tracker_from_marker), k=1)
    A = np.matmul(_invert_stack(T_tracker_from_marker[j]), T_tracker_from_marker[i])
    B = np.matmul(T_camera_from_target[j], _invert_stack(T_camera_from_target[i]))
    return A, B


def _rotation_angles_rad(R: FloatArray) -> FloatArray:
    """Angle in [0, pi] of each rotation of a (K, 3, 3) stack, ``rotation_angle_rad``'s way."""
    sin_angle = 0.5 * np.linalg.norm(
        np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]]),
        axis=0,
    )
    cos_angle = 0.5 * (np.trace(R, axis1=1, axis2=2) - 1.0)
    angles: FloatArray = np.arctan2(sin_angle, cos_angle)
    return angles


def _check_rotation(A: FloatArray, *, min_rotation_deg: float, min_axis_spread_deg: float) -> None:
    """Refuse motions that leave ``X`` unobservable: too little rotation, or all about one axis.

    ``A X = X B`` determines the rotation of ``X`` only from motions about at
    least two non-parallel axes (Tsai and Lenz 1989, section IV; Shiu and Ahmad
    1989): with one axis, a rotation of ``X`` about it, and the translation of
    ``X`` along it, are free. A motion counts when it turns by at least
    ``min_rotation_deg`` (a smaller one has an axis dominated by noise); the
    axis spread is the largest angle between the rotation axis (a line, so
    sign-free) of any counted motion and that of the largest motion.
    """
    R = A[:, :3, :3]
    angles_deg = np.degrees(_rotation_angles_rad(R))
    # A zero rotation has no axis, whatever min_rotation_deg allows.
    counted = (angles_deg >= min_rotation_deg) & (angles_deg > 1e-9)
    if not counted.any():
        raise CalibrationError(
            "not_enough_rotation",
            f"largest rotation between two poses is {float(angles_deg.max()):.1f} deg, need "
            f"at least {min_rotation_deg:g} deg about two different axes: turn the camera more",
        )
    axes = Rotation.from_matrix(R[counted]).as_rotvec()
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    reference = axes[int(np.argmax(angles_deg[counted]))]
    cos_to_reference = np.clip(np.abs(axes @ reference), 0.0, 1.0)
    spread_deg = math.degrees(float(np.arccos(cos_to_reference.min())))
    if spread_deg < min_axis_spread_deg:
        raise CalibrationError(
            "not_enough_rotation",
            f"all rotations between poses are about one axis (spread {spread_deg:.1f} deg, "
            f"need at least {min_axis_spread_deg:g} deg): turn the camera about another axis too",
        )


def _check_inputs(
    T_tracker_from_marker: npt.ArrayLike,
    T_camera_from_target: npt.ArrayLike,
    *,
    min_rotation_deg: float,
    min_axis_spread_deg: float,
) -> tuple[FloatArray, FloatArray, int]:
    """Validate and gate the poses; return the motions ``A``, ``B`` (K, 4, 4) and N."""
    M = check_pose_stack(T_tracker_from_marker, name="T_tracker_from_marker")
    C = check_pose_stack(T_camera_from_target, name="T_camera_from_target")
    if len(M) != len(C):
        raise CalibrationError(
            "bad_input",
            f"{len(M)} tracker poses but {len(C)} camera poses: they must be paired one to one",
        )
    for name, value in (
        ("min_rotation_deg", min_rotation_deg),
        ("min_axis_spread_deg", min_axis_spread_deg),
    ):
        if isinstance(value, bool) or not math.isfinite(value) or not 0.0 <= value <= 90.0:
            raise CalibrationError("bad_input", f"{name} must be in [0, 90], got {value!r}")
    if len(M) < MIN_POSES:
        raise CalibrationError(
            "too_few_poses", f"only {len(M)} poses, need at least {MIN_POSES} for hand-eye"
        )
    A, B = _motions(M, C)
    _check_rotation(A, min_rotation_deg=min_rotation_deg, min_axis_spread_deg=min_axis_spread_deg)
    return A, B, len(M)


# ---------------------------------------------------------------------------- quaternion helpers


def _quats_wxyz(R: FloatArray) -> FloatArray:
    """Unit quaternions (K, 4), scalar first, with ``w >= 0``, of a (K, 3, 3) stack.

    The sign matters: the quaternion forms of ``A X = X B`` need the scalar parts
    of ``q_A`` and ``q_B`` (both ``cos(angle / 2)``, equal for a true pair) to
    have the same sign, which ``w >= 0`` gives for every motion below 180 deg.
    """
    xyzw = Rotation.from_matrix(R).as_quat()
    q = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    q *= np.where(q[:, :1] < 0.0, -1.0, 1.0)
    return q


def _skew(v: FloatArray) -> FloatArray:
    """Cross-product matrices (K, 3, 3) of vectors (K, 3): ``skew(a) @ b == cross(a, b)``."""
    S = np.zeros((*v.shape[:-1], 3, 3))
    S[..., 0, 1], S[..., 0, 2] = -v[..., 2], v[..., 1]
    S[..., 1, 0], S[..., 1, 2] = v[..., 2], -v[..., 0]
    S[..., 2, 0], S[..., 2, 1] = -v[..., 1], v[..., 0]
    return S


def _quat_multiply(p: FloatArray, q: FloatArray) -> FloatArray:
    """Hamilton product ``p q`` of quaternions (..., 4), scalar first."""
    p0, pv = p[..., :1], p[..., 1:]
    q0, qv = q[..., :1], q[..., 1:]
    scalar = p0 * q0 - np.sum(pv * qv, axis=-1, keepdims=True)
    vector = p0 * qv + q0 * pv + np.cross(pv, qv)
    return np.concatenate([scalar, vector], axis=-1)


def _solve_translation(A: FloatArray, B: FloatArray, R_X: FloatArray) -> FloatArray:
    """Least-squares ``t_X`` of ``(R_A - I) t_X = R_X t_B - t_A`` stacked over all pairs.

    The translation part of ``A X = X B`` once ``R_X`` is known (Tsai and Lenz
    1989, eq. 15; the same second step in Park and Martin 1994 and Horaud and
    Dornaika 1995).
    """
    lhs = (A[:, :3, :3] - np.eye(3)).reshape(-1, 3)
    rhs = (B[:, :3, 3] @ R_X.T - A[:, :3, 3]).reshape(-1)
    t_X = np.asarray(np.linalg.lstsq(lhs, rhs, rcond=None)[0], dtype=np.float64)
    return t_X


def _nearest_rotation(M: FloatArray) -> FloatArray:
    """The rotation nearest (Frobenius) to ``M`` (3, 3), by SVD with the reflection removed."""
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, 1.0 if np.linalg.det(U @ Vt) > 0.0 else -1.0])
    R: FloatArray = U @ D @ Vt
    return R


# ---------------------------------------------------------------------------- the five methods


def _tsai(A: FloatArray, B: FloatArray) -> tuple[FloatArray, FloatArray]:
    """R. Y. Tsai and R. K. Lenz, "A new technique for fully autonomous and efficient 3D
    robotics hand/eye calibration", IEEE Trans. Robot. Autom. 5(3):345-358, 1989.

    With the modified Rodrigues vectors ``P = 2 sin(angle / 2) axis`` of ``A`` and
    ``B``, eq. 12: ``skew(P_A + P_B) P' = P_B - P_A`` in least squares, where
    ``P' = tan(angle_X / 2) axis_X``; eq. 14 turns ``P'`` back into ``P_X``. Fails
    for a rotation of X of exactly 180 deg (``P'`` is infinite).
    """
    P_A = 2.0 * _quats_wxyz(A[:, :3, :3])[:, 1:]
    P_B = 2.0 * _quats_wxyz(B[:, :3, :3])[:, 1:]
    lhs = _skew(P_A + P_B).reshape(-1, 3)
    rhs = (P_B - P_A).reshape(-1)
    P_prime = np.asarray(np.linalg.lstsq(lhs, rhs, rcond=None)[0], dtype=np.float64)
    # q_X = (1, P') / |(1, P')|, i.e. eq. 14 with P_X = 2 q_X.
    q_X = np.concatenate([[1.0], P_prime]) / math.sqrt(1.0 + float(P_prime @ P_prime))
    R_X = Rotation.from_quat(np.r_[q_X[1:], q_X[0]]).as_matrix()
    return R_X, _solve_translation(A, B, R_X)


def _park(A: FloatArray, B: FloatArray) -> tuple[FloatArray, FloatArray]:
    """F. C. Park and B. J. Martin, "Robot sensor calibration: solving AX = XB on the
    Euclidean group", IEEE Trans. Robot. Autom. 10(5):717-721, 1994.

    The rotation vectors (logarithms) satisfy ``alpha_A = R_X beta_B``; with
    ``M = sum beta alpha^T`` the least-squares rotation is ``(M^T M)^(-1/2) M^T``
    (their eq. 12), the polar factor of ``M^T``, computed here by SVD so that it
    stays a rotation when ``M`` is near singular.
    """
    alpha = Rotation.from_matrix(A[:, :3, :3]).as_rotvec()
    beta = Rotation.from_matrix(B[:, :3, :3]).as_rotvec()
    R_X = _nearest_rotation(alpha.T @ beta)
    return R_X, _solve_translation(A, B, R_X)


def _horaud(A: FloatArray, B: FloatArray) -> tuple[FloatArray, FloatArray]:
    """R. Horaud and F. Dornaika, "Hand-eye calibration", Int. J. Robot. Res.
    14(3):195-210, 1995, section 5.2.

    ``q_A q_X = q_X q_B`` is linear in ``q_X``: ``(Q(q_A) - W(q_B)) q_X = 0`` with
    ``Q``/``W`` the left/right quaternion product matrices (their Appendix A);
    ``q_X`` is the eigenvector of the smallest eigenvalue of
    ``sum (Q - W)^T (Q - W)``.
    """
    q_A = _quats_wxyz(A[:, :3, :3])
    q_B = _quats_wxyz(B[:, :3, :3])
    eye4 = np.eye(4)
    # Q(p) q = p q and W(p) q = q p, built column by column from the basis quaternions.
    Q = np.stack([_quat_multiply(q_A, e) for e in eye4], axis=-1)
    W = np.stack([_quat_multiply(e, q_B) for e in eye4], axis=-1)
    D = Q - W
    _, vectors = np.linalg.eigh(np.einsum("kji,kjl->il", D, D))
    q_X = vectors[:, 0]
    R_X = Rotation.from_quat(np.r_[q_X[1:], q_X[0]]).as_matrix()
    return R_X, _solve_translation(A, B, R_X)


def _andreff(A: FloatArray, B: FloatArray) -> tuple[FloatArray, FloatArray]:
    """N. Andreff, R. Horaud and B. Espiau, "Robot hand-eye calibration using
    structure-from-motion", Int. J. Robot. Res. 20(3):228-248, 2001 (eq. 10-15).

    Rotation and translation in one linear least-squares system, with the
    row-major ``vec(R_A R_X R_B^T) = (R_A kron R_B) vec(R_X)``::

        [ I9 - R_A kron R_B   0        ] [ vec(R_X) ]   [ 0   ]
        [ I3 kron t_B^T       I3 - R_A ] [ t_X      ] = [ t_A ]

    then ``R_X`` is scaled to unit determinant and projected onto the rotations.
    """
    K = len(A)
    R_A, R_B = A[:, :3, :3], B[:, :3, :3]
    lhs = np.zeros((K, 12, 12))
    lhs[:, :9, :9] = np.eye(9) - np.einsum("kij,klm->kiljm", R_A, R_B).reshape(K, 9, 9)
    lhs[:, 9:, :9] = np.einsum("ij,kl->kijl", np.eye(3), B[:, :3, 3]).reshape(K, 3, 9)
    lhs[:, 9:, 9:] = np.eye(3) - R_A
    rhs = np.zeros((K, 12))
    rhs[:, 9:] = A[:, :3, 3]
    x = np.asarray(np.linalg.lstsq(lhs.reshape(-1, 12), rhs.reshape(-1), rcond=None)[0], np.float64)
    R_raw = x[:9].reshape(3, 3)
    det = float(np.linalg.det(R_raw))
    if abs(det) < 1e-12:
        raise CalibrationError("degenerate", "Andreff's linear system gave a singular rotation")
    R_X = _nearest_rotation(R_raw / math.copysign(abs(det) ** (1.0 / 3.0), det))
    return R_X, x[9:].copy()


def _daniilidis(A: FloatArray, B: FloatArray) -> tuple[FloatArray, FloatArray]:
    """K. Daniilidis, "Hand-eye calibration using dual quaternions", Int. J. Robot. Res.
    18(3):286-298, 1999 (eq. 31-35).

    With the dual quaternions ``(a, a')`` of ``A`` and ``(b, b')`` of ``B``, each
    pair gives six equations (eq. 31) in the dual quaternion ``(q, q')`` of X::

        [ a - b    skew(a + b)   0       0           ] [ q  ]
        [ a' - b'  skew(a' + b') a - b   skew(a + b) ] [ q' ] = 0     (vector parts)

    The solution lies in the span of the two right singular vectors with the
    smallest singular values; the two constraints ``|q| = 1`` and ``q . q' = 0``
    fix the combination (eq. 34-35).
    """
    q_A, q_B = _quats_wxyz(A[:, :3, :3]), _quats_wxyz(B[:, :3, :3])

    def dual(q: FloatArray, t: FloatArray) -> FloatArray:
        # q' = 1/2 (0, t) q
        return 0.5 * _quat_multiply(np.concatenate([np.zeros((len(t), 1)), t], axis=1), q)

    a, b = q_A[:, 1:], q_B[:, 1:]
    a_d, b_d = dual(q_A, A[:, :3, 3])[:, 1:], dual(q_B, B[:, :3, 3])[:, 1:]
    K = len(A)
    S = np.zeros((K, 6, 8))
    S[:, :3, 0] = a - b
    S[:, :3, 1:4] = _skew(a + b)
    S[:, 3:, 0] = a_d - b_d
    S[:, 3:, 1:4] = _skew(a_d + b_d)
    S[:, 3:, 4] = a - b
    S[:, 3:, 5:8] = _skew(a + b)
    _, _, Vt = np.linalg.svd(S.reshape(-1, 8))
    v1, v2 = Vt[6], Vt[7]
    u1, w1, u2, w2 = v1[:4], v1[4:], v2[:4], v2[4:]
    # q . q' = 0 for x = l1 v1 + l2 v2 is the quadratic form c11 l1^2 + c12 l1 l2 + c22 l2^2.
    c11, c12, c22 = float(u1 @ w1), float(u1 @ w2 + u2 @ w1), float(u2 @ w2)
    disc = math.sqrt(max(c12 * c12 - 4.0 * c11 * c22, 0.0))
    # Solve for the ratio on the side with the larger leading coefficient, so that a
    # near-zero one (the paper divides by it) never blows up.
    if abs(c11) >= abs(c22) and c11 != 0.0:
        ratios = [(-c12 + disc) / (2.0 * c11), (-c12 - disc) / (2.0 * c11)]
        candidates = [np.array([s, 1.0]) for s in ratios]
    elif c22 != 0.0:
        ratios = [(-c12 + disc) / (2.0 * c22), (-c12 - disc) / (2.0 * c22)]
        candidates = [np.array([1.0, s]) for s in ratios]
    else:
        candidates = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    # Eq. 35: of the two roots take the one with the larger rotation part |q|, compared
    # at |x| = 1 (v1, v2 are orthonormal, so |x| = |lambda|). For noise-free data the
    # null space is span{(q, q'), (0, q)} and the other root is (0, q), with q = 0.
    U = np.stack([u1, u2], axis=1)
    candidates = [lam / float(np.linalg.norm(lam)) for lam in candidates]
    norms = [float(np.sum((U @ lam) ** 2)) for lam in candidates]
    lam = candidates[int(np.argmax(norms))] / math.sqrt(max(norms))
    x = lam[0] * v1 + lam[1] * v2
    q, q_d = x[:4], x[4:]
    scale = float(np.linalg.norm(q))
    q, q_d = q / scale, q_d / scale
    R_X = Rotation.from_quat(np.r_[q[1:], q[0]]).as_matrix()
    # t = 2 q' q* (vector part).
    q_conj = q * np.array([1.0, -1.0, -1.0, -1.0])
    t_X = 2.0 * _quat_multiply(q_d, q_conj)[1:]
    return R_X, t_X


_SOLVERS: Final[dict[str, Callable[[FloatArray, FloatArray], tuple[FloatArray, FloatArray]]]] = {
    "tsai": _tsai,
    "park": _park,
    "horaud": _horaud,
    "andreff": _andreff,
    "daniilidis": _daniilidis,
}


# ---------------------------------------------------------------------------- public API


def hand_eye_residuals(
    T_marker_from_camera: npt.ArrayLike, A: FloatArray, B: FloatArray
) -> tuple[float, float]:
    """Return (rotation_residual_deg, translation_residual_mm) of ``A X = X B``.

    ``A``, ``B`` (K, 4, 4) are the motions of the module docstring; the figures
    are RMS over the K pairs as defined in :class:`HandEyeResult`.
    """
    X = np.asarray(T_marker_from_camera, dtype=np.float64)
    AX = np.matmul(A, X)
    XB = np.matmul(X, B)
    angles = _rotation_angles_rad(np.matmul(AX[:, :3, :3].transpose(0, 2, 1), XB[:, :3, :3]))
    distances = np.linalg.norm(AX[:, :3, 3] - XB[:, :3, 3], axis=1)
    return (
        math.degrees(math.sqrt(float(np.mean(angles**2)))),
        math.sqrt(float(np.mean(distances**2))),
    )


def _solve(A: FloatArray, B: FloatArray, method: HandEyeMethod, n_poses: int) -> HandEyeResult:
    R_X, t_X = _SOLVERS[method](A, B)
    if not (np.all(np.isfinite(R_X)) and np.all(np.isfinite(t_X))):
        raise CalibrationError("degenerate", f"hand-eye method {method!r} gave no finite solution")
    X = make_rigid(R_X, t_X)
    rotation_deg, translation_mm = hand_eye_residuals(X, A, B)
    return HandEyeResult(
        T_marker_from_camera=X,
        method=method,
        rotation_residual_deg=rotation_deg,
        translation_residual_mm=translation_mm,
        n_poses=n_poses,
    )


def _check_method(method: str) -> HandEyeMethod:
    if method not in _SOLVERS:
        raise CalibrationError(
            "bad_input",
            f"unknown hand-eye method {method!r}; choose from {', '.join(HAND_EYE_METHODS)}",
        )
    return method  # type: ignore[return-value]  # checked against the Literal's values above


def hand_eye(
    T_tracker_from_marker: npt.ArrayLike,
    T_camera_from_target: npt.ArrayLike,
    *,
    method: str = "park",
    min_rotation_deg: float = 5.0,
    min_axis_spread_deg: float = 10.0,
) -> HandEyeResult:
    """Solve ``A X = X B`` for ``X = T_marker_from_camera`` with one method.

    ``T_tracker_from_marker`` (N, 4, 4) and ``T_camera_from_target`` (N, 4, 4)
    are paired by index (same instant), in mm; the target must not move while
    the camera does. ``method`` is one of :data:`HAND_EYE_METHODS`; Park and
    Martin's is the default because it minimises a proper metric on the
    rotations and has no singularity short of 180 deg motions (Tsai and Lenz's
    has one where X itself turns by 180 deg, a camera facing away from its
    marker; its residual then shows it).

    Raises CalibrationError: ``bad_input`` (shapes, pairing, non-finite or
    non-rigid poses, unknown method), ``too_few_poses`` (N < 3),
    ``not_enough_rotation`` (no motion of ``min_rotation_deg`` or more, or all
    such motions within ``min_axis_spread_deg`` of one axis), ``degenerate``.
    """
    checked = _check_method(method)
    A, B, n_poses = _check_inputs(
        T_tracker_from_marker,
        T_camera_from_target,
        min_rotation_deg=min_rotation_deg,
        min_axis_spread_deg=min_axis_spread_deg,
    )
    return _solve(A, B, checked, n_poses)


def compare_hand_eye_methods(
    T_tracker_from_marker: npt.ArrayLike,
    T_camera_from_target: npt.ArrayLike,
    *,
    methods: Sequence[str] = HAND_EYE_METHODS,
    min_rotation_deg: float = 5.0,
    min_axis_spread_deg: float = 10.0,
) -> tuple[HandEyeResult, ...]:
    """Solve with each of ``methods`` and return the results, best first.

    Sorted by ``translation_residual_mm`` (the figure that moves an overlay),
    then ``rotation_residual_deg``. Inputs, gates and errors as :func:`hand_eye`;
    a method that finds no solution (``degenerate``) is left out, and if all of
    them fail the last error is raised.
    """
    checked = [_check_method(m) for m in methods]
    if not checked:
        raise CalibrationError("bad_input", "no hand-eye method to compare")
    A, B, n_poses = _check_inputs(
        T_tracker_from_marker,
        T_camera_from_target,
        min_rotation_deg=min_rotation_deg,
        min_axis_spread_deg=min_axis_spread_deg,
    )
    results: list[HandEyeResult] = []
    failure: CalibrationError | None = None
    for method in dict.fromkeys(checked):
        try:
            results.append(_solve(A, B, method, n_poses))
        except CalibrationError as exc:
            failure = exc
    if not results and failure is not None:
        raise failure
    results.sort(key=lambda r: (r.translation_residual_mm, r.rotation_residual_deg))
    return tuple(results)

"""Pivot and spin calibration of a tracked pointer: where its tip is, which way its shaft runs.

Pivot calibration. The pointer's tip rests in a divot while the hand pivots the
pointer about it. Every tracked pose ``T_tracker_from_pointer[i] = [R_i | t_i]``
then maps the same (unknown) tip offset ``p_tip`` (pointer frame, mm) onto the
same (unknown) pivot point ``p_pivot`` (tracker frame, mm)::

    R_i @ p_tip + t_i = p_pivot            for every pose i

Stacked over N poses this is the linear system of the algebraic one-step method
(Z. Yaniv, "Which pivot calibration?", Proc. SPIE 9415, 941527, 2015,
doi:10.1117/12.2081348, section 2.1.2)::

    [ R_1  -I ]              [ -t_1 ]
    [ ...  ...] [ p_tip   ] = [ ...  ]          A (3N, 6) @ x (6,) = b (3N,)
    [ R_N  -I ] [ p_pivot ]   [ -t_N ]

solved in the least-squares sense. This is the formulation, sign convention and
RMS definition of scikit-surgery (``sksurgerycalibration.algorithms.pivot.
pivot_calibration_aos``), so its published figures on its recorded data are
reproduced to the micrometre (``tests/unit/test_calibration_pivot.py``).

Spin calibration. With the tip still fixed, the pointer is turned about its own
shaft. The shaft is then a direction ``d`` in the pointer frame that every pose
maps onto one direction ``a`` in the tracker frame (``R_i @ d = a``); see
:func:`spin_calibration`.

Frames: ``tracker`` and ``pointer`` (the pointer's marker); the tip frame is
``pointer_tip`` (``nav.frames``). Lengths in mm; angles are degrees only in the
result fields whose names say ``_deg`` (they are shown to the OR engineer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from calibration.poses import check_pose_stack
from nav.arrays import BoolArray, FloatArray

_SAMPLE_CHUNK = 64  # RANSAC hypotheses scored at once: bounds memory at 64 x N x 3 floats

MAX_POSITION_MM: Final = 1e4
"""The largest pose translation, tip offset or pivot point a pivot calibration accepts, mm.

Ten metres: no tracker measures a tool that far away and no pointer is that long, yet a
pose stack carrying such translations (a unit error, a corrupt file) solves without
complaint into a tip 1e308 mm long. Poses beyond it are refused as ``bad_input``, a
result beyond it as ``degenerate``.
"""


@dataclass(frozen=True, eq=False, kw_only=True)
class PivotResult:
    """The pointer tip and the pivot point from a pivot calibration, and how far to trust them.

    Fields:

    - ``p_tip_in_pointer`` (3,) mm: the tip in the pointer marker frame, the
      translation of ``T_pointer_from_pointer_tip``.
    - ``p_pivot_in_tracker`` (3,) mm: the divot the tip rested in, tracker frame.
    - ``rms_error_mm``: root mean square over the 3 * n_inliers stacked residual
      components of ``A x - b`` (the figure scikit-surgery reports as its
      "residual error"), i.e. ``sqrt(mean_i |r_i|^2 / 3)``. The smaller figure.
    - ``mean_residual_norm_mm``: mean over the inlier poses of ``|r_i|``, the
      distance between that pose's predicted tip ``R_i p_tip + t_i`` and the
      pivot point. The larger figure: for isotropic Gaussian residuals it is
      sqrt(8 / pi) = 1.6 times ``rms_error_mm`` (1.38 times on scikit-surgery's
      recorded pivot, whose residuals have heavier tails). It is the figure to
      compare with a tracker's stated 3D accuracy.
    - ``max_residual_norm_mm``: the largest ``|r_i|`` over the inliers.
    - ``n_poses``: poses passed in; ``n_inliers``: poses used in the final fit
      (all of them for the algebraic method).
    - ``rotation_spread_deg``: the largest angle between any (inlier) pose's
      rotation and their mean rotation (the chordal L2 mean: the arithmetic
      mean of the matrices projected onto SO(3); R. Hartley et al., "Rotation
      averaging", IJCV 103:267-305, 2013, section 5.3). "How far the pointer
      was pivoted."
    - ``weakest_rotation_deg``: how much the poses turn the direction of the
      pointer frame that they turn least, ``asin(sqrt(1 - s_1^2))`` with
      ``s_1`` the largest singular value of the mean rotation matrix. The RMS
      distance of ``R_i u`` from its mean is ``sqrt(1 - |R_mean u|^2)``, so
      this is the angular spread of the least-turned direction ``u``; it is
      0 when all poses turn about one common axis, the case where the tip's
      component along that axis is unobservable (A^T A has eigenvalues
      ``N (1 +- s_k)``). "Whether the pointer was pivoted in two directions."
    - ``method``: ``"algebraic"`` or ``"ransac"``.
    - ``inlier_mask`` (n_poses,) bool: the poses used in the final fit.
    """

    p_tip_in_pointer: FloatArray
    p_pivot_in_tracker: FloatArray
    rms_error_mm: float
    mean_residual_norm_mm: float
    max_residual_norm_mm: float
    n_poses: int
    n_inliers: int
    rotation_spread_deg: float
    weakest_rotation_deg: float
    method: Literal["algebraic", "ransac"]
    inlier_mask: BoolArray


@dataclass(frozen=True, eq=False, kw_only=True)
class SpinResult:
    """The pointer's shaft direction from a spin calibration, and how consistent the spin was.

    Fields:

    - ``shaft_direction_in_pointer`` (3,): unit vector along the shaft, pointer
      marker frame. Oriented towards the tip when the tip was given (its dot
      product with ``p_tip_in_pointer`` is positive); otherwise its largest
      component (by magnitude) is positive.
    - ``shaft_direction_in_tracker`` (3,): unit vector, the mean direction of
      the shaft in the tracker frame during the spin (``R_i d`` averaged).
    - ``axis_spread_deg``: RMS angle between each pose's shaft ``R_i d`` and
      ``shaft_direction_in_tracker``: how much the shaft wobbled while it was
      spun (0 for a perfect spin about a fixed axis).
    - ``spin_range_deg``: the arc of spin angles about the shaft that the
      poses cover, in [0, 360): 360 minus the largest gap between the sorted
      spin angles on the circle, so the order of the poses does not matter.
    - ``n_poses``: poses used.
    """

    shaft_direction_in_pointer: FloatArray
    shaft_direction_in_tracker: FloatArray
    axis_spread_deg: float
    spin_range_deg: float
    n_poses: int


# ---------------------------------------------------------------------------- input and gates


def _check_parameter(name: str, value: float, *, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not math.isfinite(value) or value < minimum:
        raise CalibrationError("bad_input", f"{name} must be a finite number >= {minimum}")


def _check_translations(Ts: FloatArray) -> None:
    """Refuse a pose whose translation is beyond :data:`MAX_POSITION_MM` (``bad_input``)."""
    if not len(Ts):
        return
    distances = np.max(np.abs(Ts[:, :3, 3]), axis=1)
    worst = int(np.argmax(distances))
    if distances[worst] > MAX_POSITION_MM:
        raise CalibrationError(
            "bad_input",
            f"pose[{worst}] has a translation of {distances[worst]:.3g} mm, beyond the "
            f"{MAX_POSITION_MM:g} mm limit (a unit error or a corrupt file?)",
        )


def _check_count(n: int, min_poses: int, what: str = "poses") -> None:
    if n < min_poses:
        raise CalibrationError("too_few_poses", f"only {n} {what}, need at least {min_poses}")


def _rotation_spread(R: FloatArray) -> tuple[float, float]:
    """Return (rotation_spread_deg, weakest_rotation_deg) of R (N, 3, 3); see PivotResult."""
    R_bar = R.mean(axis=0)
    U, s, Vt = np.linalg.svd(R_bar)
    # Chordal L2 mean: the rotation nearest (Frobenius) to the arithmetic mean.
    D = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(U @ Vt))) or 1.0])
    R_mean = U @ D @ Vt
    # Angle of R_mean^T R_i for all i at once, with rotation_angle_rad's atan2 form
    # (accurate near 0, where an arccos of the trace loses half the digits).
    Q = np.matmul(R_mean.T, R)
    sin_angle = 0.5 * np.linalg.norm(
        np.stack([Q[:, 2, 1] - Q[:, 1, 2], Q[:, 0, 2] - Q[:, 2, 0], Q[:, 1, 0] - Q[:, 0, 1]]),
        axis=0,
    )
    cos_angle = 0.5 * (np.trace(Q, axis1=1, axis2=2) - 1.0)
    spread_rad = float(np.max(np.arctan2(sin_angle, cos_angle)))
    weakest_rad = math.asin(math.sqrt(max(0.0, 1.0 - min(1.0, float(s[0])) ** 2)))
    return math.degrees(spread_rad), math.degrees(weakest_rad)


def _check_rotation(
    spread_deg: float, weakest_deg: float, *, min_rotation_deg: float, min_weakest_deg: float
) -> None:
    if spread_deg < min_rotation_deg:
        raise CalibrationError(
            "not_enough_rotation",
            f"rotation spread {spread_deg:.1f} deg, need at least {min_rotation_deg:g} deg: "
            "pivot the pointer further",
        )
    if weakest_deg < min_weakest_deg:
        raise CalibrationError(
            "not_enough_rotation",
            f"the poses turn about one axis only ({weakest_deg:.1f} deg about the least-turned "
            f"direction, need at least {min_weakest_deg:g} deg): tilt the pointer in two "
            "directions",
        )


# ---------------------------------------------------------------------------- pivot


@dataclass(frozen=True)
class _Fit:
    x: FloatArray  # (6,): p_tip_in_pointer, p_pivot_in_tracker
    rank: int
    residuals: FloatArray  # (n, 3): R_i p_tip + t_i - p_pivot, mm


def _solve_algebraic(Ts: FloatArray) -> _Fit:
    """Least-squares solution of Yaniv (2015) section 2.1.2 for poses Ts (n, 4, 4)."""
    n = len(Ts)
    A = np.empty((3 * n, 6))
    A[:, :3] = Ts[:, :3, :3].reshape(3 * n, 3)
    A[:, 3:] = np.tile(-np.eye(3), (n, 1))
    b = -Ts[:, :3, 3].reshape(3 * n)
    # lstsq is SVD-based like scikit-surgery's explicit pseudo-inverse, and reports the
    # numerical rank with a relative (machine-precision) tolerance.
    solution, _, rank, _ = np.linalg.lstsq(A, b, rcond=None)
    x: FloatArray = np.asarray(solution, dtype=np.float64)
    return _Fit(x=x, rank=int(rank), residuals=(A @ x - b).reshape(n, 3))


def _result(
    Ts: FloatArray,
    mask: BoolArray,
    fit: _Fit,
    *,
    method: Literal["algebraic", "ransac"],
    spread: tuple[float, float],
    max_rms_mm: float | None,
) -> PivotResult:
    """Gate on rank and RMS, then package ``fit`` (made from ``Ts[mask]``) as a PivotResult."""
    if fit.rank < 6:
        raise CalibrationError(
            "degenerate",
            f"the pivot system has rank {fit.rank}, need 6: the poses do not determine the tip",
        )
    for name, vector in (("tip", fit.x[:3]), ("pivot point", fit.x[3:])):
        size = float(np.max(np.abs(vector)))
        if not size <= MAX_POSITION_MM:  # NaN fails too
            raise CalibrationError(
                "degenerate",
                f"the {name} comes out {size:.3g} mm from the origin, beyond the "
                f"{MAX_POSITION_MM:g} mm limit: the poses do not determine a tip",
            )
    norms = np.linalg.norm(fit.residuals, axis=1)
    rms = math.sqrt(float(np.mean(fit.residuals**2)))
    if max_rms_mm is not None and rms > max_rms_mm:
        raise CalibrationError(
            "error_above_threshold", f"RMS error {rms:.2f} mm is above the {max_rms_mm:g} mm limit"
        )
    p_tip = fit.x[:3].copy()
    p_pivot = fit.x[3:].copy()
    mask = mask.copy()
    for a in (p_tip, p_pivot, mask):
        a.setflags(write=False)
    return PivotResult(
        p_tip_in_pointer=p_tip,
        p_pivot_in_tracker=p_pivot,
        rms_error_mm=rms,
        mean_residual_norm_mm=float(norms.mean()),
        max_residual_norm_mm=float(norms.max()),
        n_poses=len(Ts),
        n_inliers=int(mask.sum()),
        rotation_spread_deg=spread[0],
        weakest_rotation_deg=spread[1],
        method=method,
        inlier_mask=mask,
    )


def pivot_calibration(
    T_tracker_from_pointer: npt.ArrayLike,
    *,
    min_poses: int = 30,
    min_rotation_deg: float = 20.0,
    min_weakest_rotation_deg: float = 5.0,
    max_rms_mm: float | None = None,
) -> PivotResult:
    """Find the pointer tip and the pivot point by the algebraic one-step method.

    Least squares on Yaniv (2015), section 2.1.2 (module docstring), every pose
    weighted equally. ``T_tracker_from_pointer`` is (N, 4, 4), rigid, mm.

    The defaults suit a hand-held pivot recorded at 20-60 Hz for a few
    seconds: 30 poses is half a second at 60 Hz, and a sweep whose poses stay
    within 20 degrees of their mean pivots too little for a tip 100-400 mm
    from the marker (the pivot point moves along with the noise). 5 degrees
    about the least-turned direction rules out a pivot in one plane only, which
    leaves the tip's component along the plane's normal unobservable.

    Raises CalibrationError with ``kind``:
    ``bad_input`` (shape, non-finite or non-rigid pose, a translation beyond
    :data:`MAX_POSITION_MM`, bad parameter),
    ``too_few_poses`` (N < ``min_poses``),
    ``not_enough_rotation`` (``rotation_spread_deg < min_rotation_deg`` or
    ``weakest_rotation_deg < min_weakest_rotation_deg``),
    ``degenerate`` (the system's numerical rank is below 6, reachable when the
    rotation gates are set to 0; or a tip or pivot point beyond :data:`MAX_POSITION_MM`),
    ``error_above_threshold`` (``rms_error_mm > max_rms_mm``).
    """
    Ts = check_pose_stack(T_tracker_from_pointer)
    _check_translations(Ts)
    _check_parameter("min_poses", min_poses, minimum=1)
    _check_parameter("min_rotation_deg", min_rotation_deg)
    _check_parameter("min_weakest_rotation_deg", min_weakest_rotation_deg)
    if max_rms_mm is not None:
        _check_parameter("max_rms_mm", max_rms_mm)
    _check_count(len(Ts), max(min_poses, 1))
    spread = _rotation_spread(Ts[:, :3, :3])
    _check_rotation(
        *spread, min_rotation_deg=min_rotation_deg, min_weakest_deg=min_weakest_rotation_deg
    )
    fit = _solve_algebraic(Ts)
    mask = np.ones(len(Ts), dtype=bool)
    return _result(Ts, mask, fit, method="algebraic", spread=spread, max_rms_mm=max_rms_mm)


def _hypotheses(R: FloatArray, t: FloatArray) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Pivot solutions of many small pose subsets at once: R (h, k, 3, 3), t (h, k, 3).

    The same least squares as :func:`_solve_algebraic`, with ``p_pivot``
    eliminated: for a given tip it is optimal at ``mean_j(R_j p_tip + t_j)``,
    leaving the 3x3 normal equations ``sum_j D_j^T D_j p_tip = -sum_j D_j^T e_j``
    with ``D_j = R_j - mean R``, ``e_j = t_j - mean t``. Solved batched by
    eigen-decomposition, since a per-subset lstsq call costs more than the
    arithmetic. Returns p_tip (h, 3), p_pivot (h, 3) and a validity mask (h,)
    that is False for a subset whose rotations do not determine the tip.
    """
    D = R - R.mean(axis=1, keepdims=True)
    e = t - t.mean(axis=1, keepdims=True)
    Dt = np.swapaxes(D, -1, -2)
    M = np.einsum("hkij,hkjl->hil", Dt, D)
    c = -np.einsum("hkij,hkj->hi", Dt, e)
    w, V = np.linalg.eigh(M)
    k = R.shape[1]
    # M's eigenvalues are k * sin^2 of the spread (see PivotResult.weakest_rotation_deg);
    # below 0.06 degree (sin^2 < 1e-6) the subset's tip estimate amplifies noise 1000x.
    valid = w[:, 0] > k * 1e-6
    w_safe = np.where(valid[:, None], w, 1.0)
    p_tip = np.einsum("hij,hj->hi", V, np.einsum("hji,hj->hi", V, c) / w_safe)
    p_pivot = np.einsum("hkij,hj->hki", R, p_tip).mean(axis=1) + t.mean(axis=1)
    return p_tip, p_pivot, valid


def _residual_norms(Ts: FloatArray, p_tip: FloatArray, p_pivot: FloatArray) -> FloatArray:
    """|R_i p_tip + t_i - p_pivot| (n,) for poses Ts (n, 4, 4) and one hypothesis (3,), (3,)."""
    return np.asarray(np.linalg.norm(Ts[:, :3, :3] @ p_tip + Ts[:, :3, 3] - p_pivot, axis=-1))


@dataclass(frozen=True)
class _Scorer:
    """Squared residuals of many hypotheses against all poses, as three BLAS products.

    ``|R_i p + t_i - q|^2 = |p|^2 + |t_i|^2 + |q|^2 + 2 (R_i^T t_i).p - 2 t_i.q
    - 2 q^T R_i p``, and ``q^T R_i p`` is row i of R (n, 9) times ``q (x) p``
    (9,), so h hypotheses cost (n, 9) @ (9, h) products instead of an (n, 3, h)
    array of predicted tips: 10x faster at n = 1000. Rounding is ~1e-16 of
    |t|^2 (1e6 mm^2 at a metre), 1e-10 mm^2, far below any inlier threshold.
    """

    R9: FloatArray  # (n, 9)
    t: FloatArray  # (n, 3)
    w: FloatArray  # (n, 3): R_i^T t_i
    tt: FloatArray  # (n,): |t_i|^2

    @classmethod
    def of(cls, Ts: FloatArray) -> _Scorer:
        R, t = Ts[:, :3, :3], Ts[:, :3, 3]
        w = np.einsum("nji,nj->ni", R, t)
        return cls(R9=R.reshape(-1, 9), t=t, w=w, tt=np.einsum("ni,ni->n", t, t))

    def squared(self, p_tip: FloatArray, p_pivot: FloatArray) -> FloatArray:
        """(h, n) squared residual norms for hypotheses p_tip (h, 3), p_pivot (h, 3)."""
        outer = (p_pivot[:, :, None] * p_tip[:, None, :]).reshape(-1, 9)
        r2 = (
            self.tt[None, :]
            + (np.einsum("hi,hi->h", p_tip, p_tip) + np.einsum("hi,hi->h", p_pivot, p_pivot))[
                :, None
            ]
            + 2.0 * (p_tip @ self.w.T)
            - 2.0 * (p_pivot @ self.t.T)
            - 2.0 * (outer @ self.R9.T)
        )
        return np.asarray(np.maximum(r2, 0.0))


def pivot_calibration_ransac(
    T_tracker_from_pointer: npt.ArrayLike,
    *,
    inlier_threshold_mm: float = 4.0,
    iterations: int = 200,
    sample_size: int = 4,
    seed: int = 0,
    min_inlier_fraction: float = 0.5,
    min_poses: int = 30,
    min_rotation_deg: float = 20.0,
    min_weakest_rotation_deg: float = 5.0,
    max_rms_mm: float | None = None,
) -> PivotResult:
    """Pivot calibration that ignores poses where the tip left the divot (RANSAC).

    RANSAC (M. A. Fischler, R. C. Bolles, CACM 24(6):381-395, 1981) over
    random subsets of ``sample_size`` poses, each solved by the same least
    squares as :func:`pivot_calibration`. A pose is an inlier of a hypothesis
    when its predicted tip ``R_i p_tip + t_i`` lies within
    ``inlier_threshold_mm`` of the pivot point; hypotheses are ranked by the
    truncated quadratic cost ``sum_i min(|r_i|^2, threshold^2)`` (MSAC: P. H.
    S. Torr, A. Zisserman, CVIU 78:138-156, 2000), which, unlike a bare inlier
    count, prefers the tighter of two fits with equal support. The best
    hypothesis's inliers are refitted by :func:`pivot_calibration`'s method,
    and the inlier set is recomputed from the refit until it stops changing
    (at most 10 rounds).

    Subset size: one pose gives 3 equations for 6 unknowns, but two poses
    give rank 5 only (``R_1 - R_2`` has the relative rotation's axis in its
    null space), so 3 is minimal; the default 4 is better conditioned and
    still draws an outlier-free subset with probability 0.8^4 = 0.41 at 20%
    outliers, 0.5^4 = 0.06 at 50%, so 200 iterations miss with probability
    below 1e-5 even then. ``seed`` makes the draw repeatable. The 4 mm
    default threshold is scikit-surgery's (``error_threshold``); it keeps about
    90% of its recorded pivot data, whose RMS error is 1.8 mm.

    The result's residual figures, rotation spreads and gates are over the
    inliers; ``n_poses`` counts all poses. Raises CalibrationError as
    :func:`pivot_calibration` does (``too_few_poses`` also when fewer than
    ``min_poses`` inliers remain), and ``error_above_threshold`` when fewer
    than ``min_inlier_fraction`` of the poses are inliers.
    """
    Ts = check_pose_stack(T_tracker_from_pointer)
    _check_translations(Ts)
    _check_parameter("inlier_threshold_mm", inlier_threshold_mm)
    _check_parameter("iterations", iterations, minimum=1)
    _check_parameter("sample_size", sample_size, minimum=3)
    _check_parameter("min_inlier_fraction", min_inlier_fraction)
    if min_inlier_fraction > 1.0:
        raise CalibrationError("bad_input", "min_inlier_fraction must be <= 1")
    _check_parameter("min_poses", min_poses, minimum=1)
    _check_parameter("min_rotation_deg", min_rotation_deg)
    _check_parameter("min_weakest_rotation_deg", min_weakest_rotation_deg)
    if max_rms_mm is not None:
        _check_parameter("max_rms_mm", max_rms_mm)
    n = len(Ts)
    _check_count(n, max(min_poses, sample_size))

    rng = np.random.default_rng(seed)
    scorer = _Scorer.of(Ts)
    threshold_sq = inlier_threshold_mm**2
    best_cost = math.inf
    best: tuple[FloatArray, FloatArray] | None = None
    for start in range(0, iterations, _SAMPLE_CHUNK):
        h = min(_SAMPLE_CHUNK, iterations - start)
        # Drawn with replacement: a repeated pose leaves a subset of >= 3 distinct poses
        # (still enough) or is caught as invalid, and drawing k of n without replacement
        # for every row costs more than all the solving.
        subsets = rng.integers(0, n, size=(h, sample_size))
        p_tip, p_pivot, valid = _hypotheses(Ts[subsets, :3, :3], Ts[subsets, :3, 3])
        if not valid.any():
            continue
        cost = np.minimum(scorer.squared(p_tip[valid], p_pivot[valid]), threshold_sq).sum(axis=1)
        i = int(np.argmin(cost))
        if cost[i] < best_cost:
            best_cost = float(cost[i])
            best = (p_tip[valid][i], p_pivot[valid][i])
    if best is None:
        raise CalibrationError(
            "degenerate", f"no subset of {sample_size} poses turned enough to determine the tip"
        )

    mask = _residual_norms(Ts, *best) < inlier_threshold_mm
    fit: _Fit | None = None
    for _ in range(10):
        if mask.sum() < 3:
            break
        fit = _solve_algebraic(Ts[mask])
        new_mask = _residual_norms(Ts, fit.x[:3], fit.x[3:]) < inlier_threshold_mm
        if np.array_equal(new_mask, mask):
            break
        mask, fit = new_mask, None
    n_inliers = int(mask.sum())
    if n_inliers < min_inlier_fraction * n:
        raise CalibrationError(
            "error_above_threshold",
            f"only {n_inliers} of {n} poses ({100.0 * n_inliers / n:.0f}%) lie within "
            f"{inlier_threshold_mm:g} mm of the best fit, need {100.0 * min_inlier_fraction:.0f}%: "
            "the tip slipped in the divot, or the threshold is too tight",
        )
    _check_count(n_inliers, max(min_poses, 3), "inlier poses")
    if fit is None:  # the round limit ended the loop with the mask one step ahead of the fit
        fit = _solve_algebraic(Ts[mask])
    spread = _rotation_spread(Ts[mask, :3, :3])
    _check_rotation(
        *spread, min_rotation_deg=min_rotation_deg, min_weakest_deg=min_weakest_rotation_deg
    )
    return _result(Ts, mask, fit, method="ransac", spread=spread, max_rms_mm=max_rms_mm)


# ---------------------------------------------------------------------------- spin


def spin_calibration(
    T_tracker_from_pointer: npt.ArrayLike,
    *,
    p_tip_in_pointer: npt.ArrayLike | None = None,
    min_poses: int = 30,
    min_spin_deg: float = 90.0,
    max_axis_spread_deg: float | None = None,
) -> SpinResult:
    """Find the pointer's shaft direction from poses spun about the shaft.

    The shaft is the direction ``d`` (pointer frame) that every pose maps onto
    one tracker direction ``a``: ``R_i d = a``. Least squares over unit ``d``,
    ``a``: minimising ``sum_i |R_i d - a|^2 = 2N - 2 a^T (sum_i R_i) d`` makes
    ``(a, d)`` the top singular pair of the mean rotation matrix. This is the
    criterion of PLUS / SlicerIGT's spin calibration
    (``vtkIGSIOSpinCalibrationAlgo``: the null vector of ``sum (Q - I)^T (Q - I)``
    over relative rotations ``Q``; A. Lasso et al., "PLUS: open-source toolkit
    for ultrasound-guided intervention systems", IEEE TBME 61(10), 2014)
    applied to every pose against the common ``a`` rather than to consecutive
    pairs: at 60 Hz consecutive poses differ by a fraction of a degree, so
    their relative rotations carry mostly noise, and no pose is the reference.

    ``T_tracker_from_pointer`` (N, 4, 4), rigid. ``p_tip_in_pointer`` (3,) mm,
    optional, from :func:`pivot_calibration`: orients the result towards the
    tip (see :class:`SpinResult`). The spin angle of pose i is the angle about
    ``d`` from pose 0 to pose i, measured in the plane normal to ``d``; 90
    degrees of spin (the default gate) pins the axis well, and a quarter turn
    is easy by hand.

    Raises CalibrationError: ``bad_input`` (as :func:`pivot_calibration`); ``too_few_poses``;
    ``not_enough_rotation`` (``spin_range_deg < min_spin_deg``);
    ``error_above_threshold`` (``axis_spread_deg > max_axis_spread_deg``);
    ``degenerate`` (the poses do not turn, so no axis is singled out;
    reachable with ``min_spin_deg=0``).
    """
    Ts = check_pose_stack(T_tracker_from_pointer)
    _check_translations(Ts)
    _check_parameter("min_poses", min_poses, minimum=1)
    _check_parameter("min_spin_deg", min_spin_deg)
    if max_axis_spread_deg is not None:
        _check_parameter("max_axis_spread_deg", max_axis_spread_deg)
    tip: FloatArray | None = None
    if p_tip_in_pointer is not None:
        tip = np.asarray(p_tip_in_pointer, dtype=np.float64)
        if tip.shape != (3,) or not np.isfinite(tip).all() or not tip.any():
            raise CalibrationError(
                "bad_input", "p_tip_in_pointer must be a finite, non-zero (3,) vector in mm"
            )
    n = len(Ts)
    _check_count(n, max(min_poses, 2))

    R = Ts[:, :3, :3]
    U, s, Vt = np.linalg.svd(R.mean(axis=0))
    d, a = Vt[0].copy(), U[:, 0].copy()
    # s_1 = 1 exactly along the spin axis; the other two equal the mean resultant length of
    # the spin angles, which is 1 only when nothing turned.
    if s[0] - s[1] < 1e-9:
        raise CalibrationError(
            "degenerate", "the poses do not turn, so they single out no shaft axis"
        )
    flip = float(d @ tip) < 0.0 if tip is not None else d[np.argmax(np.abs(d))] < 0.0
    if flip:
        d, a = -d, -a

    # Spin angle of each pose relative to pose 0, about d: the signed angle from u to
    # Q_i u within the plane normal to d, for a unit u normal to d (Q_i = R_0^T R_i).
    u = np.cross(d, np.eye(3)[int(np.argmin(np.abs(d)))])
    u /= np.linalg.norm(u)
    Qu = np.einsum("ji,njk,k->ni", R[0], R, u)
    Qu_plane = Qu - np.outer(Qu @ d, d)
    spin = np.arctan2(np.cross(u, Qu_plane) @ d, Qu_plane @ u)
    gaps = np.diff(np.sort(spin), append=np.sort(spin)[0] + 2.0 * math.pi)
    spin_range_deg = math.degrees(2.0 * math.pi - float(gaps.max()))

    shafts = R @ d
    cross_norm = np.linalg.norm(np.cross(shafts, a), axis=1)
    wobble = np.arctan2(cross_norm, shafts @ a)
    axis_spread_deg = math.degrees(math.sqrt(float(np.mean(wobble**2))))

    if spin_range_deg < min_spin_deg:
        raise CalibrationError(
            "not_enough_rotation",
            f"spin range {spin_range_deg:.1f} deg, need at least {min_spin_deg:g} deg: "
            "turn the pointer further about its shaft",
        )
    if max_axis_spread_deg is not None and axis_spread_deg > max_axis_spread_deg:
        raise CalibrationError(
            "error_above_threshold",
            f"shaft wobble {axis_spread_deg:.2f} deg RMS is above the {max_axis_spread_deg:g} deg "
            "limit: keep the shaft still while spinning",
        )
    for v in (d, a):
        v.setflags(write=False)
    return SpinResult(
        shaft_direction_in_pointer=d,
        shaft_direction_in_tracker=a,
        axis_spread_deg=axis_spread_deg,
        spin_range_deg=spin_range_deg,
        n_poses=n,
    )

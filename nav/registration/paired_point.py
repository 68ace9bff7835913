"""Paired-point (fiducial) rigid registration, its residuals, and its predicted target error.

The same N fiducials are known in the ``model`` frame (the preop case, i.e. the
``image`` frame or a frame rigidly tied to it) and measured in the ``patient``
frame (the frame of the measurements: ``tracker`` or ``reference``). The
registration finds the rigid ``T_patient_from_model`` that minimises the
weighted sum of squared distances ``sum_i w_i |R x_i + t - y_i|^2``, in closed
form: subtract the weighted centroids, take the SVD of the weighted
cross-covariance, and force a proper rotation (K. S. Arun, T. S. Huang,
S. D. Blostein, "Least-squares fitting of two 3-D point sets", IEEE TPAMI
9(5):698-700, 1987; B. K. P. Horn, "Closed-form solution of absolute
orientation using unit quaternions", JOSA A 4(4):629-642, 1987, for the same
minimiser; S. Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", IEEE TPAMI 13(4):376-380, 1991, eqs. 39-43, for
the reflection correction). Lengths are millimetres throughout.

Which accuracy figure to report. The fiducial registration error (FRE, the
RMS residual at the fiducials) is NOT a measure of accuracy at the target:
FRE and the target registration error (TRE) are statistically uncorrelated
(J. M. Fitzpatrick, "Fiducial registration error and target registration error
are uncorrelated", Proc. SPIE 7261, 726102, 2009). A low FRE does not promise
a small error at the tumour, and chasing a low FRE (dropping the fiducial with
the largest residual) does not reduce TRE. Report the *predicted* TRE at the
target (:func:`predicted_tre_mm`, from the fiducial localisation error FLE and
the fiducial configuration; J. M. Fitzpatrick, J. B. West, C. R. Maurer Jr.,
"Predicting error in rigid-body point-based registration", IEEE TMI
17(5):694-702, 1998, eq. 46), and show its spatial field (:func:`tre_field_mm`)
so the surgeon sees where the overlay is trustworthy.

What FRE is still good for: detecting a gross error. Its expectation is known,
``<FRE^2> = (1 - 2/N) <FLE^2>`` (Fitzpatrick, West & Maurer 1998), so an FRE
far above ``sqrt(1 - 2/N) * FLE`` means a fiducial was mis-touched or two were
swapped; the per-fiducial residuals ``fiducial_errors_mm`` then point at the
culprits. Within the normal range FRE says nothing about the target.

Worked example (asserted by ``tests/unit/test_registration_paired_point.py`` as a
doctest). Four fiducials on a square of half-diagonal 50 mm in the model's
z = 0 plane, an RMS FLE of 1 mm. At their centroid the predicted RMS TRE is
FLE / sqrt(N) = 0.5 mm. 100 mm above the centroid the principal axes are x, y
(f_x^2 = f_y^2 = 1250 mm^2) and z (f_z^2 = 2500 mm^2), the target's distances
from them are d_x = d_y = 100 mm and d_z = 0, so
TRE^2 = 1/4 * (1 + (1/3) (10000/1250 + 10000/1250)) = 19/12 mm^2:

>>> import numpy as np
>>> p_model = np.array([[50.0, 0, 0], [0, 50, 0], [-50, 0, 0], [0, -50, 0]])
>>> targets = np.array([[0.0, 0, 0], [0, 0, 100]])
>>> predicted_tre_mm(targets, p_model, fle_mm=1.0).round(4).tolist()
[0.5, 1.2583]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.registration.errors import RegistrationError, check_coordinates
from nav.transforms import Mat4, Points, apply, make_rigid

FleSource: TypeAlias = Literal["given", "estimated_from_fre"]
"""Where ``PairedPointResult.fle_mm`` came from: the caller, or the FRE of this registration."""

MIN_POINTS: Final = 3
"""Fewest point pairs (with positive weight) that fix a rigid transform in 3D."""

COLLINEARITY_TOLERANCE: Final = 1e-2
"""Smallest accepted ratio ``s_2 / s_1`` of the centred points' singular values (dimensionless).

``s_1 >= s_2 >= s_3`` are the singular values of the (weighted) centred points
``sqrt(w_i) (x_i - c)``; ``s_k^2 / sum_i w_i`` is the mean squared spread
along principal axis k, so ``s_2 / s_1`` is the RMS spread across the
best-fit line relative to the RMS spread along it (0 for collinear points,
1 for an isotropic spread in at least a plane). Below 1 % the rotation about
that line is fixed only by sub-millimetre lateral offsets of the fiducials,
comparable to the FLE itself, and the SVD's answer is dominated by noise.
Configurations above the limit can still be poor: the predicted TRE, not this
check, is the measure of that.
"""


@dataclass(frozen=True, eq=False, kw_only=True)
class PairedPointResult:
    """A paired-point registration, its residuals, and the inputs that predict its TRE.

    Report :meth:`predicted_tre_mm` at the target as the accuracy; ``fre_mm``
    is a consistency check only (see the module docstring).

    Fields:

    - ``T_patient_from_model`` (4, 4): maps model (case / image) coordinates
      into the frame of the measured points (tracker or reference), mm.
    - ``fre_mm``: fiducial registration error, the weighted RMS residual
      ``sqrt(sum_i w_i e_i^2 / sum_i w_i)``; the plain RMS for uniform weights.
      Fiducials with weight 0 do not count.
    - ``fiducial_errors_mm`` (N,): ``e_i = |T x_i - y_i|`` for every input
      pair, zero-weight ones included (a gross outlier shows here).
    - ``fle_mm``: the RMS fiducial localisation error ``sqrt(<FLE^2>)`` (the
      magnitude of the 3D error, i.e. ``sqrt(3) sigma`` for an isotropic
      Gaussian of ``sigma`` per axis) used to predict TRE.
    - ``fle_source``: ``"given"`` (the caller's value, e.g. the tracker's
      specification combined with the image localisation error) or
      ``"estimated_from_fre"``: ``fle^2 = fre^2 / (1 - 2/N)`` (Fitzpatrick,
      West & Maurer 1998), N the number of fiducials with positive weight.
      The estimate has only 3N - 6 degrees of freedom (3 for N = 3), so it is
      rough for few fiducials; prefer a given FLE.
    - ``p_model_fiducials`` (K, 3): the fiducials with positive weight, model
      frame, mm: the configuration that eq. 46 uses.
    """

    T_patient_from_model: Mat4
    fre_mm: float
    fiducial_errors_mm: FloatArray
    fle_mm: float
    fle_source: FleSource
    p_model_fiducials: Points

    def predicted_tre_mm(self, p_model: npt.ArrayLike) -> float | FloatArray:
        """Return the expected RMS TRE (mm) at targets ``p_model`` (M, 3), or one target (3,).

        Returns (M,) for (M, 3) and a float for (3,). The targets are in the
        model frame, mm. Fitzpatrick, West & Maurer 1998, eq. 46, with this
        result's fiducials and ``fle_mm``; see :func:`predicted_tre_mm` for the
        equation and its assumptions. With non-uniform positive weights it is
        an approximation (the equation assumes equally weighted fiducials).
        """
        p = np.asarray(p_model, dtype=np.float64)
        if p.shape == (3,):
            tre = predicted_tre_mm(p[None, :], self.p_model_fiducials, fle_mm=self.fle_mm)
            return float(tre[0])
        return predicted_tre_mm(p, self.p_model_fiducials, fle_mm=self.fle_mm)


def register_paired_points(
    p_model: npt.ArrayLike,
    p_patient: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    fle_mm: float | None = None,
) -> PairedPointResult:
    """Return the rigid ``T_patient_from_model`` that best maps ``p_model`` onto ``p_patient``.

    Arun, Huang & Blostein 1987 (Horn 1987; Umeyama 1991, eqs. 39-43), with
    weights. With weighted centroids ``c_x = sum w_i x_i / W`` and
    ``c_y = sum w_i y_i / W`` (``W = sum w_i``) and the weighted
    cross-covariance ``H = sum_i w_i (x_i - c_x)(y_i - c_y)^T = U S V^T``::

        R = V diag(1, 1, det(V U^T)) U^T        t = c_y - R c_x

    The diag(...) factor turns the least-squares orthogonal matrix into the
    least-squares *rotation* when the former is a reflection (noisy or
    near-planar fiducials, or a mirrored point set).

    ``p_model`` (N, 3): the fiducials in the model (case / image) frame, mm.
    ``p_patient`` (N, 3): the same fiducials, in the same order, measured in the
    patient frame (tracker or reference), mm. ``weights`` (N,): non-negative
    relative weights (their scale does not matter; 0 leaves a pair out of the
    fit but not out of ``fiducial_errors_mm``); None weights all pairs equally.
    ``fle_mm``: the RMS fiducial localisation error to predict TRE with; None
    estimates it from the FRE (see :class:`PairedPointResult`).

    Raises RegistrationError with ``kind``: ``mismatched`` (a shape other than
    (N, 3) and (N, 3) and (N,)), ``non_finite`` (NaN or inf in points or
    weights), ``out_of_range`` (a coordinate beyond ``MAX_COORDINATE_MM``),
    ``too_few_points`` (fewer than 3 pairs with positive weight), ``bad_weights``
    (a negative weight, or all zero), ``collinear`` (model or patient points
    within :data:`COLLINEARITY_TOLERANCE` of a line). Raises ValueError for an
    ``fle_mm`` that is negative or not finite.
    """
    x = _as_points(p_model, "p_model")
    y = _as_points(p_patient, "p_patient")
    if x.shape != y.shape:
        raise RegistrationError(
            "mismatched",
            f"p_model has {len(x)} points and p_patient {len(y)}: need the same fiducials in both",
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise RegistrationError("non_finite", "fiducial points contain NaN or inf")
    check_coordinates(x, "p_model")
    check_coordinates(y, "p_patient")
    n = len(x)
    if n < MIN_POINTS:
        raise RegistrationError("too_few_points", f"only {n} fiducials, need at least {MIN_POINTS}")
    if fle_mm is not None:
        _check_fle(fle_mm)
    w = _as_weights(weights, n)
    n_used = int(np.count_nonzero(w))
    if n_used < MIN_POINTS:
        raise RegistrationError(
            "too_few_points",
            f"only {n_used} fiducials with positive weight, need at least {MIN_POINTS}",
        )

    W = float(w.sum())
    c_model = w @ x / W
    c_patient = w @ y / W
    x_c = x - c_model
    y_c = y - c_patient
    _check_not_collinear(x_c, w, "model")
    _check_not_collinear(y_c, w, "patient")

    H = (w[:, None] * x_c).T @ y_c  # (3, 3), sum_i w_i x_i y_i^T
    U, _, Vt = np.linalg.svd(H)
    V = Vt.T
    # det(V U^T) is +1 or -1; the sign flips the axis of the smallest singular value.
    D = np.diag([1.0, 1.0, 1.0 if np.linalg.det(V @ U.T) >= 0.0 else -1.0])
    R = V @ D @ U.T
    T_patient_from_model = make_rigid(R, c_patient - R @ c_model)

    errors_mm = np.linalg.norm(apply(T_patient_from_model, x) - y, axis=1)
    fre_mm = math.sqrt(float(w @ errors_mm**2) / W)
    fle_source: FleSource
    if fle_mm is None:
        # <FRE^2> = (1 - 2/N) <FLE^2>, Fitzpatrick, West & Maurer 1998.
        fle_mm = fre_mm / math.sqrt(1.0 - 2.0 / n_used)
        fle_source = "estimated_from_fre"
    else:
        fle_mm = float(fle_mm)
        fle_source = "given"

    p_model_fiducials = x[w > 0.0].copy()
    for a in (T_patient_from_model, errors_mm, p_model_fiducials):
        a.setflags(write=False)  # the result is frozen; so are its arrays
    return PairedPointResult(
        T_patient_from_model=T_patient_from_model,
        fre_mm=fre_mm,
        fiducial_errors_mm=errors_mm,
        fle_mm=fle_mm,
        fle_source=fle_source,
        p_model_fiducials=p_model_fiducials,
    )


def predicted_tre_mm(
    p_model_targets: npt.ArrayLike,
    p_model_fiducials: npt.ArrayLike,
    *,
    fle_mm: float,
) -> FloatArray:
    """Return the expected RMS target registration error (M,) in mm at each target.

    Fitzpatrick, West & Maurer, "Predicting error in rigid-body point-based
    registration", IEEE TMI 17(5):694-702, 1998, eq. 46::

        <TRE^2(r)> ~= <FLE^2> / N * (1 + (1/3) * sum_{k=1..3} d_k^2 / f_k^2)

    - ``r``: a target, ``p_model_targets`` (M, 3), model frame, mm;
    - ``N``: the number of fiducials, ``p_model_fiducials`` (N, 3), model frame, mm;
    - ``<FLE^2>``: the expected squared fiducial localisation error,
      ``fle_mm ** 2`` (``3 sigma^2`` for a Gaussian of ``sigma`` per axis);
    - ``k``: the principal axes of the fiducial configuration, the
      eigenvectors of the fiducials' covariance, through their centroid;
    - ``d_k``: the distance of ``r`` from axis k;
    - ``f_k``: the RMS distance of the fiducials from axis k.

    The result is ``sqrt(<TRE^2(r)>)``. At the centroid it is FLE / sqrt(N);
    it grows along every ray away from the centroid, fastest along the
    direction where the fiducials are least spread.

    Assumptions (those of eq. 46): the FLE is isotropic, independent and
    identically distributed for all fiducials, with zero mean; the fiducials
    are equally weighted; the formula is first order in FLE / fiducial spread.
    Where both point sets carry localisation error, ``<FLE^2>`` is the sum of
    the two spaces' ``<FLE^2>``. Invariant under a rigid motion of fiducials
    and targets together, so model and patient coordinates give the same value.

    Raises RegistrationError for fiducials that are not (N, 3) with N >= 3
    finite and non-collinear (same kinds and tolerance as
    :func:`register_paired_points`) and for targets that are not finite
    (M, 3); ValueError for an ``fle_mm`` that is negative or not finite.
    """
    targets = _as_points(p_model_targets, "p_model_targets")
    fiducials = _as_points(p_model_fiducials, "p_model_fiducials")
    if not (np.all(np.isfinite(targets)) and np.all(np.isfinite(fiducials))):
        raise RegistrationError("non_finite", "targets or fiducials contain NaN or inf")
    n = len(fiducials)
    if n < MIN_POINTS:
        raise RegistrationError("too_few_points", f"only {n} fiducials, need at least {MIN_POINTS}")
    _check_fle(fle_mm)
    centroid = fiducials.mean(axis=0)
    centred = fiducials - centroid
    _check_not_collinear(centred, np.ones(n), "model")

    # Principal axes: eigenvectors (columns of E) of the fiducial covariance,
    # eigenvalues lam_k = mean squared coordinate along axis k.
    lam, E = np.linalg.eigh(centred.T @ centred / n)
    # Mean squared distance from axis k = mean squared coordinate along the other two.
    f_sq = lam.sum() - lam  # (3,), > 0 for non-collinear fiducials
    q = (targets - centroid) @ E  # (M, 3) target coordinates in the principal frame
    d_sq = np.sum(q**2, axis=1, keepdims=True) - q**2  # (M, 3), squared distance from axis k
    tre_sq = fle_mm**2 / n * (1.0 + np.sum(d_sq / f_sq, axis=1) / 3.0)
    tre: FloatArray = np.sqrt(tre_sq)
    return tre


def tre_field_mm(vertices_model: npt.ArrayLike, result: PairedPointResult) -> FloatArray:
    """Return the predicted RMS TRE (V,) in mm at every vertex of a mesh, for trust colouring.

    ``vertices_model`` (V, 3): mesh vertices in the model frame, mm. The same
    eq. 46 as :func:`predicted_tre_mm`, with ``result``'s fiducials and FLE,
    evaluated for all vertices at once (a few arithmetic passes over (V, 3)).
    The headset colours each vertex by this value, so the surgeon sees where
    the overlay can be trusted. Raises as :func:`predicted_tre_mm` does.
    """
    return predicted_tre_mm(vertices_model, result.p_model_fiducials, fle_mm=result.fle_mm)


def _as_points(p: npt.ArrayLike, name: str) -> FloatArray:
    """Return ``p`` as a float64 (N, 3) array; raise RegistrationError("mismatched") otherwise."""
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise RegistrationError("mismatched", f"{name} must have shape (N, 3), got {a.shape}")
    return a


def _as_weights(weights: npt.ArrayLike | None, n: int) -> FloatArray:
    """Return the weights (n,) scaled to a maximum of 1; raise RegistrationError if unusable."""
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise RegistrationError(
            "mismatched", f"weights must have shape ({n},) like the points, got {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise RegistrationError("non_finite", "weights contain NaN or inf")
    if np.any(w < 0.0):
        i = int(np.argmin(w))
        raise RegistrationError("bad_weights", f"weight {i} is negative ({w[i]:.3g})")
    w_max = float(w.max())
    if w_max == 0.0:
        raise RegistrationError("bad_weights", "all weights are zero")
    # Scale so that the sums below cannot overflow for huge (valid) weights.
    scaled: FloatArray = w / w_max
    return scaled


def _check_not_collinear(centred: FloatArray, w: FloatArray, frame: str) -> None:
    """Raise RegistrationError("collinear") if ``s_2 / s_1`` is below COLLINEARITY_TOLERANCE."""
    s = np.linalg.svd(np.sqrt(w)[:, None] * centred, compute_uv=False)
    ratio = float(s[1] / s[0]) if s[0] > 0.0 else 0.0
    if ratio < COLLINEARITY_TOLERANCE:
        raise RegistrationError(
            "collinear",
            f"fiducials are collinear in the {frame} frame: spread ratio s2/s1 "
            f"{ratio:.3g} < {COLLINEARITY_TOLERANCE}; spread them out",
        )


def _check_fle(fle_mm: float) -> None:
    """Raise ValueError unless ``fle_mm`` is a finite number >= 0."""
    if not (math.isfinite(fle_mm) and fle_mm >= 0.0):
        raise ValueError(f"fle_mm must be finite and >= 0, got {fle_mm}")

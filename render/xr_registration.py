"""Headset-to-tracker registration: ``T_xr_from_tracker`` from paired controller poses.

A tracked marker is fixed rigidly to a Quest controller (or to the headset). While the
user moves it, each instant ``k`` gives the controller's grip pose in the headset's own
world, ``G_k = T_xr_from_grip[k]`` (WebXR), and the marker's pose in the tracker,
``M_k = T_tracker_from_marker[k]``. Two unknowns close the loop at every instant::

    X @ M_k = G_k @ Y        X = T_xr_from_tracker, Y = T_grip_from_marker

1. **Hand-eye** for ``Y``: between instants ``i`` and ``j``, ``X`` cancels and
   ``inv(G_j) G_i Y = Y inv(M_j) M_i``, the ``A Y = Y B`` of ``calibration.handeye``
   (Shiu & Ahmad 1989; Park & Martin's solution by default) with its "tracker from
   marker" = ``G`` and its "camera from target" = ``inv(M)`` (then its
   ``B_ij = inv(M_j) M_i``), so its ``T_marker_from_camera`` is ``Y``.
2. **Paired point** for ``X``: the marker origin at each instant, in the tracker
   (``M_k``'s translation) and in xr (``G_k @ Y``'s), registered with
   ``nav.registration.paired_point`` (Arun et al. 1987). Its FRE is the residual: the RMS
   distance, mm, between where the tracker and the headset put the marker.

A registration is refused, with the reason, when the motion cannot determine it (the
hand-eye gates: too few poses, too little rotation, one axis only) or when its residual
exceeds ``max_residual_mm``. Pure: arrays in, result out, no clock. Lengths in mm (the
WebXR poses converted from metres by the caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from calibration.handeye import hand_eye
from nav.arrays import FloatArray
from nav.registration.errors import RegistrationError
from nav.registration.paired_point import register_paired_points
from nav.transforms import invert_rigid

DEFAULT_MAX_RESIDUAL_MM: Final = 5.0
"""A Quest's controller tracking is good to a few mm; beyond this the overlay would be
visibly off and the registration is refused (the tracker itself is ~0.25 mm)."""


MATCH_TOLERANCE_NS: Final = 10_000_000
"""A grip pose pairs with the tracker sample nearest in time if within this (10 ms: under
one sample at 100 Hz; a hand moves ~1 mm in that time at a slow wave)."""
MIN_MATCHED: Final = 6


class XrRegistrationError(ValueError):
    """The headset registration was refused: one line saying why and what to do."""


@dataclass(frozen=True, eq=False)
class XrRegistrationResult:
    """``T_xr_from_tracker`` (4, 4) mm, ``T_grip_from_marker`` (4, 4) mm, the residual
    (RMS, mm) and the largest single disagreement (mm), over ``n_poses`` instants."""

    T_xr_from_tracker: FloatArray
    T_grip_from_marker: FloatArray
    rms_mm: float
    max_error_mm: float
    n_poses: int


def register_headset(
    T_xr_from_grip: npt.ArrayLike,
    T_tracker_from_marker: npt.ArrayLike,
    *,
    max_residual_mm: float = DEFAULT_MAX_RESIDUAL_MM,
) -> XrRegistrationResult:
    """Solve ``X @ M_k = G_k @ Y`` (module docstring); XrRegistrationError when refused."""
    G = np.asarray(T_xr_from_grip, dtype=np.float64)
    M = np.asarray(T_tracker_from_marker, dtype=np.float64)
    if G.shape != M.shape or G.ndim != 3 or G.shape[1:] != (4, 4):
        raise XrRegistrationError(
            f"paired poses must be two (N, 4, 4) stacks of one length, got {G.shape} and {M.shape}"
        )
    M_inv = np.stack([invert_rigid(m) for m in M]) if len(M) else M
    try:
        handeye = hand_eye(G, M_inv)
    except CalibrationError as error:
        raise XrRegistrationError(
            f"headset registration refused ({error.kind}): {error}; move the controller "
            "through larger turns about different axes"
        ) from None
    Y = handeye.T_marker_from_camera
    p_tracker = M[:, :3, 3]
    p_xr = (G @ Y)[:, :3, 3]
    try:
        fit = register_paired_points(p_tracker, p_xr)
    except RegistrationError as error:
        raise XrRegistrationError(f"headset registration refused ({error.kind}): {error}") from None
    errors = fit.fiducial_errors_mm
    if not fit.fre_mm <= max_residual_mm:
        raise XrRegistrationError(
            f"headset registration refused: residual {fit.fre_mm:.1f} mm > {max_residual_mm:g} mm "
            f"(worst pose {float(errors.max()):.1f} mm); is the marker loose on the controller, "
            "or did the tracker or the XR space move during the collection?"
        )
    return XrRegistrationResult(
        T_xr_from_tracker=fit.T_patient_from_model,
        T_grip_from_marker=Y,
        rms_mm=float(fit.fre_mm),
        max_error_mm=float(errors.max()),
        n_poses=len(G),
    )


class MarkerHistory:
    """The last ``capacity`` tracker poses of one marker, OK samples only, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.t_ns = np.zeros(capacity, np.int64)
        self.T = np.zeros((capacity, 4, 4))
        self.n = 0
        self._next = 0

    def add(self, t_sensor_ns: int, T: FloatArray) -> None:
        self.t_ns[self._next] = t_sensor_ns
        self.T[self._next] = T
        self._next = (self._next + 1) % len(self.t_ns)
        self.n = min(self.n + 1, len(self.t_ns))

    def match(
        self, t_query_ns: npt.ArrayLike, tolerance_ns: int = MATCH_TOLERANCE_NS
    ) -> tuple[npt.NDArray[np.bool_], FloatArray]:
        """For each query time, whether a sample lies within ``tolerance_ns`` and the
        nearest such sample's pose (identity where none)."""
        q = np.asarray(t_query_ns, np.int64)
        out = np.repeat(np.eye(4)[None], len(q), axis=0)
        if self.n == 0:
            return np.zeros(len(q), bool), out
        order = np.argsort(self.t_ns[: self.n] if self.n < len(self.t_ns) else self.t_ns)
        t = (self.t_ns[: self.n] if self.n < len(self.t_ns) else self.t_ns)[order]
        T = (self.T[: self.n] if self.n < len(self.T) else self.T)[order]
        right = np.clip(np.searchsorted(t, q), 0, len(t) - 1)
        left = np.clip(right - 1, 0, len(t) - 1)
        nearest = np.where(np.abs(t[left] - q) <= np.abs(t[right] - q), left, right)
        ok = np.abs(t[nearest] - q) <= tolerance_ns
        out[ok] = T[nearest[ok]]
        return ok, out


def register_from_history(
    history: MarkerHistory,
    t_sensor_ns: npt.ArrayLike,
    T_xr_from_grip: npt.ArrayLike,
    *,
    max_residual_mm: float = DEFAULT_MAX_RESIDUAL_MM,
) -> XrRegistrationResult:
    """Pair each grip pose with the marker's tracker pose at its instant, then
    :func:`register_headset`; XrRegistrationError (one line) if too few pair up."""
    G = np.asarray(T_xr_from_grip, np.float64)
    ok, M = history.match(t_sensor_ns)
    if int(ok.sum()) < MIN_MATCHED:
        raise XrRegistrationError(
            f"headset registration refused: {int(ok.sum())} of {len(G)} controller poses have "
            f"a tracker sample of the marker within {MATCH_TOLERANCE_NS / 1e6:g} ms (need "
            f"{MIN_MATCHED}); keep the marker in the tracker's view, and the clocks in sync"
        )
    return register_headset(G[ok], M[ok], max_residual_mm=max_residual_mm)

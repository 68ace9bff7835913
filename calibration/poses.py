"""Checking a stack of tracked poses before any calibration uses it."""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from nav.transforms import rigidity_errors

# Trackers report rotations orthonormal to ~1e-6 even through float32; a matrix off by
# 1e-4 is not a rigid pose (the same tolerance the bus applies to an OK pose).
RIGIDITY_TOLERANCE: Final = 1e-4


def check_pose_stack(Ts_in: npt.ArrayLike, *, name: str = "pose") -> npt.NDArray[np.float64]:
    """Return ``Ts_in`` as a float64 (N, 4, 4) array of rigid transforms.

    Raises CalibrationError("bad_input") naming the first bad pose as ``name[i]``.
    """
    try:
        Ts = np.asarray(Ts_in, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError("bad_input", f"{name} is not a numeric array: {exc}") from None
    if Ts.ndim != 3 or Ts.shape[1:] != (4, 4):
        raise CalibrationError("bad_input", f"{name} must have shape (N, 4, 4), got {Ts.shape}")
    finite = np.isfinite(Ts).all(axis=(1, 2))
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise CalibrationError("bad_input", f"{name}[{i}] has a non-finite entry")
    if len(Ts):
        errors = rigidity_errors(Ts)
        worst = int(np.argmax(errors))
        if errors[worst] > RIGIDITY_TOLERANCE:
            raise CalibrationError(
                "bad_input",
                f"{name}[{worst}] is not a rigid transform "
                f"(rigidity error {errors[worst]:.2g} > {RIGIDITY_TOLERANCE:g})",
            )
    return Ts

"""The one exception every registration raises when it refuses its input.

A registration computed from degenerate fiducials returns a transform that
looks like any other and is wrong; the navigation node must refuse it and tell
the user why. :class:`RegistrationError` carries a machine-readable ``kind``
(the node and the tests branch on it) and a one-line message that states the
measured value and, where there is one, the limit::

    only 2 fiducials with positive weight, need at least 3
    fiducials are collinear in the model: spread ratio 3.1e-05 < 0.01

It subclasses ValueError because every refusal is about the data passed in,
so a caller that already catches ValueError for bad input keeps working.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt

MAX_COORDINATE_MM: Final = 1e6
"""The largest coordinate magnitude a registration accepts, mm (1 km).

No patient, model or tracker volume comes near it, yet it is far below where Open3D's
voxel grids and KD-trees overflow (coordinates of 1e300 make its voxel size "too small")
and where squared distances leave float64. A file or message with larger coordinates is
wrong (a unit or scale error, a corrupt file), and is refused before any library sees it.
"""

RegistrationErrorKind: TypeAlias = Literal[
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
]
"""Why a registration was refused.

- ``too_few_points``: fewer point pairs (with positive weight) than the method needs.
- ``collinear``: the points lie on (or too near) one line, or on one point, so
  the rotation about that line is undetermined.
- ``mismatched``: the two point sets (or the weights) differ in count, or an
  array does not have the documented shape.
- ``non_finite``: a NaN or infinity in the points or the weights.
- ``out_of_range``: a coordinate beyond :data:`MAX_COORDINATE_MM` (a unit or scale error).
- ``bad_weights``: a negative weight, or every weight zero.
- ``bad_mesh``: the model mesh is empty, has out-of-range faces or no usable normals.
- ``insufficient_overlap``: too few intraoperative points lie near the model surface
  for the result to mean anything (fitness below the method's floor).
- ``not_converged``: the iterative solver stopped at its iteration limit, or its answer
  moved too far between the last iterations to be trusted.
- ``implausible``: the answer moves the model farther from its start, or deforms it
  more where the data are, than the method's assumptions allow
  (``nav.navigation.register_organ_deformable``).
- ``contradicts_landmarks``: a deformable answer moves the landmarks the pointer touched
  (the fiducials of the registration it started from, held out of the fit) farther from
  where they were touched than that registration left them.
"""

REGISTRATION_ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(RegistrationErrorKind))


class RegistrationError(ValueError):
    """A registration refused its input; ``kind`` says why, ``str(err)`` says it in one line."""

    kind: RegistrationErrorKind

    def __init__(self, kind: RegistrationErrorKind, message: str) -> None:
        if kind not in REGISTRATION_ERROR_KINDS:
            raise ValueError(f"unknown RegistrationError kind {kind!r}")
        # One line: the node logs and forwards str(err) as the whole report.
        super().__init__(" ".join(message.split()))
        self.kind = kind

    def __reduce__(self) -> tuple[type[RegistrationError], tuple[str, str]]:
        # The default reduce would call RegistrationError(message) and lose ``kind``.
        return (type(self), (self.kind, str(self)))


def check_coordinates(points: npt.NDArray[np.float64], name: str) -> None:
    """Refuse NaN, inf or a coordinate beyond :data:`MAX_COORDINATE_MM` in ``points`` (any shape).

    Raises RegistrationError ``non_finite`` or ``out_of_range``, naming ``name``.
    """
    if not np.all(np.isfinite(points)):
        raise RegistrationError("non_finite", f"{name} contain NaN or inf")
    if points.size:
        largest = float(np.max(np.abs(points)))
        if largest > MAX_COORDINATE_MM:
            raise RegistrationError(
                "out_of_range",
                f"{name} have a coordinate of magnitude {largest:.3g} mm, beyond the "
                f"{MAX_COORDINATE_MM:.0e} mm limit (a unit or scale error?)",
            )

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

RegistrationErrorKind: TypeAlias = Literal[
    "too_few_points",
    "collinear",
    "mismatched",
    "non_finite",
    "bad_weights",
    "bad_mesh",
    "insufficient_overlap",
    "not_converged",
]
"""Why a registration was refused.

- ``too_few_points``: fewer point pairs (with positive weight) than the method needs.
- ``collinear``: the points lie on (or too near) one line, or on one point, so
  the rotation about that line is undetermined.
- ``mismatched``: the two point sets (or the weights) differ in count, or an
  array does not have the documented shape.
- ``non_finite``: a NaN or infinity in the points or the weights.
- ``bad_weights``: a negative weight, or every weight zero.
- ``bad_mesh``: the model mesh is empty, has out-of-range faces or no usable normals.
- ``insufficient_overlap``: too few intraoperative points lie near the model surface
  for the result to mean anything (fitness below the method's floor).
- ``not_converged``: the iterative solver stopped at its iteration limit, or its answer
  moved too far between the last iterations to be trusted.
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

"""The one exception every calibration raises when it refuses a result.

A calibration that cannot be trusted must not quietly return numbers: the OR
engineer has to see why and what to do about it. :class:`CalibrationError`
carries a machine-readable ``kind`` (the CLI and the tests branch on it) and a
one-line message that states the measured value, the limit and, where there
is one, the remedy::

    only 12 poses, need at least 30
    rotation spread 4.1 deg, need at least 20 deg: pivot the pointer further
    RMS error 2.7 mm is above the 1.5 mm limit

It subclasses ValueError because every refusal is about the data passed in,
so a caller that already catches ValueError for bad input keeps working.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

CalibrationErrorKind: TypeAlias = Literal[
    "too_few_poses",
    "not_enough_rotation",
    "error_above_threshold",
    "degenerate",
    "bad_input",
]
"""Why a calibration was refused.

- ``too_few_poses``: fewer poses (or samples, or inliers) than the method needs.
- ``not_enough_rotation``: the tool did not turn enough, or not in enough
  directions, for the unknowns to be observable.
- ``error_above_threshold``: a result was found but its residual error (or the
  share of poses that agree with it) is outside the caller's limit.
- ``degenerate``: the system has no unique solution (rank deficient, a flat
  signal, a correlation peak at the edge of the search window).
- ``bad_input``: wrong shape, non-finite values, non-rigid matrices,
  non-increasing timestamps, or a nonsensical parameter.
"""

CALIBRATION_ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(CalibrationErrorKind))


class CalibrationError(ValueError):
    """A calibration refused its result; ``kind`` says why, ``str(err)`` says it in one line."""

    kind: CalibrationErrorKind

    def __init__(self, kind: CalibrationErrorKind, message: str) -> None:
        if kind not in CALIBRATION_ERROR_KINDS:
            raise ValueError(f"unknown CalibrationError kind {kind!r}")
        # One line: the CLI prints str(err) as its whole error report.
        super().__init__(" ".join(message.split()))
        self.kind = kind

    def __reduce__(self) -> tuple[type[CalibrationError], tuple[str, str]]:
        # The default reduce would call CalibrationError(message) and lose ``kind``
        # (a multiprocessing worker raising this must arrive intact in the parent).
        return (type(self), (self.kind, str(self)))

"""PLUS's timestamp jitter filter and pose interpolation at a time: pure functions.

No clocks, no files: times are arguments, in seconds (float) on whatever clock the samples
carry (PLUS's own, in a sequence file).

Timestamp jitter filter. A tracker samples at a steady period, but the host stamps each
sample when it arrives, after a variable transfer delay. PLUS removes that jitter by a
least-squares line through (frame number, arrival time) of the last
``AveragedItemsForFiltering`` samples, the current one included, and takes the line's value
at the current frame number as its timestamp; until the window is full a sample keeps its
arrival time; a sample more than ``MaxAllowedFilteringTimeDifference`` from the line is
flagged "probably invalid" (PLUS then does not record it). Defaults as PLUS's: 20 samples,
0.5 s. (``vtkPlusTimestampedCircularBuffer::CreateFilteredTimeStampForItem``; A. Lasso et al.,
"PLUS: open-source toolkit for ultrasound-guided intervention systems", IEEE TBME
61(10):2527-2537, 2014, section II-C.)

Worked example: a 10 Hz tracker whose frame n is acquired at ``n * 0.1`` s and arrives 0 to
8 ms later. With the window full, the line through 20 (n, arrival) pairs has slope ~0.1 s
and offset ~4 ms (the mean delay), so the filtered stamps are evenly spaced ``0.1`` s apart,
~4 ms after acquisition: the jitter is gone, the mean delay stays (temporal calibration
removes that).

Pose interpolation (as PLUS's ``vtkPlusBuffer::GetInterpolatedStreamBufferItemFromTime``):
between the two samples that bracket the time, rotation by spherical linear interpolation
of unit quaternions along the shorter arc (K. Shoemake, "Animating rotation with quaternion
curves", SIGGRAPH 1985), translation linearly. Never across a sample that is not OK: the
result then carries that sample's status and no matrix.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nav.arrays import BoolArray, FloatArray
from nav.messages import ToolStatus
from nav.transforms import Mat4, Quat, make_rigid, matrix_to_quat, quat_to_matrix

DEFAULT_WINDOW = 20  # PLUS's AveragedItemsForFiltering
DEFAULT_MAX_DIFFERENCE_S = 0.5  # PLUS's MaxAllowedFilteringTimeDifference
NEGLIGIBLE_DT_S = 1e-5  # PLUS's NegligibleTimeDifferenceSec: "at" a sample within this


# --- timestamp jitter filter ---------------------------------------------------------


@dataclass(frozen=True)
class FilteredTimestamp:
    """One filtered timestamp (s) and whether it is probably valid (near the fitted line)."""

    t_s: float
    probably_valid: bool


class TimestampJitterFilter:
    """PLUS's sliding-window line fit of arrival time against frame number (module docstring).

    Feed samples in arrival order with ``update``; the state is the last ``window`` pairs.
    """

    def __init__(
        self, *, window: int = DEFAULT_WINDOW, max_difference_s: float = DEFAULT_MAX_DIFFERENCE_S
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not max_difference_s > 0:
            raise ValueError(f"max_difference_s must be > 0, got {max_difference_s}")
        self.window = window
        self.max_difference_s = max_difference_s
        self._frames: deque[float] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=window)

    def update(self, frame_number: int, unfiltered_s: float) -> FilteredTimestamp:
        """The filtered time of this sample (which joins the window first)."""
        self._frames.append(float(frame_number))
        self._times.append(float(unfiltered_s))
        if self.window < 2 or len(self._frames) < self.window:
            return FilteredTimestamp(float(unfiltered_s), True)
        x = np.fromiter(self._frames, dtype=np.float64, count=self.window)
        y = np.fromiter(self._times, dtype=np.float64, count=self.window)
        # Ordinary least squares about the means, as PLUS computes it (the means keep the
        # sums small when times are large, e.g. seconds since boot).
        x_mean, y_mean = x.mean(), y.mean()
        dx = x - x_mean
        var_x = float(dx @ dx)
        if var_x == 0.0:  # the frame number never advanced: nothing to fit a period to
            return FilteredTimestamp(float(unfiltered_s), True)
        slope = float(dx @ (y - y_mean)) / var_x
        filtered = y_mean + slope * (float(frame_number) - x_mean)
        return FilteredTimestamp(filtered, abs(filtered - unfiltered_s) <= self.max_difference_s)


def filter_timestamps(
    frame_numbers: npt.ArrayLike,
    unfiltered_s: npt.ArrayLike,
    *,
    window: int = DEFAULT_WINDOW,
    max_difference_s: float = DEFAULT_MAX_DIFFERENCE_S,
) -> tuple[FloatArray, BoolArray]:
    """Filter a whole sequence: (filtered times (N,) s, probably-valid flags (N,)).

    ``frame_numbers`` and ``unfiltered_s`` are (N,), in arrival order (PLUS's
    ``FrameNumber`` and ``UnfilteredTimestamp``). Raises ValueError for unequal lengths.
    """
    n = np.asarray(frame_numbers, dtype=np.int64)
    t = np.asarray(unfiltered_s, dtype=np.float64)
    if n.shape != t.shape or n.ndim != 1:
        raise ValueError(f"frame_numbers {n.shape} and unfiltered_s {t.shape} must be (N,)")
    jitter = TimestampJitterFilter(window=window, max_difference_s=max_difference_s)
    out = [jitter.update(int(k), float(s)) for k, s in zip(n, t, strict=True)]
    return (
        np.array([o.t_s for o in out], dtype=np.float64),
        np.array([o.probably_valid for o in out], dtype=bool),
    )


# --- pose interpolation --------------------------------------------------------------


def slerp(q0_wxyz: npt.ArrayLike, q1_wxyz: npt.ArrayLike, u: float) -> Quat:
    """The unit quaternion a fraction ``u`` in [0, 1] of the way from q0 to q1, shorter arc.

    ``q0_wxyz``, ``q1_wxyz``: (4,), scalar first, normalised here. Near-equal rotations are
    interpolated linearly and renormalised (the sine ratio loses precision there).
    """
    q0 = np.asarray(q0_wxyz, dtype=np.float64)
    q1 = np.asarray(q1_wxyz, dtype=np.float64)
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    dot = float(q0 @ q1)
    if dot < 0.0:  # q and -q are one rotation: take the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + u * (q1 - q0)
        result: Quat = q / np.linalg.norm(q)
        return result
    theta = math.acos(min(1.0, dot))
    sin_theta = math.sin(theta)
    result = (math.sin((1.0 - u) * theta) * q0 + math.sin(u * theta) * q1) / sin_theta
    return result


def interpolate_rigid(T_a_from_b_0: Mat4, T_a_from_b_1: Mat4, u: float) -> Mat4:
    """The rigid transform a fraction ``u`` of the way from the first to the second.

    Rotation by ``slerp``, translation linearly (mm); both (4, 4) must be rigid.
    """
    T0 = np.asarray(T_a_from_b_0, dtype=np.float64)
    T1 = np.asarray(T_a_from_b_1, dtype=np.float64)
    q = slerp(matrix_to_quat(T0[:3, :3]), matrix_to_quat(T1[:3, :3]), u)
    t = (1.0 - u) * T0[:3, 3] + u * T1[:3, 3]
    return make_rigid(quat_to_matrix(q), t)


@dataclass(frozen=True, eq=False)
class InterpolatedPose:
    """A pose at a requested time: ``T`` (4, 4) when ``status`` is OK, else None.

    MISSING: no sample brackets the time (before the first, after the last, or a gap longer
    than allowed). Any other non-OK status: a bracketing sample had it.
    """

    T: Mat4 | None
    status: ToolStatus


def interpolate_pose(
    t_s: float,
    times_s: npt.ArrayLike,
    Ts: npt.ArrayLike,
    statuses: Sequence[ToolStatus],
    *,
    max_gap_s: float | None = None,
    negligible_dt_s: float = NEGLIGIBLE_DT_S,
) -> InterpolatedPose:
    """The pose of one tool at ``t_s`` from its samples; never across a non-OK sample.

    ``times_s`` (N,) non-decreasing, ``Ts`` (N, 4, 4) ``T_a_from_tool``, ``statuses`` (N,).
    Within ``negligible_dt_s`` of a sample, that sample (status included). Otherwise the
    two samples around ``t_s``: if either is not OK, no pose and its status (the earlier's
    when both are not OK); if they are more than ``max_gap_s`` apart, MISSING; else the
    rigid interpolation. Raises ValueError for mismatched shapes or unsorted times.
    """
    times = np.asarray(times_s, dtype=np.float64)
    mats = np.asarray(Ts, dtype=np.float64)
    n = times.shape[0] if times.ndim == 1 else -1
    if n < 0 or mats.shape != (n, 4, 4) or len(statuses) != n:
        raise ValueError(
            f"times_s {times.shape}, Ts {mats.shape} and {len(statuses)} statuses do not align"
        )
    if n and np.any(np.diff(times) < 0):
        raise ValueError("times_s must be non-decreasing")
    if n == 0 or not times[0] - negligible_dt_s <= t_s <= times[-1] + negligible_dt_s:
        return InterpolatedPose(None, ToolStatus.MISSING)
    right = int(np.searchsorted(times, t_s, side="left"))
    nearest = min((i for i in (right - 1, right) if 0 <= i < n), key=lambda i: abs(times[i] - t_s))
    if abs(times[nearest] - t_s) <= negligible_dt_s:
        status = statuses[nearest]
        T = mats[nearest].copy() if status is ToolStatus.OK else None
        return InterpolatedPose(T, status)
    left = right - 1  # times[left] < t_s < times[right], both exist by the range check
    for i in (left, right):
        if statuses[i] is not ToolStatus.OK:
            return InterpolatedPose(None, statuses[i])
    gap_s = float(times[right] - times[left])
    if max_gap_s is not None and gap_s > max_gap_s:
        return InterpolatedPose(None, ToolStatus.MISSING)
    u = float((t_s - times[left]) / gap_s)
    return InterpolatedPose(interpolate_rigid(mats[left], mats[right], u), ToolStatus.OK)

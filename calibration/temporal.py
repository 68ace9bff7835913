"""Temporal calibration: the clock offset between two streams that saw the same motion.

Two streams (a tracker and a video camera, two trackers, a tracker and the
headset) stamp the same physical motion with different clocks and latencies.
The offset is found by normalised cross-correlation of a motion signal after
both streams are resampled onto one uniform time grid, with the correlation
peak refined below the grid step by a parabola through its three top samples.
This is the approach of PLUS's temporal calibration
(``vtkPlusTemporalCalibrationAlgo``: normalised cross-correlation of motion
signals resampled by linear interpolation, searched for both signs of the
correlation, since which way the motion axis points in each stream is arbitrary;
A. Lasso et al., "PLUS: open-source toolkit for ultrasound-guided intervention
systems", IEEE TBME 61(10):2527-2537, 2014) with the peak refined as in
sub-sample time-delay estimation (G. Jacovitti, G. Scarano, "Discrete time
techniques for time delay estimation", IEEE Trans. Signal Processing
41(2):525-533, 1993, parabolic interpolation).

Convention. ``dt_a_from_b_s`` is what to ADD to a stream-b timestamp to get
the stream-a clock time of the same event::

    t_a = t_b + dt_a_from_b_s          signal_a(t) ~ signal_b(t - dt_a_from_b_s)

Worked example: the pointer stops moving. The tracker (stream b) stamps that
instant 10.000 s; the video (stream a) shows it in the frame stamped 10.037 s.
Then ``dt_a_from_b_s = +0.037``: stream a's clock reads 37 ms more for the same
event, and the tracker pose to overlay on the video frame stamped 12.500 s is
the one stamped 12.500 - 0.037 = 12.463 s.

>>> import numpy as np
>>> t = np.arange(0.0, 10.0, 0.01)
>>> def bump(t):  # the pointer moves and stops; the event is at b-time 5.0 s
...     return np.exp(-(((t - 5.0) / 0.3) ** 2))
>>> result = temporal_calibration(t, bump(t - 0.037), t, bump(t), max_lag_s=0.5)
>>> round(result.dt_a_from_b_s, 4)
0.037

Time is seconds (float) on each stream's own clock; any common origin works,
epoch seconds included (they are shifted to a local origin before arithmetic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from nav.arrays import FloatArray

MIN_WINDOW_SAMPLES = 8
"""Fewest grid samples a lag's overlap may hold before its correlation means anything."""

SIGN_TIE = 1e-3
"""Two peaks of opposite sign closer than this (or than half of ``1 - peak``) are a tie.

A back-and-forth motion correlates almost as well with itself mirrored half a period
away as with itself unmirrored: a pure 0.914 s sine, mirrored, scores 1.000 at the true
offset and 1.000 at +-0.457 s; a hand's up-and-down motion whose pace and amplitude
drift scores 1.000 and 0.994. Noise lowers both by about ``1 - peak``, so two peaks
closer than half of that may have swapped places: such an offset is refused, not
guessed.
"""


@dataclass(frozen=True, eq=False, kw_only=True)
class TemporalResult:
    """The clock offset between streams a and b, and how sharply the data determine it.

    Fields:

    - ``dt_a_from_b_s``: s, add to a stream-b timestamp to get stream a's
      clock time of the same event (module docstring, worked example).
    - ``sign``: +1 if the two motion signals rise together, -1 if one is the
      mirror image of the other (a scalar signal whose axis points the other
      way in one stream); always +1 for positions, which are compared by speed.
    - ``confidence``: the normalised (Pearson) correlation of the two motion
      signals at the peak, times ``sign``, clipped to [0, 1]. 1: one signal is an exact
      shifted, scaled copy of the other. Two views of one brisk hand motion
      score above 0.95; a side lobe of a quasi-periodic motion, found when
      the true offset lies outside the lag window, scored 0.65 in the tests,
      hence the default refusal below 0.8.
    - ``peak_width_s``: s, the width of the correlation peak from its
      curvature, ``sqrt(-c / c'')`` at the peak (for a Gaussian-shaped peak, its
      standard deviation). Smaller is sharper: a slow, smooth motion gives a
      wide peak and a less certain offset than a brisk one.
    - ``residual_rms``: the RMS difference of the two standardised signals
      (zero mean, unit variance over the overlap) aligned by the offset,
      ``sqrt(2 (1 - correlation))``; dimensionless.
    - ``resample_hz``: the grid rate used; ``n_samples``: grid samples in the
      overlap at the peak lag.
    - ``lags_s`` (L,) and ``correlations`` (L,): the correlation curve over
      the lag window, for plots (integer grid steps; NaN where undefined),
      with its own signs (not multiplied by ``sign``).
    """

    dt_a_from_b_s: float
    sign: int
    confidence: float
    peak_width_s: float
    residual_rms: float
    resample_hz: float
    n_samples: int
    lags_s: FloatArray
    correlations: FloatArray


def _check_stream(
    name: str, t_s: npt.ArrayLike, signal: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Return (t, x) as float64, t (N,) strictly increasing, x (N,) or (N, D); else bad_input."""
    try:
        t = np.asarray(t_s, dtype=np.float64)
        x = np.asarray(signal, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError("bad_input", f"stream {name} is not numeric: {exc}") from None
    if t.ndim != 1:
        raise CalibrationError("bad_input", f"t_{name}_s must have shape (N,), got {t.shape}")
    if x.ndim not in (1, 2) or x.shape[0] != t.shape[0] or (x.ndim == 2 and x.shape[1] == 0):
        raise CalibrationError(
            "bad_input",
            f"signal_{name} must have shape ({len(t)},) or ({len(t)}, D), got {x.shape}",
        )
    if not (np.isfinite(t).all() and np.isfinite(x).all()):
        raise CalibrationError("bad_input", f"stream {name} has a non-finite value")
    if len(t) < 3:
        raise CalibrationError("too_few_poses", f"only {len(t)} samples in stream {name}, need 3")
    if not np.all(np.diff(t) > 0.0):
        i = int(np.flatnonzero(np.diff(t) <= 0.0)[0])
        raise CalibrationError(
            "bad_input", f"t_{name}_s must increase strictly; sample {i + 1} does not"
        )
    return t, x


def _motion(t: FloatArray, x: FloatArray) -> FloatArray:
    """The scalar motion signal of a stream: x itself if (N,), else its speed |dx/dt| (N,).

    Speed rather than a coordinate for positions, because it is the same in
    every frame a rigid transform relates, so the streams need no common frame
    (a camera's and a tracker's view of one marker), nor a common unit scale
    (the correlation is normalised). ``np.gradient`` takes second-order central
    differences on the uneven timestamps, which delay neither stream.
    """
    if x.ndim == 1:
        return x
    speed: FloatArray = np.linalg.norm(np.gradient(x, t, axis=0), axis=1)
    return speed


def _resample(t: FloatArray, x: FloatArray, step_s: float) -> tuple[int, FloatArray]:
    """Linear interpolation of x(t) at the grid points j * step_s inside [t[0], t[-1]].

    Returns the first grid index and the values.
    """
    j0 = math.ceil(t[0] / step_s)
    j1 = math.floor(t[-1] / step_s)
    grid = np.arange(j0, j1 + 1) * step_s
    return j0, np.interp(grid, t, x)


def temporal_calibration(
    t_a_s: npt.ArrayLike,
    signal_a: npt.ArrayLike,
    t_b_s: npt.ArrayLike,
    signal_b: npt.ArrayLike,
    *,
    max_lag_s: float,
    resample_hz: float | None = None,
    min_correlation: float = 0.8,
) -> TemporalResult:
    """Find ``dt_a_from_b_s`` such that ``signal_a(t) ~ signal_b(t - dt_a_from_b_s)``.

    ``t_a_s`` (N,) and ``t_b_s`` (M,): seconds, strictly increasing, each on
    its own clock. ``signal_a`` (N,) / ``signal_b`` (M,): a scalar motion
    signal, used as given (a position projected on the main direction of
    motion, a speed, an angle); or (N, D) / (M, D') positions, which are
    turned into speeds (see ``_motion``), so the two streams may be in
    different frames and units. For a scalar signal the correlation is
    sought with both signs, as PLUS does (an axis may point the other way in
    one stream: ``result.sign`` is then -1); speeds, never mirrored, only
    with a positive sign.

    Both motion signals are linearly interpolated onto the grid ``j /
    resample_hz`` (default: the faster stream's median rate, so neither is
    undersampled), and for each integer lag ``k`` in ``[-K, K]``, ``K =
    ceil(max_lag_s * resample_hz)``, the Pearson correlation of ``a[j]`` with
    ``b[j - k]`` over their overlap is taken (``K`` is rounded down instead
    when ``max_lag_s * resample_hz`` is within 0.001 of an integer). The best
    lag is refined by the vertex of the parabola through the peak and its two
    neighbours. Choose ``max_lag_s`` above any offset the streams may have: a
    periodic motion correlates with itself one period away, and a window that
    misses the true offset can hold such a side lobe, which only
    ``min_correlation`` then rejects. With both signs, a mirrored side lobe
    lies half a period away: a regular back-and-forth motion whose best
    peaks of the two signs are tied (``SIGN_TIE``) is refused.

    Raises CalibrationError with ``kind``: ``bad_input`` (shapes, non-finite
    values, timestamps not increasing, a bad parameter); ``too_few_poses``
    (fewer than 3 samples in a stream, or, at some lag, fewer than
    ``max(2K + 1, 8)`` overlapping grid samples: record longer than the lag
    window is wide); ``degenerate`` (a flat motion signal, a correlation peak
    at the edge of the lag window, a peak correlation below
    ``min_correlation``, or peaks of both signs that score alike).
    """
    if isinstance(max_lag_s, bool) or not (math.isfinite(max_lag_s) and max_lag_s > 0.0):
        raise CalibrationError("bad_input", f"max_lag_s must be finite and > 0, got {max_lag_s}")
    if resample_hz is not None and not (math.isfinite(resample_hz) and resample_hz > 0.0):
        raise CalibrationError(
            "bad_input", f"resample_hz must be finite and > 0, got {resample_hz}"
        )
    if not (math.isfinite(min_correlation) and -1.0 <= min_correlation <= 1.0):
        raise CalibrationError("bad_input", "min_correlation must lie in [-1, 1]")
    t_a, x_a = _check_stream("a", t_a_s, signal_a)
    t_b, x_b = _check_stream("b", t_b_s, signal_b)

    # A local origin: epoch seconds (1.7e9) keep only ~0.2 us of resolution in float64.
    # Each stream keeps its own clock; only the common shift is removed.
    origin = min(float(t_a[0]), float(t_b[0]))
    t_a = t_a - origin
    t_b = t_b - origin
    if resample_hz is None:
        resample_hz = 1.0 / min(float(np.median(np.diff(t_a))), float(np.median(np.diff(t_b))))
    step_s = 1.0 / resample_hz

    ja0, a = _resample(t_a, _motion(t_a, x_a), step_s)
    jb0, b = _resample(t_b, _motion(t_b, x_b), step_s)
    for name, sig in (("a", a), ("b", b)):
        if len(sig) < MIN_WINDOW_SAMPLES:
            raise CalibrationError(
                "too_few_poses",
                f"stream {name} spans only {len(sig)} samples at {resample_hz:g} Hz, "
                f"need at least {MIN_WINDOW_SAMPLES}",
            )
        if float(np.ptp(sig)) <= 1e-12 * max(1.0, float(np.max(np.abs(sig)))):
            raise CalibrationError(
                "degenerate", f"signal {name} is flat: the tool must move during the recording"
            )

    # Within 0.1% of a step counts as a whole step: a rate estimated from epoch-second
    # stamps is off by ~1e-5, which must not add a lag at each end of the window.
    K = max(1, math.ceil(max_lag_s * resample_hz - 1e-3))
    need = max(2 * K + 1, MIN_WINDOW_SAMPLES)
    lags = range(-K, K + 1)
    corr = np.full(len(lags), np.nan)
    counts = np.zeros(len(lags), dtype=int)
    for i, k in enumerate(lags):
        # Grid index j of a pairs with j - k of b: a[j - ja0] with b[j - k - jb0].
        lo = max(ja0, jb0 + k)
        hi = min(ja0 + len(a), jb0 + k + len(b))
        counts[i] = max(0, hi - lo)
        if counts[i] < need:
            raise CalibrationError(
                "too_few_poses",
                f"only {counts[i]} grid samples overlap at lag {k * step_s:+.3f} s, need at "
                f"least {need}: record longer than the lag window or lower max_lag_s",
            )
        u = a[lo - ja0 : hi - ja0]
        v = b[lo - k - jb0 : hi - k - jb0]
        u = u - u.mean()
        v = v - v.mean()
        denom = math.sqrt(float(u @ u) * float(v @ v))
        # A window where one signal is constant carries no timing information.
        corr[i] = float(u @ v) / denom if denom > 0.0 else np.nan

    if np.isnan(corr).all():
        raise CalibrationError("degenerate", "the signals are flat at every lag")
    # A scalar signal's axis may point the other way in one stream: then the true offset
    # is a trough of the curve, and the highest crest is a side lobe (half a period off
    # for a back-and-forth motion) that scores as confidently as a true peak.
    both_signs = x_a.ndim == 1 or x_b.ndim == 1
    p = int(np.nanargmax(np.abs(corr) if both_signs else corr))
    sign = -1 if corr[p] < 0.0 else 1
    if both_signs:
        best, other = float(sign * corr[p]), float(np.nanmax(-sign * corr))
        if best - other < max(SIGN_TIE, 0.5 * (1.0 - best)):
            q = int(np.nanargmax(-sign * corr))
            raise CalibrationError(
                "degenerate",
                f"the correlation peaks {best:.3f} at {lags[p] * step_s:+.3f} s and "
                f"{other:.3f} mirrored at {lags[q] * step_s:+.3f} s: the motion is too regular "
                "to tell a flipped axis from an offset; move less periodically, or pass "
                "positions (compared by speed)",
            )
    corr_aligned = sign * corr
    if p == 0 or p == len(lags) - 1:
        raise CalibrationError(
            "degenerate",
            f"the correlation peak lies at the edge of the lag window ({lags[p] * step_s:+.3f} s): "
            "widen max_lag_s, or the streams do not show the same motion",
        )
    c_minus, c0, c_plus = corr_aligned[p - 1], corr_aligned[p], corr_aligned[p + 1]
    if np.isnan(c_minus) or np.isnan(c_plus):
        raise CalibrationError("degenerate", "the correlation peak has an undefined neighbour")
    curvature = c_minus - 2.0 * c0 + c_plus  # <= 0 at a maximum
    delta = 0.5 * (c_minus - c_plus) / curvature if curvature < 0.0 else 0.0
    peak = float(c0 - 0.25 * (c_minus - c_plus) * delta)
    if peak < min_correlation:
        raise CalibrationError(
            "degenerate",
            f"peak correlation {peak:.2f} is below {min_correlation:g}: the two streams do "
            f"not show the same motion, or their offset lies beyond +-{max_lag_s:g} s",
        )
    peak_width_s = step_s * math.sqrt(peak / -curvature) if curvature < 0.0 else math.inf
    lags_s: FloatArray = np.arange(-K, K + 1, dtype=np.float64) * step_s
    for arr in (lags_s, corr):
        arr.setflags(write=False)
    return TemporalResult(
        dt_a_from_b_s=float((lags[p] + delta) * step_s),
        sign=sign,
        confidence=min(1.0, max(0.0, peak)),
        peak_width_s=peak_width_s,
        residual_rms=math.sqrt(max(0.0, 2.0 * (1.0 - peak))),
        resample_hz=float(resample_hz),
        n_samples=int(counts[p]),
        lags_s=lags_s,
        correlations=corr,
    )

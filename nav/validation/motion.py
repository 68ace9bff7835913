"""Per-tool figures of a tracked session: visibility, sample rate, jitter while still.

Inputs are one tool's samples: times ``t_s`` (N,) in seconds, ``ok`` (N,) whether the
tool was tracked, and positions ``p_mm`` (N, 3) (rows where ``ok`` is false are ignored).

Jitter is the tracker's noise as a person sees it: the RMS distance of the positions from
their mean over a window in which the tool did not move. A window of ``window_s`` counts as
static when every sample in it is tracked and the centroids of its two halves are within
``drift_mm``: a held tool, not a slow motion (breathing at 4 mm peak to peak and 0.25 Hz
moves up to 0.8 mm in a quarter second, well above the 0.2 mm default). Windows do not
overlap. The tool's jitter is the median over its static windows, None without any.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_WINDOW_S = 0.5
DEFAULT_DRIFT_MM = 0.2
MIN_WINDOW_SAMPLES = 6


@dataclass(frozen=True)
class ToolFigures:
    """``visible_fraction`` of the samples tracked; ``longest_gap_s`` the longest run of
    untracked samples (first to last untracked time plus one sample period);
    ``rate_hz`` the median sample rate; ``dropouts`` how many untracked runs;
    ``jitter_rms_mm`` (median over ``static_windows`` static windows) or None."""

    samples: int
    visible_fraction: float
    dropouts: int
    longest_gap_s: float
    rate_hz: float | None
    jitter_rms_mm: float | None
    static_windows: int


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) index ranges where ``mask`` is true."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def jitter_windows(
    t_s: npt.ArrayLike,
    ok: npt.ArrayLike,
    p_mm: npt.ArrayLike,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    drift_mm: float = DEFAULT_DRIFT_MM,
) -> npt.NDArray[np.float64]:
    """The RMS scatter (mm) of each static window (see the module docstring)."""
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    tracked = np.asarray(ok, dtype=bool).reshape(-1)
    p = np.asarray(p_mm, dtype=np.float64).reshape(-1, 3)
    scatters: list[float] = []
    for start, end in _runs(tracked & np.all(np.isfinite(p), axis=1)):
        edges = np.arange(t[start], t[end - 1], window_s)
        bounds = np.searchsorted(t[start:end], edges) + start
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b - a < MIN_WINDOW_SAMPLES:
                continue
            w = p[a:b]
            half = (b - a) // 2
            if np.linalg.norm(w[:half].mean(axis=0) - w[half:].mean(axis=0)) > drift_mm:
                continue
            scatters.append(float(np.sqrt(np.mean(np.sum((w - w.mean(axis=0)) ** 2, axis=1)))))
    return np.array(scatters, dtype=np.float64)


def tool_figures(
    t_s: npt.ArrayLike,
    ok: npt.ArrayLike,
    p_mm: npt.ArrayLike,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    drift_mm: float = DEFAULT_DRIFT_MM,
) -> ToolFigures:
    """Visibility, rate and jitter of one tool (see ``ToolFigures``)."""
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    tracked = np.asarray(ok, dtype=bool).reshape(-1)
    if len(t) != len(tracked):
        raise ValueError(f"{len(t)} times for {len(tracked)} statuses")
    dt = np.diff(t)
    period = float(np.median(dt)) if len(dt) and np.median(dt) > 0 else None
    gaps = _runs(~tracked)
    longest = 0.0
    for a, b in gaps:
        longest = max(longest, float(t[b - 1] - t[a]) + (period or 0.0))
    scatters = jitter_windows(t, tracked, p_mm, window_s=window_s, drift_mm=drift_mm)
    return ToolFigures(
        samples=len(t),
        visible_fraction=float(tracked.mean()) if len(t) else 0.0,
        dropouts=len(gaps),
        longest_gap_s=longest,
        rate_hz=1.0 / period if period else None,
        jitter_rms_mm=float(np.median(scatters)) if len(scatters) else None,
        static_windows=len(scatters),
    )

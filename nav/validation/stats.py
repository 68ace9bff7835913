"""Percentiles and CDFs of latencies and ages, as the report shows and verdicts read them."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

PERCENTILES = (50, 90, 99)


def summary_ms(values_ms: npt.ArrayLike) -> dict[str, float | int | None]:
    """``n``, ``mean``, ``p50``, ``p90``, ``p99`` and ``max`` of the finite values (ms).

    Percentiles are numpy's default (linear between order statistics), as the demo summary
    computes them, so the two agree. Every figure is None when there is no value.
    """
    v = np.asarray(values_ms, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    out: dict[str, float | int | None] = {"n": len(v)}
    if not len(v):
        return out | {"mean": None, "max": None} | {f"p{p}": None for p in PERCENTILES}
    out["mean"] = float(v.mean())
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(v, p))
    out["max"] = float(v.max())
    return out


def cdf(values: npt.ArrayLike, *, max_points: int = 512) -> tuple[list[float], list[float]]:
    """The empirical CDF of the finite values: (sorted x, fraction <= x), thinned evenly
    to at most ``max_points`` (the first and last kept), for a figure or JSON."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    v = v[np.isfinite(v)]
    if not len(v):
        return [], []
    y = np.arange(1, len(v) + 1) / len(v)
    if len(v) > max_points:
        keep = np.unique(np.linspace(0, len(v) - 1, max_points).round().astype(int))
        v, y = v[keep], y[keep]
    return v.tolist(), y.tolist()


def finite_or_none(value: float) -> float | None:
    """``value`` for JSON: None instead of NaN or inf (JSON has neither)."""
    return value if math.isfinite(value) else None

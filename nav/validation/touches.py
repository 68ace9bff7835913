"""Pointer touches over a whole session, and which case fiducial each one was.

Re-running a registration offline needs the touched fiducials, but a recording holds only
poses: the nav node's collection (which touch was F-3) never crossed the bus. So:

1. ``find_dwells``: every place the pointer tip rested, in the reference frame, found by
   the nav node's own dwell rule (``nav.collectors.FiducialCollector``: same window, radius,
   scatter and re-arm distance), over the whole session rather than one collection;
2. ``match_fiducials``: which dwell is which fiducial, without any prior: rigid motions keep
   distances, so a triplet of fiducials is matched to a triplet of dwells with the same
   three side lengths (within ``tolerance_mm``), the rigid fit of that triplet is tried on
   every fiducial, and the hypothesis that places the most fiducials on a dwell (then the
   lowest residual) wins, refit on all of them (a RANSAC over consistent triplets:
   M. A. Fischler, R. C. Bolles, CACM 24(6), 1981). At least ``MIN_PAIRS`` must be placed:
   three touches of a near-isosceles triangle fit two ways, and a wrong pairing must never
   pass for a result. A touch elsewhere (a target, the tray) matches no fiducial; an
   untouched fiducial is simply left out. A rest at the very start of the data is not a
   touch (the nav node's re-arm rule: the pointer lying on the tray).

The result is an assignment, not a registration: the registration itself is re-run on the
pairs by the same code the nav node uses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.collectors import DwellParams, FiducialCollector
from nav.transforms import Mat4, apply

MAX_DWELLS = 4096  # a session touching more is not a registration session
DEFAULT_TOLERANCE_MM = 3.0  # a touch vs the fiducial's place: FLE plus tip calibration
MIN_PAIRS = 4  # three touches of a near-isosceles triangle fit two ways: never guess
TRIPLETS_TRIED = 220  # fiducial triplets, largest first: every one of 12 fiducials


@dataclass(frozen=True)
class Dwells:
    """Where the tip rested: ``p_reference`` (K, 3) mm and ``t_ns`` (K,) when recorded."""

    p_reference: FloatArray
    t_ns: npt.NDArray[np.int64]


def find_dwells(
    t_ns: npt.ArrayLike, p_tip_reference: npt.ArrayLike, params: DwellParams | None = None
) -> Dwells:
    """Every dwell of the tip samples ``p_tip_reference`` (N, 3) mm, NaN rows: not tracked."""
    times = np.asarray(t_ns, dtype=np.int64).reshape(-1)
    p = np.asarray(p_tip_reference, dtype=np.float64).reshape(-1, 3)
    if len(times) != len(p):
        raise ValueError(f"{len(times)} times for {len(p)} tip positions")
    labels = [f"d{i}" for i in range(MAX_DWELLS)]
    collector = FiducialCollector(labels, params=params or DwellParams())
    when: list[int] = []
    for t, row in zip(times.tolist(), p, strict=True):
        tracked = bool(np.all(np.isfinite(row)))
        if collector.feed(t, row if tracked else None) is not None:
            when.append(t)
    return Dwells(collector.points_reference, np.array(when, dtype=np.int64))


@dataclass(frozen=True)
class FiducialMatch:
    """``fiducial_indices[k]`` was touched at dwell ``dwell_indices[k]``; ``residuals_mm``
    their distances after ``T_reference_from_image`` (the fit of the pairs)."""

    fiducial_indices: tuple[int, ...]
    dwell_indices: tuple[int, ...]
    T_reference_from_image: Mat4
    residuals_mm: FloatArray


def _kabsch(p_from: FloatArray, p_to: FloatArray) -> Mat4:
    """The rigid T (proper rotation) minimising sum |T p_from - p_to|^2 (Arun et al. 1987)."""
    a0, b0 = p_from.mean(axis=0), p_to.mean(axis=0)
    u, _, vt = np.linalg.svd((p_from - a0).T @ (p_to - b0))
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    R = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = b0 - R @ a0
    return T


def _assign(
    p_mapped: FloatArray, dwells: FloatArray, tolerance_mm: float
) -> tuple[list[int], list[int]]:
    """Greedy one-to-one nearest pairs within the tolerance, closest pairs first."""
    d = np.linalg.norm(p_mapped[:, None, :] - dwells[None, :, :], axis=2)
    fid, dwell = np.nonzero(d <= tolerance_mm)
    order = np.argsort(d[fid, dwell])
    used_f: set[int] = set()
    used_d: set[int] = set()
    pairs_f: list[int] = []
    pairs_d: list[int] = []
    for k in order:
        f, w = int(fid[k]), int(dwell[k])
        if f in used_f or w in used_d:
            continue
        used_f.add(f)
        used_d.add(w)
        pairs_f.append(f)
        pairs_d.append(w)
    return pairs_f, pairs_d


def _triplets(p: FloatArray) -> list[tuple[int, int, int]]:
    """Fiducial triplets, the largest triangles first (best conditioned)."""
    combos = list(itertools.combinations(range(len(p)), 3))
    area = [np.linalg.norm(np.cross(p[j] - p[i], p[k] - p[i])) for i, j, k in combos]
    return [combos[i] for i in np.argsort(area)[::-1][:TRIPLETS_TRIED]]


def match_fiducials(
    p_image_fiducials: npt.ArrayLike,
    p_reference_dwells: npt.ArrayLike,
    *,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> FiducialMatch | None:
    """Which dwell touched which fiducial (see the module docstring); None when fewer than
    ``MIN_PAIRS`` fiducials could be placed consistently."""
    fids = np.asarray(p_image_fiducials, dtype=np.float64).reshape(-1, 3)
    dwells = np.asarray(p_reference_dwells, dtype=np.float64).reshape(-1, 3)
    if len(fids) < MIN_PAIRS or len(dwells) < MIN_PAIRS:
        return None
    dd = np.linalg.norm(dwells[:, None, :] - dwells[None, :, :], axis=2)
    best: tuple[int, float, list[int], list[int]] | None = None
    for i, j, k in _triplets(fids):
        dij, dik, djk = (np.linalg.norm(fids[a] - fids[b]) for a, b in ((i, j), (i, k), (j, k)))
        if min(dij, dik, djk) < 2 * tolerance_mm:
            continue  # a degenerate triangle matches anything
        for a, b in zip(*np.nonzero(np.abs(dd - dij) <= tolerance_mm), strict=True):
            cs = np.flatnonzero(
                (np.abs(dd[a] - dik) <= tolerance_mm) & (np.abs(dd[b] - djk) <= tolerance_mm)
            )
            for c in cs:
                if c in (a, b):
                    continue
                T = _kabsch(fids[[i, j, k]], dwells[[a, b, int(c)]])
                pairs_f, pairs_d = _assign(apply(T, fids), dwells, tolerance_mm)
                if len(pairs_f) < MIN_PAIRS:
                    continue
                T = _kabsch(fids[pairs_f], dwells[pairs_d])
                rms = float(
                    np.sqrt(np.mean(np.sum((apply(T, fids[pairs_f]) - dwells[pairs_d]) ** 2, 1)))
                )
                if best is None or (len(pairs_f), -rms) > (best[0], -best[1]):
                    best = (len(pairs_f), rms, pairs_f, pairs_d)
    if best is None:
        return None
    _, _, pairs_f, pairs_d = best
    order = np.argsort(pairs_f)
    fi = [pairs_f[o] for o in order]
    di = [pairs_d[o] for o in order]
    T = _kabsch(fids[fi], dwells[di])
    residuals = np.linalg.norm(apply(T, fids[fi]) - dwells[di], axis=1)
    return FiducialMatch(tuple(fi), tuple(di), T, residuals)

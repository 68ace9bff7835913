"""Collecting organ-surface points with the pointer, for surface registration.

Pure: no sockets, no files, no clock reads, no logging set-up. ``nav/nav_node.py`` feeds
:class:`SurfaceCollector` the pointer tip in the ``reference`` frame once per tracker
sample (None while the pointer or the reference is not OK) while the surgeon traces the
organ with the pointer; ``nav.navigation.register_organ_surface`` then registers the
points to the case's organ surface (``nav.registration.surface``).

Rule: a sample is recorded when the tip has moved at least ``spacing_mm`` from the last
recorded point (the first OK sample is always recorded), until ``max_points`` are in.
So a tip held still records one point, a fast sweep records one point per
``spacing_mm`` of path (or one per sample, if it moves more than that between two), and
the point density along the trace does not depend on the hand's speed or the tracker's
rate. Points are in the ``reference`` frame, mm: immune to the patient's breathing.

Every recorded sample counts, including those taken while the tip is lifted off the organ
(between two strokes, or on the way to the tray): the registration's robust kernel
and correspondence gate treat such points as outliers, and its fitness says how many
there were. ``path_length_mm`` sums the steps between consecutive recorded points, but
not the jump across a stretch where the tip was not seen (an occlusion).

Cost per sample: a handful of float operations (~1 us); the points live in one array
allocated at construction (``max_points`` x 3 float64: 120 kB for 5000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from nav.transforms import Points

DEFAULT_SPACING_MM: Final = 2.0
DEFAULT_MAX_POINTS: Final = 5000
"""5000 points at 2 mm spacing: 10 m of trace, far more than a 20-45 % organ patch needs;
their residuals (8 bytes each) keep a ``RegistrationResult`` far below the 1 MiB limit."""


@dataclass(frozen=True)
class SurfaceProgress:
    """``collected`` of at most ``max_points`` surface points; path traced so far, mm."""

    collected: int
    max_points: int
    path_length_mm: float

    @property
    def full(self) -> bool:
        return self.collected >= self.max_points


class SurfaceCollector:
    """Records the pointer tip (reference frame) every ``spacing_mm`` of motion (see module).

    ``spacing_mm`` > 0 and finite; ``max_points`` >= 1. ValueError otherwise.
    """

    def __init__(
        self, *, spacing_mm: float = DEFAULT_SPACING_MM, max_points: int = DEFAULT_MAX_POINTS
    ) -> None:
        if not (math.isfinite(spacing_mm) and spacing_mm > 0):
            raise ValueError(f"spacing_mm must be finite and > 0, got {spacing_mm!r}")
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"max_points must be an integer >= 1, got {max_points!r}")
        self.spacing_mm = float(spacing_mm)
        self.max_points = max_points
        self._spacing_sq = self.spacing_mm**2
        self._points = np.empty((max_points, 3), dtype=np.float64)
        self._n = 0
        self._last: tuple[float, float, float] | None = None  # the last recorded point
        self._seen_since_last = False  # no gap since the last recorded point
        self._path_mm = 0.0

    @property
    def progress(self) -> SurfaceProgress:
        return SurfaceProgress(self._n, self.max_points, self._path_mm)

    @property
    def points_reference(self) -> Points:
        """A copy (n, 3) of the points recorded so far, reference frame, mm, in order."""
        return self._points[: self._n].copy()

    def feed(self, p_tip_reference: npt.ArrayLike | None) -> bool:
        """Add one tracker sample's tip (3,) mm, or None when not seen; True if recorded.

        A non-finite tip counts as not seen.
        """
        if p_tip_reference is None:
            self._seen_since_last = False
            return False
        p = np.asarray(p_tip_reference, dtype=np.float64)
        x, y, z = float(p[0]), float(p[1]), float(p[2])
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            self._seen_since_last = False
            return False
        if self._n >= self.max_points:
            return False
        last = self._last
        if last is not None:
            dx, dy, dz = x - last[0], y - last[1], z - last[2]
            step_sq = dx * dx + dy * dy + dz * dz
            if step_sq < self._spacing_sq:
                return False
            if self._seen_since_last:
                self._path_mm += math.sqrt(step_sq)
        self._points[self._n] = (x, y, z)
        self._n += 1
        self._last = (x, y, z)
        self._seen_since_last = True
        return True

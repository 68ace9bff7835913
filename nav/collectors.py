"""Collecting points with the pointer for registration: fiducials and the organ surface.

Pure: no sockets, no files, no clock reads (sample times are arguments), no logging
set-up. The navigator session (``nav/session.py``) feeds a collector the pointer tip in the
``reference`` frame once per tracker sample (None while the pointer or the reference is
not OK); points are in the ``reference`` frame, mm, so they are immune to the patient's
breathing.

- :class:`FiducialCollector`: the case's fiducials, in case order, each recorded when the
  tip dwells (:class:`DwellParams` documents the test) or on a foot pedal
  (:meth:`FiducialCollector.collect_now`); ``nav.navigation.register_fiducials`` then
  registers them to the case's fiducials.
- :class:`SurfaceCollector`: points traced over the organ;
  ``nav.navigation.register_organ_surface`` registers them to the case's organ surface
  (``nav.registration.surface``).

Surface rule: a sample is recorded when the tip has moved at least ``spacing_mm`` from
the last recorded point (the first OK sample is always recorded), until ``max_points`` are
in. So a tip held still records one point, a fast sweep records one point per
``spacing_mm`` of path (or one per sample, if it moves more than that between two), and
the point density along the trace does not depend on the hand's speed or the tracker's
rate.

Every recorded surface sample counts, including those taken while the tip is lifted off
the organ (between two strokes, or on the way to the tray): the registration's robust
kernel and correspondence gate treat such points as outliers, and its fitness says how
many there were. ``path_length_mm`` sums the steps between consecutive recorded points,
but not the jump across a stretch where the tip was not seen (an occlusion).

Cost per sample: a handful of float operations (~1 us) for either; the surface points live
in one array allocated at construction (``max_points`` x 3 float64: 120 kB for 5000).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
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
        self._from_pointer = np.zeros(max_points, dtype=bool)  # else from a camera's cloud
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

    @property
    def pointer_points_reference(self) -> Points:
        """A copy (k, 3) of the points the pointer traced (not the cameras'), in order."""
        return self._points[: self._n][self._from_pointer[: self._n]].copy()

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
        self._from_pointer[self._n] = True
        self._n += 1
        self._last = (x, y, z)
        self._seen_since_last = True
        return True

    def add_cloud(self, points_reference: npt.ArrayLike) -> int:
        """Add a surface patch seen by a camera (N, 3) mm, reference frame; returns how
        many points were taken (finite ones, up to ``max_points`` in all).

        A cloud is already spaced (the source downsamples it); it adds no path length and
        breaks the pointer's path, so the next tip sample is not joined to it.
        """
        p = np.asarray(points_reference, dtype=np.float64).reshape(-1, 3)
        p = p[np.all(np.isfinite(p), axis=1)][: self.max_points - self._n]
        self._points[self._n : self._n + len(p)] = p
        self._from_pointer[self._n : self._n + len(p)] = False
        self._n += len(p)
        self._seen_since_last = False
        return len(p)


# --- collecting fiducials with the pointer ----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DwellParams:
    """When a held pointer tip counts as a touched fiducial.

    The collector keeps the OK tip samples (reference frame) of the last ``window_s``.
    The tip *dwells* when all of these hold:

    - OK samples have arrived for at least ``window_s`` with no gap over ``max_gap_s``
      and no non-OK sample (an occlusion restarts the window), ``min_samples`` at least;
    - the centroids of the window's older and newer halves are within ``radius_mm`` of
      each other: the tip's mean position did not move (a steady slide of more than
      ``2 * radius_mm / window_s`` mm/s fails this, 2.5 mm/s by default);
    - the RMS distance of the samples from the window's centroid is at most
      ``scatter_mm``: no jump or shake inside the window. Tracker noise alone gives
      about 0.4 mm here (a Polaris-class 0.25 mm on each of two markers, plus rotation
      noise on the lever arms), so the default leaves room for it;
    - the collector is armed: the tip has moved more than ``rearm_mm`` from the last
      recorded fiducial (or, for the first, from where it was when collection started).
      So one touch records one fiducial, and a pointer lying still on the tray when
      collection starts is not taken for a fiducial.

    The recorded fiducial is the centroid of the window's newer half (noise averaged over
    ``window_s / 2`` of samples: ~0.09 mm for 20 samples of 0.4 mm), not of the whole
    window: a hand slows down gradually, and the older half may still hold the slow tail of
    the approach (a bias along the approach direction; the newer half has settled).
    """

    window_s: float = 0.4
    radius_mm: float = 0.5
    scatter_mm: float = 1.0
    rearm_mm: float = 5.0
    max_gap_s: float = 0.1
    min_samples: int = 5

    def __post_init__(self) -> None:
        for name in ("window_s", "radius_mm", "scatter_mm", "rearm_mm", "max_gap_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"DwellParams.{name} must be finite and > 0, got {value!r}")
        if self.min_samples < 2:
            raise ValueError(f"DwellParams.min_samples must be >= 2, got {self.min_samples}")


@dataclass(frozen=True)
class CollectionProgress:
    """k of N fiducials collected, in case order; ``next_label`` is None when done."""

    collected: int
    total: int
    labels: tuple[str, ...]

    @property
    def done(self) -> bool:
        return self.collected >= self.total

    @property
    def next_label(self) -> str | None:
        return None if self.done else self.labels[self.collected]


class _Half:
    """Running sums over a deque of (t_ns, x, y, z): count, sum of p, sum of |p|^2."""

    def __init__(self) -> None:
        self.samples: deque[tuple[int, float, float, float]] = deque()
        self.sx = self.sy = self.sz = self.ss = 0.0

    def push(self, s: tuple[int, float, float, float]) -> None:
        self.samples.append(s)
        self._add(s, 1.0)

    def pop(self) -> tuple[int, float, float, float]:
        s = self.samples.popleft()
        self._add(s, -1.0)
        return s

    def _add(self, s: tuple[int, float, float, float], sign: float) -> None:
        _, x, y, z = s
        self.sx += sign * x
        self.sy += sign * y
        self.sz += sign * z
        self.ss += sign * (x * x + y * y + z * z)

    def centroid(self) -> tuple[float, float, float]:
        n = len(self.samples)
        return (self.sx / n, self.sy / n, self.sz / n)


class FiducialCollector:
    """Collects the case's fiducials, in order, from pointer-tip samples in the reference frame.

    Pure: fed ``(t_ns, p_tip_reference or None)`` per tracker sample (None: pointer or
    reference not OK). ``auto``: record a fiducial when the tip dwells (:class:`DwellParams`);
    otherwise only :meth:`collect_now` (a foot pedal) records. Points are in the
    ``reference`` frame, mm, so they are immune to the patient's breathing.
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        params: DwellParams | None = None,
        auto: bool = True,
    ) -> None:
        self.labels = tuple(labels)
        self.params = params or DwellParams()
        self.auto = auto
        self._points: list[tuple[float, float, float]] = []
        self._window_ns = int(self.params.window_s * 1e9)
        self._max_gap_ns = int(self.params.max_gap_s * 1e9)
        self._anchor: tuple[float, float, float] | None = None  # arming reference point
        self._armed = False
        self._reset_window()

    def _reset_window(self) -> None:
        self._old = _Half()
        self._new = _Half()
        self._origin: tuple[float, float, float] | None = None  # subtracted: small sums
        self._chain_start_ns = 0
        self._last_ns: int | None = None

    @property
    def progress(self) -> CollectionProgress:
        return CollectionProgress(len(self._points), len(self.labels), self.labels)

    @property
    def points_reference(self) -> Points:
        """The fiducials (k, 3) collected so far, reference frame, mm, in case order."""
        return np.array(self._points, dtype=np.float64).reshape(-1, 3)

    def feed(self, t_ns: int, p_tip_reference: npt.ArrayLike | None) -> int | None:
        """Add one sample; returns the index of the fiducial recorded by it, else None."""
        if p_tip_reference is None:
            self._reset_window()
            return None
        p = np.asarray(p_tip_reference, dtype=np.float64)
        x, y, z = float(p[0]), float(p[1]), float(p[2])
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            self._reset_window()
            return None
        if self._last_ns is not None and not 0 <= t_ns - self._last_ns <= self._max_gap_ns:
            self._reset_window()  # a gap, or time going backwards: start over
        if self._origin is None:
            self._origin = (x, y, z)
            self._chain_start_ns = t_ns
        self._last_ns = t_ns
        if self._anchor is None:
            self._anchor = (x, y, z)
        if not self._armed and math.dist((x, y, z), self._anchor) > self.params.rearm_mm:
            self._armed = True
        ox, oy, oz = self._origin
        self._new.push((t_ns, x - ox, y - oy, z - oz))
        half_ns = self._window_ns // 2
        while self._new.samples and self._new.samples[0][0] < t_ns - half_ns:
            self._old.push(self._new.pop())
        while self._old.samples and self._old.samples[0][0] < t_ns - self._window_ns:
            self._old.pop()

        if not (self.auto and self._armed and not self.progress.done):
            return None
        if t_ns - self._chain_start_ns < self._window_ns:
            return None
        point = self._still_centroid(full=True)
        if point is None:
            return None
        return self._record(point)

    def _still_centroid(self, *, full: bool) -> tuple[float, float, float] | None:
        """Where the tip rests (reference frame) if it was still over the window, else None.

        ``full``: both halves of the window must hold samples (the drift test needs them);
        otherwise a window shorter than half of ``window_s`` is judged on its scatter alone.
        The point is the newer half's centroid: a hand slows down gradually, and the older
        half may still hold the slow tail of the approach.
        """
        old, new = self._old, self._new
        n = len(old.samples) + len(new.samples)
        if n < self.params.min_samples or (full and not old.samples):
            return None
        if old.samples and math.dist(old.centroid(), new.centroid()) > self.params.radius_mm:
            return None
        cx, cy, cz = (old.sx + new.sx) / n, (old.sy + new.sy) / n, (old.sz + new.sz) / n
        scatter_sq = (old.ss + new.ss) / n - (cx * cx + cy * cy + cz * cz)
        if scatter_sq > self.params.scatter_mm**2:
            return None
        assert self._origin is not None
        ox, oy, oz = self._origin
        nx, ny, nz = new.centroid()
        return (nx + ox, ny + oy, nz + oz)

    def _record(self, point: tuple[float, float, float]) -> int:
        self._points.append(point)
        self._anchor = point
        self._armed = False
        return len(self._points) - 1

    def collect_now(self, t_ns: int) -> int:
        """Record the next fiducial from the recent samples now (a foot pedal); its index.

        Takes the centroid of the OK samples of the last ``window_s / 2``; the tip must have
        been still over the last ``window_s`` (the dwell test's radius and scatter, on however
        many samples there are, ``min_samples`` at least) but need not have been held the
        whole window nor re-armed (a press is deliberate).
        Raises ValueError when all fiducials are collected, there is no OK sample within
        ``max_gap_s`` of ``t_ns``, or the tip was moving.
        """
        if self.progress.done:
            raise ValueError(f"all {len(self.labels)} fiducials are collected")
        if self._last_ns is None or t_ns - self._last_ns > self._max_gap_ns:
            raise ValueError("the pointer tip is not seen (pointer or reference not OK)")
        point = self._still_centroid(full=False)
        if point is None:
            raise ValueError("the pointer tip is moving: hold it still on the fiducial")
        return self._record(point)

"""A simulated Polaris-class optical tracker: pure, deterministic, cheap enough for 1 kHz.

Time is an argument (``t_s``, seconds of simulation time); nothing here reads a clock,
opens a socket or a file. The same ``SimConfig`` and the same ``(t_s, frame_number)``
give bit-identical ``TrackerFrame``s, whatever order or rate the samples are asked in.

Tracker frame (as NDI Polaris reports it): origin at the camera, the measurement volume
in front of it along ``-z``, millimetres. Tools, in frame order:

- ``pointer``: a passive pointer whose tip is ``p_tip_in_pointer`` in its marker frame.
  Driven by a ``PointerScript`` (touch points, trace paths, given in the ``reference``
  frame so they ride on the breathing patient); otherwise it lies still at a rest pose
  on the instrument tray (``T_tracker_from_pointer_rest``).
- ``reference``: the patient marker. Its ``+z`` points out of the patient, towards the
  tracker. It breathes: a sinusoidal translation, ``breathing_peak_to_peak_mm`` at
  ``breathing_hz``, along ``breathing_axis_in_reference`` (fixed, expressed in the base
  pose's axes, so the default is the anterior direction), starting at zero at t = 0.
- ``headset``: the headset's marker, about 1.5 m from the tracker, swaying slowly by a
  few millimetres and degrees (incommensurate sines: never exactly periodic).
- ``tool1`` .. ``tool<extra_tools>``: static dummy markers, for benchmarks with more tools.

Worked example with the defaults: at t = 0 the reference origin is at (0, 150, -1300) mm
in the tracker frame and its z axis is (0, -0.342, 0.940) (tilted 20 degrees about x,
facing the camera); a quarter breath later (t = 1 s at 0.25 Hz) it has moved 2 mm along
that z axis, to (0, 149.316, -1298.121) mm.

Measurement model, per sample and tool: the true pose, then rotational noise about the
marker origin (``R_true @ dR``, rotation vector with per-axis sigma
``noise_deg_rms / sqrt(3)``) and translational noise (per-axis sigma
``noise_mm_rms / sqrt(3)``, so the 3D RMS is ``noise_mm_rms``). The marker fit error is
``noise_mm_rms * sqrt(chi2_3 / 3)`` (RMS ``noise_mm_rms``). Noise comes from a generator
seeded with ``(seed, frame_number)``, so one sample never depends on another.

Status, in order of precedence: ``OUT_OF_VOLUME`` when the marker origin is behind the
camera or outside ``volume_range_mm`` of it (a spherical shell standing in for the
Polaris pyramid, 950-2400 mm by default); ``OUT_OF_VIEW`` while an occlusion event is
running; else ``OK``. A non-OK tool carries the identity and a NaN fit error.

Occlusions: each tool has its own Poisson process of events (mean rate
``dropout_rate_hz``), each lasting ``dropout_duration_s``. The events in each 10 s window
of time are drawn from a generator seeded with ``(seed, tool index, window)``, so the
schedule is a pure function of seed and time: it does not depend on the sample rate.
On top of them, ``forced_occlusions`` (tool, start_s, end_s) intervals, given to the
tracker (the node's ``tool.occlude`` command), make a tool OUT_OF_VIEW on demand: tests
and demos occlude the reference exactly when they need to.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from nav.frames import HEADSET, REFERENCE, TOOL_NAME_PATTERN
from nav.messages import MAX_TOOLS_PER_FRAME, ToolStatus, TrackerFrame
from nav.transforms import Mat3, Mat4, Points, axis_angle_to_matrix, is_rigid, make_rigid

POINTER = "pointer"
BASE_TOOLS: tuple[str, ...] = (POINTER, REFERENCE, HEADSET)
"""The tools every simulated frame carries first, in this order."""

Mat4Rows: TypeAlias = tuple[tuple[float, ...], ...]
"""A 4x4 rigid transform as nested tuples (hashable, TOML-friendly); rows of 4 floats."""

Vec3: TypeAlias = tuple[float, float, float]

# Streams of the seed sequence, so noise and occlusions never share random numbers.
_NOISE_STREAM = 1
_DROPOUT_STREAM = 2
# Occlusion events are drawn per window of this length; any value gives the same
# statistics, 10 s keeps the per-window draw rare and the cache small.
_DROPOUT_WINDOW_S = 10.0
# Rigidity tolerance for configured poses: looser than round-off so that matrices typed
# into a launch file with ~7 significant digits are accepted.
_CONFIG_RIGID_TOL = 1e-6

# Head sway: per-axis frequencies (Hz) and phases (rad), chosen incommensurate so the
# motion never repeats exactly; amplitudes come from the config. The headset's z sway
# is half the lateral one: a standing surgeon moves the head sideways more than back.
_HEAD_T_HZ = (0.11, 0.07, 0.17)
_HEAD_T_PHASE = (0.3, 1.1, 2.0)
_HEAD_T_SCALE = (1.0, 1.0, 0.5)
_HEAD_R_HZ = (0.09, 0.13, 0.05)
_HEAD_R_PHASE = (0.0, 0.7, 1.9)

# Pointer attitude while scripted: the shaft points down at the surface, tilted from
# the reference's -z by 15 +- 5 degrees, the tilt's azimuth wandering 30 +- 25 degrees.
# Surgeons hold a pointer like that; the tilt keeps the markers facing the camera.
_POINTER_TILT_DEG = 15.0
_POINTER_TILT_VAR_DEG = 5.0
_POINTER_TILT_HZ = 0.15
_POINTER_AZIMUTH_DEG = 30.0
_POINTER_AZIMUTH_VAR_DEG = 25.0
_POINTER_AZIMUTH_HZ = 0.04

_UP_IN_REFERENCE = np.array([0.0, 0.0, 1.0])
"""Out of the patient, towards the tracker: the direction a pointer lifts off along."""


def _rows(T: Mat4) -> Mat4Rows:
    return tuple(tuple(float(x) for x in row) for row in T)


def _rot_x(angle_rad: float) -> Mat3:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


DEFAULT_T_TRACKER_FROM_REFERENCE_BASE: Mat4Rows = _rows(
    make_rigid(_rot_x(math.radians(20.0)), [0.0, 150.0, -1300.0])
)
"""Reference 1.3 m in front of the camera, tilted 20 degrees about x to face it."""

DEFAULT_T_TRACKER_FROM_HEADSET_BASE: Mat4Rows = _rows(
    make_rigid(axis_angle_to_matrix([1.0, 0.3, 0.0], math.radians(-15.0)), [250.0, -350.0, -1420.0])
)
"""Headset 1.48 m from the camera, up and to the side of the field, turned 15 degrees."""

DEFAULT_T_TRACKER_FROM_POINTER_REST: Mat4Rows = _rows(
    make_rigid(axis_angle_to_matrix([0.0, 1.0, 0.0], math.radians(90.0)), [-320.0, 220.0, -1180.0])
)
"""Pointer lying on the instrument tray, 1.24 m from the camera, shaft along tracker -x."""


def _check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"SimConfig.{name} must be a finite number, got {value!r}")


def _vec3(name: str, value: Sequence[float] | npt.ArrayLike) -> Vec3:
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return (float(a[0]), float(a[1]), float(a[2]))


def _mat4(name: str, value: Mat4Rows | npt.ArrayLike) -> Mat4Rows:
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (4, 4) or not is_rigid(a, tol=_CONFIG_RIGID_TOL):
        raise ValueError(f"SimConfig.{name} must be a rigid 4x4 transform, got {value!r}")
    return _rows(a)


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Parameters of the simulated tracker; lengths in mm, times in s, angles in degrees.

    Vectors and 4x4 transforms may be given as any array-like; they are stored as tuples
    of floats. Raises ValueError naming the field for any value out of range.
    """

    tracker_name: str = "sim"
    seed: int = 0
    noise_mm_rms: float = 0.25
    """3D RMS of the translational noise (Polaris Vega: about 0.25 mm RMS)."""
    noise_deg_rms: float = 0.05
    """3D RMS of the rotational noise about each marker's origin."""
    breathing_peak_to_peak_mm: float = 4.0
    breathing_hz: float = 0.25
    breathing_axis_in_reference: Vec3 = (0.0, 0.0, 1.0)
    """Direction of the breathing motion, in the reference base pose's axes (normalised)."""
    dropout_rate_hz: float = 0.05
    """Mean rate of occlusion events, per tool; 0 disables occlusions."""
    dropout_duration_s: float = 0.4
    volume_range_mm: tuple[float, float] | None = (950.0, 2400.0)
    """Min and max distance of a visible marker from the camera; None: no volume check."""
    p_tip_in_pointer: Vec3 = (0.0, 0.0, -160.0)
    """Pointer tip in the pointer's marker frame: the shaft runs along the marker's -z."""
    T_tracker_from_reference_base: Mat4Rows = DEFAULT_T_TRACKER_FROM_REFERENCE_BASE
    """The reference's pose at zero breathing displacement."""
    T_tracker_from_headset_base: Mat4Rows = DEFAULT_T_TRACKER_FROM_HEADSET_BASE
    T_tracker_from_pointer_rest: Mat4Rows = DEFAULT_T_TRACKER_FROM_POINTER_REST
    head_sway_mm: float = 5.0
    """Amplitude of the head's lateral sway, per axis."""
    head_sway_deg: float = 2.0
    """Amplitude of the head's rotational sway, per axis."""
    extra_tools: int = 0
    """Number of static dummy markers ``tool1`` .. ``tool<n>`` appended to every frame."""

    def __post_init__(self) -> None:
        if not isinstance(self.tracker_name, str) or not TOOL_NAME_PATTERN.match(self.tracker_name):
            raise ValueError(
                f"SimConfig.tracker_name must match {TOOL_NAME_PATTERN.pattern}, "
                f"got {self.tracker_name!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SimConfig.seed must be an integer >= 0, got {self.seed!r}")
        for name in (
            "noise_mm_rms",
            "noise_deg_rms",
            "breathing_peak_to_peak_mm",
            "dropout_rate_hz",
            "head_sway_mm",
            "head_sway_deg",
        ):
            value = getattr(self, name)
            _check_finite(name, value)
            if value < 0:
                raise ValueError(f"SimConfig.{name} must be >= 0, got {value!r}")
        for name in ("breathing_hz", "dropout_duration_s"):
            value = getattr(self, name)
            _check_finite(name, value)
            if value <= 0:
                raise ValueError(f"SimConfig.{name} must be > 0, got {value!r}")
        axis = _vec3("SimConfig.breathing_axis_in_reference", self.breathing_axis_in_reference)
        if math.hypot(*axis) == 0.0:
            raise ValueError("SimConfig.breathing_axis_in_reference must not be zero")
        object.__setattr__(self, "breathing_axis_in_reference", axis)
        if self.volume_range_mm is not None:
            lo, hi = _vec2_range(self.volume_range_mm)
            object.__setattr__(self, "volume_range_mm", (lo, hi))
        object.__setattr__(
            self, "p_tip_in_pointer", _vec3("SimConfig.p_tip_in_pointer", self.p_tip_in_pointer)
        )
        if math.hypot(*self.p_tip_in_pointer) == 0.0:
            raise ValueError("SimConfig.p_tip_in_pointer must not be at the marker origin")
        for name in (
            "T_tracker_from_reference_base",
            "T_tracker_from_headset_base",
            "T_tracker_from_pointer_rest",
        ):
            object.__setattr__(self, name, _mat4(name, getattr(self, name)))
        n_max = MAX_TOOLS_PER_FRAME - len(BASE_TOOLS)
        if (
            isinstance(self.extra_tools, bool)
            or not isinstance(self.extra_tools, int)
            or not 0 <= self.extra_tools <= n_max
        ):
            raise ValueError(
                f"SimConfig.extra_tools must be an integer in [0, {n_max}], "
                f"got {self.extra_tools!r}"
            )


def _vec2_range(value: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"SimConfig.volume_range_mm must be (min, max) or None, got {value!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
        raise ValueError(f"SimConfig.volume_range_mm must satisfy 0 <= min < max, got {value!r}")
    return lo, hi


# --- the scripted pointer -------------------------------------------------------------


def _points(name: str, value: npt.ArrayLike, *, min_rows: int) -> Points:
    a = np.array(value, dtype=np.float64)  # a copy: the script must not change under us
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] < min_rows:
        raise ValueError(f"{name} must have shape (N, 3) with N >= {min_rows}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    a.setflags(write=False)
    return a


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False, kw_only=True)
class Touch:
    """Touch each point in turn: travel ``travel_s`` (lifting off), then hold ``dwell_s``.

    ``points_in_reference`` (N, 3) mm, in the ``reference`` frame.
    """

    points_in_reference: Points
    dwell_s: float
    travel_s: float

    def __post_init__(self) -> None:
        points = _points("points_in_reference", self.points_in_reference, min_rows=1)
        object.__setattr__(self, "points_in_reference", points)
        object.__setattr__(self, "dwell_s", _positive("dwell_s", self.dwell_s))
        object.__setattr__(self, "travel_s", _positive("travel_s", self.travel_s))


@dataclass(frozen=True, eq=False, kw_only=True)
class Trace:
    """Travel ``travel_s`` to the path's start, then slide along it at ``speed_mm_s``.

    ``polyline_in_reference`` (M, 3) mm, M >= 2, in the ``reference`` frame.
    """

    polyline_in_reference: Points
    speed_mm_s: float
    travel_s: float

    def __post_init__(self) -> None:
        poly = _points("polyline_in_reference", self.polyline_in_reference, min_rows=2)
        if not np.any(np.diff(poly, axis=0)):
            raise ValueError("polyline_in_reference has zero length")
        object.__setattr__(self, "polyline_in_reference", poly)
        object.__setattr__(self, "speed_mm_s", _positive("speed_mm_s", self.speed_mm_s))
        object.__setattr__(self, "travel_s", _positive("travel_s", self.travel_s))


Segment: TypeAlias = Touch | Trace
PhaseKind: TypeAlias = Literal["touch", "trace", "idle"]


@dataclass(frozen=True, kw_only=True)
class ScriptPhase:
    """What the scripted pointer is doing at one instant.

    ``kind``: the segment type, or ``idle`` outside the script. ``segment``: index into
    ``PointerScript.segments`` (-1 when idle). ``index``: for a touch, the point being
    approached or held; for a trace, the polyline leg (from vertex ``index`` to
    ``index + 1``) or 0 while travelling to its start; -1 when idle. ``dwelling``: the
    tip is held still on a touch point. ``contact``: the tip is on the surface (dwelling,
    or sliding along a trace).
    """

    kind: PhaseKind
    segment: int
    index: int
    dwelling: bool
    contact: bool


IDLE = ScriptPhase(kind="idle", segment=-1, index=-1, dwelling=False, contact=False)


@dataclass(frozen=True, kw_only=True)
class Dwell:
    """One held touch: the tip rests on ``p_reference`` (3,) mm for t in [t_start_s, t_end_s)."""

    segment: int
    index: int
    t_start_s: float
    t_end_s: float
    p_reference: Vec3


@dataclass(frozen=True, eq=False, kw_only=True)
class _Piece:
    """One stretch of the script with a single formula: move (lifted), hold or slide."""

    t0: float
    t1: float
    motion: Literal["move", "hold", "slide"]
    phase: ScriptPhase
    p0: npt.NDArray[np.float64]
    p1: npt.NDArray[np.float64]


def _min_jerk(tau: float) -> float:
    # Flash & Hogan (1985) minimum-jerk profile: zero velocity and acceleration at both
    # ends, so a touch arrives at rest, as a hand does.
    return tau * tau * tau * (10.0 + tau * (-15.0 + 6.0 * tau))


@dataclass(frozen=True, eq=False, kw_only=True)
class PointerScript:
    """A pointer tip path in the ``reference`` frame, built from touch and trace segments.

    Script time starts at 0 with the tip hovering ``hover_mm`` above the first target;
    each travel follows a minimum-jerk profile and lifts off the surface by up to
    ``lift_mm`` along the reference's +z. Build it fluently::

        script = PointerScript().touch(fiducials, dwell_s=1.0).trace(path, speed_mm_s=20.0)
    """

    segments: tuple[Segment, ...] = ()
    lift_mm: float = 20.0
    hover_mm: float = 50.0
    _pieces: tuple[_Piece, ...] = field(init=False, repr=False)
    _starts: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("lift_mm", "hover_mm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"PointerScript.{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PointerScript.{name} must be finite and >= 0, got {value!r}")
        pieces: list[_Piece] = []
        if self.segments:
            first = self.segments[0]
            p_first = (
                first.points_in_reference[0]
                if isinstance(first, Touch)
                else first.polyline_in_reference[0]
            )
            p_prev = p_first + self.hover_mm * _UP_IN_REFERENCE
            t = 0.0
            for k, seg in enumerate(self.segments):
                t, p_prev = _append_segment(pieces, seg, segment=k, t=t, p_prev=p_prev)
            if not math.isfinite(t):  # a 1e300 mm polyline, or a speed of 1e-320 mm/s
                raise ValueError(f"the script would last {t} s: its times must be finite")
        object.__setattr__(self, "_pieces", tuple(pieces))
        object.__setattr__(self, "_starts", tuple(p.t0 for p in pieces))

    def touch(
        self, points_in_reference: npt.ArrayLike, *, dwell_s: float = 1.0, travel_s: float = 1.5
    ) -> PointerScript:
        """Return this script followed by touching each of ``points_in_reference`` (N, 3) mm."""
        seg = Touch(
            points_in_reference=_points("points_in_reference", points_in_reference, min_rows=1),
            dwell_s=dwell_s,
            travel_s=travel_s,
        )
        return dataclasses.replace(self, segments=(*self.segments, seg))

    def trace(
        self,
        polyline_in_reference: npt.ArrayLike,
        *,
        speed_mm_s: float = 20.0,
        travel_s: float = 1.5,
    ) -> PointerScript:
        """Return this script followed by tracing ``polyline_in_reference`` (M, 3) mm, M >= 2.

        Raises ValueError if the polyline has zero length.
        """
        seg = Trace(
            polyline_in_reference=_points(
                "polyline_in_reference", polyline_in_reference, min_rows=2
            ),
            speed_mm_s=speed_mm_s,
            travel_s=travel_s,
        )
        return dataclasses.replace(self, segments=(*self.segments, seg))

    @property
    def duration_s(self) -> float:
        """Script time at which the last segment ends (0 for an empty script)."""
        return self._pieces[-1].t1 if self._pieces else 0.0

    def _piece(self, t_s: float) -> _Piece | None:
        if not self._pieces or not 0.0 <= t_s <= self.duration_s:
            return None
        # A boundary instant belongs to the piece that starts there (a dwell includes its
        # first instant), except the very end, which belongs to the last piece.
        return self._pieces[max(bisect.bisect_right(self._starts, t_s) - 1, 0)]

    def phase(self, t_s: float) -> ScriptPhase:
        """What the pointer does at script time ``t_s``; ``IDLE`` outside [0, duration_s]."""
        piece = self._piece(t_s)
        return IDLE if piece is None else piece.phase

    def tip_in_reference(self, t_s: float) -> npt.NDArray[np.float64]:
        """The tip (3,) mm in the reference frame at script time ``t_s``.

        Clamped outside [0, duration_s]: the hover start before, the last position after.
        Raises ValueError for an empty script.
        """
        if not self._pieces:
            raise ValueError("the script is empty")
        t_s = min(max(t_s, 0.0), self.duration_s)
        piece = self._piece(t_s)
        assert piece is not None  # t_s was clamped into the script
        if piece.motion == "hold":
            return piece.p1.copy()  # exact: a held touch sits on the point to the last bit
        tau = (t_s - piece.t0) / (piece.t1 - piece.t0)
        if piece.motion == "slide":
            p: npt.NDArray[np.float64] = piece.p0 + tau * (piece.p1 - piece.p0)
            return p
        s = _min_jerk(tau)
        # 4 s (1 - s) rises to 1 halfway and is 0 at both ends: lift off, then land.
        lift = self.lift_mm * 4.0 * s * (1.0 - s)
        p = piece.p0 + s * (piece.p1 - piece.p0) + lift * _UP_IN_REFERENCE
        return p

    def dwells(self) -> tuple[Dwell, ...]:
        """Every held touch, in script order (times in script time)."""
        return tuple(
            Dwell(
                segment=p.phase.segment,
                index=p.phase.index,
                t_start_s=p.t0,
                t_end_s=p.t1,
                p_reference=(float(p.p1[0]), float(p.p1[1]), float(p.p1[2])),
            )
            for p in self._pieces
            if p.motion == "hold"
        )


def _append_segment(
    pieces: list[_Piece],
    seg: Segment,
    *,
    segment: int,
    t: float,
    p_prev: npt.NDArray[np.float64],
) -> tuple[float, npt.NDArray[np.float64]]:
    """Append the pieces of ``seg`` (index ``segment``) starting at ``t`` from ``p_prev``.

    Returns the time and tip position at which the segment ends.
    """

    def add(
        t0: float,
        t1: float,
        motion: Literal["move", "hold", "slide"],
        phase: ScriptPhase,
        p0: npt.NDArray[np.float64],
        p1: npt.NDArray[np.float64],
    ) -> float:
        pieces.append(_Piece(t0=t0, t1=t1, motion=motion, phase=phase, p0=p0, p1=p1))
        return t1

    if isinstance(seg, Touch):
        for i, p in enumerate(seg.points_in_reference):
            approach = ScriptPhase(
                kind="touch", segment=segment, index=i, dwelling=False, contact=False
            )
            t = add(t, t + seg.travel_s, "move", approach, p_prev, p)
            held = ScriptPhase(kind="touch", segment=segment, index=i, dwelling=True, contact=True)
            t = add(t, t + seg.dwell_s, "hold", held, p, p)
            p_prev = p
        return t, p_prev
    poly = seg.polyline_in_reference
    approach = ScriptPhase(kind="trace", segment=segment, index=0, dwelling=False, contact=False)
    t = add(t, t + seg.travel_s, "move", approach, p_prev, poly[0])
    for i in range(len(poly) - 1):
        length = float(np.linalg.norm(poly[i + 1] - poly[i]))
        if length == 0.0:
            continue  # a repeated vertex takes no time
        sliding = ScriptPhase(kind="trace", segment=segment, index=i, dwelling=False, contact=True)
        t = add(t, t + length / seg.speed_mm_s, "slide", sliding, poly[i], poly[i + 1])
    return t, poly[-1]


# --- occlusions -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _window_events(seed: int, tool_index: int, window: int, rate_hz: float) -> tuple[float, ...]:
    """Start times (s, sorted) of the occlusion events of one tool in one time window."""
    # Zigzag so that negative windows (times before 0) get their own non-negative key.
    key = 2 * window if window >= 0 else -2 * window - 1
    rng = np.random.default_rng((_DROPOUT_STREAM, seed, tool_index, key))
    n = int(rng.poisson(rate_hz * _DROPOUT_WINDOW_S))
    starts = window * _DROPOUT_WINDOW_S + _DROPOUT_WINDOW_S * rng.random(n)
    return tuple(sorted(float(s) for s in starts))


def _event_starts(
    cfg: SimConfig, tool_index: int, *, t_start_s: float, t_end_s: float
) -> list[float]:
    """Starts of every event of one tool that overlaps [t_start_s, t_end_s]."""
    if cfg.dropout_rate_hz == 0.0:
        return []
    first = math.floor((t_start_s - cfg.dropout_duration_s) / _DROPOUT_WINDOW_S)
    last = math.floor(t_end_s / _DROPOUT_WINDOW_S)
    return [
        s
        for w in range(first, last + 1)
        for s in _window_events(cfg.seed, tool_index, w, cfg.dropout_rate_hz)
        if s + cfg.dropout_duration_s > t_start_s and s <= t_end_s
    ]


def _occluded(cfg: SimConfig, tool_index: int, t_s: float) -> bool:
    # An event covers [start, start + duration).
    return any(
        s <= t_s < s + cfg.dropout_duration_s
        for s in _event_starts(cfg, tool_index, t_start_s=t_s, t_end_s=t_s)
    )


# --- the tracker ----------------------------------------------------------------------


# The skew-symmetric matrix [r]x as a linear map of r: [r]x.ravel() == r @ _SKEW_BASIS.
_SKEW_BASIS = np.array(
    [
        [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
_EYE_9 = np.eye(3).reshape(1, 9)


def _rotvecs_to_matrices(rotvecs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rodrigues' formula for a stack of rotation vectors (N, 3) rad -> (N, 3, 3).

    R = cos(a) I + sin(a)/a [r]x + (1 - cos a)/a^2 r r^T with a = |r|, the coefficients
    written through h = a/2 (sin a / a = cos h sin h / h, (1 - cos a)/a^2 = (sin h / h)^2 / 2)
    so that small angles lose no digits, and a is floored at 1e-300 so that a zero vector
    gives the identity with no branch. All numpy on the stack: one sample's noise for
    every tool costs a dozen array operations, not a dozen per tool.
    """
    h = 0.5 * np.maximum(np.sqrt(np.einsum("ij,ij->i", rotvecs, rotvecs)), 1e-300)
    sin_h, cos_h = np.sin(h), np.cos(h)
    sinc_h = sin_h / h
    outer = (rotvecs[:, :, None] * rotvecs[:, None, :]).reshape(-1, 9)
    R = (
        (1.0 - 2.0 * sin_h * sin_h)[:, None] * _EYE_9
        + (sinc_h * cos_h)[:, None] * (rotvecs @ _SKEW_BASIS)
        + (0.5 * sinc_h * sinc_h)[:, None] * outer
    )
    return R.reshape(-1, 3, 3)


def _rotvec_to_matrix(x: float, y: float, z: float) -> Mat3:
    """Rodrigues' formula for one rotation vector (rad), in scalar math (cheaper than numpy)."""
    a = math.sqrt(x * x + y * y + z * z)
    if a == 0.0:
        return np.eye(3)
    h = 0.5 * a
    sinc_h = math.sin(h) / h
    c1 = sinc_h * math.cos(h)
    c2 = 0.5 * sinc_h * sinc_h
    c0 = math.cos(a)
    return np.array(
        [
            [c0 + c2 * x * x, c2 * x * y - c1 * z, c2 * x * z + c1 * y],
            [c2 * x * y + c1 * z, c0 + c2 * y * y, c2 * y * z - c1 * x],
            [c2 * x * z - c1 * y, c2 * y * z + c1 * x, c0 + c2 * z * z],
        ]
    )


def _rotation_from_to(u: npt.NDArray[np.float64], v: npt.NDArray[np.float64]) -> Mat3:
    """The smallest rotation taking unit vector ``u`` onto unit vector ``v``."""
    axis = np.cross(u, v)
    sin_a = float(np.linalg.norm(axis))
    cos_a = float(np.dot(u, v))
    if sin_a < 1e-12:
        if cos_a > 0:
            return np.eye(3)
        # Opposite vectors: any axis perpendicular to u will do.
        axis = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    return axis_angle_to_matrix(axis, math.atan2(sin_a, cos_a))


def _pointer_attitude(t_s: float) -> Mat3:
    """R_reference_from_shaft at script time ``t_s``: Rz(azimuth) @ Rx(tilt)."""
    tilt = math.radians(
        _POINTER_TILT_DEG + _POINTER_TILT_VAR_DEG * math.sin(2 * math.pi * _POINTER_TILT_HZ * t_s)
    )
    azimuth = math.radians(
        _POINTER_AZIMUTH_DEG
        + _POINTER_AZIMUTH_VAR_DEG * math.sin(2 * math.pi * _POINTER_AZIMUTH_HZ * t_s + 0.5)
    )
    ct, st, ca, sa = math.cos(tilt), math.sin(tilt), math.cos(azimuth), math.sin(azimuth)
    return np.array([[ca, -sa * ct, sa * st], [sa, ca * ct, -ca * st], [0.0, st, ct]])


class SimulatedTracker:
    """Samples ``TrackerFrame``s of the simulated tracker; see the module docstring.

    ``script`` drives the pointer from sim time ``script_start_s`` until the script
    ends; before and after, the pointer lies at its rest pose. ``forced_occlusions``:
    ``(tool, start_s, end_s)`` intervals [start, end) of sim time in which the tool is
    OUT_OF_VIEW whatever the random schedule says (OUT_OF_VOLUME still wins). Immutable
    once built; ``with_occlusion`` returns a new tracker with one more interval.
    Raises ValueError for an unknown tool or an interval that is not finite and ordered.
    """

    def __init__(
        self,
        cfg: SimConfig,
        script: PointerScript | None = None,
        *,
        script_start_s: float = 0.0,
        forced_occlusions: Sequence[tuple[str, float, float]] = (),
    ) -> None:
        if not math.isfinite(script_start_s):
            raise ValueError(f"script_start_s must be finite, got {script_start_s!r}")
        self.cfg = cfg
        self.script = script if script is not None and script.segments else None
        self.script_start_s = float(script_start_s)
        self.tools: tuple[str, ...] = BASE_TOOLS + tuple(
            f"tool{i}" for i in range(1, cfg.extra_tools + 1)
        )
        self._index = {tool: i for i, tool in enumerate(self.tools)}
        forced: list[tuple[str, float, float]] = []
        for tool, start_s, end_s in forced_occlusions:
            if tool not in self._index:
                raise ValueError(f"unknown tool {tool!r}; this tracker has {list(self.tools)}")
            if not (math.isfinite(start_s) and math.isfinite(end_s) and start_s <= end_s):
                raise ValueError(f"occlusion of {tool!r}: [{start_s}, {end_s}) is not an interval")
            forced.append((tool, float(start_s), float(end_s)))
        self.forced_occlusions: tuple[tuple[str, float, float], ...] = tuple(forced)
        self._forced_by_index: dict[int, tuple[tuple[float, float], ...]] = {
            self._index[tool]: tuple((s, e) for t, s, e in forced if t == tool)
            for tool in {t for t, _, _ in forced}
        }
        self._T_reference_base = np.array(cfg.T_tracker_from_reference_base)
        self._T_headset_base = np.array(cfg.T_tracker_from_headset_base)
        self._T_pointer_rest = np.array(cfg.T_tracker_from_pointer_rest)
        axis = np.array(cfg.breathing_axis_in_reference)
        # Fixed in the tracker frame: the table does not turn while the patient breathes.
        self._breathing_dir = self._T_reference_base[:3, :3] @ (axis / np.linalg.norm(axis))
        self._breathing_amp_mm = 0.5 * cfg.breathing_peak_to_peak_mm
        self._p_tip = np.array(cfg.p_tip_in_pointer)
        # Turns the pointer's shaft (marker -> tip) onto -z, whatever p_tip_in_pointer is.
        self._R_shaft_from_pointer = _rotation_from_to(
            self._p_tip / np.linalg.norm(self._p_tip), np.array([0.0, 0.0, -1.0])
        )
        self._T_extras = np.empty((cfg.extra_tools, 4, 4))
        for i in range(cfg.extra_tools):
            # A grid of 8 per row, 1.5-1.9 m away: inside the default volume.
            p = [-350.0 + 100.0 * (i % 8), 350.0, -1500.0 - 60.0 * (i // 8)]
            self._T_extras[i] = make_rigid(np.eye(3), p)
        self._sigma_t_mm = cfg.noise_mm_rms / math.sqrt(3.0)
        self._sigma_r_rad = math.radians(cfg.noise_deg_rms) / math.sqrt(3.0)

    def with_occlusion(self, tool: str, *, start_s: float, duration_s: float) -> SimulatedTracker:
        """This tracker with ``tool`` forced OUT_OF_VIEW for [start_s, start_s + duration_s)."""
        if not (math.isfinite(duration_s) and duration_s >= 0.0):
            raise ValueError(f"duration_s must be finite and >= 0, got {duration_s!r}")
        return SimulatedTracker(
            self.cfg,
            self.script,
            script_start_s=self.script_start_s,
            forced_occlusions=(*self.forced_occlusions, (tool, start_s, start_s + duration_s)),
        )

    def _forced(self, tool_index: int, t_s: float) -> bool:
        return any(s <= t_s < e for s, e in self._forced_by_index.get(tool_index, ()))

    # --- ground truth ---------------------------------------------------------------

    def _reference(self, t_s: float) -> Mat4:
        T = self._T_reference_base.copy()
        offset = self._breathing_amp_mm * math.sin(2.0 * math.pi * self.cfg.breathing_hz * t_s)
        T[:3, 3] += offset * self._breathing_dir
        return T

    def _headset(self, t_s: float) -> Mat4:
        w = 2.0 * math.pi * t_s
        d_mm, r_rad = self.cfg.head_sway_mm, math.radians(self.cfg.head_sway_deg)
        T_base_from_now = np.eye(4)
        T_base_from_now[:3, :3] = _rotvec_to_matrix(
            *(r_rad * math.sin(f * w + ph) for f, ph in zip(_HEAD_R_HZ, _HEAD_R_PHASE, strict=True))
        )
        T_base_from_now[:3, 3] = [
            d_mm * k * math.sin(f * w + ph)
            for f, ph, k in zip(_HEAD_T_HZ, _HEAD_T_PHASE, _HEAD_T_SCALE, strict=True)
        ]
        T: Mat4 = self._T_headset_base @ T_base_from_now
        return T

    def _pointer(self, t_s: float, T_tracker_from_reference: Mat4) -> Mat4:
        if self.script is None:
            return self._T_pointer_rest.copy()
        t_script = t_s - self.script_start_s
        if not 0.0 <= t_script <= self.script.duration_s:
            return self._T_pointer_rest.copy()
        R = _pointer_attitude(t_script) @ self._R_shaft_from_pointer
        T_reference_from_pointer = np.eye(4)
        T_reference_from_pointer[:3, :3] = R
        # Placed so that the tip, not the marker, is where the script says.
        T_reference_from_pointer[:3, 3] = self.script.tip_in_reference(t_script) - R @ self._p_tip
        T: Mat4 = T_tracker_from_reference @ T_reference_from_pointer
        return T

    def true_poses(self, t_s: float) -> npt.NDArray[np.float64]:
        """Noise-free ``T_tracker_from_<tool>`` (N, 4, 4) mm for every tool in ``tools``."""
        Ts = np.empty((len(self.tools), 4, 4))
        T_reference = self._reference(t_s)
        Ts[0] = self._pointer(t_s, T_reference)
        Ts[1] = T_reference
        Ts[2] = self._headset(t_s)
        Ts[3:] = self._T_extras
        return Ts

    def true_pose(self, tool: str, t_s: float) -> Mat4:
        """Noise-free ``T_tracker_from_<tool>`` (4, 4) mm at sim time ``t_s``.

        Raises KeyError for a tool this tracker does not carry.
        """
        i = self._index[tool]
        T: Mat4 = self.true_poses(t_s)[i]
        return T

    def true_tip_in_tracker(self, t_s: float) -> npt.NDArray[np.float64]:
        """Noise-free pointer tip (3,) mm in the tracker frame at sim time ``t_s``."""
        T = self._pointer(t_s, self._reference(t_s))
        p: npt.NDArray[np.float64] = T[:3, :3] @ self._p_tip + T[:3, 3]
        return p

    def phase(self, t_s: float) -> ScriptPhase:
        """The pointer script's phase at sim time ``t_s`` (``IDLE`` with no script)."""
        if self.script is None:
            return IDLE
        return self.script.phase(t_s - self.script_start_s)

    # --- visibility -----------------------------------------------------------------

    def _statuses(self, t_s: float, Ts: npt.NDArray[np.float64]) -> list[ToolStatus]:
        cfg = self.cfg
        if cfg.volume_range_mm is None:
            inside = [True] * len(self.tools)
        else:
            lo, hi = cfg.volume_range_mm
            r = np.sqrt(np.einsum("ij,ij->i", Ts[:, :3, 3], Ts[:, :3, 3]))
            # The volume is in front of the camera, along -z.
            inside = ((r >= lo) & (r <= hi) & (Ts[:, 2, 3] < 0.0)).tolist()
        return [
            ToolStatus.OUT_OF_VOLUME
            if not inside[i]
            else ToolStatus.OUT_OF_VIEW
            if self._forced(i, t_s) or _occluded(cfg, i, t_s)
            else ToolStatus.OK
            for i in range(len(self.tools))
        ]

    def status(self, tool: str, t_s: float) -> ToolStatus:
        """The status ``sample`` reports for ``tool`` at sim time ``t_s``; KeyError if unknown."""
        i = self._index[tool]
        return self._statuses(t_s, self.true_poses(t_s))[i]

    def occlusion_intervals(
        self, tool: str, *, t_start_s: float, t_end_s: float
    ) -> tuple[tuple[float, float], ...]:
        """The times (s) ``tool`` is occluded within [t_start_s, t_end_s], merged and clipped.

        Sorted, disjoint ``(start, end)`` pairs; OUT_OF_VOLUME is not counted here.
        """
        i = self._index[tool]
        events = [
            (s, s + self.cfg.dropout_duration_s)
            for s in _event_starts(self.cfg, i, t_start_s=t_start_s, t_end_s=t_end_s)
        ]
        events += [(s, e) for s, e in self._forced_by_index.get(i, ()) if e > t_start_s]
        merged: list[list[float]] = []
        for s, e in sorted(events):
            lo, hi = max(s, t_start_s), min(e, t_end_s)
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return tuple((lo, hi) for lo, hi in merged if hi > lo)

    # --- measurement ----------------------------------------------------------------

    def sample(self, t_s: float, *, frame_number: int, t_sensor_ns: int) -> TrackerFrame:
        """One tracker sample at sim time ``t_s``: every tool, noisy, with its status.

        ``frame_number`` (>= 0) seeds the noise with the config's seed; ``t_sensor_ns`` is
        copied into the frame. Raises ValueError for a non-finite ``t_s`` or a negative
        ``frame_number`` or ``t_sensor_ns``.
        """
        if not math.isfinite(t_s):
            raise ValueError(f"t_s must be finite, got {t_s!r}")
        if frame_number < 0 or t_sensor_ns < 0:
            raise ValueError(
                f"frame_number and t_sensor_ns must be >= 0, got {frame_number}, {t_sensor_ns}"
            )
        Ts = self.true_poses(t_s)
        statuses = self._statuses(t_s, Ts)
        n = len(self.tools)
        # Every tool draws its noise whatever its status, so the stream for a frame is
        # the same whether or not a tool is occluded.
        z = np.random.default_rng((_NOISE_STREAM, self.cfg.seed, frame_number)).standard_normal(
            (n, 9)
        )
        dR = _rotvecs_to_matrices(self._sigma_r_rad * z[:, 3:6])
        Ts[:, :3, :3] = np.matmul(Ts[:, :3, :3], dR)
        Ts[:, :3, 3] += self._sigma_t_mm * z[:, :3]
        fit = self.cfg.noise_mm_rms * np.sqrt(np.einsum("ij,ij->i", z[:, 6:], z[:, 6:]) / 3.0)
        for i, status in enumerate(statuses):
            if status is not ToolStatus.OK:
                Ts[i] = np.eye(4)
                fit[i] = np.nan
        return TrackerFrame(
            tracker=self.cfg.tracker_name,
            t_sensor_ns=int(t_sensor_ns),
            frame_number=int(frame_number),
            tools=self.tools,
            T_tracker_from_tools=Ts,
            statuses=tuple(statuses),
            fit_errors_mm=fit,
        )

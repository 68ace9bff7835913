"""Control requests and replies: the typed content of a ``Command``'s args and a ``Reply``'s result.

The envelope stays ``Command(name, args)`` / ``Reply(ok, result, error)`` (``nav.messages.bus``,
REQ/REP on a node's control socket). A request type is the one place that writes a
command's args (``to_args``) and reads them (``from_args``: an unknown, missing or
mistyped argument raises a one-line ValueError, which the node answers as the reply's
error, nothing changed); a reply type does the same for a result (``to_result`` /
``from_result``, ValueError for a malformed result). Neither side passes a loose dict on.
A type's keys are its dataclass fields unless its docstring says otherwise; ``NAME`` is
the command a request belongs to. A result carries no NaN (JSON has none): an unknown
number is null (None).

The nav node's commands (``nav/nav_node.py``; the rules are the navigator session's,
``nav/session.py``):

====================== ===================== ==========================================
command                request               reply
====================== ===================== ==========================================
registration.start     StartCollection       FiducialProgress or TraceProgress
registration.collect   CollectFiducial       FiducialCollected
registration.compute   ComputeRegistration   FiducialsProposed or SurfaceComputeStarted
registration.accept    AcceptRegistration    RegistrationAccepted
registration.reject    RejectRegistration    RegistrationRef
registration.verify    VerifyRegistration    RegistrationRef
registration.status    GetRegistrationStatus RegistrationStatus
case.load              LoadCase              CaseLoaded
====================== ===================== ==========================================

The simulated tracker's commands (``tracking/sim_node.py``: a scripted pointer and forced
occlusions, for tests and demos; the ranges are this module's constants):

====================== ===================== ==========================================
command                request               reply
====================== ===================== ==========================================
pointer.touch          PointerTouch          ScriptStarted
pointer.trace          PointerTrace          ScriptStarted
pointer.rest           PointerRest           ScriptStarted
tool.occlude           OccludeTool           ToolOccluded
====================== ===================== ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from nav.messages.bus import RegistrationResult
from nav.messages.wire import JsonValue, field_names

METHODS: Final = ("points", "surface", "deformable")
"""Registration methods: "points" (paired fiducials), "surface" (a traced organ, rigid) and
"deformable" (a traced organ, the active registration deformed onto it)."""
SURFACE_METHODS: Final = ("surface", "deformable")
"""The methods that collect surface points (``TraceProgress``) and compute on a worker."""
COMPUTE_STATES: Final = ("running", "proposed", "refused", "discarded")

Args = Mapping[str, JsonValue]


# --- reading a map -----------------------------------------------------------------------


def _check_keys(
    args: Args, what: str, *, allowed: frozenset[str], required: frozenset[str] = frozenset()
) -> None:
    if not isinstance(args, Mapping):
        raise ValueError(f"{what}: expected a map, got {type(args).__name__}")
    unknown = sorted(set(args) - allowed, key=repr)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"unknown argument {unknown[0]!r} (known: {known})")
    missing = sorted(required - set(args))
    if missing:
        raise ValueError(f"{what}: missing {missing[0]!r}")


def _bool(args: Args, key: str) -> bool:
    value = args[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be true or false")
    return value


def _int(args: Args, key: str, *, minimum: int = 0) -> int:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(value: JsonValue, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number, got {value!r}")
    return float(value)


def _opt_float(value: JsonValue, key: str) -> float | None:
    return None if value is None else _float(value, key)


def _str(args: Args, key: str) -> str:
    value = args[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _opt_str(args: Args, key: str) -> str | None:
    return None if args[key] is None else _str(args, key)


def _strs(args: Args, key: str) -> tuple[str, ...]:
    value = args[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return tuple(str(v) for v in value)


def _floats(args: Args, key: str) -> tuple[float, ...]:
    value = args[key]
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list of numbers")
    return tuple(_float(v, key) for v in value)


def _floats_by_name(args: Args, key: str) -> dict[str, float | None]:
    value = args[key]
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be a map of names to numbers")
    return {name: _opt_float(v, key) for name, v in value.items()}


def _map(args: Args, key: str) -> Args:
    value = args[key]
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be a map, got {type(value).__name__}")
    return value


def _json_float(value: float | None) -> float | None:
    # JSON has no NaN: an unknown value is null.
    return None if value is None or not math.isfinite(value) else float(value)


def _method(value: JsonValue) -> str:
    if value not in METHODS:
        raise ValueError(
            f"unknown method {value!r}: 'points' (fiducials), 'surface' (traced) or "
            "'deformable' (traced, from the active registration)"
        )
    assert isinstance(value, str)
    return value


# --- requests ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StartCollection:
    """Start collecting points for a registration (``registration.start``).

    ``method`` "points": the case's fiducials in case order; with ``dwell`` a held tip
    records the next one (``nav.collectors.DwellParams``), without it only
    ``registration.collect`` (a foot pedal) does. Replies ``FiducialProgress``.
    ``method`` "surface": while pointer and reference are both OK, the tip (reference
    frame) is recorded every ``surface_spacing_mm`` of motion up to ``surface_max_points``
    (``nav.collectors.SurfaceCollector``): the surgeon traces the organ; ``dwell`` does
    not apply. Replies ``TraceProgress``.
    ``method`` "deformable": a surface collection as for "surface" (the pointer's trace and
    the surface cameras' clouds), for a deformable fit that starts from the active
    registration: refused (one line) when there is none, or when the active one was
    restored and still needs verification (a deformation fitted on top of a pose that
    may be off would bend the organ to make up for it). Replies ``TraceProgress``.
    Any method: a running collection starts over and a pending proposal is discarded.
    Both arguments are optional (defaults: "points", true).
    """

    NAME: ClassVar[str] = "registration.start"
    method: str = "points"
    dwell: bool = True

    def __post_init__(self) -> None:
        _method(self.method)
        if not isinstance(self.dwell, bool):
            raise ValueError("'dwell' must be true or false")

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _check_keys(args, cls.NAME, allowed=frozenset({"method", "dwell"}))
        method = _method(args.get("method", "points"))
        dwell = _bool(args, "dwell") if "dwell" in args else True
        return cls(method=method, dwell=dwell)

    def to_args(self) -> dict[str, JsonValue]:
        return {"method": self.method, "dwell": self.dwell}


@dataclass(frozen=True)
class _NoArgs:
    """A request without arguments: any argument is refused."""

    NAME: ClassVar[str] = ""

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _check_keys(args, cls.NAME, allowed=frozenset())
        return cls()

    def to_args(self) -> dict[str, JsonValue]:
        return {}


@dataclass(frozen=True)
class CollectFiducial(_NoArgs):
    """Record the current tip as the next fiducial now (a foot pedal); the tip must be still.

    Fiducial collections only: a surface collection records as the tip moves.
    Replies ``FiducialCollected``.
    """

    NAME: ClassVar[str] = "registration.collect"


@dataclass(frozen=True)
class ComputeRegistration(_NoArgs):
    """Register the points collected so far; the result is a proposal (state "proposed").

    Points: paired-point registration of the fiducials (3 at least); replies
    ``FiducialsProposed``.
    Surface: rigid surface registration of the points traced (20 at least) to the case's
    organ (its first structure with role "organ"), started from the active registration
    (the clinical flow: fiducials first, the surface refines them), from a global search
    when there is none (less reliable: on a 35 % patch of the phantom's anterior face it
    often lands in a wrong minimum or is refused, so register by fiducials first), or
    both competing when the active one is restored and unverified. It runs on a worker
    thread (measured on the phantom from a fiducial start, best of 3 on a shared 2-core
    machine: 14 ms for 500 points, 29 ms for 2000, 50 ms for 5000; with a global search
    ~0.5-1 s, during which the loop would publish no ``nav/state`` and miss the stale
    instant), so the reply, ``SurfaceComputeStarted``, comes at once.
    Deformable: ``nav.registration.deformable.register_deformable`` of the points traced
    (20 at least) to the organ, from the active registration's rigid transform, on the
    same worker, on the torch device of the node's ``deformable_device``; refused at
    once when that device is not here. Replies ``SurfaceComputeStarted``
    (``method`` "deformable"). Beyond the fit's own refusals (too little overlap), a fit
    that moves the organ implausibly far is refused (``nav.navigation.
    register_organ_deformable`` says how far). When it is done,
    the proposal is published on ``nav/registration`` and shown by
    ``registration.status``; a refusal (too little overlap, no convergence, an
    unconstrained patch) leaves every state as it was and is shown by
    ``registration.status`` as ``compute.error`` (one line). Refusals known before the
    start (too few points, no organ, a compute already running) are the reply's error.
    A ``registration.start``, ``accept`` or ``case.load`` before it finishes discards
    its result.
    """

    NAME: ClassVar[str] = "registration.compute"


@dataclass(frozen=True)
class AcceptRegistration(_NoArgs):
    """The proposal becomes the active registration ("accepted"), is written to the node's
    ``registration_file`` and navigation shows it; collection ends.
    Replies ``RegistrationAccepted``."""

    NAME: ClassVar[str] = "registration.accept"


@dataclass(frozen=True)
class RejectRegistration(_NoArgs):
    """Drop the proposal ("rejected"); the active one stays. Replies ``RegistrationRef``."""

    NAME: ClassVar[str] = "registration.reject"


@dataclass(frozen=True)
class VerifyRegistration(_NoArgs):
    """The user confirmed a restored registration (touched a landmark and saw the tip
    where it belongs): clears ``needs_verification``. Replies ``RegistrationRef``."""

    NAME: ClassVar[str] = "registration.verify"


@dataclass(frozen=True)
class GetRegistrationStatus(_NoArgs):
    """Collection progress, the active registration, the proposal and the last surface or
    deformable compute. Replies ``RegistrationStatus``."""

    NAME: ClassVar[str] = "registration.status"


@dataclass(frozen=True, kw_only=True)
class LoadCase:
    """Load another case folder ``path`` (the loop blocks while its meshes are read).

    Drops every registration, then restores the node's ``registration_file`` if it is
    for that case. Replies ``CaseLoaded``.
    """

    NAME: ClassVar[str] = "case.load"
    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("'path' must name a case folder")

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _check_keys(args, cls.NAME, allowed=frozenset({"path"}))
        path = args.get("path")
        if not isinstance(path, str):
            raise ValueError("'path' must name a case folder")
        return cls(path=path)

    def to_args(self) -> dict[str, JsonValue]:
        return {"path": self.path}


# --- replies -----------------------------------------------------------------------------


def _read(cls: type, result: Args, *, extra: frozenset[str] = frozenset()) -> None:
    """Check that ``result`` holds exactly ``cls``'s fields and ``extra``."""
    keys = field_names(cls) | extra
    _check_keys(result, cls.__name__, allowed=keys, required=keys)


@dataclass(frozen=True, kw_only=True)
class FiducialProgress:
    """``collected`` of ``total`` fiducials, in case order (``labels``); ``next_label`` None
    when all are in. The result also carries ``"method": "points"``."""

    collected: int
    total: int
    labels: tuple[str, ...]
    next_label: str | None

    def to_result(self) -> dict[str, JsonValue]:
        return {
            "method": "points",
            "collected": self.collected,
            "total": self.total,
            "labels": list(self.labels),
            "next_label": self.next_label,
        }

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result, extra=frozenset({"method"}))
        if result["method"] != "points":
            raise ValueError(f"'method' must be 'points', got {result['method']!r}")
        return cls(
            collected=_int(result, "collected"),
            total=_int(result, "total"),
            labels=_strs(result, "labels"),
            next_label=_opt_str(result, "next_label"),
        )

    @property
    def done(self) -> bool:
        return self.collected >= self.total


@dataclass(frozen=True, kw_only=True)
class TraceProgress:
    """``collected`` of at most ``max_points`` surface points, ``path_length_mm`` traced so
    far; ``full``: no more are recorded. ``method``: the collection's, "surface" or
    "deformable" (one of ``SURFACE_METHODS``)."""

    collected: int
    max_points: int
    path_length_mm: float
    full: bool
    method: str = "surface"

    def __post_init__(self) -> None:
        if self.method not in SURFACE_METHODS:
            raise ValueError(f"'method' must be one of {SURFACE_METHODS}, got {self.method!r}")

    def to_result(self) -> dict[str, JsonValue]:
        return {
            "method": self.method,
            "collected": self.collected,
            "max_points": self.max_points,
            "path_length_mm": self.path_length_mm,
            "full": self.full,
        }

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(
            collected=_int(result, "collected"),
            max_points=_int(result, "max_points"),
            path_length_mm=_float(result["path_length_mm"], "path_length_mm"),
            full=_bool(result, "full"),
            method=_str(result, "method"),
        )


Progress = FiducialProgress | TraceProgress


def progress_from_result(result: Args) -> Progress:
    """A ``registration.start`` result (or a status's ``progress``), by its ``method``."""
    if not isinstance(result, Mapping):
        raise ValueError(f"progress: expected a map, got {type(result).__name__}")
    method = _method(result.get("method"))
    if method == "points":
        return FiducialProgress.from_result(result)
    return TraceProgress.from_result(result)


@dataclass(frozen=True, kw_only=True)
class FiducialCollected:
    """The progress after ``registration.collect``, and the ``label`` of the point recorded.

    The result is the progress's, plus ``label``."""

    progress: FiducialProgress
    label: str

    def to_result(self) -> dict[str, JsonValue]:
        return {**self.progress.to_result(), "label": self.label}

    @classmethod
    def from_result(cls, result: Args) -> Self:
        if not isinstance(result, Mapping) or "label" not in result:
            raise ValueError("FiducialCollected: missing 'label'")
        progress = {k: v for k, v in result.items() if k != "label"}
        return cls(progress=FiducialProgress.from_result(progress), label=_str(result, "label"))


@dataclass(frozen=True, kw_only=True)
class Residuals:
    """The distribution of a surface registration's per-point residuals, mm (None: no
    points). The message and the file carry them all; a reply carries this summary."""

    count: int
    median: float | None
    p95: float | None
    max: float | None

    def to_result(self) -> dict[str, JsonValue]:
        return {
            "count": self.count,
            "median": _json_float(self.median),
            "p95": _json_float(self.p95),
            "max": _json_float(self.max),
        }

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(
            count=_int(result, "count"),
            median=_opt_float(result["median"], "median"),
            p95=_opt_float(result["p95"], "p95"),
            max=_opt_float(result["max"], "max"),
        )


@dataclass(frozen=True, kw_only=True)
class RegistrationSummary:
    """One registration, as a reply shows it (the full one is on ``nav/registration``).

    ``fre_mm``: for "points" the FRE; for "surface" and "deformable" the RMS
    point-to-surface residual of the inliers. ``fle_mm``: the FLE its predicted TRE
    used. ``predicted_tre_mm`` and ``true_tre_mm``: per target name, mm; None unknown (no
    ground truth outside a simulation). "points" carries ``fiducial_errors_mm`` and
    ``fiducial_labels`` (one per fiducial used); "surface" and "deformable" carry
    ``residuals_mm`` instead (thousands of points, summarised). The result has only the
    keys of its method.
    """

    registration_id: int
    state: str
    method: str
    needs_verification: bool
    fre_mm: float
    fle_mm: float
    predicted_tre_mm: dict[str, float | None]
    true_tre_mm: dict[str, float | None]
    fiducial_errors_mm: tuple[float, ...] = ()
    fiducial_labels: tuple[str, ...] = ()
    residuals_mm: Residuals | None = None

    def __post_init__(self) -> None:
        _method(self.method)
        if self.state not in RegistrationResult.STATES:
            raise ValueError(f"unknown registration state {self.state!r}")
        if (self.method != "points") != (self.residuals_mm is not None):
            raise ValueError("'residuals_mm' is given for a surface method and only for it")

    def to_result(self) -> dict[str, JsonValue]:
        result: dict[str, JsonValue] = {
            "registration_id": self.registration_id,
            "state": self.state,
            "method": self.method,
            "needs_verification": self.needs_verification,
            "fre_mm": self.fre_mm,
            "fle_mm": self.fle_mm,
            "predicted_tre_mm": {k: _json_float(v) for k, v in self.predicted_tre_mm.items()},
            "true_tre_mm": {k: _json_float(v) for k, v in self.true_tre_mm.items()},
        }
        if self.residuals_mm is None:
            result["fiducial_errors_mm"] = list(self.fiducial_errors_mm)
            result["fiducial_labels"] = list(self.fiducial_labels)
        else:
            result["residuals_mm"] = self.residuals_mm.to_result()
        return result

    @classmethod
    def from_result(cls, result: Args) -> Self:
        common = frozenset(
            {
                "registration_id",
                "state",
                "method",
                "needs_verification",
                "fre_mm",
                "fle_mm",
                "predicted_tre_mm",
                "true_tre_mm",
            }
        )
        method = _method(result.get("method") if isinstance(result, Mapping) else None)
        own = (
            frozenset({"fiducial_errors_mm", "fiducial_labels"})
            if method == "points"
            else frozenset({"residuals_mm"})
        )
        _check_keys(result, cls.__name__, allowed=common | own, required=common | own)
        return cls(
            registration_id=_int(result, "registration_id"),
            state=_str(result, "state"),
            method=method,
            needs_verification=_bool(result, "needs_verification"),
            fre_mm=_float(result["fre_mm"], "fre_mm"),
            fle_mm=_float(result["fle_mm"], "fle_mm"),
            predicted_tre_mm=_floats_by_name(result, "predicted_tre_mm"),
            true_tre_mm=_floats_by_name(result, "true_tre_mm"),
            fiducial_errors_mm=_floats(result, "fiducial_errors_mm") if method == "points" else (),
            fiducial_labels=_strs(result, "fiducial_labels") if method == "points" else (),
            residuals_mm=(
                Residuals.from_result(_map(result, "residuals_mm")) if method != "points" else None
            ),
        )


def _opt_summary(result: Args, key: str) -> RegistrationSummary | None:
    return None if result[key] is None else RegistrationSummary.from_result(_map(result, key))


@dataclass(frozen=True, kw_only=True)
class FiducialsProposed:
    """``registration.compute`` for points: the proposal from the first ``n_fiducials``.

    The result is the summary's, plus ``n_fiducials``."""

    summary: RegistrationSummary
    n_fiducials: int

    def to_result(self) -> dict[str, JsonValue]:
        return {**self.summary.to_result(), "n_fiducials": self.n_fiducials}

    @classmethod
    def from_result(cls, result: Args) -> Self:
        if not isinstance(result, Mapping) or "n_fiducials" not in result:
            raise ValueError("FiducialsProposed: missing 'n_fiducials'")
        summary = {k: v for k, v in result.items() if k != "n_fiducials"}
        return cls(
            summary=RegistrationSummary.from_result(summary),
            n_fiducials=_int(result, "n_fiducials"),
        )


@dataclass(frozen=True, kw_only=True)
class SurfaceComputeStarted:
    """``registration.compute`` for a surface: the compute ``registration_id`` of
    ``n_points`` (``path_length_mm`` traced) runs on a worker, ``start`` says from what
    ("registration <id>", "global" or "registration <id> and global"); ``method``
    "surface" or "deformable". The result also carries ``"computing": true``."""

    registration_id: int
    n_points: int
    path_length_mm: float
    start: str
    method: str = "surface"

    def __post_init__(self) -> None:
        if self.method not in SURFACE_METHODS:
            raise ValueError(f"'method' must be one of {SURFACE_METHODS}, got {self.method!r}")

    def to_result(self) -> dict[str, JsonValue]:
        return {
            "method": self.method,
            "computing": True,
            "registration_id": self.registration_id,
            "n_points": self.n_points,
            "path_length_mm": self.path_length_mm,
            "start": self.start,
        }

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result, extra=frozenset({"computing"}))
        if result["computing"] is not True:
            raise ValueError("SurfaceComputeStarted: expected computing true")
        return cls(
            registration_id=_int(result, "registration_id"),
            n_points=_int(result, "n_points"),
            path_length_mm=_float(result["path_length_mm"], "path_length_mm"),
            start=_str(result, "start"),
            method=_str(result, "method"),
        )


ComputeReply = FiducialsProposed | SurfaceComputeStarted


def compute_reply_from_result(result: Args) -> ComputeReply:
    """A ``registration.compute`` result: a points proposal or a surface compute started."""
    if isinstance(result, Mapping) and result.get("computing") is True:
        return SurfaceComputeStarted.from_result(result)
    return FiducialsProposed.from_result(result)


@dataclass(frozen=True, kw_only=True)
class RegistrationAccepted:
    """``registration.accept``: the registration accepted, and the file it was written to
    (None: no ``registration_file``, or writing failed, which the node logs)."""

    registration_id: int
    saved_to: str | None

    def to_result(self) -> dict[str, JsonValue]:
        return {"registration_id": self.registration_id, "saved_to": self.saved_to}

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(
            registration_id=_int(result, "registration_id"),
            saved_to=_opt_str(result, "saved_to"),
        )


@dataclass(frozen=True, kw_only=True)
class RegistrationRef:
    """``registration.reject`` / ``registration.verify``: the registration concerned."""

    registration_id: int

    def to_result(self) -> dict[str, JsonValue]:
        return {"registration_id": self.registration_id}

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(registration_id=_int(result, "registration_id"))


@dataclass(frozen=True, kw_only=True)
class SurfaceCompute:
    """The last surface compute: ``state`` one of ``COMPUTE_STATES``; ``error`` the
    refusal's one line; when proposed, ``time_s``, ``fitness`` (the share of points
    within the correspondence gate), ``iterations`` and ``initialisation`` ("given",
    "global", ...) of the fit, and for "deformable" ``converged`` (the last level ended on
    its tolerance, not its iteration limit). The result has those keys only when they are
    known. ``method``: "surface" or "deformable"."""

    registration_id: int
    state: str
    n_points: int
    start: str
    error: str | None = None
    time_s: float | None = None
    fitness: float | None = None
    iterations: int | None = None
    initialisation: str | None = None
    method: str = "surface"
    converged: bool | None = None

    _FIT: ClassVar[tuple[str, ...]] = (
        "time_s",
        "fitness",
        "iterations",
        "initialisation",
        "converged",
    )

    def __post_init__(self) -> None:
        if self.state not in COMPUTE_STATES:
            raise ValueError(f"unknown compute state {self.state!r}")
        if self.method not in SURFACE_METHODS:
            raise ValueError(f"'method' must be one of {SURFACE_METHODS}, got {self.method!r}")

    def to_result(self) -> dict[str, JsonValue]:
        result: dict[str, JsonValue] = {
            "registration_id": self.registration_id,
            "method": self.method,
            "state": self.state,
            "n_points": self.n_points,
            "start": self.start,
            "error": self.error,
        }
        for key in self._FIT:
            value = getattr(self, key)
            if value is not None:
                result[key] = value
        return result

    @classmethod
    def from_result(cls, result: Args) -> Self:
        required = frozenset({"registration_id", "method", "state", "n_points", "start", "error"})
        _check_keys(result, cls.__name__, allowed=required | set(cls._FIT), required=required)
        return cls(
            registration_id=_int(result, "registration_id"),
            method=_str(result, "method"),
            state=_str(result, "state"),
            n_points=_int(result, "n_points"),
            start=_str(result, "start"),
            error=_opt_str(result, "error"),
            time_s=_float(result["time_s"], "time_s") if "time_s" in result else None,
            fitness=_float(result["fitness"], "fitness") if "fitness" in result else None,
            iterations=_int(result, "iterations") if "iterations" in result else None,
            initialisation=_str(result, "initialisation") if "initialisation" in result else None,
            converged=_bool(result, "converged") if "converged" in result else None,
        )


@dataclass(frozen=True, kw_only=True)
class RegistrationStatus:
    """``registration.status``: the case loaded (``case``, ``case_id``); whether a
    collection runs, its ``method`` and ``progress`` (None when none runs) and whether it
    records on ``dwell``; the ``active`` registration and the ``proposal`` (None when
    there is none); the last surface or deformable ``compute`` (None before the first)."""

    case: str
    case_id: str
    collecting: bool
    method: str | None
    dwell: bool
    progress: Progress | None
    active: RegistrationSummary | None
    proposal: RegistrationSummary | None
    compute: SurfaceCompute | None

    def to_result(self) -> dict[str, JsonValue]:
        return {
            "case": self.case,
            "case_id": self.case_id,
            "collecting": self.collecting,
            "method": self.method,
            "dwell": self.dwell,
            "progress": None if self.progress is None else self.progress.to_result(),
            "active": None if self.active is None else self.active.to_result(),
            "proposal": None if self.proposal is None else self.proposal.to_result(),
            "compute": None if self.compute is None else self.compute.to_result(),
        }

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        method = None if result["method"] is None else _method(result["method"])
        return cls(
            case=_str(result, "case"),
            case_id=_str(result, "case_id"),
            collecting=_bool(result, "collecting"),
            method=method,
            dwell=_bool(result, "dwell"),
            progress=(
                None
                if result["progress"] is None
                else progress_from_result(_map(result, "progress"))
            ),
            active=_opt_summary(result, "active"),
            proposal=_opt_summary(result, "proposal"),
            compute=(
                None
                if result["compute"] is None
                else SurfaceCompute.from_result(_map(result, "compute"))
            ),
        )


@dataclass(frozen=True, kw_only=True)
class CaseLoaded:
    """``case.load``: the case now loaded, its fiducial, target and critical structure
    names, and whether ``registration_file`` held a registration of it (``restored``)."""

    case: str
    case_id: str
    fiducials: tuple[str, ...]
    targets: tuple[str, ...]
    critical: tuple[str, ...]
    restored: bool

    def to_result(self) -> dict[str, JsonValue]:
        return {
            "case": self.case,
            "case_id": self.case_id,
            "fiducials": list(self.fiducials),
            "targets": list(self.targets),
            "critical": list(self.critical),
            "restored": self.restored,
        }

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(
            case=_str(result, "case"),
            case_id=_str(result, "case_id"),
            fiducials=_strs(result, "fiducials"),
            targets=_strs(result, "targets"),
            critical=_strs(result, "critical"),
            restored=_bool(result, "restored"),
        )


REQUESTS: Final = (
    StartCollection,
    CollectFiducial,
    ComputeRegistration,
    AcceptRegistration,
    RejectRegistration,
    VerifyRegistration,
    GetRegistrationStatus,
    LoadCase,
)
"""The nav node's control requests, in the order of the table above."""


# --- the simulated tracker's commands ----------------------------------------------------
# ``tracking/sim_node.py``: a scripted pointer and forced occlusions, for tests and demos.
# Their refusals name the command ("unknown argument 'x'; pointer.rest takes no
# arguments") and each range below; what depends on the node's state (a tool it does not
# have, a script that would last longer than MAX_SCRIPT_S) the node refuses.

MAX_OCCLUDE_S: Final = 3600.0
MAX_SCRIPT_S: Final = 3600.0  # a scripted touch or trace; a longer one is a typo, not a test
MIN_STEP_S: Final = 1e-3  # a dwell or travel shorter than one sample at 1 kHz is no motion
MIN_SPEED_MM_S: Final = 0.1
MAX_SPEED_MM_S: Final = 1000.0  # a metre a second: faster than any hand traces a surface
MAX_SCRIPT_POINTS: Final = 10_000
MAX_POSITION_MM: Final = 1e4  # reference frame: 10 m, beyond any tracker's working volume

Point3 = tuple[float, float, float]


def _sim_keys(args: Args, name: str, allowed: tuple[str, ...]) -> None:
    """Refuse the first key ``name`` does not take, naming what it does take."""
    if not isinstance(args, Mapping):
        raise ValueError(f"{name}: expected a map, got {type(args).__name__}")
    for key in args:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no arguments"
            raise ValueError(f"unknown argument {key!r}; {name} takes {takes}")


def _in_range(value: object, key: str, *, low: float, high: float) -> float:
    """A number in [low, high] (NaN and inf are outside); ValueError naming ``key`` if not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key!r} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{key!r} must be in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _step_s(value: object, key: str) -> float:
    return _in_range(value, key, low=MIN_STEP_S, high=MAX_SCRIPT_S)


def _script_points(value: object, key: str) -> tuple[Point3, ...]:
    """At most MAX_SCRIPT_POINTS [x, y, z] points (mm), each coordinate within MAX_POSITION_MM."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"{key!r} must be a list of [x, y, z] points in mm")
    if len(value) > MAX_SCRIPT_POINTS:
        raise ValueError(f"{key!r} has {len(value)} points, at most {MAX_SCRIPT_POINTS}")
    points: list[Point3] = []
    for point in value:
        if not isinstance(point, list | tuple) or len(point) != 3:
            raise ValueError(f"{key!r} must be a list of [x, y, z] points in mm")
        if any(isinstance(c, bool) or not isinstance(c, int | float) for c in point):
            raise ValueError(f"{key!r} must be a list of [x, y, z] points in mm")
        points.append((float(point[0]), float(point[1]), float(point[2])))
    far = [abs(c) for p in points for c in p if not abs(c) <= MAX_POSITION_MM]  # NaN too
    if far:
        largest = math.nan if any(math.isnan(c) for c in far) else max(far)
        raise ValueError(
            f"{key!r} has a coordinate of {largest:.3g} mm, beyond {MAX_POSITION_MM:g} mm"
        )
    return tuple(points)


def _set(obj: object, key: str, value: object) -> None:
    object.__setattr__(obj, key, value)  # a frozen field, normalised once in __post_init__


@dataclass(frozen=True, kw_only=True)
class PointerTouch:
    """Touch each of ``points`` ([x, y, z] mm, reference frame) in turn: travel
    ``travel_s`` (lifting off), then hold ``dwell_s`` (``pointer.touch``; defaults 1.0 s and
    1.5 s, each in [MIN_STEP_S, MAX_SCRIPT_S]). The new script replaces the running one
    from the latest sample on. Replies ``ScriptStarted``."""

    NAME: ClassVar[str] = "pointer.touch"
    points: Sequence[Sequence[float]]  # a tuple of (x, y, z) tuples once built
    dwell_s: float = 1.0
    travel_s: float = 1.5

    def __post_init__(self) -> None:
        _set(self, "points", _script_points(self.points, "points"))
        _set(self, "dwell_s", _step_s(self.dwell_s, "dwell_s"))
        _set(self, "travel_s", _step_s(self.travel_s, "travel_s"))

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _sim_keys(args, cls.NAME, ("points", "dwell_s", "travel_s"))
        return cls(
            points=args.get("points"),  # type: ignore[arg-type]  # checked in __post_init__
            dwell_s=args.get("dwell_s", 1.0),  # type: ignore[arg-type]
            travel_s=args.get("travel_s", 1.5),  # type: ignore[arg-type]
        )

    def to_args(self) -> dict[str, JsonValue]:
        return {
            "points": [list(p) for p in self.points],
            "dwell_s": self.dwell_s,
            "travel_s": self.travel_s,
        }


@dataclass(frozen=True, kw_only=True)
class PointerTrace:
    """Travel ``travel_s`` to the start of ``polyline`` ([x, y, z] mm, reference frame) and
    slide along it at ``speed_mm_s`` (``pointer.trace``; defaults 20 mm/s in
    [MIN_SPEED_MM_S, MAX_SPEED_MM_S] and 1.5 s). Replies ``ScriptStarted``."""

    NAME: ClassVar[str] = "pointer.trace"
    polyline: Sequence[Sequence[float]]  # a tuple of (x, y, z) tuples once built
    speed_mm_s: float = 20.0
    travel_s: float = 1.5

    def __post_init__(self) -> None:
        _set(self, "polyline", _script_points(self.polyline, "polyline"))
        speed = _in_range(self.speed_mm_s, "speed_mm_s", low=MIN_SPEED_MM_S, high=MAX_SPEED_MM_S)
        _set(self, "speed_mm_s", speed)
        _set(self, "travel_s", _step_s(self.travel_s, "travel_s"))

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _sim_keys(args, cls.NAME, ("polyline", "speed_mm_s", "travel_s"))
        return cls(
            polyline=args.get("polyline"),  # type: ignore[arg-type]  # checked in __post_init__
            speed_mm_s=args.get("speed_mm_s", 20.0),  # type: ignore[arg-type]
            travel_s=args.get("travel_s", 1.5),  # type: ignore[arg-type]
        )

    def to_args(self) -> dict[str, JsonValue]:
        return {
            "polyline": [list(p) for p in self.polyline],
            "speed_mm_s": self.speed_mm_s,
            "travel_s": self.travel_s,
        }


@dataclass(frozen=True)
class PointerRest:
    """Put the pointer back on its rest pose (``pointer.rest``, no arguments); forced
    occlusions still running stay. Replies ``ScriptStarted`` (duration 0)."""

    NAME: ClassVar[str] = "pointer.rest"

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _sim_keys(args, cls.NAME, ())
        return cls()

    def to_args(self) -> dict[str, JsonValue]:
        return {}


@dataclass(frozen=True, kw_only=True)
class OccludeTool:
    """Make ``tool`` OUT_OF_VIEW from the next sample for ``duration_s`` (``tool.occlude``;
    default 1 s, in (0, MAX_OCCLUDE_S]); the node refuses a tool it does not track.
    Replies ``ToolOccluded``."""

    NAME: ClassVar[str] = "tool.occlude"
    tool: str
    duration_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.tool, str):
            raise ValueError(f"'tool' must be a tool's name, got {self.tool!r}")
        duration_s = _in_range(self.duration_s, "duration_s", low=0.0, high=MAX_OCCLUDE_S)
        if not duration_s > 0.0:
            raise ValueError(f"'duration_s' must be in (0, {MAX_OCCLUDE_S:g}], got {duration_s}")
        _set(self, "duration_s", duration_s)

    @classmethod
    def from_args(cls, args: Args) -> Self:
        _sim_keys(args, cls.NAME, ("tool", "duration_s"))
        return cls(
            tool=args.get("tool"),  # type: ignore[arg-type]  # checked in __post_init__
            duration_s=args.get("duration_s", 1.0),  # type: ignore[arg-type]
        )

    def to_args(self) -> dict[str, JsonValue]:
        return {"tool": self.tool, "duration_s": self.duration_s}


@dataclass(frozen=True, kw_only=True)
class ScriptStarted:
    """``pointer.touch`` / ``trace`` / ``rest``: the new script starts at ``start_s`` (sim
    seconds, the latest sample's) and lasts ``duration_s`` (0 for a rest)."""

    start_s: float
    duration_s: float

    def to_result(self) -> dict[str, JsonValue]:
        return {"start_s": self.start_s, "duration_s": self.duration_s}

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(
            start_s=_float(result["start_s"], "start_s"),
            duration_s=_float(result["duration_s"], "duration_s"),
        )


@dataclass(frozen=True, kw_only=True)
class ToolOccluded:
    """``tool.occlude``: ``tool`` is OUT_OF_VIEW for sim times in [``start_s``, ``end_s``)."""

    tool: str
    start_s: float
    end_s: float

    def to_result(self) -> dict[str, JsonValue]:
        return {"tool": self.tool, "start_s": self.start_s, "end_s": self.end_s}

    @classmethod
    def from_result(cls, result: Args) -> Self:
        _read(cls, result)
        return cls(
            tool=_str(result, "tool"),
            start_s=_float(result["start_s"], "start_s"),
            end_s=_float(result["end_s"], "end_s"),
        )


SIM_REQUESTS: Final = (PointerTouch, PointerTrace, PointerRest, OccludeTool)
"""The simulated tracker's control requests."""

"""The bus's own message types: tool poses, tracker frames, heartbeats, commands and
replies, navigation state and registration results (wire format: ``nav.messages.wire``)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.frames import TIP_SUFFIX, TOOL_NAME_PATTERN
from nav.messages.deformation import DeformationField
from nav.messages.wire import (
    _NODE_NAME,
    _SHA256,
    MAX_NAME_LEN,
    MAX_TOOLS_PER_FRAME,
    RIGID_TOLERANCE,
    JsonValue,
    MessageError,
    _check_fields,
    _check_json,
    _finite_float,
    _get,
    _name,
    _time_ns,
    decode_array,
    encode_array,
    field_names,
)
from nav.transforms import is_rigid, rigidity_errors


class ToolStatus(enum.Enum):
    """Tool validity, in the PLUS vocabulary (``TransformStatus``)."""

    OK = "OK"
    MISSING = "MISSING"
    OUT_OF_VIEW = "OUT_OF_VIEW"
    OUT_OF_VOLUME = "OUT_OF_VOLUME"
    INVALID = "INVALID"


# The same few tool names arrive thousands of times a second: remember the valid ones
# (bounded, so a peer cycling through names cannot grow it) instead of re-matching.
_KNOWN_TOOL_NAMES: set[str] = set()
_KNOWN_TOOL_NAMES_MAX = 1024


def _tool_name(value: Any) -> str:
    if type(value) is str and value in _KNOWN_TOOL_NAMES:  # type check first: lists are unhashable
        return value
    name = _name({"tool": value}, "tool", TOOL_NAME_PATTERN)
    if name.endswith(TIP_SUFFIX):  # reserved: `pointer_tip` is the tip frame of `pointer`
        raise MessageError("invalid", f"field 'tool': tool names may not end in {TIP_SUFFIX}")
    if len(_KNOWN_TOOL_NAMES) < _KNOWN_TOOL_NAMES_MAX:
        _KNOWN_TOOL_NAMES.add(name)
    return name


def _is_rigid_quietly(T: FloatArray) -> bool:
    # Huge finite entries from a hostile peer overflow inside the check: refused, not warned.
    with np.errstate(over="ignore", invalid="ignore"):
        return is_rigid(T, tol=RIGID_TOLERANCE)


def _check_pose(T: FloatArray, status: ToolStatus, what: str) -> None:
    # A pose marked OK must be usable as-is; a non-OK pose is carried for the record only.
    if status is ToolStatus.OK and not _is_rigid_quietly(T):
        raise MessageError("invalid", f"{what} has status OK but is not a rigid transform")


def _fit_error(value: float, what: str) -> float:
    # NaN means "not measured": a tool not seen, or a source that reports no fit (PLUS files,
    # OpenIGTLink). A made-up 0.0 would read as a perfect fit.
    if math.isnan(value):
        return value
    if not math.isfinite(value) or value < 0:
        raise MessageError("invalid", f"{what}: fit error {value} is not a finite value >= 0")
    return value


_STATUS_BY_NAME = {status.value: status for status in ToolStatus}


def _status(value: Any, what: str) -> ToolStatus:
    status = _STATUS_BY_NAME.get(value) if type(value) is str else None
    if status is None:
        raise MessageError("invalid", f"{what}: unknown status {str(value)[:40]!r}")
    return status


# --- message types -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ToolPose:
    """One tool in one tracker sample.

    ``T_tracker_from_tool`` (4, 4) maps tool-marker coordinates into the tracker frame, mm.
    It is meaningful only when ``status`` is OK; otherwise it is whatever the source last
    had (often identity) and must not be drawn. ``fit_error_mm`` is the marker fit RMS, NaN
    when not measured (tool not seen, or a source that reports none).
    """

    TYPE: ClassVar[str] = "ToolPose"
    tool: str
    T_tracker_from_tool: FloatArray
    t_sensor_ns: int
    status: ToolStatus
    fit_error_mm: float

    def to_body(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "T_tracker_from_tool": encode_array(np.asarray(self.T_tracker_from_tool, np.float64)),
            "t_sensor_ns": int(self.t_sensor_ns),
            "status": self.status.value,
            "fit_error_mm": float(self.fit_error_mm),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ToolPose:
        _check_fields(body, field_names(cls), cls.TYPE)
        tool = _tool_name(_get(body, "tool", str))
        status = _status(_get(body, "status", str), tool)
        T = decode_array(body, "T_tracker_from_tool", dtype="<f8", shape=(4, 4))
        _check_pose(T, status, tool)
        fit = _fit_error(float(_get(body, "fit_error_mm", (int, float))), tool)
        return cls(tool, T, _time_ns(body, "t_sensor_ns"), status, fit)


@dataclass(frozen=True, eq=False)
class TrackerFrame:
    """Every tool of one tracker sample, in one message (one decode per sample, not per tool).

    ``T_tracker_from_tools`` (N, 4, 4), ``statuses`` and ``fit_errors_mm`` (N,) are aligned
    with ``tools`` (N names, unique). ``frame_number`` counts the tracker's samples.
    """

    TYPE: ClassVar[str] = "TrackerFrame"
    tracker: str
    t_sensor_ns: int
    frame_number: int
    tools: tuple[str, ...]
    T_tracker_from_tools: FloatArray
    statuses: tuple[ToolStatus, ...]
    fit_errors_mm: FloatArray = field(repr=False)

    def pose(self, tool: str) -> ToolPose:
        """The named tool as a ``ToolPose``; KeyError if this frame does not carry it."""
        if tool not in self.tools:
            raise KeyError(tool)
        i = self.tools.index(tool)
        return ToolPose(
            tool,
            self.T_tracker_from_tools[i],
            self.t_sensor_ns,
            self.statuses[i],
            float(self.fit_errors_mm[i]),
        )

    def poses(self) -> list[ToolPose]:
        return [self.pose(tool) for tool in self.tools]

    def to_body(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker,
            "t_sensor_ns": int(self.t_sensor_ns),
            "frame_number": int(self.frame_number),
            "tools": list(self.tools),
            "T_tracker_from_tools": encode_array(np.asarray(self.T_tracker_from_tools, np.float64)),
            "statuses": [s.value for s in self.statuses],
            "fit_errors_mm": encode_array(np.asarray(self.fit_errors_mm, np.float64)),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> TrackerFrame:
        _check_fields(body, field_names(cls), cls.TYPE)
        tracker = _name(body, "tracker", TOOL_NAME_PATTERN)
        tools_raw = _get(body, "tools", list)
        n = len(tools_raw)
        if n > MAX_TOOLS_PER_FRAME:
            raise MessageError("invalid", f"{n} tools in one frame (max {MAX_TOOLS_PER_FRAME})")
        tools = tuple(_tool_name(t) for t in tools_raw)
        if len(set(tools)) != n:
            raise MessageError("invalid", "duplicate tool names in one frame")
        statuses_raw = _get(body, "statuses", list)
        if len(statuses_raw) != n:
            raise MessageError("invalid", f"{len(statuses_raw)} statuses for {n} tools")
        statuses = tuple(_status(s, t) for s, t in zip(statuses_raw, tools, strict=True))
        Ts = decode_array(body, "T_tracker_from_tools", dtype="<f8", shape=(n, 4, 4))
        # NaN marks "not measured" (see _fit_error).
        fit = decode_array(body, "fit_errors_mm", dtype="<f8", shape=(n,), allow_nan=True)
        ok = np.fromiter((s is ToolStatus.OK for s in statuses), dtype=bool, count=n)
        if ok.any():
            # Huge finite entries overflow to NaN in the error; NaN must count as not rigid.
            with np.errstate(over="ignore", invalid="ignore"):
                not_rigid = ok.copy()
                not_rigid[ok] = ~(rigidity_errors(Ts[ok]) <= RIGID_TOLERANCE)
            if not_rigid.any():
                bad = tools[int(np.argmax(not_rigid))]
                raise MessageError("invalid", f"{bad} has status OK but is not a rigid transform")
        bad_fit = fit < 0  # NaN compares False: "not measured" is allowed
        if bad_fit.any():
            i = int(np.argmax(bad_fit))
            _fit_error(float(fit[i]), tools[i])  # raises with the reason
        return cls(
            tracker,
            _time_ns(body, "t_sensor_ns"),
            _time_ns(body, "frame_number"),
            tools,
            Ts,
            statuses,
            fit,
        )


@dataclass(frozen=True)
class Heartbeat:
    """A node's vital signs, published about once a second on ``heartbeat/<node>``.

    ``counters`` are totals since start (``published``, ``rejected``, ``rejected_<kind>``,
    ...); ``rates_hz`` are recent rates (``published``, per input topic ...).
    ``latency_ms`` holds recent percentiles of a node's own measured latency, if any.
    """

    TYPE: ClassVar[str] = "Heartbeat"
    node: str
    pid: int
    state: str
    uptime_s: float
    counters: dict[str, int]
    rates_hz: dict[str, float]
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pid": self.pid,
            "state": self.state,
            "uptime_s": float(self.uptime_s),
            "counters": dict(self.counters),
            "rates_hz": {k: float(v) for k, v in self.rates_hz.items()},
            "latency_ms": {k: float(v) for k, v in self.latency_ms.items()},
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Heartbeat:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(
            node=_name(body, "node", _NODE_NAME),
            pid=_get(body, "pid", int),
            state=_name(body, "state", _NODE_NAME),
            uptime_s=_finite_float(body, "uptime_s"),
            counters=_str_map(body, "counters", int),
            rates_hz=_str_map(body, "rates_hz", float),
            latency_ms=_str_map(body, "latency_ms", float),
        )


def _str_map(body: Mapping[str, Any], key: str, kind: type) -> dict[str, Any]:
    raw = _get(body, key, dict)
    if len(raw) > 256:
        raise MessageError("invalid", f"{key!r} has {len(raw)} entries")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or len(k) > MAX_NAME_LEN:
            raise MessageError("invalid", f"{key!r} has a bad key")
        out[k] = _finite_float({k: v}, k) if kind is float else _get({k: v}, k, int)
    return out


@dataclass(frozen=True)
class Command:
    """A request on a node's control socket: ``name`` (e.g. ``ping``) with JSON-like args."""

    TYPE: ClassVar[str] = "Command"
    name: str
    args: dict[str, JsonValue] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Command:
        _check_fields(body, field_names(cls), cls.TYPE)
        name = _name(body, "name", r"[a-z][a-z0-9_.]*")
        args = _get(body, "args", dict)
        _check_json(args)
        return cls(name, args)


@dataclass(frozen=True)
class Reply:
    """The answer to one ``Command``: ``ok`` with a result, or not ok with a one-line error."""

    TYPE: ClassVar[str] = "Reply"
    ok: bool
    result: dict[str, JsonValue] = field(default_factory=dict)
    error: str = ""

    def to_body(self) -> dict[str, Any]:
        return {"ok": self.ok, "result": self.result, "error": self.error}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Reply:
        _check_fields(body, field_names(cls), cls.TYPE)
        result = _get(body, "result", dict)
        _check_json(result)
        return cls(_get(body, "ok", bool), result, _get(body, "error", str))


class NavStatus(enum.Enum):
    """Whether the overlay can be vouched for (worst first when several apply).

    UNREGISTERED: no accepted registration. REFERENCE_LOST: the patient reference is not
    OK in the newest tracker sample. STALE: the newest tracker sample is older than the
    node's limit. OK: registered, reference seen, sample fresh.
    """

    OK = "OK"
    UNREGISTERED = "UNREGISTERED"
    REFERENCE_LOST = "REFERENCE_LOST"
    STALE = "STALE"


def _names(body: Mapping[str, Any], key: str) -> tuple[str, ...]:
    raw = _get(body, key, list)
    if len(raw) > MAX_TOOLS_PER_FRAME:
        raise MessageError("invalid", f"{key!r} has {len(raw)} entries")
    return tuple(_name({key: n}, key, r"[A-Za-z0-9_. -]{1,64}") for n in raw)


def _named_distances(body: Mapping[str, Any], kind: str) -> tuple[tuple[str, ...], FloatArray]:
    """``<kind>_names`` and their aligned ``<kind>_distances_mm`` (NaN: unknown)."""
    names = _names(body, f"{kind}_names")
    key = f"{kind}_distances_mm"
    distances = decode_array(body, key, dtype="<f8", shape=(len(names),), allow_nan=True)
    return names, distances


def _predicted_tre(body: Mapping[str, Any]) -> float:
    """``predicted_tre_mm``: NaN (unregistered) or a finite value >= 0."""
    tre = float(_get(body, "predicted_tre_mm", (int, float)))
    if math.isinf(tre) or tre < 0:
        raise MessageError("invalid", f"predicted_tre_mm {tre} is not NaN or >= 0")
    return tre


@dataclass(frozen=True, eq=False)
class NavState:
    """Navigation state for one tracker sample, published on ``nav/state``.

    ``T_tracker_from_image`` (4, 4): the case model in the tracker frame, pinned to the
    patient reference (``T_tracker_from_reference @ T_reference_from_image``); identity
    and not to be drawn unless ``status`` is OK. ``p_tip_image`` (3,) mm: the pointer tip in
    image (LPS) coordinates, NaN when unknown. ``target_distances_mm`` and
    ``critical_distances_mm`` align with their name tuples (tip to target point; tip to the
    nearest surface of each critical structure), NaN when unknown. ``predicted_tre_mm``:
    the largest predicted TRE over the case targets (NaN when unregistered).
    ``needs_verification``: the registration was restored from disk and not yet confirmed.
    ``case_id``: the case the nav node navigates (``nav.navigation.case_id``), so a
    consumer never draws another case's models under it; "" in recordings made before it.
    """

    TYPE: ClassVar[str] = "NavState"
    t_sensor_ns: int
    frame_number: int
    status: NavStatus
    needs_verification: bool
    registration_id: int
    T_tracker_from_image: FloatArray
    pointer_status: ToolStatus
    p_tip_image: FloatArray
    target_names: tuple[str, ...]
    target_distances_mm: FloatArray
    critical_names: tuple[str, ...]
    critical_distances_mm: FloatArray
    predicted_tre_mm: float
    case_id: str = ""

    def to_body(self) -> dict[str, Any]:
        return {
            "t_sensor_ns": int(self.t_sensor_ns),
            "frame_number": int(self.frame_number),
            "status": self.status.value,
            "needs_verification": bool(self.needs_verification),
            "registration_id": int(self.registration_id),
            "T_tracker_from_image": encode_array(np.asarray(self.T_tracker_from_image, np.float64)),
            "pointer_status": self.pointer_status.value,
            "p_tip_image": encode_array(np.asarray(self.p_tip_image, np.float64)),
            "target_names": list(self.target_names),
            "target_distances_mm": encode_array(np.asarray(self.target_distances_mm, np.float64)),
            "critical_names": list(self.critical_names),
            "critical_distances_mm": encode_array(
                np.asarray(self.critical_distances_mm, np.float64)
            ),
            "predicted_tre_mm": float(self.predicted_tre_mm),
            "case_id": self.case_id,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NavState:
        _check_fields(body, field_names(cls), cls.TYPE)
        raw_status = _get(body, "status", str)
        try:
            status = NavStatus(raw_status)
        except ValueError:
            raise MessageError("invalid", f"unknown nav status {raw_status[:40]!r}") from None
        T = decode_array(body, "T_tracker_from_image", dtype="<f8", shape=(4, 4))
        if status is NavStatus.OK and not _is_rigid_quietly(T):
            raise MessageError("invalid", "NavState is OK but T_tracker_from_image is not rigid")
        targets, target_distances = _named_distances(body, "target")
        criticals, critical_distances = _named_distances(body, "critical")
        tre = _predicted_tre(body)
        case_id = _get(body, "case_id", str) if "case_id" in body else ""  # older recordings
        if case_id and not _SHA256.fullmatch(case_id):
            raise MessageError("invalid", f"case_id {case_id[:80]!r} is not 64 hex digits")
        return cls(
            t_sensor_ns=_time_ns(body, "t_sensor_ns"),
            frame_number=_time_ns(body, "frame_number"),
            status=status,
            needs_verification=_get(body, "needs_verification", bool),
            registration_id=_time_ns(body, "registration_id"),
            T_tracker_from_image=T,
            pointer_status=_status(_get(body, "pointer_status", str), "pointer"),
            p_tip_image=decode_array(body, "p_tip_image", dtype="<f8", shape=(3,), allow_nan=True),
            target_names=targets,
            target_distances_mm=target_distances,
            critical_names=criticals,
            critical_distances_mm=critical_distances,
            predicted_tre_mm=tre,
            case_id=case_id,
        )


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """A registration event, published reliably on ``nav/registration``.

    ``state``: "proposed" (computed, awaiting accept), "accepted", "rejected", or "restored"
    (reloaded from disk at start; ``needs_verification`` until confirmed). ``method``
    (one of ``METHODS``): "points" (fiducials), "surface" (a traced organ surface, rigid)
    or "deformable" (the rigid part plus ``deformation``).
    ``T_reference_from_image`` (4, 4) maps the case model into the patient reference frame.
    ``fiducial_errors_mm`` (N,) per fiducial; ``fre_mm`` their RMS. For ``method``
    "surface" they are each traced point's distance to the organ surface and their RMS
    over the inliers (not an FRE: a surface fit has no paired points). ``predicted_tre_mm``
    (T,) at the case targets (FW&M 1998 eq. 46): the accuracy figure to show.
    ``true_tre_mm`` (T,) against a known ground truth (simulation), NaN when none.

    The facts a consumer needs so it never re-derives them (a headset's confidence
    colours are the same eq. 46 as ``predicted_tre_mm``):

    - ``fle_mm``: the FLE (RMS, mm) ``predicted_tre_mm`` was computed with (for "surface",
      the point noise it was scaled by); NaN: unknown.
    - ``fiducial_labels`` (N,): the case fiducials used, aligned with
      ``fiducial_errors_mm`` (a registration may use any subset, in any order); empty for
      "surface" or when unknown.
    - ``case_id``: the content id of the case registered (``nav.navigation.case_id``, 64
      hex); "" when unknown. A consumer must not draw another case's models under it.

    - ``organ_confidence_mm`` (V,) float32: the estimated overlay error, mm, at each
      vertex of the case's organ mesh (``nav.navigation.surface_structure``, vertices in
      the order ``nav.case.load_case`` loads them): for "surface" its error field
      (``SurfaceResult.predicted_error_mm``), for "deformable" the posterior estimate
      (``DeformableResult.confidence_mm``); empty (0,) when the method sends none
      ("points": a consumer computes eq. 46 from ``fiducial_labels`` and ``fle_mm``).
    - ``deformation``: the displacement field (``DeformationField``) of a "deformable"
      registration, None for the rigid methods: a model point ``p`` (image frame) is at
      ``T_reference_from_image @ p + deformation.displacement_mm(p)`` in the reference
      frame. A "deformable" result without one, or a rigid one with one, is refused.

    These are optional on decode: payloads recorded before them read as NaN, (), "",
    empty and None (unknown), so a consumer falls back to what it can vouch for. A
    deformable result with 50k organ vertices and 10k residuals is ~0.4 MB: inside
    ``MAX_PAYLOAD_BYTES``.
    """

    TYPE: ClassVar[str] = "RegistrationResult"
    registration_id: int
    state: str
    method: str
    needs_verification: bool
    T_reference_from_image: FloatArray
    fre_mm: float
    fiducial_errors_mm: FloatArray
    target_names: tuple[str, ...]
    predicted_tre_mm: FloatArray
    true_tre_mm: FloatArray
    fle_mm: float = math.nan
    fiducial_labels: tuple[str, ...] = ()
    case_id: str = ""
    organ_confidence_mm: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.zeros(0, dtype=np.float32)
    )
    deformation: DeformationField | None = None

    STATES: ClassVar[frozenset[str]] = frozenset({"proposed", "accepted", "rejected", "restored"})
    METHODS: ClassVar[frozenset[str]] = frozenset({"points", "surface", "deformable"})
    MAX_LABEL_LEN: ClassVar[int] = 64

    def to_body(self) -> dict[str, Any]:
        return {
            "registration_id": int(self.registration_id),
            "state": self.state,
            "method": self.method,
            "needs_verification": bool(self.needs_verification),
            "T_reference_from_image": encode_array(
                np.asarray(self.T_reference_from_image, np.float64)
            ),
            "fre_mm": float(self.fre_mm),
            "fiducial_errors_mm": encode_array(np.asarray(self.fiducial_errors_mm, np.float64)),
            "target_names": list(self.target_names),
            "predicted_tre_mm": encode_array(np.asarray(self.predicted_tre_mm, np.float64)),
            "true_tre_mm": encode_array(np.asarray(self.true_tre_mm, np.float64)),
            "fle_mm": float(self.fle_mm),
            "fiducial_labels": list(self.fiducial_labels),
            "case_id": self.case_id,
            "organ_confidence_mm": encode_array(np.asarray(self.organ_confidence_mm, np.float32)),
            "deformation": None if self.deformation is None else self.deformation.to_body(),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RegistrationResult:
        _check_fields(body, field_names(cls), cls.TYPE)
        method = _name(body, "method", r"[a-z][a-z0-9_]{0,31}")
        if method not in cls.METHODS:
            raise MessageError("invalid", f"unknown registration method {method!r}")
        raw_deformation = body.get("deformation")
        deformation = (
            None if raw_deformation is None else DeformationField.from_body(raw_deformation)
        )
        if (method == "deformable") != (deformation is not None):
            raise MessageError(
                "invalid", "a deformation comes with method 'deformable', and only with it"
            )
        confidence = (
            decode_array(body, "organ_confidence_mm", dtype="<f4", shape=(None,))
            if "organ_confidence_mm" in body
            else np.zeros(0, dtype=np.float32)
        )
        if len(confidence) and not float(confidence.min()) >= 0.0:
            raise MessageError("invalid", "organ_confidence_mm must be >= 0")
        state = _get(body, "state", str)
        if state not in cls.STATES:
            raise MessageError("invalid", f"unknown registration state {state[:40]!r}")
        T = decode_array(body, "T_reference_from_image", dtype="<f8", shape=(4, 4))
        if not _is_rigid_quietly(T):
            raise MessageError("invalid", "T_reference_from_image is not rigid")
        targets = _names(body, "target_names")
        n_targets = (len(targets),)
        errors = decode_array(body, "fiducial_errors_mm", dtype="<f8", shape=(None,))
        fle_mm = float(_get(body, "fle_mm", (int, float))) if "fle_mm" in body else math.nan
        if math.isinf(fle_mm) or fle_mm < 0:
            raise MessageError("invalid", f"fle_mm {fle_mm} is not NaN or >= 0")
        labels = cls._labels(body, len(errors))
        case_id = _get(body, "case_id", str) if "case_id" in body else ""
        if case_id and not _SHA256.fullmatch(case_id):
            raise MessageError("invalid", f"case_id {case_id[:80]!r} is not 64 hex digits")
        return cls(
            registration_id=_time_ns(body, "registration_id"),
            state=state,
            method=method,
            needs_verification=_get(body, "needs_verification", bool),
            T_reference_from_image=T,
            fre_mm=_finite_float(body, "fre_mm"),
            fiducial_errors_mm=errors,
            target_names=targets,
            predicted_tre_mm=decode_array(body, "predicted_tre_mm", dtype="<f8", shape=n_targets),
            true_tre_mm=decode_array(
                body, "true_tre_mm", dtype="<f8", shape=n_targets, allow_nan=True
            ),
            fle_mm=fle_mm,
            fiducial_labels=labels,
            case_id=case_id,
            organ_confidence_mm=confidence,
            deformation=deformation,
        )

    @classmethod
    def _labels(cls, body: Mapping[str, Any], n_errors: int) -> tuple[str, ...]:
        # Case markups labels are free text (Slicer writes "F-1", a user "Fiducial #1"):
        # printable, not empty, bounded; none, or one per fiducial error.
        raw = _get(body, "fiducial_labels", list) if "fiducial_labels" in body else []
        if raw and len(raw) != n_errors:
            raise MessageError(
                "invalid", f"{len(raw)} fiducial_labels for {n_errors} fiducial errors"
            )
        for label in raw:
            if not (
                type(label) is str and 0 < len(label) <= cls.MAX_LABEL_LEN and label.isprintable()
            ):
                raise MessageError("invalid", f"fiducial label {str(label)[:80]!r} is not valid")
        return tuple(raw)

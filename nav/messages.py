"""Every message type that crosses the ornav bus, with its wire format and validation.

Wire format: one ZeroMQ multipart message per publish.

    frame 0  topic    UTF-8, e.g. ``pose/sim``, ``heartbeat/tracker``
    frame 1  payload  msgpack map:
        "v"        int   SCHEMA_VERSION; any other version is refused
        "type"     str   one of the type names below, e.g. "TrackerFrame"
        "seq"      int   the publisher's sequence number for this topic (gaps = loss)
        "epoch"    int   the publisher's epoch: one random id per publisher process
                         (issued by the supervisor for every start). ``(epoch, seq)``
                         orders a stream across producer restarts: a new epoch resets
                         the order. Absent in recordings made before epochs: read as 0.
        "t_pub_ns" int   publisher's monotonic clock at publish, ns
        "body"     map   the type's fields

An array inside a body travels as ``{"dtype": "<f8", "shape": [N, 4, 4], "data": <bytes>}``:
little-endian, C order, raw bytes (no per-element msgpack cost). Only the dtypes in
``_ARRAY_DTYPES`` are accepted.

Decoding is strict: unknown type, wrong version, missing or extra field, wrong type,
wrong array shape, non-finite value, or a pose that claims status OK but is not a rigid
transform raises ``MessageError``. The bus counts and drops it; nothing malformed ever
becomes a pose. No pickle anywhere.

Frames and units: lengths in mm, times in integer ns of the host monotonic clock
(``t_sensor_ns``: acquisition time; ``t_pub_ns``: publish time).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import msgpack
import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.frames import TIP_SUFFIX, TOOL_NAME_PATTERN
from nav.transforms import is_rigid, rigidity_errors

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB: far above any pose or command; assets use their own limit
MAX_TOOLS_PER_FRAME = 64
MAX_NAME_LEN = 64
# PLUS and device SDKs round matrices to ~6 significant digits, so a decoded pose is
# called rigid within 1e-4 (0.1 mm on a 1 m lever arm is far below tracker noise).
RIGID_TOLERANCE = 1e-4

_ARRAY_DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "|u1"})
_NODE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")

JsonScalar: TypeAlias = None | bool | int | float | str
JsonValue: TypeAlias = JsonScalar | list["JsonValue"] | dict[str, "JsonValue"]


class MessageError(ValueError):
    """A payload that must be dropped; ``kind`` labels the counter it goes to."""

    KINDS: ClassVar[frozenset[str]] = frozenset(
        {"oversized", "malformed", "version", "unknown_type", "invalid", "untrusted"}
    )

    def __init__(self, kind: str, detail: str) -> None:
        assert kind in self.KINDS, kind
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class ToolStatus(enum.Enum):
    """Tool validity, in the PLUS vocabulary (``TransformStatus``)."""

    OK = "OK"
    MISSING = "MISSING"
    OUT_OF_VIEW = "OUT_OF_VIEW"
    OUT_OF_VOLUME = "OUT_OF_VOLUME"
    INVALID = "INVALID"


# --- field helpers -------------------------------------------------------------------


def _get(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body:
        raise MessageError("invalid", f"missing field {key!r}")
    value = body[key]
    # bool is an int subclass; a bool where a number is expected is a bug upstream.
    if isinstance(value, bool) and kind is not bool:
        raise MessageError("invalid", f"field {key!r} is a bool")
    if not isinstance(value, kind):
        raise MessageError("invalid", f"field {key!r} has type {type(value).__name__}")
    return value


def _finite_float(body: Mapping[str, Any], key: str) -> float:
    value = float(_get(body, key, (int, float)))
    if not math.isfinite(value):
        raise MessageError("invalid", f"field {key!r} is not finite")
    return value


def _time_ns(body: Mapping[str, Any], key: str) -> int:
    value: int = _get(body, key, int)
    if not 0 <= value < 1 << 63:
        raise MessageError("invalid", f"field {key!r} = {value} is out of range")
    return value


def _name(body: Mapping[str, Any], key: str, pattern: re.Pattern[str] | str) -> str:
    value: str = _get(body, key, str)
    if len(value) > MAX_NAME_LEN or not re.fullmatch(pattern, value):
        raise MessageError("invalid", f"field {key!r} is not a valid name: {value[:80]!r}")
    return value


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


def _check_fields(body: Mapping[str, Any], expected: frozenset[str], type_name: str) -> None:
    extra = set(body) - expected
    if extra:
        # key=repr: msgpack map keys may mix str and bytes, which do not compare.
        raise MessageError("invalid", f"{type_name} has unknown fields {sorted(extra, key=repr)}")


def encode_array(array: npt.NDArray[Any]) -> dict[str, Any]:
    """Array -> wire map (little-endian, C order)."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    dtype = little.dtype.str
    if dtype not in _ARRAY_DTYPES:
        raise ValueError(f"dtype {dtype} cannot travel on the bus")
    return {"dtype": dtype, "shape": list(little.shape), "data": little.tobytes()}


def decode_array(
    body: Mapping[str, Any],
    key: str,
    *,
    dtype: str,
    shape: tuple[int | None, ...],
    allow_nan: bool = False,
) -> npt.NDArray[Any]:
    """Wire map -> read-only array, checked against ``dtype`` and ``shape`` (None = any).

    Infinities are always refused; NaN only with ``allow_nan`` (a field that means "none").
    """
    wire = _get(body, key, dict)
    _check_fields(wire, frozenset({"dtype", "shape", "data"}), f"array {key!r}")
    wire_dtype = _get(wire, "dtype", str)
    wire_shape = _get(wire, "shape", list)
    data = _get(wire, "data", bytes)
    if wire_dtype != dtype:
        raise MessageError("invalid", f"array {key!r} has dtype {wire_dtype}, expected {dtype}")
    if len(wire_shape) != len(shape) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 and (want is None or n == want)
        for n, want in zip(wire_shape, shape, strict=False)
    ):
        raise MessageError("invalid", f"array {key!r} has shape {wire_shape}, expected {shape}")
    itemsize = np.dtype(dtype).itemsize
    if len(data) != itemsize * math.prod(wire_shape):
        raise MessageError("invalid", f"array {key!r}: {len(data)} bytes for shape {wire_shape}")
    array = np.frombuffer(data, dtype=dtype).reshape(wire_shape)
    if array.dtype.kind == "f":
        bad = np.isinf(array) if allow_nan else ~np.isfinite(array)
        if bad.any():
            raise MessageError("invalid", f"array {key!r} holds a non-finite value")
    return array


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


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > 8:
        raise MessageError("invalid", "arguments nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MessageError("invalid", "argument is not finite")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MessageError("invalid", "argument keys must be strings")
            _check_json(item, depth + 1)
        return
    raise MessageError("invalid", f"argument of type {type(value).__name__} not allowed")


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
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NavState:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
        )


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """A registration event, published reliably on ``nav/registration``.

    ``state``: "proposed" (computed, awaiting accept), "accepted", "rejected", or "restored"
    (reloaded from disk at start; ``needs_verification`` until confirmed). ``method``:
    "points" (fiducials) or "surface" (a traced organ surface).
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

    The three are optional on decode: payloads recorded before them read as NaN, () and
    "" (unknown), so a consumer falls back to what it can vouch for.
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

    STATES: ClassVar[frozenset[str]] = frozenset({"proposed", "accepted", "rejected", "restored"})
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
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RegistrationResult:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
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
            method=_name(body, "method", r"[a-z][a-z0-9_]{0,31}"),
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


# --- headset protocol (docs/headset-protocol.md) -------------------------------------

HEADSET_PROTOCOL_VERSION = 1
MAX_ASSET_BYTES = 32 << 20  # one decimated structure as GLB; far above the triangle budget
_SESSION = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLIENT_NAME = r"[A-Za-z0-9_.-]{1,64}"
_STRUCTURE_NAME = r"[A-Za-z0-9_. -]{1,64}"
MAX_TELEMETRY_SAMPLES = 4096


class OverlayState(enum.Enum):
    """How the headset must draw the overlay of one scene update.

    CURRENT: draw as a valid overlay. STALE: the pose is older than the stale limit
    (100 ms by default); draw it marked as stale (dimmed, with a warning), never as current.
    HIDDEN: do not draw the model at all (pose older than the hide limit, 300 ms by
    default, or no registration, or the reference or headset marker lost).
    """

    CURRENT = "CURRENT"
    STALE = "STALE"
    HIDDEN = "HIDDEN"


def _int_field(body: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value: int = _get(body, key, int)
    if not low <= value <= high:
        raise MessageError("invalid", f"field {key!r} = {value} is outside [{low}, {high}]")
    return value


@dataclass(frozen=True, eq=False)
class SceneUpdate:
    """The overlay for one tracker sample, published by the render node on ``scene/update``.

    All structures of the case share the ``image`` frame; ``T_display_from_structures``
    (S, 4, 4) carries one pose per name in ``structure_names`` (equal today, kept per
    structure so a structure can move on its own). ``display`` is the headset's view frame
    (see docs/headset-protocol.md). ``p_tip_display`` (3,) mm, NaN when the tip is unknown.
    ``age_ms``: the pose's age when the render node sent it (its clock minus
    ``t_sensor_ns``). Poses are identity and meaningless while ``overlay`` is HIDDEN.

    Safety is checked on decode: an update that claims CURRENT while the navigation status
    is not OK or the headset is not tracked is refused, so no peer can make an overlay the
    system cannot vouch for look current.
    """

    TYPE: ClassVar[str] = "SceneUpdate"
    session: str
    scene_version: int
    t_sensor_ns: int
    frame_number: int
    status: NavStatus
    overlay: OverlayState
    headset_ok: bool
    needs_verification: bool
    registration_id: int
    structure_names: tuple[str, ...]
    T_display_from_structures: FloatArray
    p_tip_display: FloatArray
    target_names: tuple[str, ...]
    target_distances_mm: FloatArray
    critical_names: tuple[str, ...]
    critical_distances_mm: FloatArray
    predicted_tre_mm: float
    age_ms: float

    def to_body(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "scene_version": int(self.scene_version),
            "t_sensor_ns": int(self.t_sensor_ns),
            "frame_number": int(self.frame_number),
            "status": self.status.value,
            "overlay": self.overlay.value,
            "headset_ok": bool(self.headset_ok),
            "needs_verification": bool(self.needs_verification),
            "registration_id": int(self.registration_id),
            "structure_names": list(self.structure_names),
            "T_display_from_structures": encode_array(
                np.asarray(self.T_display_from_structures, np.float64)
            ),
            "p_tip_display": encode_array(np.asarray(self.p_tip_display, np.float64)),
            "target_names": list(self.target_names),
            "target_distances_mm": encode_array(np.asarray(self.target_distances_mm, np.float64)),
            "critical_names": list(self.critical_names),
            "critical_distances_mm": encode_array(
                np.asarray(self.critical_distances_mm, np.float64)
            ),
            "predicted_tre_mm": float(self.predicted_tre_mm),
            "age_ms": float(self.age_ms),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SceneUpdate:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        try:
            status = NavStatus(_get(body, "status", str))
            overlay = OverlayState(_get(body, "overlay", str))
        except ValueError:
            raise MessageError("invalid", "unknown status or overlay state") from None
        headset_ok = _get(body, "headset_ok", bool)
        if overlay is OverlayState.CURRENT and not (status is NavStatus.OK and headset_ok):
            raise MessageError(
                "invalid", f"overlay CURRENT with status {status.value}, headset_ok={headset_ok}"
            )
        structures = tuple(
            _name({"structure": n}, "structure", _STRUCTURE_NAME)
            for n in _get(body, "structure_names", list)[: MAX_TOOLS_PER_FRAME + 1]
        )
        if len(structures) > MAX_TOOLS_PER_FRAME:
            raise MessageError("invalid", f"more than {MAX_TOOLS_PER_FRAME} structures")
        Ts = decode_array(
            body, "T_display_from_structures", dtype="<f8", shape=(len(structures), 4, 4)
        )
        if overlay is not OverlayState.HIDDEN and len(structures):
            with np.errstate(over="ignore", invalid="ignore"):
                if not (rigidity_errors(Ts) <= RIGID_TOLERANCE).all():
                    raise MessageError("invalid", "a drawn structure pose is not rigid")
        targets, target_distances = _named_distances(body, "target")
        criticals, critical_distances = _named_distances(body, "critical")
        tre = _predicted_tre(body)
        age_ms = _finite_float(body, "age_ms")
        return cls(
            session=_name(body, "session", _SESSION),
            scene_version=_time_ns(body, "scene_version"),
            t_sensor_ns=_time_ns(body, "t_sensor_ns"),
            frame_number=_time_ns(body, "frame_number"),
            status=status,
            overlay=overlay,
            headset_ok=headset_ok,
            needs_verification=_get(body, "needs_verification", bool),
            registration_id=_time_ns(body, "registration_id"),
            structure_names=structures,
            T_display_from_structures=Ts,
            p_tip_display=decode_array(
                body, "p_tip_display", dtype="<f8", shape=(3,), allow_nan=True
            ),
            target_names=targets,
            target_distances_mm=target_distances,
            critical_names=criticals,
            critical_distances_mm=critical_distances,
            predicted_tre_mm=tre,
            age_ms=age_ms,
        )


class AlertSeverity(enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class Alert:
    """A message the surgeon must see, delivered reliably: resent until ``AlertAck``.

    Published on ``scene/alert`` (for the recorder) and sent to every headset session.
    ``code``: a stable machine name (``REFERENCE_LOST``, ``STALE``, ``UNREGISTERED``,
    ``HEADSET_LOST``, ``REGISTRATION_ACCEPTED``, ``NEEDS_VERIFICATION``, ``RECOVERED``...);
    ``text``: one line for the display. ``alert_id`` grows within a render session.
    """

    TYPE: ClassVar[str] = "Alert"
    session: str
    alert_id: int
    severity: AlertSeverity
    code: str
    text: str
    t_ns: int

    def to_body(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "alert_id": int(self.alert_id),
            "severity": self.severity.value,
            "code": self.code,
            "text": self.text,
            "t_ns": int(self.t_ns),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Alert:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        try:
            severity = AlertSeverity(_get(body, "severity", str))
        except ValueError:
            raise MessageError("invalid", "unknown alert severity") from None
        text: str = _get(body, "text", str)
        if len(text) > 200 or "\n" in text:
            raise MessageError("invalid", "alert text is not one line of at most 200 characters")
        return cls(
            session=_name(body, "session", _SESSION),
            alert_id=_time_ns(body, "alert_id"),
            severity=severity,
            code=_name(body, "code", r"[A-Z][A-Z0-9_]{0,63}"),
            text=text,
            t_ns=_time_ns(body, "t_ns"),
        )


@dataclass(frozen=True)
class AlertAck:
    """The headset has shown alert ``alert_id`` of render session ``session``."""

    TYPE: ClassVar[str] = "AlertAck"
    session: str
    alert_id: int

    def to_body(self) -> dict[str, Any]:
        return {"session": self.session, "alert_id": int(self.alert_id)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AlertAck:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        return cls(_name(body, "session", _SESSION), _time_ns(body, "alert_id"))


@dataclass(frozen=True)
class Hello:
    """First message of a headset session: the client's protocol version and its name."""

    TYPE: ClassVar[str] = "Hello"
    protocol: int
    client: str

    def to_body(self) -> dict[str, Any]:
        return {"protocol": int(self.protocol), "client": self.client}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Hello:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        return cls(_int_field(body, "protocol", 0, 1 << 16), _name(body, "client", _CLIENT_NAME))


@dataclass(frozen=True)
class AssetInfo:
    """One structure's mesh asset: fetch it by ``sha256`` (of the GLB bytes)."""

    name: str
    sha256: str
    size_bytes: int
    triangles: int
    color_rgba: tuple[float, float, float, float]

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": int(self.size_bytes),
            "triangles": int(self.triangles),
            "color_rgba": [float(c) for c in self.color_rgba],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> AssetInfo:
        if not isinstance(raw, dict):
            raise MessageError("invalid", "asset entry is not a map")
        _check_fields(
            raw, frozenset({"name", "sha256", "size_bytes", "triangles", "color_rgba"}), "asset"
        )
        color = _get(raw, "color_rgba", list)
        if len(color) != 4 or not all(
            isinstance(c, int | float) and not isinstance(c, bool) and 0.0 <= c <= 1.0
            for c in color
        ):
            raise MessageError("invalid", "asset color_rgba is not 4 values in [0, 1]")
        return cls(
            name=_name(raw, "name", _STRUCTURE_NAME),
            sha256=_name(raw, "sha256", _SHA256),
            size_bytes=_int_field(raw, "size_bytes", 1, MAX_ASSET_BYTES),
            triangles=_int_field(raw, "triangles", 1, 1 << 24),
            color_rgba=(float(color[0]), float(color[1]), float(color[2]), float(color[3])),
        )


@dataclass(frozen=True)
class Welcome:
    """The render node's answer to ``Hello``: its session, where scene updates are
    published, the server clock at reply, and the case's assets (scene ``scene_version``).
    """

    TYPE: ClassVar[str] = "Welcome"
    protocol: int
    session: str
    scene_endpoint: str
    scene_version: int
    t_server_ns: int
    assets: tuple[AssetInfo, ...]

    def to_body(self) -> dict[str, Any]:
        return {
            "protocol": int(self.protocol),
            "session": self.session,
            "scene_endpoint": self.scene_endpoint,
            "scene_version": int(self.scene_version),
            "t_server_ns": int(self.t_server_ns),
            "assets": [a.to_wire() for a in self.assets],
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Welcome:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        raw_assets = _get(body, "assets", list)
        if len(raw_assets) > MAX_TOOLS_PER_FRAME:
            raise MessageError("invalid", f"{len(raw_assets)} assets")
        endpoint: str = _get(body, "scene_endpoint", str)
        if not re.fullmatch(r"(ipc|tcp|inproc)://[^\s]{1,200}", endpoint):
            raise MessageError("invalid", f"scene_endpoint {endpoint[:80]!r} is not a zmq endpoint")
        return cls(
            protocol=_int_field(body, "protocol", 0, 1 << 16),
            session=_name(body, "session", _SESSION),
            scene_endpoint=endpoint,
            scene_version=_time_ns(body, "scene_version"),
            t_server_ns=_time_ns(body, "t_server_ns"),
            assets=tuple(AssetInfo.from_wire(a) for a in raw_assets),
        )


@dataclass(frozen=True)
class ClockPing:
    """Clock sync request: the client's monotonic clock at send, ns."""

    TYPE: ClassVar[str] = "ClockPing"
    t_client_ns: int

    def to_body(self) -> dict[str, Any]:
        return {"t_client_ns": int(self.t_client_ns)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClockPing:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        return cls(_time_ns(body, "t_client_ns"))


@dataclass(frozen=True)
class ClockPong:
    """Clock sync answer: the ping's client time echoed and the server clock at reply, ns."""

    TYPE: ClassVar[str] = "ClockPong"
    t_client_ns: int
    t_server_ns: int

    def to_body(self) -> dict[str, Any]:
        return {"t_client_ns": int(self.t_client_ns), "t_server_ns": int(self.t_server_ns)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClockPong:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        return cls(_time_ns(body, "t_client_ns"), _time_ns(body, "t_server_ns"))


@dataclass(frozen=True)
class AssetRequest:
    """Fetch one asset by the SHA-256 (hex) of its bytes."""

    TYPE: ClassVar[str] = "AssetRequest"
    sha256: str

    def to_body(self) -> dict[str, Any]:
        return {"sha256": self.sha256}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AssetRequest:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        return cls(_name(body, "sha256", _SHA256))


@dataclass(frozen=True, eq=False)
class AssetData:
    """One asset's bytes (binary glTF, ``model/gltf-binary``); decode checks the hash.

    Larger than any bus message: decode with ``max_bytes=MAX_ASSET_BYTES + 4096``.
    """

    TYPE: ClassVar[str] = "AssetData"
    sha256: str
    name: str
    data: bytes = field(repr=False)

    def to_body(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "name": self.name, "data": bytes(self.data)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AssetData:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        sha = _name(body, "sha256", _SHA256)
        data: bytes = _get(body, "data", bytes)
        if len(data) > MAX_ASSET_BYTES:
            raise MessageError("oversized", f"asset of {len(data)} bytes > {MAX_ASSET_BYTES}")
        if hashlib.sha256(data).hexdigest() != sha:
            raise MessageError("invalid", "asset bytes do not match their sha256")
        return cls(sha, _name(body, "name", _STRUCTURE_NAME), data)


@dataclass(frozen=True)
class SnapshotRequest:
    """Ask for the newest ``SceneUpdate`` (on connect and after a reconnect)."""

    TYPE: ClassVar[str] = "SnapshotRequest"

    def to_body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SnapshotRequest:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        return cls()


@dataclass(frozen=True, eq=False)
class HeadsetTelemetry:
    """What a headset client measured, batched; republished on ``headset/telemetry``.

    Per displayed update k: ``frame_numbers[k]``, ``t_sensor_ns[k]`` (server clock),
    ``t_receive_ns[k]`` and ``t_display_ns[k]`` (client clock). ``clock_offset_ns``: the
    client's estimate of server minus client clock, so ``t_receive_ns + clock_offset_ns -
    t_sensor_ns`` is the tracker-sample-to-headset latency.
    """

    TYPE: ClassVar[str] = "HeadsetTelemetry"
    client: str
    clock_offset_ns: int
    frame_numbers: npt.NDArray[np.int64]
    t_sensor_ns: npt.NDArray[np.int64]
    t_receive_ns: npt.NDArray[np.int64]
    t_display_ns: npt.NDArray[np.int64]

    def to_body(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "clock_offset_ns": int(self.clock_offset_ns),
            "frame_numbers": encode_array(np.asarray(self.frame_numbers, np.int64)),
            "t_sensor_ns": encode_array(np.asarray(self.t_sensor_ns, np.int64)),
            "t_receive_ns": encode_array(np.asarray(self.t_receive_ns, np.int64)),
            "t_display_ns": encode_array(np.asarray(self.t_display_ns, np.int64)),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> HeadsetTelemetry:
        _check_fields(body, _FIELDS[cls.TYPE], cls.TYPE)
        frames = decode_array(body, "frame_numbers", dtype="<i8", shape=(None,))
        n = len(frames)
        if n > MAX_TELEMETRY_SAMPLES:
            raise MessageError("invalid", f"{n} telemetry samples > {MAX_TELEMETRY_SAMPLES}")
        offset = _get(body, "clock_offset_ns", int)
        if not -(1 << 62) < offset < 1 << 62:
            raise MessageError("invalid", "clock_offset_ns out of range")
        return cls(
            client=_name(body, "client", _CLIENT_NAME),
            clock_offset_ns=offset,
            frame_numbers=frames,
            t_sensor_ns=decode_array(body, "t_sensor_ns", dtype="<i8", shape=(n,)),
            t_receive_ns=decode_array(body, "t_receive_ns", dtype="<i8", shape=(n,)),
            t_display_ns=decode_array(body, "t_display_ns", dtype="<i8", shape=(n,)),
        )


Message: TypeAlias = (
    ToolPose
    | TrackerFrame
    | Heartbeat
    | Command
    | Reply
    | NavState
    | RegistrationResult
    | SceneUpdate
    | Alert
    | AlertAck
    | Hello
    | Welcome
    | ClockPing
    | ClockPong
    | AssetRequest
    | AssetData
    | SnapshotRequest
    | HeadsetTelemetry
)
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        ToolPose,
        TrackerFrame,
        Heartbeat,
        Command,
        Reply,
        NavState,
        RegistrationResult,
        SceneUpdate,
        Alert,
        AlertAck,
        Hello,
        Welcome,
        ClockPing,
        ClockPong,
        AssetRequest,
        AssetData,
        SnapshotRequest,
        HeadsetTelemetry,
    )
}
# Each type's wire fields are its dataclass fields: one source, never restated.
_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(f.name for f in dataclasses.fields(cls)) for name, cls in MESSAGE_TYPES.items()
}


@dataclass(frozen=True, eq=False)
class Envelope:
    """A decoded payload: the publisher's sequence number and publish time, and the message.

    ``epoch`` names the publisher process that sent it (0: unknown, a recording made before
    epochs); compare ``seq`` only within one epoch.
    """

    seq: int
    t_pub_ns: int
    message: Message
    epoch: int = 0

    @property
    def type_name(self) -> str:
        return self.message.TYPE


MAX_EPOCH = (1 << 63) - 1  # epochs are positive int64: msgpack and MCAP keep them exact


def encode(message: Message, *, seq: int, t_pub_ns: int, epoch: int = 0) -> bytes:
    """Message -> payload bytes (frame 1 of the multipart message)."""
    return msgpack.packb(
        {
            "v": SCHEMA_VERSION,
            "type": message.TYPE,
            "seq": int(seq),
            "epoch": int(epoch),
            "t_pub_ns": int(t_pub_ns),
            "body": message.to_body(),
        },
        use_bin_type=True,
    )


def decode(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Envelope:
    """Payload bytes -> validated ``Envelope``; raises ``MessageError`` on anything wrong."""
    if len(payload) > max_bytes:
        raise MessageError("oversized", f"{len(payload)} bytes > {max_bytes}")
    try:
        raw = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )  # unpackb bounds every container by len(payload), already checked above
    except Exception as exc:  # msgpack raises many types for hostile input
        raise MessageError("malformed", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise MessageError("malformed", "payload is not a map")
    version = raw.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:  # not 1.0, not True
        raise MessageError(
            "version", f"schema version {str(version)[:20]}, expected {SCHEMA_VERSION}"
        )
    _check_fields(raw, frozenset({"v", "type", "seq", "epoch", "t_pub_ns", "body"}), "envelope")
    type_name = _get(raw, "type", str)
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise MessageError("unknown_type", f"type {type_name[:40]!r}")
    seq = _get(raw, "seq", int)
    t_pub_ns = _get(raw, "t_pub_ns", int)
    epoch = _get(raw, "epoch", int) if "epoch" in raw else 0
    if seq < 0 or t_pub_ns < 0:
        raise MessageError("invalid", "negative seq or t_pub_ns")
    if not 0 <= epoch <= MAX_EPOCH:
        raise MessageError("invalid", f"epoch {epoch} is out of range")
    return Envelope(seq, t_pub_ns, cls.from_body(_get(raw, "body", dict)), epoch)


def peek_type(payload: bytes) -> str:
    """The type name of a payload without validating its body (for recorders); '' if unknown."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return ""
    name = raw.get("type") if isinstance(raw, dict) else None
    return name if isinstance(name, str) and name in MESSAGE_TYPES else ""

"""The ornav wire format, and the checks every field and array passes on decode.

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
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 1 << 20  # 1 MiB: far above any pose or command; assets use their own limit
MAX_TOOLS_PER_FRAME = 64
MAX_NAME_LEN = 64
# PLUS and device SDKs round matrices to ~6 significant digits, so a decoded pose is
# called rigid within 1e-4 (0.1 mm on a 1 m lever arm is far below tracker noise).
RIGID_TOLERANCE = 1e-4

_ARRAY_DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "|u1"})
_SHA256 = re.compile(r"[0-9a-f]{64}")  # a SHA-256 digest, as hex
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


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def field_names(cls: type) -> frozenset[str]:
    """A message type's wire fields: its dataclass fields (one source, never restated)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names

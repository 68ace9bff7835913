"""Calibration result files: ornav's own TOML, and import/export for PLUS and OpenCV.

ornav calibration file (TOML, read with the standard library's ``tomllib``; written here
by hand because the structure is small and fixed). Example, a pivot calibration::

    format = "ornav-calibration"
    version = 1
    created = 2026-05-09T07:35:25Z        # UTC
    kind = "pivot"                        # pivot | spin | camera | handeye | temporal | display
    method = "algebraic"                  # the algorithm that produced it

    [input]                               # provenance, for people: any key, plain values
    source = "files"
    path = "/data/PivotCalibration"
    n_poses = 1151
    min_rotation_deg = 20.0               # the limits the result passed

    [result]                              # what nodes consume; strict per kind
    p_tip_in_pointer = [-14.476, 395.143, -7.558]
    p_pivot_in_tracker = [-805.285, -85.448, -2112.066]

    [errors]                              # figures of merit, unit in every key name
    rms_error_mm = 1.838                  # RMS over the stacked x, y, z components
    mean_residual_norm_mm = 2.531         # mean per-pose tip-to-pivot distance
    max_residual_norm_mm = 12.309

Floats are written with ``repr``, so they read back bit for bit; the file is written to
a temporary name and renamed, and what is written is first parsed back and validated.

``[result]`` and ``[errors]`` are checked against the kind's schema (``SCHEMAS``): a
missing key, an unknown key, a wrong shape or type, a non-finite number, or a value a
kind's check refuses (a pivot tip or pivot point beyond ``MAX_POSITION_MM``, 10 m) is refused.
``[input]`` is provenance only (nothing reads it back to compute with), so any key is
accepted there, but its values must be strings, finite numbers, booleans or flat lists of
those. Every refusal is one ``CalibrationFileError`` line naming the file and the key, e.g.
``pivot.toml: key 'result.p_tip_in_pointer': expected shape (3,), got (2,)``.

Interop:
- PLUS device-set configs (XML): ``read_plus_transforms`` returns every
  ``<CoordinateDefinitions><Transform From= To= Matrix= Error= Date=/>``;
  ``write_plus_transform`` adds or replaces one, as PLUS's fCal does. PLUS's
  ``From="StylusTip" To="Stylus"`` is ornav's ``T_pointer_from_pointer_tip``:
  ``read_plus_tip_offset`` (and ``read_tip_offset`` for a ``.xml`` name) reads its tip.
  ``read_plus_phantom_landmarks``: the ``<PhantomDefinition>`` landmarks, mm in the
  phantom frame.
- OpenCV camera files (``cv2.FileStorage``: ``.yml``, ``.yaml``, ``.xml``, ``.json``):
  ``read_opencv_camera`` / ``write_opencv_camera``, with ``camera_matrix``,
  ``distortion_coefficients``, ``image_width``, ``image_height`` as OpenCV's calibration
  sample writes them, and the common variants on reading.
- scikit-surgery pose directories: ``read_matrix_dir``, one 4x4 text matrix per file.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from calibration.pivot import MAX_POSITION_MM
from nav.arrays import FloatArray
from nav.transforms import Mat4, rigidity_error, rigidity_errors

FORMAT: Final = "ornav-calibration"
FORMAT_VERSION: Final = 1
KINDS: Final = ("pivot", "spin", "camera", "handeye", "temporal", "display")

# PLUS and tracker SDKs round matrices to ~6 significant digits: 1e-4 is far below any
# tracker's noise on a 1 m lever arm, and far above the rounding (as nav.messages does).
RIGID_TOLERANCE: Final = 1e-4
OPENCV_DIST_LENGTHS: Final = (4, 5, 8, 12, 14)
OPENCV_SUFFIXES: Final = (".yml", ".yaml", ".xml", ".json")
PLUS_DATE_FORMAT: Final = "%m%d%y_%H%M%S"  # PLUS's own, e.g. "012617_105449"

Value: TypeAlias = float | int | npt.NDArray[Any]
"""A ``[result]`` or ``[errors]`` value: a scalar, or a read-only float/int array."""
InputValue: TypeAlias = str | int | float | bool | tuple[str | int | float | bool, ...]


class CalibrationFileError(ValueError):
    """A calibration file (ornav, PLUS, OpenCV, matrix) that cannot be used; one line."""


# --- schema ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One ``[result]`` or ``[errors]`` key: its shape (``()`` scalar, None = any length)."""

    doc: str
    shape: tuple[int | None, ...] = ()
    integer: bool = False
    required: bool = True
    check: Callable[[npt.NDArray[Any]], str | None] | None = field(default=None, repr=False)


def _unit_vector(a: npt.NDArray[Any]) -> str | None:
    norm = float(np.linalg.norm(a))
    return None if abs(norm - 1.0) < 1e-6 else f"expected a unit vector, its norm is {norm:.6g}"


def _camera_matrix(K: npt.NDArray[Any]) -> str | None:
    if not np.allclose(K[2], (0.0, 0.0, 1.0), atol=1e-9):
        return f"the last row must be [0, 0, 1], got {K[2].tolist()}"
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        return f"focal lengths must be > 0, got fx={K[0, 0]:g}, fy={K[1, 1]:g}"
    return None


def _dist_coeffs(d: npt.NDArray[Any]) -> str | None:
    if len(d) not in OPENCV_DIST_LENGTHS:
        return f"expected {', '.join(map(str, OPENCV_DIST_LENGTHS))} numbers, got {len(d)}"
    return None


def _positive(a: npt.NDArray[Any]) -> str | None:
    return None if np.all(a > 0) else f"expected values > 0, got {a.tolist()}"


def _position(p: npt.NDArray[Any]) -> str | None:
    size = float(np.max(np.abs(p)))
    if size <= MAX_POSITION_MM:
        return None
    return f"{size:.3g} mm from the origin, beyond the {MAX_POSITION_MM:g} mm limit"


def _rigid(T: npt.NDArray[Any]) -> str | None:
    error = rigidity_error(T)
    return None if error <= RIGID_TOLERANCE else f"not a rigid transform (error {error:.3g})"


def _fraction(a: npt.NDArray[Any]) -> str | None:
    return None if 0.0 <= float(a) <= 1.0 else f"expected 0..1, got {float(a):g}"


def _unit_sign(a: npt.NDArray[Any]) -> str | None:
    return None if int(a) in (-1, 1) else f"expected +1 or -1, got {int(a)}"


def _count(a: npt.NDArray[Any]) -> str | None:
    return None if int(a) >= 0 else f"expected a count >= 0, got {int(a)}"


@dataclass(frozen=True)
class KindSchema:
    result: Mapping[str, KeySpec]
    errors: Mapping[str, KeySpec]


SCHEMAS: Final[Mapping[str, KindSchema]] = {
    "pivot": KindSchema(
        result={
            "p_tip_in_pointer": KeySpec(
                "mm, the tip in the tool's marker frame", (3,), check=_position
            ),
            "p_pivot_in_tracker": KeySpec(
                "mm, the pivot point in the tracker frame", (3,), check=_position
            ),
            "n_inliers": KeySpec(
                "poses used after outlier rejection", integer=True, required=False, check=_count
            ),
            "rotation_spread_deg": KeySpec(
                "largest angle between a pose and the mean orientation", required=False
            ),
            "weakest_rotation_deg": KeySpec(
                "how far the poses turn the least-turned direction", required=False
            ),
        },
        errors={
            "rms_error_mm": KeySpec("RMS over the stacked x, y, z residual components"),
            "mean_residual_norm_mm": KeySpec("mean per-pose distance of the tip from the pivot"),
            "max_residual_norm_mm": KeySpec("largest per-pose distance"),
        },
    ),
    "spin": KindSchema(
        result={
            "shaft_direction_in_pointer": KeySpec(
                "unit vector along the shaft (towards the tip), marker frame",
                (3,),
                check=_unit_vector,
            ),
            "shaft_direction_in_tracker": KeySpec(
                "unit vector, the shaft's mean direction during the spin, tracker frame",
                (3,),
                required=False,
                check=_unit_vector,
            ),
            "spin_range_deg": KeySpec("arc of spin angles the poses cover", required=False),
        },
        errors={
            "axis_spread_deg": KeySpec("RMS angle of each pose's shaft from the mean shaft"),
        },
    ),
    "camera": KindSchema(
        result={
            "camera_matrix": KeySpec(
                "px, OpenCV K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]", (3, 3), check=_camera_matrix
            ),
            "dist_coeffs": KeySpec(
                "OpenCV order: k1, k2, p1, p2[, k3[, k4, k5, k6 ...]]", (None,), check=_dist_coeffs
            ),
            "image_size": KeySpec("px, [width, height]", (2,), integer=True, check=_positive),
        },
        errors={
            "rms_reprojection_px": KeySpec("RMS reprojection error over all corners"),
            "per_view_rms_px": KeySpec(
                "RMS reprojection error of each view", (None,), required=False
            ),
            "intrinsics_std_px": KeySpec(
                "OpenCV's standard deviations of fx, fy, cx, cy", (4,), required=False
            ),
        },
    ),
    "handeye": KindSchema(
        result={
            "T_marker_from_camera": KeySpec(
                "mm, the camera frame in the tracked marker's", (4, 4), check=_rigid
            ),
        },
        errors={
            "rotation_residual_deg": KeySpec("RMS rotation residual of AX = XB"),
            "translation_residual_mm": KeySpec("RMS translation residual of AX = XB"),
        },
    ),
    "temporal": KindSchema(
        result={
            "dt_a_from_b_s": KeySpec("s, add to stream b's timestamps to put them on a's clock"),
            "sign": KeySpec(
                "+1, or -1: one motion signal is the other mirrored",
                integer=True,
                required=False,
                check=_unit_sign,
            ),
            "confidence": KeySpec(
                "0..1, correlation of the motion signals at the peak",
                required=False,
                check=_fraction,
            ),
            "resample_hz": KeySpec(
                "the common grid both streams were resampled onto", required=False, check=_positive
            ),
            "n_samples": KeySpec(
                "grid samples overlapping at the peak", integer=True, required=False, check=_count
            ),
        },
        errors={
            "peak_width_s": KeySpec("width of the correlation peak: smaller is sharper"),
            "residual_rms": KeySpec("RMS difference of the standardised aligned signals (no unit)"),
        },
    ),
    "display": KindSchema(
        result={
            "T_display_from_headset": KeySpec(
                "mm, the tracked headset marker in the headset's display (view) frame:"
                " x right, y down, z forward",
                (4, 4),
                check=_rigid,
            ),
            "camera_matrix": KeySpec(
                "px, the display's pinhole K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]",
                (3, 3),
                check=_camera_matrix,
            ),
            "image_size": KeySpec("px, [width, height]", (2,), integer=True, check=_positive),
        },
        errors={
            "alignment_rms_mm": KeySpec(
                "RMS of the overlay against tracked points seen through the display"
            ),
        },
    ),
}
"""What ``[result]`` and ``[errors]`` hold, per kind. Errors must be finite and >= 0."""

_TOP_KEYS: Final = ("format", "version", "created", "kind", "method", "input", "result", "errors")


@dataclass(frozen=True)
class CalibrationFile:
    """A validated calibration file; arrays are read-only float64 (int64 for integer keys)."""

    path: Path | None
    kind: str
    method: str
    created: datetime
    input: Mapping[str, InputValue]
    result: Mapping[str, Value]
    errors: Mapping[str, Value]
    version: int = FORMAT_VERSION

    def array(self, key: str) -> FloatArray:
        """A ``[result]`` (or else ``[errors]``) value as a float64 array; KeyError if absent."""
        value = self.result[key] if key in self.result else self.errors[key]
        return np.asarray(value, dtype=np.float64)

    def scalar(self, key: str) -> float:
        """A scalar ``[result]`` (or else ``[errors]``) value; KeyError if absent."""
        value = self.result[key] if key in self.result else self.errors[key]
        return float(np.asarray(value))


# --- validation -----------------------------------------------------------------------


def _fail(path: Path | str | None, key: str, problem: str) -> CalibrationFileError:
    where = f"{path}: " if path is not None else ""
    return CalibrationFileError(f"{where}key {key!r}: {problem}")


def _shape_of(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested list of numbers, or None if ragged or not numbers."""
    if isinstance(value, list):
        if not value:
            return (0,)
        shapes = {_shape_of(item) for item in value}
        if len(shapes) != 1:
            return None
        inner = shapes.pop()
        return None if inner is None else (len(value), *inner)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return ()


def _flat(value: Any) -> list[Any]:
    return [x for item in value for x in _flat(item)] if isinstance(value, list) else [value]


def _value(path: Path | None, key: str, raw: Any, spec: KeySpec) -> Value:
    shape = _shape_of(raw)
    want = "a number" if not spec.shape else f"shape {spec.shape}"
    if shape is None:
        raise _fail(path, key, f"expected {want} of numbers, got {_short(raw)}")
    if len(shape) != len(spec.shape) or any(
        w is not None and n != w for n, w in zip(shape, spec.shape, strict=True)
    ):
        got = "a number" if shape == () else f"shape {shape}"
        raise _fail(path, key, f"expected {want}, got {got}")
    if spec.shape and 0 in shape:
        raise _fail(path, key, "is empty")
    items = _flat(raw)
    if spec.integer and not all(isinstance(x, int) for x in items):
        raise _fail(path, key, f"expected integers, got {_short(raw)}")
    array = np.asarray(raw, dtype=np.int64 if spec.integer else np.float64)
    if not np.all(np.isfinite(array)):
        raise _fail(path, key, "holds a non-finite number")
    if spec.check is not None and (problem := spec.check(array)) is not None:
        raise _fail(path, key, problem)
    if not spec.shape:
        return int(array) if spec.integer else float(array)
    array.flags.writeable = False
    return array


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _table(path: Path | None, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    if key not in doc:
        raise _fail(path, key, "missing table")
    table = doc[key]
    if not isinstance(table, dict):
        raise _fail(path, key, f"expected a table [{key}], got {_short(table)}")
    return table


def _checked_table(
    path: Path | None, doc: Mapping[str, Any], name: str, specs: Mapping[str, KeySpec]
) -> dict[str, Value]:
    table = _table(path, doc, name)
    for key in table:
        if key not in specs:
            known = ", ".join(specs)
            raise _fail(path, f"{name}.{key}", f"unknown key (known: {known})")
    out: dict[str, Value] = {}
    for key, spec in specs.items():
        if key not in table:
            if spec.required:
                raise _fail(path, f"{name}.{key}", "missing")
            continue
        out[key] = _value(path, f"{name}.{key}", table[key], spec)
        if name == "errors" and np.any(np.asarray(out[key]) < 0):
            raise _fail(path, f"{name}.{key}", "an error figure must be >= 0")
    return out


def _input_table(path: Path | None, doc: Mapping[str, Any]) -> dict[str, InputValue]:
    out: dict[str, InputValue] = {}
    for key, raw in _table(path, doc, "input").items():
        items = raw if isinstance(raw, list) else [raw]
        for item in items:
            if not isinstance(item, str | int | float | bool):
                raise _fail(path, f"input.{key}", f"expected plain values, got {_short(raw)}")
            if isinstance(item, float) and not math.isfinite(item):
                raise _fail(path, f"input.{key}", "holds a non-finite number")
        out[key] = tuple(items) if isinstance(raw, list) else raw
    return out


def _validate(doc: Mapping[str, Any], path: Path | None) -> CalibrationFile:
    for key in doc:
        if key not in _TOP_KEYS:
            raise _fail(path, key, f"unknown key (known: {', '.join(_TOP_KEYS)})")
    for key in ("format", "version", "created", "kind", "method"):
        if key not in doc:
            raise _fail(path, key, "missing")
    if doc["format"] != FORMAT:
        raise _fail(path, "format", f"expected {FORMAT!r}, got {_short(doc['format'])}")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise _fail(
            path,
            "version",
            f"unknown version {_short(version)} (this ornav reads {FORMAT_VERSION})",
        )
    created = doc["created"]
    if not isinstance(created, datetime) or created.tzinfo is None:
        raise _fail(path, "created", f"expected a date-time with offset, got {_short(created)}")
    kind = doc["kind"]
    if kind not in SCHEMAS:
        raise _fail(path, "kind", f"unknown kind {_short(kind)} (known: {', '.join(KINDS)})")
    method = doc["method"]
    if not isinstance(method, str) or not method:
        raise _fail(path, "method", f"expected a non-empty string, got {_short(method)}")
    schema = SCHEMAS[kind]
    return CalibrationFile(
        path=path,
        kind=kind,
        method=method,
        created=created,
        input=_input_table(path, doc),
        result=_checked_table(path, doc, "result", schema.result),
        errors=_checked_table(path, doc, "errors", schema.errors),
        version=version,
    )


# --- TOML writing ---------------------------------------------------------------------


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # TOML allows no raw control characters
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        x = float(value)
        if not math.isfinite(x):
            raise ValueError("holds a non-finite number")
        return repr(x)  # shortest text that reads back to the same float; valid TOML
    if isinstance(value, str):
        return _toml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        if value and isinstance(value[0], list | tuple | np.ndarray):  # a matrix: row per line
            rows = "".join(f"    {_toml_value(row)},\n" for row in value)
            return f"[\n{rows}]"
        return "[" + ", ".join(_toml_scalar(x) for x in value) + "]"
    return _toml_scalar(value)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists, as tomllib would return them."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_plain(x) for x in value]
    return value


def _normalised(value: Any, spec: KeySpec | None) -> Any:
    """Plain Python values; a float key's integers become floats (``2`` -> ``2.0``)."""
    plain = _plain(value)
    if spec is None or spec.integer or _shape_of(plain) is None:
        return plain  # malformed values are left for the validator to name
    return np.asarray(plain, dtype=np.float64).tolist()


def dumps_calibration(
    *,
    kind: str,
    method: str,
    input: Mapping[str, Any],
    result: Mapping[str, Any],
    errors: Mapping[str, Any],
    created: datetime,
) -> str:
    """The TOML text of a calibration file (not validated; ``write_calibration`` does)."""
    lines = [
        "# ornav calibration result: read it with calibration.files.read_calibration",
        f"format = {_toml_string(FORMAT)}",
        f"version = {FORMAT_VERSION}",
        f"created = {created.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')}Z",
        f"kind = {_toml_string(kind)}",
        f"method = {_toml_string(method)}",
    ]
    schema = SCHEMAS.get(kind)
    for name, table in (("input", input), ("result", result), ("errors", errors)):
        specs = {} if schema is None or name == "input" else getattr(schema, name)
        lines += ["", f"[{name}]"]
        for key, value in table.items():
            spec = specs.get(key)
            comment = f"  # {spec.doc}" if spec is not None else ""
            try:
                text = _toml_value(_normalised(value, spec))
            except (ValueError, TypeError) as error:
                raise ValueError(f"key {f'{name}.{key}'!r}: {error}") from None
            if "\n" in text:  # a matrix: the comment goes above it
                lines += [f"# {key}: {spec.doc}"] if spec is not None else []
                lines.append(f"{key} = {text}")
            else:
                lines.append(f"{key} = {text}{comment}")
    return "\n".join(lines) + "\n"


def write_calibration(
    path: str | os.PathLike[str],
    *,
    kind: str,
    method: str,
    input: Mapping[str, Any],
    result: Mapping[str, Any],
    errors: Mapping[str, Any],
    created: datetime | None = None,
) -> CalibrationFile:
    """Validate and write a calibration file; returns what ``read_calibration`` will read.

    The text is parsed back and validated before anything touches the disk, and is
    written through a temporary file and a rename, so a half-written file never exists.
    ``created`` defaults to now (UTC, whole seconds). Raises CalibrationFileError for
    content the reader would refuse (naming the key), OSError for an unwritable path.
    """
    path = Path(path)
    created = created or datetime.now(UTC)
    created = created.astimezone(UTC).replace(microsecond=0)
    try:
        text = dumps_calibration(
            kind=kind, method=method, input=input, result=result, errors=errors, created=created
        )
    except (ValueError, TypeError) as error:
        raise CalibrationFileError(f"{path}: {error}") from None
    calibration = _validate(tomllib.loads(text), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return calibration


def read_calibration(path: str | os.PathLike[str]) -> CalibrationFile:
    """Read and validate an ornav calibration file; CalibrationFileError (one line) if bad."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise CalibrationFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CalibrationFileError(f"{path}: is a directory, not a calibration file") from None
    except tomllib.TOMLDecodeError as error:
        raise CalibrationFileError(f"{path}: not valid TOML: {error}") from None
    except (UnicodeDecodeError, OSError) as error:
        raise CalibrationFileError(f"{path}: cannot read: {error}") from None
    return _validate(doc, path)


def read_tip_offset(path: str | os.PathLike[str]) -> FloatArray:
    """``p_tip_in_pointer`` (3,) mm from a pivot calibration file, for a node's config.

    An ornav pivot calibration (TOML), or, for a name ending in ``.xml``, a PLUS device-set
    configuration that holds the stylus tip calibration (``read_plus_tip_offset``).
    Raises CalibrationFileError if the file is bad or is not a pivot calibration.
    """
    if Path(path).suffix.lower() == ".xml":
        return read_plus_tip_offset(path)
    calibration = read_calibration(path)
    if calibration.kind != "pivot":
        raise _fail(Path(path), "kind", f"expected a pivot calibration, got {calibration.kind!r}")
    return calibration.array("p_tip_in_pointer")


# --- PLUS device-set XML --------------------------------------------------------------


@dataclass(frozen=True)
class PlusTransform:
    """One ``<Transform>`` of a PLUS ``<CoordinateDefinitions>``.

    ``matrix`` (4, 4) maps ``from_frame`` coordinates into ``to_frame``: PLUS's
    ``StylusTipToStylus`` is ``T_stylus_from_stylustip``. PLUS allows affine transforms
    here (an ``ImageToProbe`` carries the pixel spacing), so only the last row is checked.
    ``error`` is PLUS's ``Error`` attribute (for a pivot calibration, the mean distance of
    the tip from the pivot, mm); ``date`` is its ``Date`` text (``%m%d%y_%H%M%S``).
    """

    from_frame: str
    to_frame: str
    matrix: FloatArray
    error: float | None = None
    date: str | None = None

    @property
    def name(self) -> str:
        return f"{self.from_frame}To{self.to_frame}"


def _parse_xml(path: Path) -> ET.ElementTree[ET.Element]:
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
    try:
        return ET.parse(path, parser=parser)
    except FileNotFoundError:
        raise CalibrationFileError(f"{path}: no such file") from None
    except ET.ParseError as error:
        raise CalibrationFileError(f"{path}: not well-formed XML: {error}") from None
    except OSError as error:
        raise CalibrationFileError(f"{path}: cannot read: {error}") from None


def _plus_matrix(path: Path, what: str, text: str | None) -> FloatArray:
    if text is None:
        raise CalibrationFileError(f"{path}: {what}: no Matrix attribute")
    tokens = text.split()
    if len(tokens) != 16:
        raise CalibrationFileError(f"{path}: {what}: Matrix has {len(tokens)} numbers, expected 16")
    try:
        matrix = np.array([float(t) for t in tokens]).reshape(4, 4)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise CalibrationFileError(f"{path}: {what}: Matrix holds {bad[:20]!r}") from None
    if not np.all(np.isfinite(matrix)):
        raise CalibrationFileError(f"{path}: {what}: Matrix holds a non-finite number")
    if np.max(np.abs(matrix[3] - (0.0, 0.0, 0.0, 1.0))) > RIGID_TOLERANCE:
        raise CalibrationFileError(
            f"{path}: {what}: Matrix last row is {matrix[3].tolist()}, expected [0, 0, 0, 1]"
        )
    return matrix


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _plus_root(path: Path) -> ET.Element:
    root = _parse_xml(path).getroot()
    if root.tag != "PlusConfiguration":
        raise CalibrationFileError(
            f"{path}: not a PLUS device-set configuration (root <{root.tag}>)"
        )
    return root


def read_plus_transforms(path: str | os.PathLike[str]) -> tuple[PlusTransform, ...]:
    """Every ``CoordinateDefinitions/Transform`` of a PLUS device-set config, in file order.

    Raises CalibrationFileError (one line, naming the file and the transform) for XML that
    is not well formed, a root that is not ``<PlusConfiguration>``, a transform without
    ``From``/``To``, a Matrix that is not 16 finite numbers with last row 0 0 0 1, an
    ``Error`` that is not a number, or the same From/To twice.
    """
    path = Path(path)
    return _plus_transforms(path, _plus_root(path))


def _plus_transforms(path: Path, root: ET.Element) -> tuple[PlusTransform, ...]:
    out: list[PlusTransform] = []
    seen: set[tuple[str, str]] = set()
    for i, element in enumerate(root.iterfind("CoordinateDefinitions/Transform")):
        source, target = element.get("From"), element.get("To")
        if not source or not target:
            raise CalibrationFileError(f"{path}: Transform #{i + 1} lacks From or To")
        what = f"Transform {source}To{target}"
        if (source, target) in seen:
            raise CalibrationFileError(f"{path}: {what} is defined twice")
        seen.add((source, target))
        error_text = element.get("Error")
        error: float | None = None
        if error_text is not None:
            try:
                error = float(error_text)
            except ValueError:
                raise CalibrationFileError(
                    f"{path}: {what}: Error {error_text[:20]!r} is not a number"
                ) from None
        matrix = _plus_matrix(path, what, element.get("Matrix"))
        matrix.flags.writeable = False
        out.append(PlusTransform(source, target, matrix, error, element.get("Date")))
    return tuple(out)


PLUS_TIP_FRAME: Final = "StylusTip"
PLUS_STYLUS_FRAME: Final = "Stylus"


def read_plus_tip_offset(path: str | os.PathLike[str]) -> FloatArray:
    """``p_tip_in_pointer`` (3,) mm from a PLUS device-set config's stylus tip calibration.

    PLUS's pivot calibration (fCal, ``vtkPlusPivotCalibrationAlgo``) stores
    ``<Transform From="StylusTip" To="Stylus" Matrix=...>``: the tip frame in the marker
    frame, so its translation is the tip. The frame names are the ones the file's
    ``<vtkPlusPivotCalibrationAlgo ObjectPivotPointCoordinateFrame= ObjectMarkerCoordinateFrame=>``
    gives, else ``StylusTip`` and ``Stylus``. A file that holds the transform the other
    way (``StylusToStylusTip``) is inverted with a general inverse, since PLUS matrices
    are rigid only to their printed digits. Raises CalibrationFileError (one line) for a
    bad file, a missing tip transform, or a tip at the marker origin or beyond 10 m.
    """
    path = Path(path)
    root = _plus_root(path)
    algo = root.find(".//vtkPlusPivotCalibrationAlgo")
    tip_frame, marker_frame = PLUS_TIP_FRAME, PLUS_STYLUS_FRAME
    if algo is not None:
        tip_frame = algo.get("ObjectPivotPointCoordinateFrame") or ""
        marker_frame = algo.get("ObjectMarkerCoordinateFrame") or ""
        if not tip_frame or not marker_frame:
            raise CalibrationFileError(
                f"{path}: <vtkPlusPivotCalibrationAlgo> lacks ObjectPivotPointCoordinateFrame "
                "or ObjectMarkerCoordinateFrame"
            )
    transforms = _plus_transforms(path, root)
    name = f"{tip_frame}To{marker_frame}"
    p_tip: FloatArray | None = None
    for transform in transforms:
        if (transform.from_frame, transform.to_frame) == (tip_frame, marker_frame):
            p_tip = transform.matrix[:3, 3].copy()
        elif (transform.from_frame, transform.to_frame) == (marker_frame, tip_frame):
            try:
                p_tip = np.linalg.inv(transform.matrix)[:3, 3].astype(np.float64)
            except np.linalg.LinAlgError:
                raise CalibrationFileError(
                    f"{path}: {transform.name}: Matrix is singular, it has no inverse"
                ) from None
    if p_tip is None:
        found = ", ".join(t.name for t in transforms) or "none"
        raise CalibrationFileError(
            f"{path}: no {name} transform in <CoordinateDefinitions> (found: {found}): "
            "not a stylus tip calibration"
        )
    if not np.any(p_tip):
        raise CalibrationFileError(f"{path}: {name}: the tip is at the marker origin")
    if (problem := _position(p_tip)) is not None:
        raise CalibrationFileError(f"{path}: {name}: the tip is {problem}")
    p_tip.flags.writeable = False
    return p_tip


@dataclass(frozen=True)
class Landmark:
    """A named point on a phantom: ``p_phantom`` (3,) mm in the phantom's own frame."""

    name: str
    p_phantom: FloatArray


def read_plus_phantom_landmarks(path: str | os.PathLike[str]) -> tuple[Landmark, ...]:
    """The landmarks of a PLUS phantom definition, in file order.

    PLUS's landmark registration (``vtkPlusPhantomLandmarkRegistrationAlgo``, fCal) reads
    ``<PhantomDefinition><Geometry><Landmarks><Landmark Name= Position="x y z"/>``, mm in
    the phantom frame, from the device-set configuration (e.g.
    ``PlusDeviceSet_fCal_Sim_RecordPhantomLandmarks.xml``). Raises CalibrationFileError
    (one line, naming the file and the landmark) for a bad file, no phantom definition or
    no landmarks, a landmark without a name or with a name used twice, a Position that is
    not 3 finite numbers within 10 m, or two landmarks at the same point.
    """
    path = Path(path)
    root = _plus_root(path)
    if root.find("PhantomDefinition") is None:
        raise CalibrationFileError(f"{path}: no <PhantomDefinition>")
    elements = root.findall("PhantomDefinition/Geometry/Landmarks/Landmark")
    if not elements:
        raise CalibrationFileError(
            f"{path}: <PhantomDefinition> has no Geometry/Landmarks/Landmark"
        )
    out: list[Landmark] = []
    for i, element in enumerate(elements):
        name = (element.get("Name") or "").strip()
        if not name:
            raise CalibrationFileError(f"{path}: Landmark #{i + 1} has no Name")
        what = f"Landmark {name!r}"
        if any(landmark.name == name for landmark in out):
            raise CalibrationFileError(f"{path}: {what} is defined twice")
        text = element.get("Position")
        if text is None:
            raise CalibrationFileError(f"{path}: {what}: no Position attribute")
        tokens = text.split()
        if len(tokens) != 3 or not all(_is_float(t) for t in tokens):
            raise CalibrationFileError(
                f"{path}: {what}: Position {text.strip()[:40]!r} is not 3 numbers"
            )
        p = np.array([float(t) for t in tokens])
        if not np.all(np.isfinite(p)):
            raise CalibrationFileError(f"{path}: {what}: Position holds a non-finite number")
        if (problem := _position(p)) is not None:
            raise CalibrationFileError(f"{path}: {what}: Position is {problem}")
        for other in out:
            if np.array_equal(other.p_phantom, p):
                raise CalibrationFileError(f"{path}: {what} is at the same point as {other.name!r}")
        p.flags.writeable = False
        out.append(Landmark(name, p))
    return tuple(out)


def plus_tip_transform(p_tip_in_pointer: npt.ArrayLike) -> Mat4:
    """PLUS's ``StylusTipToStylus`` for a tip at ``p_tip_in_pointer`` (3,) mm.

    Oriented as PLUS's pivot calibration orients it (vtkIGSIOPivotCalibrationAlgo): the
    tip frame's +z runs from the marker origin through the tip, +y is z x (marker x),
    or z x (marker y) when the shaft is within 20 degrees of the marker's x axis, and
    x = y x z. So a PLUS scene shows our calibrated stylus as it shows its own.
    """
    p = np.asarray(p_tip_in_pointer, dtype=np.float64)
    norm = float(np.linalg.norm(p))
    if p.shape != (3,) or not np.all(np.isfinite(p)) or norm == 0.0:
        raise ValueError(f"p_tip_in_pointer must be 3 finite numbers, not all 0, got {p!r}")
    z = p / norm
    off_axis_deg = math.degrees(math.acos(min(1.0, abs(float(z[0])))))
    helper = np.array([1.0, 0.0, 0.0]) if off_axis_deg > 20.0 else np.array([0.0, 1.0, 0.0])
    y = np.cross(z, helper)
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, p
    return T


def _plus_matrix_text(matrix: npt.ArrayLike) -> str:
    rows = np.asarray(matrix, dtype=np.float64)
    return "  ".join(" ".join(repr(float(x)) for x in row) for row in rows)


def write_plus_transform(path: str | os.PathLike[str], transform: PlusTransform) -> None:
    """Add ``transform`` to a PLUS config's ``<CoordinateDefinitions>``, replacing one with
    the same From/To; a missing file is created as a minimal ``<PlusConfiguration>``.

    The rest of an existing file (devices, comments) is kept as XML content, but it is
    written back by ElementTree: attributes on one line, LF line ends, so a diff against
    the original shows layout changes. Raises CalibrationFileError for an existing file
    that is not a PLUS config, ValueError for a bad matrix.
    """
    path = Path(path)
    matrix = np.asarray(transform.matrix, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{transform.name}: matrix must be 4x4 finite, got {matrix!r}")
    created = not path.exists()
    if not created:
        tree = _parse_xml(path)
        root = tree.getroot()
        if root.tag != "PlusConfiguration":
            raise CalibrationFileError(
                f"{path}: not a PLUS device-set configuration (root <{root.tag}>): not changed"
            )
    else:
        root = ET.Element("PlusConfiguration", version="2.1")
        tree = ET.ElementTree(root)
    definitions = root.find("CoordinateDefinitions")
    if definitions is None:
        definitions = ET.SubElement(root, "CoordinateDefinitions")
    attributes = {"From": transform.from_frame, "To": transform.to_frame}
    attributes["Matrix"] = _plus_matrix_text(matrix)
    if transform.error is not None:
        attributes["Error"] = f"{transform.error:.6g}"
    if transform.date is not None:
        attributes["Date"] = transform.date
    for old in definitions.findall("Transform"):
        if old.get("From") == transform.from_frame and old.get("To") == transform.to_frame:
            old.attrib.clear()
            old.attrib.update(attributes)
            break
    else:
        ET.SubElement(definitions, "Transform", attributes)
    if created:
        ET.indent(root, space="  ")
        root.tail = "\n"
    else:  # only the part we touched: the rest of the file keeps its own layout
        ET.indent(definitions, space="  ", level=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=False)


# --- OpenCV camera files --------------------------------------------------------------

_CV_MATRIX_KEYS: Final = ("camera_matrix", "cameraMatrix", "K", "intrinsic_matrix", "intrinsics")
_CV_DIST_KEYS: Final = (
    "distortion_coefficients",
    "dist_coeffs",
    "distCoeffs",
    "distortion_coeffs",
    "D",
)
_CV_SIZE_KEYS: Final = ("image_size", "imageSize")


@dataclass(frozen=True)
class OpenCVCamera:
    """Intrinsics as OpenCV stores them: K (3, 3) px, distortion (k,), size (width, height)."""

    camera_matrix: FloatArray
    dist_coeffs: FloatArray
    image_size: tuple[int, int] | None
    rms_reprojection_px: float | None = None


def _cv_node_matrix(node: Any) -> FloatArray | None:
    """A FileStorage node as a matrix: ``!!opencv-matrix``, a sequence, or a ROS-style map."""
    if node.isNone():
        return None
    if node.isMap() and not node.getNode("data").isNone():  # ROS camera_info yaml
        rows, cols = int(node.getNode("rows").real()), int(node.getNode("cols").real())
        data = _cv_node_matrix(node.getNode("data"))
        return None if data is None or data.size != rows * cols else data.reshape(rows, cols)
    if node.isSeq():
        return np.array([node.at(i).real() for i in range(node.size())], dtype=np.float64)
    mat = node.mat()
    return None if mat is None else np.asarray(mat, dtype=np.float64)


def _first(fs: Any, keys: Sequence[str]) -> tuple[str, Any]:
    for key in keys:
        node = fs.getNode(key)
        if not node.isNone():
            return key, node
    return keys[0], None


def read_opencv_camera(path: str | os.PathLike[str]) -> OpenCVCamera:
    """Intrinsics from an OpenCV ``FileStorage`` file (yml, yaml, xml, json).

    Accepts ``camera_matrix`` (or ``cameraMatrix``, ``K``, ``intrinsic_matrix``,
    ``intrinsics``), ``distortion_coefficients`` (or ``dist_coeffs``, ``distCoeffs``,
    ``distortion_coeffs``, ``D``), each as ``!!opencv-matrix``, a plain sequence or a ROS
    ``{rows, cols, data}`` map; the size as ``image_width`` + ``image_height`` or
    ``image_size``/``imageSize`` [width, height]; ``avg_reprojection_error`` if present.
    Raises CalibrationFileError naming the file and key.
    """
    import cv2  # here: cv2 is heavy and only camera files need it

    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"{path}: no such file")
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as error:
        detail = " ".join(str(error).split())[:160]
        raise CalibrationFileError(f"{path}: not an OpenCV FileStorage file: {detail}") from None
    try:
        if not fs.isOpened():
            raise CalibrationFileError(f"{path}: OpenCV cannot open it")
        key, node = _first(fs, _CV_MATRIX_KEYS)
        K = None if node is None else _cv_node_matrix(node)
        if K is None:
            raise _fail(path, key, f"missing (also looked for {', '.join(_CV_MATRIX_KEYS[1:])})")
        if K.size == 9:
            K = K.reshape(3, 3)
        if (problem := _value_problem(K, (3, 3), _camera_matrix)) is not None:
            raise _fail(path, key, problem)
        key, node = _first(fs, _CV_DIST_KEYS)
        dist = None if node is None else _cv_node_matrix(node)
        if dist is None:
            raise _fail(path, key, f"missing (also looked for {', '.join(_CV_DIST_KEYS[1:])})")
        dist = dist.reshape(-1)
        if (problem := _value_problem(dist, (dist.size,), _dist_coeffs)) is not None:
            raise _fail(path, key, problem)
        image_size = _cv_image_size(fs, path)
        rms_node = fs.getNode("avg_reprojection_error")
        rms = None if rms_node.isNone() else float(rms_node.real())
    finally:
        fs.release()
    return OpenCVCamera(K, dist, image_size, rms if rms is None or math.isfinite(rms) else None)


def _value_problem(
    a: FloatArray, shape: tuple[int, ...], check: Callable[[FloatArray], str | None]
) -> str | None:
    if a.shape != shape:
        return f"expected shape {shape}, got {a.shape}"
    if not np.all(np.isfinite(a)):
        return "holds a non-finite number"
    return check(a)


def _cv_image_size(fs: Any, path: Path) -> tuple[int, int] | None:
    width, height = fs.getNode("image_width"), fs.getNode("image_height")
    if not width.isNone() or not height.isNone():
        if width.isNone() or height.isNone():
            missing = "image_width" if width.isNone() else "image_height"
            raise _fail(path, missing, "missing (the other one is there)")
        size = np.array([width.real(), height.real()])
    else:
        key, node = _first(fs, _CV_SIZE_KEYS)
        if node is None:
            return None
        found = _cv_node_matrix(node)
        if found is None or found.size != 2:
            raise _fail(path, key, "expected [width, height]")
        size = found.reshape(2)
    if not np.all(np.isfinite(size)) or np.any(size <= 0) or np.any(size != np.round(size)):
        raise _fail(path, "image_width", f"expected whole numbers > 0, got {size.tolist()}")
    return int(size[0]), int(size[1])


def write_opencv_camera(path: str | os.PathLike[str], camera: OpenCVCamera) -> None:
    """Write intrinsics with the names OpenCV's calibration sample uses (see the module doc).

    The suffix picks the format (``.yml``, ``.yaml``, ``.xml``, ``.json``); anything else
    is a CalibrationFileError, as is a camera matrix or distortion the reader would refuse.
    """
    import cv2

    path = Path(path)
    if path.suffix.lower() not in OPENCV_SUFFIXES:
        raise CalibrationFileError(
            f"{path}: an OpenCV camera file ends in {', '.join(OPENCV_SUFFIXES)}"
        )
    K = np.asarray(camera.camera_matrix, dtype=np.float64)
    dist = np.asarray(camera.dist_coeffs, dtype=np.float64).reshape(-1)
    for key, problem in (
        ("camera_matrix", _value_problem(K, (3, 3), _camera_matrix)),
        ("distortion_coefficients", _value_problem(dist, (dist.size,), _dist_coeffs)),
    ):
        if problem is not None:
            raise _fail(path, key, problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    try:
        fs.write("calibration_time", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if camera.image_size is not None:
            fs.write("image_width", int(camera.image_size[0]))
            fs.write("image_height", int(camera.image_size[1]))
        fs.write("camera_matrix", K)
        fs.write("distortion_coefficients", dist.reshape(1, -1))
        if camera.rms_reprojection_px is not None:
            fs.write("avg_reprojection_error", float(camera.rms_reprojection_px))
    finally:
        fs.release()


# --- scikit-surgery matrix directories ------------------------------------------------


def read_matrix_file(path: str | os.PathLike[str]) -> FloatArray:
    """One 4x4 text matrix (4 lines of 4 numbers, spaces, tabs or commas; ``#`` comments).

    Raises CalibrationFileError naming the file if it is not 4x4 finite numbers.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CalibrationFileError(f"{path}: not a text file") from None
    except OSError as error:
        raise CalibrationFileError(f"{path}: cannot read: {error.strerror or error}") from None
    rows = [
        line.replace(",", " ").split()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if len(rows) != 4 or any(len(row) != 4 for row in rows):
        shape = " x ".join(str(len(row)) for row in rows[:6]) or "nothing"
        raise CalibrationFileError(
            f"{path}: expected a 4x4 matrix (4 lines of 4 numbers), got rows of {shape}"
        )
    try:
        matrix = np.array([[float(x) for x in row] for row in rows])
    except ValueError:
        bad = next(x for row in rows for x in row if not _is_float(x))
        raise CalibrationFileError(f"{path}: {bad[:20]!r} is not a number") from None
    if not np.all(np.isfinite(matrix)):
        raise CalibrationFileError(f"{path}: holds a non-finite number")
    return matrix


def read_matrix_dir(
    path: str | os.PathLike[str], *, rigid_tolerance: float = RIGID_TOLERANCE
) -> FloatArray:
    """Every 4x4 matrix file of a directory as (N, 4, 4), sorted by file name.

    This is how scikit-surgery stores tracked poses (one ``<timestamp>.txt`` per sample,
    so name order is time order). Numbers in names sort by value (``natural_key``), so
    ``pose_2`` comes before ``pose_10``. Hidden files are skipped; every other file must be a
    4x4 rigid transform within ``rigid_tolerance`` (see ``nav.transforms.rigidity_error``)
    whose translation is within ``calibration.pivot.MAX_POSITION_MM`` (10 m) of the origin.
    Raises CalibrationFileError naming the directory or the first bad file.
    """
    path = Path(path)
    if not path.is_dir():
        raise CalibrationFileError(
            f"{path}: {'not a directory' if path.exists() else 'no such directory'}"
        )
    files = _matrix_files(path)
    if not files:
        raise CalibrationFileError(f"{path}: no matrix files in it")
    Ts = np.empty((len(files), 4, 4))
    for i, file in enumerate(files):
        Ts[i] = read_matrix_file(file)
    far = np.flatnonzero(np.max(np.abs(Ts[:, :3, 3]), axis=1) > MAX_POSITION_MM)
    if far.size:
        i = int(far[0])
        raise CalibrationFileError(
            f"{files[i]}: translation {float(np.max(np.abs(Ts[i, :3, 3]))):.3g} mm is beyond "
            f"the {MAX_POSITION_MM:g} mm limit (a unit error or a corrupt file?)"
        )
    errors = rigidity_errors(Ts)
    bad = np.flatnonzero(~(errors <= rigid_tolerance))
    if bad.size:
        i = int(bad[0])
        raise CalibrationFileError(
            f"{files[i]}: not a rigid transform (rigidity error {errors[i]:.3g}, "
            f"tolerance {rigid_tolerance:g})"
        )
    return Ts


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``pose_2`` before ``pose_10``; equal-width numbers sort as text."""
    # re.split with a group alternates text and digit runs, so ints only meet ints.
    parts = re.split(r"(\d+)", name)
    return (*(int(p) if i % 2 else p for i, p in enumerate(parts)), name)


def _matrix_files(path: Path) -> list[Path]:
    files = (p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return sorted(files, key=lambda p: natural_key(p.name))


def matrix_dir_names(path: str | os.PathLike[str]) -> list[str]:
    """The file names ``read_matrix_dir`` reads, in its order."""
    return [p.name for p in _matrix_files(Path(path))]

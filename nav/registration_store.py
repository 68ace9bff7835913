"""The accepted registration on disk, so a restarted nav node can restore it.

One JSON file (the launch file puts it at ``{run_dir}/registration.json``)::

    {
      "format": "ornav-registration",
      "version": 3,
      "case": "phantom",                      # the case it registers; another case refuses it
      "case_id": "3f1c...",                   # nav.navigation.case_id of it (64 hex), or ""
      "created_unix_s": 1764080000.123,       # wall clock at accept (for people)
      "registration_id": 1764080000123456789,
      "method": "points",                     # "surface" or "deformable": then the
                                              # "fiducial" errors are the traced points'
                                              # residuals (thousands)
      "T_reference_from_image": [[r00, r01, r02, tx], ..., [0, 0, 0, 1]],   # mm
      "fre_mm": 0.07,
      "fiducial_errors_mm": [0.05, ...],
      "fiducial_labels": ["F-1", ...],        # the case fiducials used, aligned; [] for surface
      "fle_mm": 0.25,
      "target_names": ["tumor_centre", ...],
      "predicted_tre_mm": [0.12, ...],
      "organ_confidence_mm": [1.2, ...],      # per organ vertex, or [] (none: "points")
      "deformation": null                     # or, for "deformable", the field
                                              # (nav.messages.DeformationField):
                                              # {"centres_image_mm": [[x, y, z], ...],
                                              #  "coefficients_mm": [[ax, ay, az], ...],
                                              #  "widths_mm": [...], "kernel_weights": [...]}
    }

Floats are written with Python's ``repr`` (the json module's default), so they read back
bit for bit. The file is written to a temporary name in the same folder, flushed to disk,
then renamed over the old one: a crash leaves the old file or the new one, never half.

Version 1 files (before ``case_id`` and ``fiducial_labels``) still load, with both
unknown ("" and ()): the nav node then checks the case by name and targets only, and a
consumer that needs the labels (the render node's confidence colours) says it has none.
Version 2 files (before ``organ_confidence_mm`` and ``deformation``) load with neither
(empty and None): they hold rigid registrations only. A deformation that is not a valid
field (a missing or unknown key, a wrong shape, a non-finite number, too many control
points), or one on a rigid method, or a "deformable" registration without one, refuses
the file like any other problem.

Reading is strict: a missing or unknown key, a wrong type, a non-finite number, a matrix
that is not rigid, or mismatched lengths raise :class:`RegistrationFileError` (one line
naming the file). The node logs it and starts unregistered; it never crashes on a bad file.
A restored registration comes back in state "restored" with ``needs_verification``: the
patient or the reference may have moved while the node was down.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from nav.messages import DeformationField
from nav.navigation import Registration

FORMAT: Final = "ornav-registration"
VERSION: Final = 3
READ_VERSIONS: Final = (1, 2, 3)
MAX_FILE_BYTES: Final = 8 << 20
"""A deformable registration of a 50k-vertex organ with 20k traced points is ~1.5 MB."""

_KEYS: Final = frozenset(
    {
        "format",
        "version",
        "case",
        "created_unix_s",
        "registration_id",
        "method",
        "T_reference_from_image",
        "fre_mm",
        "fiducial_errors_mm",
        "fle_mm",
        "target_names",
        "predicted_tre_mm",
    }
)
_KEYS_SINCE_2: Final = frozenset({"case_id", "fiducial_labels"})
_KEYS_SINCE_3: Final = frozenset({"organ_confidence_mm", "deformation"})
_DEFORMATION_KEYS: Final = ("centres_image_mm", "coefficients_mm", "widths_mm", "kernel_weights")


class RegistrationFileError(ValueError):
    """A registration file that cannot be used: ``<file>: <problem>``, one line."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}")


@dataclass(frozen=True, eq=False)
class StoredRegistration:
    """What a registration file holds: the case it belongs to, when, and the registration."""

    case_name: str
    created_unix_s: float
    registration: Registration


def to_json(registration: Registration, *, case_name: str, created_unix_s: float) -> str:
    """The file's text for ``registration`` (of case ``case_name``, accepted at that time)."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "case": case_name,
        "case_id": registration.case_id,
        "created_unix_s": float(created_unix_s),
        "registration_id": int(registration.registration_id),
        "method": registration.method,
        "T_reference_from_image": registration.T_reference_from_image.tolist(),
        "fre_mm": registration.fre_mm,
        "fiducial_errors_mm": registration.fiducial_errors_mm.tolist(),
        "fiducial_labels": list(registration.fiducial_labels),
        "fle_mm": registration.fle_mm,
        "target_names": list(registration.target_names),
        "predicted_tre_mm": registration.predicted_tre_mm.tolist(),
        "organ_confidence_mm": registration.organ_confidence_mm.tolist(),
        "deformation": (
            None
            if registration.deformation is None
            else {key: getattr(registration.deformation, key).tolist() for key in _DEFORMATION_KEYS}
        ),
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def save_registration(
    path: str | os.PathLike[str],
    registration: Registration,
    *,
    case_name: str,
    created_unix_s: float,
) -> None:
    """Write ``registration`` to ``path`` atomically (temporary file, fsync, rename).

    Raises OSError if the folder is missing or not writable, ValueError for a non-finite
    value (which a valid ``Registration`` does not hold).
    """
    path = Path(path)
    text = to_json(registration, case_name=case_name, created_unix_s=created_unix_s)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _number(path: Path, document: Mapping[str, Any], key: str) -> float:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegistrationFileError(path, f"key {key!r}: expected a finite number, got {value!r}")
    return float(value)


def _numbers(path: Path, document: Mapping[str, Any], key: str) -> list[float]:
    value = document[key]
    if not isinstance(value, list):
        raise RegistrationFileError(path, f"key {key!r}: expected a list of numbers")
    return [_number(path, {key: v}, key) for v in value]


def _string(path: Path, document: Mapping[str, Any], key: str) -> str:
    value = document[key]
    if not isinstance(value, str) or not value:
        raise RegistrationFileError(path, f"key {key!r}: expected a non-empty string")
    return value


def from_json(text: str, *, path: str | os.PathLike[str] = "<registration>") -> StoredRegistration:
    """Parse and check a registration file's text; RegistrationFileError on any problem."""
    where = Path(path)
    try:
        # parse_constant refuses NaN and Infinity, which json would otherwise accept.
        document = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as error:
        raise RegistrationFileError(where, f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise RegistrationFileError(where, "expected a JSON object")
    if document.get("format") != FORMAT:
        raise RegistrationFileError(where, f"format is {document.get('format')!r}, not {FORMAT!r}")
    version = document.get("version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise RegistrationFileError(
            where, f"version {version!r}: this reader knows {', '.join(map(str, READ_VERSIONS))}"
        )
    keys = (
        _KEYS
        | (_KEYS_SINCE_2 if version >= 2 else frozenset())
        | (_KEYS_SINCE_3 if version >= 3 else frozenset())
    )
    unknown = sorted(set(document) - keys)
    if unknown:
        raise RegistrationFileError(where, f"unknown key {unknown[0]!r}")
    missing = sorted(keys - set(document))
    if missing:
        raise RegistrationFileError(where, f"missing key {missing[0]!r}")
    labels = document.get("fiducial_labels", [])
    if not isinstance(labels, list) or not all(isinstance(n, str) and n for n in labels):
        raise RegistrationFileError(
            where, "key 'fiducial_labels': expected a list of non-empty strings"
        )
    case_id = document.get("case_id", "")
    if not isinstance(case_id, str):
        raise RegistrationFileError(where, "key 'case_id': expected a string")
    registration_id = document["registration_id"]
    if type(registration_id) is not int:
        raise RegistrationFileError(where, "key 'registration_id': expected an integer")
    names = document["target_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RegistrationFileError(where, "key 'target_names': expected a list of strings")
    key = "T_reference_from_image"
    rows = document[key]
    if not (
        isinstance(rows, list)
        and len(rows) == 4
        and all(isinstance(row, list) and len(row) == 4 for row in rows)
    ):
        raise RegistrationFileError(where, f"key {key!r}: expected 4 rows of 4 numbers")
    T = np.array([_numbers(where, {key: row}, key) for row in rows])
    predicted = _numbers(where, document, "predicted_tre_mm")
    if len(predicted) != len(names):
        raise RegistrationFileError(
            where, f"{len(predicted)} predicted TRE values for {len(names)} target names"
        )
    confidence = (
        _numbers(where, document, "organ_confidence_mm")
        if "organ_confidence_mm" in document
        else []
    )
    deformation = _deformation(where, document.get("deformation"))
    try:
        registration = Registration(
            registration_id=registration_id,
            state="restored",
            method=_string(where, document, "method"),
            T_reference_from_image=T,
            fre_mm=_number(where, document, "fre_mm"),
            fiducial_errors_mm=np.array(_numbers(where, document, "fiducial_errors_mm")),
            fle_mm=_number(where, document, "fle_mm"),
            target_names=tuple(names),
            predicted_tre_mm=np.array(predicted),
            true_tre_mm=np.full(len(names), np.nan),
            needs_verification=True,
            fiducial_labels=tuple(labels),
            case_id=case_id,
            organ_confidence_mm=np.array(confidence),
            deformation=deformation,
        )
    except ValueError as error:  # not rigid, a negative error, an id out of range, labels,
        # a deformation on a rigid method or none on "deformable"
        raise RegistrationFileError(where, str(error)) from None
    return StoredRegistration(
        case_name=_string(where, document, "case"),
        created_unix_s=_number(where, document, "created_unix_s"),
        registration=registration,
    )


def _deformation(path: Path, value: Any) -> DeformationField | None:
    """The file's ``deformation``: None, or a valid field; RegistrationFileError if not."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(_DEFORMATION_KEYS):
        raise RegistrationFileError(
            path, f"key 'deformation': expected null or a map of {', '.join(_DEFORMATION_KEYS)}"
        )
    arrays = {}
    for key in _DEFORMATION_KEYS:
        rows = value[key]
        if not isinstance(rows, list):
            raise RegistrationFileError(path, f"key 'deformation.{key}': expected a list")
        if key in ("centres_image_mm", "coefficients_mm"):
            if not all(isinstance(row, list) and len(row) == 3 for row in rows):
                raise RegistrationFileError(
                    path, f"key 'deformation.{key}': expected rows of 3 numbers"
                )
            numbers = [_numbers(path, {key: row}, key) for row in rows]
            arrays[key] = np.array(numbers, dtype=np.float64).reshape(-1, 3)
        else:
            arrays[key] = np.array(_numbers(path, {key: rows}, key), dtype=np.float64)
    try:
        return DeformationField(**arrays)
    except ValueError as error:  # shapes, bounds
        raise RegistrationFileError(path, str(error)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def load_registration(path: str | os.PathLike[str]) -> StoredRegistration:
    """Read ``path``; RegistrationFileError if it is missing, unreadable, too big or invalid."""
    where = Path(path)
    try:
        if where.stat().st_size > MAX_FILE_BYTES:
            raise RegistrationFileError(where, f"larger than {MAX_FILE_BYTES} bytes")
        text = where.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RegistrationFileError(where, f"cannot read: {error}") from None
    return from_json(text, path=where)

"""The case bundle: read and check the preoperative model a navigation session shows.

A case is a folder::

    case.toml            what is in the case (below)
    models/liver.ply     one mesh per structure: PLY, STL, OBJ or GLB (read by trimesh)
    fiducials.mrk.json   3D Slicer point lists (.mrk.json, or a legacy .fcsv)
    targets.mrk.json
    volume/<hash>.u16.gz  optional: the CT for rendering, named by ``[volume]`` (nav.imaging.brick)

``case.toml``::

    name = "phantom"
    units = "mm"                    # the only unit accepted
    coordinate_system = "LPS"       # of the meshes: "LPS", or "RAS" (converted on read)
    fiducials = "fiducials.mrk.json"  # optional, relative to the case folder
    targets = "targets.mrk.json"      # optional, relative to the case folder
    [volume]                        # optional: the CT brick, see nav.imaging.brick
    [provenance]                    # optional: inputs and parameters of `ornav case build`

    [[structures]]
    name = "liver"                  # unique; a letter, then letters, digits, _ or -
    role = "organ"                  # organ, tumor, vessel, critical or other
    mesh = "liver.ply"              # relative to models/
    colour = "#b86b53"              # optional: "#rrggbb" or [r, g, b] in 0..1
    opacity = 0.35                  # optional, 0..1, default 1
    critical = false                # optional, see below

Everything :func:`load_case` returns is in the ``image`` frame (``nav.frames``): LPS, mm.
Decisions, each checked by ``tests/unit/test_case.py``:

- Meshes may be stored in RAS (``coordinate_system = "RAS"``, as Slicer wrote models before
  4.11): x and y are negated on read. That is a rotation by 180 degrees about z, so the
  triangles keep their winding. Markups files carry their own coordinate system
  (``coordinateSystem`` in .mrk.json, ``# CoordinateSystem`` in .fcsv) and are converted
  from it, whatever ``case.toml`` says.
- ``critical`` marks the structures whose distance from the tool tip navigation reports.
  It defaults to true for role ``critical`` (which may not set it false) and false for
  every other role; a vessel is critical when the case says so.
- Organ and tumor meshes must be closed surfaces (watertight, consistently wound, outward
  normals): "is the tip inside the tumor" and margins need an inside. Vessel, critical and
  other meshes may be open (a vessel segmentation is often cut open where the scan ends):
  a distance to the nearest surface needs no inside.
- Vertices are merged on read ignoring normals and texture coordinates (an OBJ or STL
  stores a vertex once per face), so a closed surface reads as closed.
- A PLY file is checked against its own header before it is used (:func:`check_ply`):
  trimesh reads an ASCII PLY cut short, or one whose header miscounts its vertices, without
  a word (face rows become vertices), so the rows are counted and sized here and any
  disagreement is refused.
- Every coordinate (mesh vertex, markups point) must be finite and within
  ``MAX_COORDINATE_MM`` (1e6 mm, ``nav.registration.errors``) of the origin: larger is a
  unit or scale error, and would reach Open3D as a C++ error rather than this one line.

A broken case is refused with :class:`CaseError`: one line, ``<file>: <problem>``.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
import trimesh

from nav.arrays import Points
from nav.imaging.brick import BrickError, VolumeRef, parse_volume_table
from nav.registration.errors import MAX_COORDINATE_MM

"""Points in mm, shape (N, 3)."""

Colour: TypeAlias = tuple[float, float, float]
"""RGB, each in 0..1."""

CASE_FILE: Final = "case.toml"
MODELS_DIR: Final = "models"
UNITS: Final = "mm"
COORDINATE_SYSTEMS: Final = ("LPS", "RAS")
MESH_SUFFIXES: Final = (".ply", ".stl", ".obj", ".glb")

ROLES: Final = ("organ", "tumor", "vessel", "critical", "other")
CLOSED_ROLES: Final = frozenset({"organ", "tumor"})
"""Roles whose mesh must be a closed surface."""
DEFAULT_COLOURS: Final[Mapping[str, Colour]] = {
    "organ": (0.72, 0.42, 0.33),
    "tumor": (0.95, 0.76, 0.18),
    "vessel": (0.24, 0.44, 0.88),
    "critical": (0.18, 0.66, 0.31),
    "other": (0.7, 0.7, 0.7),
}

STRUCTURE_NAME_PATTERN: Final = re.compile(r"\A[A-Za-z][A-Za-z0-9_-]{0,63}\Z")

_CASE_KEYS: Final = (
    "name", "units", "coordinate_system", "fiducials", "targets", "structures", "volume",
    "provenance",
)  # fmt: skip
_STRUCTURE_KEYS: Final = ("name", "role", "mesh", "colour", "opacity", "critical")

# .fcsv columns when the file has no "# columns = " line: Slicer 4+ files carry a
# "# Markups fiducial file version" line; files without one are Slicer 3 fiducial lists.
_FCSV_COLUMNS_SLICER4: Final = (
    "id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc",
    "associatedNodeID",
)  # fmt: skip
_FCSV_COLUMNS_SLICER3: Final = ("label", "x", "y", "z", "sel", "vis")
# "# CoordinateSystem = " values: Slicer before 4.11 wrote 0 (RAS) or 1 (LPS); later, names.
# A file without the line is RAS, as Slicer reads it.
_FCSV_COORDINATE_SYSTEMS: Final = {"0": "RAS", "RAS": "RAS", "1": "LPS", "LPS": "LPS"}


class CaseError(ValueError):
    """A case, mesh or markups file that cannot be used: ``<file>: <problem>``, one line."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(problem.split())  # one line, whatever a library said
        super().__init__(f"{self.path}: {self.problem}")


@dataclass(frozen=True, eq=False)
class Markups:
    """Labelled points in the ``image`` frame (LPS, mm): fiducials or targets.

    ``points_lps`` is (N, 3) float64, finite and read-only; ``labels`` has N entries.
    """

    labels: tuple[str, ...]
    points_lps: Points

    def __post_init__(self) -> None:
        points = np.array(self.points_lps, dtype=np.float64).reshape(-1, 3)
        if len(points) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels for {len(points)} points")
        if not np.all(np.isfinite(points)):
            raise ValueError("points_lps must be finite")
        points.setflags(write=False)
        object.__setattr__(self, "points_lps", points)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> Markups:
        """No points: a case without fiducials or targets."""
        return cls((), np.zeros((0, 3)))


@dataclass(frozen=True, eq=False)
class Structure:
    """One anatomical structure: its surface in the ``image`` frame and how to show it."""

    name: str
    role: str
    """One of ``ROLES``."""
    mesh: trimesh.Trimesh
    """Vertices in LPS mm."""
    colour: Colour
    opacity: float
    """0 (invisible) .. 1 (opaque)."""
    critical: bool
    """Navigation reports the distance from the tool tip to this surface."""


@dataclass(frozen=True, eq=False)
class Case:
    """A loaded, checked case; everything in the ``image`` frame (LPS, mm)."""

    name: str
    root: Path
    structures: tuple[Structure, ...]
    fiducials: Markups
    targets: Markups
    volume: VolumeRef | None = None
    """The CT brick for rendering (``[volume]``, ``nav.imaging.brick``), if the case has one."""

    def structure(self, name: str) -> Structure:
        """The structure called ``name``; KeyError if there is none."""
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def critical_structures(self) -> tuple[Structure, ...]:
        return tuple(s for s in self.structures if s.critical)


# --- markups -------------------------------------------------------------------------------


def ras_to_lps(points: npt.ArrayLike) -> Points:
    """Return ``points`` (N, 3) or (3,) with x and y negated: RAS -> LPS (and back)."""
    p = np.array(points, dtype=np.float64)
    p[..., :2] *= -1.0
    return p


def read_markups(path: str | Path) -> Markups:
    """Read a 3D Slicer point list, ``.mrk.json`` (any ``.json``) or legacy ``.fcsv``, to LPS.

    Raises CaseError for a missing or unreadable file, an unknown coordinate system, units
    other than mm, an undefined or non-finite point.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(path, "no such markups file")
    name = path.name.lower()
    if name.endswith(".json"):
        return _read_markups_json(path)
    if name.endswith(".fcsv"):
        return _read_fcsv(path)
    raise CaseError(path, "unknown markups format: expected .mrk.json or .fcsv")


def _points_to_markups(
    path: Path, labels: list[str], points: list[list[float]], coordinate_system: str
) -> Markups:
    array = np.array(points, dtype=np.float64).reshape(-1, 3)
    bad = ~np.all(np.isfinite(array), axis=1)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise CaseError(path, f"point {labels[i]!r} is not finite: {points[i]}")
    far = np.max(np.abs(array), axis=1) > MAX_COORDINATE_MM if len(array) else np.zeros(0, bool)
    if np.any(far):
        i = int(np.flatnonzero(far)[0])
        raise CaseError(
            path,
            f"point {labels[i]!r} is beyond {MAX_COORDINATE_MM:.0e} mm from the origin: "
            f"{array[i].tolist()}",
        )
    if coordinate_system == "RAS":
        array = ras_to_lps(array)
    return Markups(tuple(labels), array)


def _read_markups_json(path: Path) -> Markups:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CaseError(path, f"not a markups JSON file: {error}") from None
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list) or len(markups) != 1 or not isinstance(markups[0], dict):
        count = len(markups) if isinstance(markups, list) else "no"
        raise CaseError(path, f"{count} markups in 'markups'; expected one point list")
    markup = markups[0]
    if markup.get("type", "Fiducial") != "Fiducial":
        raise CaseError(path, f"markups type {markup.get('type')!r} is not a point list")
    system = markup.get("coordinateSystem")
    if system not in COORDINATE_SYSTEMS:
        raise CaseError(path, f"unknown coordinateSystem {system!r}: expected LPS or RAS")
    units = markup.get("coordinateUnits", UNITS)
    if units != UNITS:
        raise CaseError(path, f"coordinateUnits {units!r}: only mm is accepted")
    labels: list[str] = []
    points: list[list[float]] = []
    control_points = markup.get("controlPoints", [])
    if not isinstance(control_points, list) or not all(isinstance(p, dict) for p in control_points):
        raise CaseError(path, "controlPoints must be a list of objects")
    for i, point in enumerate(control_points):
        label = str(point.get("label") or point.get("id") or i + 1)
        status = point.get("positionStatus", "defined")
        if status != "defined":
            raise CaseError(path, f"point {label!r} has positionStatus {status!r}, not placed")
        position = point.get("position")
        if (
            not isinstance(position, list)
            or len(position) != 3
            or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in position)
        ):
            raise CaseError(path, f"point {label!r}: position must be 3 numbers, got {position!r}")
        labels.append(label)
        points.append([float(c) for c in position])
    return _points_to_markups(path, labels, points, system)


def _read_fcsv(path: Path) -> Markups:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CaseError(path, f"cannot read: {error}") from None
    system = "RAS"
    columns: tuple[str, ...] | None = None
    versioned = False
    rows: list[tuple[int, list[str]]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            key, value = key.strip(), value.strip()
            if key == "CoordinateSystem":
                if value not in _FCSV_COORDINATE_SYSTEMS:
                    raise CaseError(
                        path, f"unknown CoordinateSystem {value!r}: expected RAS, LPS, 0 or 1"
                    )
                system = _FCSV_COORDINATE_SYSTEMS[value]
            elif key == "columns":
                columns = tuple(c.strip() for c in value.split(","))
            elif key == "Markups fiducial file version":
                versioned = True
        elif line.strip():
            rows.append((line_number, next(csv.reader([line]))))
    if columns is None:
        columns = _FCSV_COLUMNS_SLICER4 if versioned else _FCSV_COLUMNS_SLICER3
    if not {"x", "y", "z"} <= set(columns):
        raise CaseError(path, f"columns {','.join(columns)} lack x, y or z")
    ix, iy, iz = (columns.index(c) for c in "xyz")
    label_column = columns.index("label") if "label" in columns else None
    labels: list[str] = []
    points: list[list[float]] = []
    for line_number, fields in rows:
        label = (
            fields[label_column] if label_column is not None and label_column < len(fields) else ""
        )
        label = label or str(len(labels) + 1)
        try:
            points.append([float(fields[ix]), float(fields[iy]), float(fields[iz])])
        except (IndexError, ValueError):
            raise CaseError(path, f"line {line_number}: x, y, z are not 3 numbers") from None
        labels.append(label)
    return _points_to_markups(path, labels, points, system)


# --- meshes --------------------------------------------------------------------------------


def read_mesh(path: str | Path, *, closed: bool = False) -> trimesh.Trimesh:
    """Read a triangle mesh (PLY, STL, OBJ or GLB) as stored, vertices merged.

    ``closed`` demands a closed surface: watertight (every edge shared by exactly two
    triangles), consistently wound and with outward normals (positive volume). Raises
    CaseError for a missing, unreadable or empty mesh, a PLY that disagrees with its header
    (:func:`check_ply`), a vertex that is not finite or beyond ``MAX_COORDINATE_MM``, or an
    open surface where ``closed``.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(path, "no such mesh file")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise CaseError(path, f"unknown mesh format {path.suffix!r}: expected PLY, STL, OBJ, GLB")
    ply = check_ply(path) if path.suffix.lower() == ".ply" else None
    try:
        # Unprocessed first, so the vertices can be counted against the PLY header.
        mesh = trimesh.load_mesh(path, process=False)
    except Exception as error:  # trimesh raises many kinds for a bad file; each is "unreadable"
        raise CaseError(path, f"trimesh cannot read it: {type(error).__name__}: {error}") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise CaseError(path, f"trimesh read it as {type(mesh).__name__}, not a triangle mesh")
    if len(mesh.faces) == 0:
        raise CaseError(path, "empty mesh: no triangles")
    if ply is not None:
        _check_ply_loaded(path, ply, len(mesh.vertices), len(mesh.faces))
    check_mesh_coordinates(path, np.asarray(mesh.vertices))
    mesh.process()  # what load_mesh(process=True) does: merge duplicates, drop NaN faces
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    if closed:
        _check_closed(path, mesh)
    return mesh


def _check_closed(path: Path, mesh: trimesh.Trimesh) -> None:
    _, counts = np.unique(mesh.edges_sorted, axis=0, return_counts=True)
    open_edges, shared = int(np.sum(counts == 1)), int(np.sum(counts > 2))
    if shared:
        edges = "1 edge" if shared == 1 else f"{shared} edges"
        raise CaseError(path, f"non-manifold: {edges} shared by more than 2 triangles")
    if open_edges:
        edges = "1 open edge" if open_edges == 1 else f"{open_edges} open edges"
        raise CaseError(path, f"not watertight: {edges} (holes)")
    if not mesh.is_winding_consistent:
        raise CaseError(path, "inconsistent winding: neighbouring triangles face opposite ways")
    if not mesh.volume > 0:
        raise CaseError(path, "inside out: the normals point inward (negative volume)")


def check_mesh_coordinates(path: Path, vertices: npt.NDArray[np.float64]) -> None:
    """Raise CaseError unless every coordinate is finite and within ``MAX_COORDINATE_MM``."""
    finite = np.all(np.isfinite(vertices), axis=1)
    if not np.all(finite):
        raise CaseError(path, f"vertex {int(np.flatnonzero(~finite)[0]) + 1} is not finite")
    far = np.max(np.abs(vertices), axis=1) > MAX_COORDINATE_MM if len(vertices) else finite
    if np.any(far):
        i = int(np.flatnonzero(far)[0])
        raise CaseError(
            path,
            f"vertex {i + 1} is {float(np.max(np.abs(vertices[i]))):.3g} mm from the origin, "
            f"beyond the {MAX_COORDINATE_MM:.0e} mm limit (a unit or scale error?)",
        )


# --- PLY structure -------------------------------------------------------------------------

_PLY_SCALARS: Final = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS: Final = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_PLY_MAX_LIST: Final = 1 << 16  # a polygon of more corners is a corrupt count, not a face
_PLY_MIN_FACE: Final = 3  # a face of fewer corners is a misaligned row, not a polygon
_CUT_OR_MISCOUNTED: Final = "the file is truncated or its header's counts are wrong"


@dataclass(frozen=True)
class PlyProperty:
    """One ``property`` line: a scalar (``count_type`` None) or a list."""

    name: str
    value_type: str
    count_type: str | None = None


@dataclass(frozen=True)
class PlyElement:
    """One ``element`` line with its properties."""

    name: str
    count: int
    properties: tuple[PlyProperty, ...]


@dataclass(frozen=True)
class PlyHeader:
    """A PLY file's header, checked against its body by :func:`check_ply`."""

    format: str
    elements: tuple[PlyElement, ...]

    def count(self, element: str) -> int:
        """Rows of ``element`` (0 when the file has no such element)."""
        return next((e.count for e in self.elements if e.name == element), 0)


def check_ply(path: str | Path) -> PlyHeader:
    """Parse a PLY file's header and check that its body holds exactly what it declares.

    Every element's rows are walked: in ASCII, each row must have the number of values its
    properties call for (so a face row ``3 a b c`` read as a vertex ``x y z`` is caught);
    in binary, the rows must fill the body to the byte. A body that ends early (a truncated
    file) or goes on after the last declared row is refused. Raises CaseError, one line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CaseError(path, f"cannot read it: {error.strerror or error}") from None
    header, body_start = _ply_header(path, data)
    if header.format == "ascii":
        _check_ply_ascii(path, header, data[body_start:])
    else:
        _check_ply_binary(path, header, data, body_start)
    return header


def _ply_header(path: Path, data: bytes) -> tuple[PlyHeader, int]:
    end = data.find(b"end_header")
    newline = data.find(b"\n", end) if end >= 0 else -1
    if not data.startswith(b"ply") or newline < 0:
        raise CaseError(path, "not a PLY file: no 'ply' ... 'end_header' header")
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise CaseError(path, "PLY header is not ASCII text") from None
    if lines[0].strip() != "ply":
        raise CaseError(path, "not a PLY file: the first line is not 'ply'")
    fmt: str | None = None
    elements: list[PlyElement] = []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        where = f"PLY header line {number} {line.strip()[:60]!r}"
        if words[0] == "format" and len(words) == 3 and words[1] in _PLY_FORMATS:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(PlyElement(words[1], int(words[2]), ()))
        elif words[0] == "property" and elements:
            if len(words) == 3 and words[1] in _PLY_SCALARS:
                prop = PlyProperty(words[2], words[1])
            elif (
                len(words) == 5
                and words[1] == "list"
                and words[2] in _PLY_SCALARS
                and not words[2].startswith(("float", "double"))
                and words[3] in _PLY_SCALARS
            ):
                prop = PlyProperty(words[4], words[3], words[2])
            else:
                raise CaseError(path, f"{where}: not a property this reader knows")
            last = elements[-1]
            elements[-1] = PlyElement(last.name, last.count, (*last.properties, prop))
        else:
            raise CaseError(path, f"{where}: not a PLY header line")
    if fmt is None:
        raise CaseError(path, "PLY header has no 'format ascii|binary_little_endian|...' line")
    if not any(e.name == "vertex" for e in elements):
        raise CaseError(path, "PLY header declares no 'vertex' element")
    return PlyHeader(fmt, tuple(elements)), newline + 1


def _rows_summary(header: PlyHeader) -> str:
    return ", ".join(f"{e.count} {e.name}" for e in header.elements)


def _check_ply_ascii(path: Path, header: PlyHeader, body: bytes) -> None:
    try:
        lines = body.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise CaseError(path, "ASCII PLY body has non-ASCII bytes") from None
    rows = (line.split() for line in lines)
    rows = (row for row in rows if row)
    for element in header.elements:
        for i in range(element.count):
            row = next(rows, None)
            if row is None:
                raise CaseError(
                    path,
                    f"the data end after {i} of the {element.count} {element.name} rows "
                    f"its header declares ({_rows_summary(header)}): {_CUT_OR_MISCOUNTED}",
                )
            expected = _ascii_row_length(path, element, row, i)
            if len(row) != expected:
                raise CaseError(
                    path,
                    f"{element.name} row {i + 1} has {len(row)} values, its properties need "
                    f"{expected}: the header's counts ({_rows_summary(header)}) do not match "
                    "the data",
                )
    extra = sum(1 for _ in rows)
    if extra:
        raise CaseError(
            path,
            f"{extra} more rows than its header declares ({_rows_summary(header)}): "
            "the header's counts are wrong",
        )


def _ascii_row_length(path: Path, element: PlyElement, row: list[str], i: int) -> int:
    """How many values row ``i`` of ``element`` must have, reading its list counts."""
    at = 0
    for prop in element.properties:
        if prop.count_type is None:
            at += 1
            continue
        if at >= len(row) or not row[at].isdigit():
            got = row[at] if at < len(row) else "nothing"
            raise CaseError(
                path,
                f"{element.name} row {i + 1}: list {prop.name!r} count is {got!r}, not a "
                "count: the header's counts do not match the data",
            )
        if not _list_length_ok(element, int(row[at])):
            raise CaseError(
                path,
                f"{element.name} row {i + 1}: list {prop.name!r} has {row[at]} entries: the "
                "header's counts do not match the data",
            )
        at += 1 + int(row[at])
    return at


def _list_length_ok(element: PlyElement, n: int) -> bool:
    """A list length that a well-formed row can have: a face has 3 corners or more."""
    return (_PLY_MIN_FACE if element.name == "face" else 0) <= n <= _PLY_MAX_LIST


def _check_ply_binary(path: Path, header: PlyHeader, data: bytes, offset: int) -> None:
    order = _PLY_FORMATS[header.format]
    for element in header.elements:
        if element.count == 0:
            continue
        # The row layout, taking each list's length from the first row; every row is then
        # checked to share it (triangles all have 3 corners), else walked one by one.
        fields: list[tuple[str, str]] = []
        lists: list[str] = []
        complete = True  # the first row's layout is known
        pos = offset
        for k, prop in enumerate(element.properties):
            if prop.count_type is None:
                fields.append((f"p{k}", order + _PLY_SCALARS[prop.value_type]))
                pos += np.dtype(_PLY_SCALARS[prop.value_type]).itemsize
                continue
            count_dtype = np.dtype(order + _PLY_SCALARS[prop.count_type])
            if pos + count_dtype.itemsize > len(data):
                complete = False
                break
            n = int(np.frombuffer(data, count_dtype, count=1, offset=pos)[0])
            if not _list_length_ok(element, n):
                complete = False  # the walk below says which row
                break
            lists.append(f"n{k}")
            fields.append((f"n{k}", count_dtype.str))
            fields.append((f"v{k}", f"({n},){order}{_PLY_SCALARS[prop.value_type]}"))
            pos += count_dtype.itemsize + n * np.dtype(_PLY_SCALARS[prop.value_type]).itemsize
        row = np.dtype(fields) if complete else None
        if row is not None and offset + element.count * row.itemsize <= len(data):
            table = np.frombuffer(data, row, count=element.count, offset=offset)
            if all(np.all(table[name] == table[name][0]) for name in lists):
                offset += element.count * row.itemsize
                continue
        offset = _walk_binary_rows(path, header, element, data, offset, order)
    if offset != len(data):
        raise CaseError(
            path,
            f"{len(data) - offset} bytes more than its header declares "
            f"({_rows_summary(header)}): the header's counts are wrong",
        )


def _walk_binary_rows(
    path: Path, header: PlyHeader, element: PlyElement, data: bytes, offset: int, order: str
) -> int:
    """Step over ``element``'s rows one at a time (lists of differing lengths); the end."""
    if all(prop.count_type is None for prop in element.properties):
        size = sum(np.dtype(_PLY_SCALARS[prop.value_type]).itemsize for prop in element.properties)
        if offset + element.count * size > len(data):
            raise CaseError(
                path,
                f"the data end after {(len(data) - offset) // max(size, 1)} of the "
                f"{element.count} {element.name} rows its header declares "
                f"({_rows_summary(header)}): {_CUT_OR_MISCOUNTED}",
            )
        return offset + element.count * size
    for i in range(element.count):
        for prop in element.properties:
            value_size = np.dtype(_PLY_SCALARS[prop.value_type]).itemsize
            n = 1
            if prop.count_type is not None:
                count_dtype = np.dtype(order + _PLY_SCALARS[prop.count_type])
                if offset + count_dtype.itemsize > len(data):
                    n = 0
                    offset = len(data) + 1  # reported as truncated below
                    break
                n = int(np.frombuffer(data, count_dtype, count=1, offset=offset)[0])
                offset += count_dtype.itemsize
                if not _list_length_ok(element, n):
                    raise CaseError(
                        path,
                        f"{element.name} row {i + 1}: list {prop.name!r} has {n} entries: the "
                        f"header's counts ({_rows_summary(header)}) do not match the data",
                    )
            offset += n * value_size
        if offset > len(data):
            raise CaseError(
                path,
                f"the data end within {element.name} row {i + 1} of the "
                f"{element.count} its header declares ({_rows_summary(header)}): "
                f"{_CUT_OR_MISCOUNTED}",
            )
    return offset


def _check_ply_loaded(path: Path, header: PlyHeader, n_vertices: int, n_faces: int) -> None:
    """What trimesh read must be what the header declares (quads may become 2 triangles)."""
    if n_vertices != header.count("vertex"):
        raise CaseError(
            path,
            f"{n_vertices} vertices read, its header declares {header.count('vertex')}",
        )
    if n_faces < header.count("face"):
        raise CaseError(
            path, f"{n_faces} triangles read, its header declares {header.count('face')} faces"
        )


# --- case.toml -----------------------------------------------------------------------------


def _unknown_keys(table: Mapping[str, Any], allowed: Sequence[str]) -> str | None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}"
    return None


def _parse_colour(value: Any) -> Colour | None:
    """``"#rrggbb"`` or [r, g, b] in 0..1 -> an RGB tuple; None if it is neither."""
    if isinstance(value, str) and re.fullmatch(r"#[0-9A-Fa-f]{6}", value):
        r, g, b = (int(value[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
        return (r, g, b)
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)
        and all(0.0 <= c <= 1.0 for c in value)
    ):
        return (float(value[0]), float(value[1]), float(value[2]))
    return None


def _structure(
    toml_path: Path, root: Path, index: int, table: Any, coordinate_system: str
) -> Structure:
    where = f"structures[{index}]"
    if not isinstance(table, dict):
        raise CaseError(toml_path, f"{where} must be a table ([[structures]])")
    if isinstance(table.get("name"), str):
        where = f"{where} ({table['name']!r})"
    problem = _unknown_keys(table, _STRUCTURE_KEYS)
    if problem:
        raise CaseError(toml_path, f"{where}: {problem}")
    for key in ("name", "role", "mesh"):
        if not isinstance(table.get(key), str):
            raise CaseError(toml_path, f"{where}: {key!r} (a string) is required")
    name, role, mesh_name = table["name"], table["role"], table["mesh"]
    if not STRUCTURE_NAME_PATTERN.match(name):
        raise CaseError(toml_path, f"{where}: name must match {STRUCTURE_NAME_PATTERN.pattern}")
    if role not in ROLES:
        close = difflib.get_close_matches(role, ROLES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CaseError(
            toml_path, f"{where}: unknown role {role!r}{hint}; roles: {', '.join(ROLES)}"
        )
    colour = _parse_colour(table.get("colour", list(DEFAULT_COLOURS[role])))
    if colour is None:
        raise CaseError(
            toml_path,
            f'{where}: colour must be "#rrggbb" or [r, g, b] in 0..1, got {table["colour"]!r}',
        )
    opacity = table.get("opacity", 1.0)
    if isinstance(opacity, bool) or not isinstance(opacity, int | float) or not 0 <= opacity <= 1:
        raise CaseError(toml_path, f"{where}: opacity must be a number in 0..1, got {opacity!r}")
    critical = table.get("critical", role == "critical")
    if not isinstance(critical, bool):
        raise CaseError(toml_path, f"{where}: critical must be true or false, got {critical!r}")
    if role == "critical" and not critical:
        raise CaseError(toml_path, f"{where}: role 'critical' with critical = false")
    models = (root / MODELS_DIR).resolve()
    mesh_path = root / MODELS_DIR / mesh_name
    if not mesh_path.resolve().is_relative_to(models):
        raise CaseError(toml_path, f"{where}: mesh {mesh_name!r} is outside {MODELS_DIR}/")
    mesh = read_mesh(mesh_path, closed=role in CLOSED_ROLES)
    if coordinate_system == "RAS":
        mesh.vertices = ras_to_lps(mesh.vertices)
    return Structure(name, role, mesh, colour, float(opacity), critical)


def load_case(path: str | Path) -> Case:
    """Load and check the case in folder ``path`` (or its ``case.toml``); see the module doc.

    Raises CaseError, one line naming the file and the problem, for: a missing case.toml,
    TOML syntax, an unknown or missing key, units other than mm, an unknown coordinate
    system or role, duplicate structure names, a missing, unreadable, empty or (for organ
    and tumor) open mesh, and any problem :func:`read_markups` finds.
    """
    root = Path(path)
    if root.name == CASE_FILE and root.is_file():
        root = root.parent
    toml_path = root / CASE_FILE
    if not toml_path.is_file():
        raise CaseError(toml_path, "missing" if root.is_dir() else f"missing: no folder {root}")
    try:
        document = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CaseError(toml_path, f"not valid TOML: {error}") from None

    unknown = _unknown_keys(document, _CASE_KEYS)
    if unknown:
        raise CaseError(toml_path, unknown)
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise CaseError(toml_path, "'name' (a string) is required")
    units = document.get("units")
    if units != UNITS:
        raise CaseError(toml_path, f'units must be "mm", got {units!r}')
    coordinate_system = document.get("coordinate_system")
    if coordinate_system not in COORDINATE_SYSTEMS:
        raise CaseError(
            toml_path, f'coordinate_system must be "LPS" or "RAS", got {coordinate_system!r}'
        )
    tables = document.get("structures")
    if not isinstance(tables, list) or not tables:
        raise CaseError(toml_path, "no [[structures]]: a case needs at least one")
    seen: set[str] = set()
    for i, table in enumerate(tables):
        structure_name = table.get("name") if isinstance(table, dict) else None
        if structure_name in seen:
            raise CaseError(
                toml_path, f"structures[{i}]: duplicate structure name {structure_name!r}"
            )
        if isinstance(structure_name, str):
            seen.add(structure_name)
    structures = tuple(
        _structure(toml_path, root, i, table, coordinate_system) for i, table in enumerate(tables)
    )

    markups = {}
    for key in ("fiducials", "targets"):
        relative = document.get(key)
        if relative is None:
            markups[key] = Markups.empty()
        elif isinstance(relative, str):
            markups[key] = read_markups(root / relative)
        else:
            raise CaseError(toml_path, f"{key} must be a file name, got {relative!r}")
    return Case(
        name=name,
        root=root,
        structures=structures,
        fiducials=markups["fiducials"],
        targets=markups["targets"],
        volume=_volume(toml_path, root, document),
    )


def _volume(toml_path: Path, root: Path, document: Mapping[str, Any]) -> VolumeRef | None:
    """The ``[volume]`` table checked (its bytes are checked when read); ``[provenance]``
    (what ``ornav case build`` made it from) must be a table and is not read further."""
    if not isinstance(document.get("provenance", {}), dict):
        raise CaseError(toml_path, "[provenance] must be a table")
    if "volume" not in document:
        return None
    try:
        return parse_volume_table(root, document["volume"])
    except BrickError as error:
        raise CaseError(toml_path, str(error)) from None


def bounds_lps(case: Case) -> Points:
    """The bounding box (2, 3) of all structures, [min, max] in LPS mm."""
    lo = np.min([s.mesh.bounds[0] for s in case.structures], axis=0)
    hi = np.max([s.mesh.bounds[1] for s in case.structures], axis=0)
    return np.stack([lo, hi])

"""``ornav register``: register the preop model to the patient from files, with its error figures.

::

    ornav register --model MESH --points POINTS --method {points,rigid,deformable}
                   --out result.json [--targets MARKUPS]
                   [--fiducials-model M --fiducials-patient P] [--fle-mm F]
                   [--global-init] [--out-mesh registered.ply] [--overwrite]

Inputs, all in mm. ``MESH``: the model surface in the ``image`` frame (LPS), any
triangle mesh trimesh reads (PLY, STL, OBJ, GLB). ``POINTS``: the intraoperative
points in the ``patient`` frame (tracker or reference): PLY (its vertices), or
text with one point per line, ``x y z`` or ``x,y,z`` (XYZ, CSV, TXT; a header
row, ``#`` comments and extra columns after the third are ignored). Markups:
3D Slicer ``.mrk.json`` or ``.fcsv`` (``nav.case.read_markups``; a file in RAS
is converted to LPS, so write patient-frame fiducials with the LPS coordinate
system). ``--targets`` are in the model frame; ``--fiducials-model`` and
``--fiducials-patient`` are the same landmarks in the two frames, matched by label.

Methods. ``points``: paired-point registration of the fiducials
(``nav.registration.paired_point``); ``--points`` is optional and, when given,
only measured against the result. ``rigid``: surface ICP of the points onto the
model (``nav.registration.surface``), started from the fiducial registration
when fiducials are given, else from a global search (``--global-init`` adds the
global search to a fiducial start). ``deformable``: ``rigid``, then the model is
deformed onto the points (``nav.registration.deformable``).

``result.json``::

    {"method": "rigid",
     "T_patient_from_model": [[...4 rows of 4...]],
     "metrics": {"fre_mm": 0.41 | null,              # fiducials only; not an accuracy figure
                 "predicted_tre_mm": [1.2, ...] | null,  # per target (eq. 46), fiducials only
                 "rms_residual_mm": 0.52 | null, "fitness": 0.98 | null,
                 "iterations": 14 | null, "time_s": 0.31,
                 "initialisation": "given" | "global" | "identity" | null},
     "targets": [{"name": "tumour", "rigid": [x, y, z], "deformable": [x, y, z] | null}],
     "outputs": {"mesh": "registered.ply" | null}}

``T_patient_from_model`` is the rigid part of the answer (for ``deformable``, the
rigid part the deformation is added to); ``targets[].rigid`` maps each target
with it, ``targets[].deformable`` adds the deformation. ``rms_residual_mm`` and
``fitness`` are those of the final stage (for ``points``: the points' distances
to the registered model, when ``--points`` is given). ``--out-mesh`` writes the
registered (and deformed) model in the patient frame as a PLY with a per-vertex
``confidence_mm``: the predicted error of the overlay at that vertex (eq. 46 for
``points``, the ICP's error field for ``rigid``, the deformable method's own
estimate for ``deformable``), plus ``displacement_{x,y,z}_mm`` and
``displacement_mm`` for ``deformable``.

Progress goes to stderr, a line per stage with the elapsed time. Bad input (a
missing or unreadable file, a PLY whose data disagree with its header (cut short,
or miscounted so that face rows would read as points), a coordinate that is not
finite or beyond 1e6 mm (``MAX_COORDINATE_MM``), mismatched fiducial labels, an
existing output without ``--overwrite``) and a refused registration are one line
``ornav: ...`` and exit code 2 (``cli.errors.UserError``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import trimesh

from cli.errors import UserError
from nav.arrays import FloatArray, IntArray
from nav.case import CaseError, Markups, check_ply, read_markups, read_mesh
from nav.registration.errors import MAX_COORDINATE_MM, RegistrationError
from nav.registration.paired_point import (
    PairedPointResult,
    register_paired_points,
    tre_field_mm,
)
from nav.transforms import Mat4, Points, apply, invert_rigid

log = logging.getLogger("ornav.register")

Command: TypeAlias = Callable[[argparse.Namespace], int]

METHODS: Final = ("points", "rigid", "deformable")
POINT_SUFFIXES: Final = (".ply", ".xyz", ".csv", ".txt")
PROGRESS_INTERVAL_S: Final = 2.0
GATE_MM: Final = 10.0
"""Inlier gate of the fitness reported for ``points`` and ``deformable``: the surface
registration's default ``max_correspondence_mm``."""


@dataclass(frozen=True, eq=False, kw_only=True)
class Registered:
    """What a method produced, ready to be written."""

    T_patient_from_model: Mat4
    metrics: dict[str, Any]
    vertices_patient: Points
    """(V, 3) the registered (and deformed) model in the patient frame, mm."""
    confidence_mm: FloatArray
    """(V,) predicted overlay error per vertex, mm."""
    displacements_mm: FloatArray | None
    """(V, 3) deformation on top of the rigid part, patient frame; None for rigid methods."""
    warp: Callable[[FloatArray], FloatArray] | None
    """Model points (K, 3) -> patient frame, rigid + deformation; None for rigid methods."""


# --- reading -------------------------------------------------------------------------------


def read_points(path: Path) -> Points:
    """Read a point file (PLY vertices, or XYZ / CSV / TXT text) as (N, 3) mm; UserError if bad.

    Bad: unreadable, a PLY that disagrees with its header (``nav.case.check_ply``), no
    points, or a coordinate that is not finite or beyond ``MAX_COORDINATE_MM`` (1e6 mm).
    """
    if not path.is_file():
        raise UserError(f"{path}: no such points file")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        # trimesh reads a cut-short ASCII PLY, or face rows as vertices, without a word.
        try:
            header = check_ply(path)
        except CaseError as error:
            raise UserError(str(error)) from None
        try:
            loaded = trimesh.load(path, process=False)
        except Exception as error:  # trimesh raises many kinds for a bad file
            raise UserError(
                f"{path}: trimesh cannot read it: {type(error).__name__}: {error}"
            ) from None
        vertices = getattr(loaded, "vertices", None)
        points = np.asarray(vertices if vertices is not None else [], dtype=np.float64)
        if len(points) != header.count("vertex"):
            raise UserError(
                f"{path}: {len(points)} points read, its header declares "
                f"{header.count('vertex')} vertices"
            )
    elif suffix in POINT_SUFFIXES:
        points = _read_text_points(path)
    else:
        raise UserError(f"{path}: unknown points format {suffix!r}: expected PLY, XYZ, CSV or TXT")
    points = points.reshape(-1, 3) if points.size else np.zeros((0, 3))
    if len(points) == 0:
        raise UserError(f"{path}: no points in it")
    bad = ~np.all(np.isfinite(points), axis=1)
    if np.any(bad):
        raise UserError(f"{path}: point {int(np.flatnonzero(bad)[0]) + 1} is not finite")
    far = np.max(np.abs(points), axis=1) > MAX_COORDINATE_MM
    if np.any(far):
        i = int(np.flatnonzero(far)[0])
        raise UserError(
            f"{path}: point {i + 1} is {float(np.max(np.abs(points[i]))):.3g} mm from the "
            f"origin, beyond the {MAX_COORDINATE_MM:.0e} mm limit (a unit or scale error?)"
        )
    return points


def _read_text_points(path: Path) -> Points:
    """One point a line: ``x y z`` or ``x,y,z``, more columns ignored; one header row allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read it: {error}") from None
    rows: list[list[float]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.replace(",", " ").replace(";", " ").split()
        try:
            if len(fields) < 3:
                raise ValueError
            rows.append([float(fields[0]), float(fields[1]), float(fields[2])])
        except ValueError:
            if not rows and not any(_is_number(f) for f in fields):
                continue  # a header row (x,y,z) before the first point
            raise UserError(
                f"{path}: line {line_number}: expected x, y, z numbers, got {stripped[:60]!r}"
            ) from None
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_markups(path: str, option: str) -> Markups:
    try:
        return read_markups(path)
    except CaseError as error:
        raise UserError(f"{option} {error}") from None


def _matched_fiducials(model: Markups, patient: Markups) -> tuple[FloatArray, FloatArray]:
    """The fiducials (N, 3) in both frames, in the model file's order, matched by label."""
    for markups, option in ((model, "--fiducials-model"), (patient, "--fiducials-patient")):
        seen: set[str] = set()
        for label in markups.labels:
            if label in seen:
                raise UserError(f"{option}: label {label!r} appears twice; labels must be unique")
            seen.add(label)
    only_model = [label for label in model.labels if label not in patient.labels]
    only_patient = [label for label in patient.labels if label not in model.labels]
    if only_model or only_patient:
        parts = []
        if only_model:
            parts.append(f"only in --fiducials-model: {', '.join(only_model)}")
        if only_patient:
            parts.append(f"only in --fiducials-patient: {', '.join(only_patient)}")
        raise UserError(f"fiducial labels differ ({'; '.join(parts)})")
    index = {label: i for i, label in enumerate(patient.labels)}
    order = [index[label] for label in model.labels]
    return np.array(model.points_lps), np.array(patient.points_lps)[order]


# --- the methods -----------------------------------------------------------------------------


class _Stages:
    """A progress line per stage on stderr (via logging) with the time since the start."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._next_s = 0.0

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    def done(self, message: str, *args: object) -> None:
        log.info("%s (%.1f s)", message % args if args else message, self.elapsed_s())

    def progress(self, iteration: int, total: int) -> None:
        """The deformable solver's callback: a line at most every PROGRESS_INTERVAL_S."""
        if self.elapsed_s() >= self._next_s:
            self._next_s = self.elapsed_s() + PROGRESS_INTERVAL_S
            self.done("deformable: iteration %d of at most %d", iteration, total)


def _paired(
    p_model: FloatArray, p_patient: FloatArray, fle_mm: float | None, stages: _Stages
) -> PairedPointResult:
    try:
        result = register_paired_points(p_model, p_patient, fle_mm=fle_mm)
    except RegistrationError as error:
        raise UserError(f"paired-point registration refused ({error.kind}): {error}") from None
    stages.done(
        "paired-point: %d fiducials, FRE %.2f mm (a consistency check, not the accuracy)",
        len(p_model),
        result.fre_mm,
    )
    return result


def _method_points(
    vertices: FloatArray,
    faces: IntArray,
    points: FloatArray | None,
    paired: PairedPointResult,
    stages: _Stages,
) -> Registered:
    from nav.registration.surface import surface_distances_mm  # loads Open3D

    T = np.array(paired.T_patient_from_model)
    rms: float | None = None
    fitness: float | None = None
    if points is not None:
        # The points are only measured against the fiducial registration, not fitted.
        distances = surface_distances_mm(vertices, faces, apply(invert_rigid(T), points))
        gate_mm = GATE_MM
        inliers = distances <= gate_mm
        fitness = float(np.mean(inliers))
        rms = float(np.sqrt(np.mean(distances[inliers] ** 2))) if inliers.any() else None
        stages.done("measured %d points: %.0f%% within %g mm", len(points), 100 * fitness, gate_mm)
    metrics = _metrics(rms_residual_mm=rms, fitness=fitness, iterations=None, initialisation=None)
    return Registered(
        T_patient_from_model=T,
        metrics=metrics,
        vertices_patient=apply(T, vertices),
        confidence_mm=tre_field_mm(vertices, paired),
        displacements_mm=None,
        warp=None,
    )


def _method_rigid(
    vertices: FloatArray,
    faces: IntArray,
    points: FloatArray,
    paired: PairedPointResult | None,
    global_init: bool,
    stages: _Stages,
) -> Registered:
    from nav.registration.surface import register_surface  # loads Open3D

    T_init = None if paired is None else np.array(paired.T_patient_from_model)
    search = global_init or T_init is None
    log.info(
        "rigid: ICP of %d points onto %d triangles%s",
        len(points),
        len(faces),
        ", global search first" if search else ", from the fiducial registration",
    )
    try:
        result = register_surface(vertices, faces, points, T_init=T_init, global_init=search)
    except RegistrationError as error:
        raise UserError(f"rigid registration refused ({error.kind}): {error}") from None
    stages.done(
        "rigid: fitness %.3f, RMS residual %.2f mm, %d iterations, %s start",
        result.fitness,
        result.rms_residual_mm,
        result.iterations,
        result.initialisation,
    )
    T = np.array(result.T_patient_from_model)
    return Registered(
        T_patient_from_model=T,
        metrics=_metrics(
            rms_residual_mm=result.rms_residual_mm,
            fitness=result.fitness,
            iterations=result.iterations,
            initialisation=result.initialisation,
        ),
        vertices_patient=apply(T, vertices),
        confidence_mm=result.predicted_error_mm(vertices),
        displacements_mm=None,
        warp=None,
    )


def _method_deformable(
    vertices: FloatArray,
    faces: IntArray,
    points: FloatArray,
    rigid: Registered,
    stages: _Stages,
) -> Registered:
    # Imported here: torch is slow to import and only this method needs it.
    from nav.registration.deformable import register_deformable

    log.info("deformable: %d vertices onto %d points", len(vertices), len(points))
    try:
        result = register_deformable(
            vertices, faces, points, rigid.T_patient_from_model, progress=stages.progress
        )
    except RegistrationError as error:
        raise UserError(f"deformable registration refused ({error.kind}): {error}") from None
    residuals = np.asarray(result.residuals_mm, dtype=np.float64)
    gate_mm = GATE_MM
    fitness = float(np.mean(residuals <= gate_mm)) if len(residuals) else None
    displacements = np.asarray(result.displacements_mm, dtype=np.float64)
    stages.done(
        "deformable: RMS residual %.2f mm, largest displacement %.1f mm, %d iterations",
        result.rms_residual_mm,
        float(np.max(np.linalg.norm(displacements, axis=1))) if len(displacements) else 0.0,
        result.iterations,
    )
    T = np.array(result.T_patient_from_model)
    return Registered(
        T_patient_from_model=T,
        metrics=_metrics(
            rms_residual_mm=result.rms_residual_mm,
            fitness=fitness,
            iterations=result.iterations,
            initialisation=rigid.metrics["initialisation"],
        ),
        vertices_patient=apply(T, vertices) + displacements,
        confidence_mm=np.asarray(result.confidence_mm, dtype=np.float64),
        displacements_mm=displacements,
        warp=result.warp,
    )


def _metrics(
    *,
    rms_residual_mm: float | None,
    fitness: float | None,
    iterations: int | None,
    initialisation: str | None,
) -> dict[str, Any]:
    return {
        "rms_residual_mm": rms_residual_mm,
        "fitness": fitness,
        "iterations": iterations,
        "initialisation": initialisation,
    }


# --- the command -------------------------------------------------------------------------------


def _user_errors(command: Command) -> Command:
    """Run ``command``, turning a file-system failure into one ``UserError`` line."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            raise UserError(f"{where}{error.strerror or error}") from None

    return wrapper


def _check_args(args: argparse.Namespace) -> None:
    """Refuse inconsistent options before any file is read."""
    if (args.fiducials_model is None) != (args.fiducials_patient is None):
        raise UserError("--fiducials-model and --fiducials-patient go together")
    if args.method == "points" and args.fiducials_model is None:
        raise UserError("--method points needs --fiducials-model and --fiducials-patient")
    if args.method != "points" and args.points is None:
        raise UserError(f"--method {args.method} needs --points")
    if args.fle_mm is not None and not (math.isfinite(args.fle_mm) and args.fle_mm >= 0.0):
        raise UserError(f"--fle-mm must be a number >= 0, got {args.fle_mm}")
    if args.fle_mm is not None and args.fiducials_model is None:
        raise UserError("--fle-mm goes with the fiducials (it predicts their TRE)")
    if args.out_mesh is not None and Path(args.out_mesh).suffix.lower() != ".ply":
        raise UserError(f"--out-mesh {args.out_mesh}: must be a .ply file")
    outputs = [Path(args.out)] + ([Path(args.out_mesh)] if args.out_mesh else [])
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise UserError("--out and --out-mesh are the same file")
    for path in outputs:
        if path.exists() and not args.overwrite:
            raise UserError(f"{path}: already exists; --overwrite replaces it")


@_user_errors
def cmd_register(args: argparse.Namespace) -> int:
    _check_args(args)
    stages = _Stages()
    try:
        mesh = read_mesh(args.model)
    except CaseError as error:
        raise UserError(f"--model {error}") from None
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    points = read_points(Path(args.points)) if args.points is not None else None
    targets = _read_markups(args.targets, "--targets") if args.targets else Markups.empty()
    fiducials = None
    if args.fiducials_model is not None:
        fiducials = _matched_fiducials(
            _read_markups(args.fiducials_model, "--fiducials-model"),
            _read_markups(args.fiducials_patient, "--fiducials-patient"),
        )
    stages.done(
        "read the model (%d vertices, %d triangles), %d points, %d targets%s",
        len(vertices),
        len(faces),
        0 if points is None else len(points),
        len(targets),
        "" if fiducials is None else f", {len(fiducials[0])} fiducials",
    )
    # Open3D (and torch) load on first use: before the clock starts, so time_s is the work.
    importlib.import_module("nav.registration.surface")
    if args.method == "deformable":
        importlib.import_module("nav.registration.deformable")
    t_registration = time.perf_counter()

    paired = None if fiducials is None else _paired(*fiducials, args.fle_mm, stages)
    if args.method == "points":
        assert paired is not None  # _check_args
        registered = _method_points(vertices, faces, points, paired, stages)
    else:
        assert points is not None  # _check_args
        registered = _method_rigid(vertices, faces, points, paired, args.global_init, stages)
        if args.method == "deformable":
            registered = _method_deformable(vertices, faces, points, registered, stages)
    time_s = time.perf_counter() - t_registration

    p_targets = np.array(targets.points_lps)
    T = registered.T_patient_from_model
    rigid_targets = apply(T, p_targets) if len(targets) else np.zeros((0, 3))
    deformed_targets = (
        registered.warp(p_targets) if registered.warp is not None and len(targets) else None
    )
    predicted_tre = None if paired is None else paired.predicted_tre_mm(p_targets)
    document = {
        "method": args.method,
        "T_patient_from_model": T.tolist(),
        "metrics": {
            "fre_mm": None if paired is None else paired.fre_mm,
            "predicted_tre_mm": None
            if predicted_tre is None
            else np.atleast_1d(predicted_tre).tolist(),
            **registered.metrics,
            "time_s": time_s,
        },
        "targets": [
            {
                "name": name,
                "rigid": rigid_targets[i].tolist(),
                "deformable": None if deformed_targets is None else deformed_targets[i].tolist(),
            }
            for i, name in enumerate(targets.labels)
        ],
        "outputs": {"mesh": args.out_mesh},
    }
    if args.out_mesh:
        _write_mesh(Path(args.out_mesh), registered, faces)
        log.info("wrote %s", args.out_mesh)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_json_text(_finite_or_null(document)))
    _print_summary(document, out)
    return 0


def _write_mesh(path: Path, registered: Registered, faces: IntArray) -> None:
    """The registered model as a binary PLY, with per-vertex confidence (and displacement)."""
    mesh = trimesh.Trimesh(registered.vertices_patient, faces, process=False)
    confidence = np.where(np.isfinite(registered.confidence_mm), registered.confidence_mm, -1.0)
    mesh.vertex_attributes["confidence_mm"] = confidence.astype(np.float64)
    if registered.displacements_mm is not None:
        d = registered.displacements_mm
        for axis, column in zip("xyz", d.T, strict=True):
            mesh.vertex_attributes[f"displacement_{axis}_mm"] = column.astype(np.float64)
        mesh.vertex_attributes["displacement_mm"] = np.linalg.norm(d, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path, file_type="ply")


def _json_text(document: dict[str, Any]) -> str:
    """Indented JSON with each innermost list (a point, a matrix row) on one line."""

    def one_line(match: re.Match[str]) -> str:
        try:
            return json.dumps(json.loads(match.group(0)))
        except json.JSONDecodeError:  # brackets inside a string: leave it as it is
            return match.group(0)

    text = json.dumps(document, indent=2, allow_nan=False)
    return re.sub(r"\[[^\[\]{}\"]*\]", one_line, text) + "\n"


def _finite_or_null(value: Any) -> Any:
    """The document with every NaN or inf float as None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def _print_summary(document: dict[str, Any], out: Path) -> None:
    metrics = document["metrics"]

    def fmt(value: float | None, unit: str = "") -> str:
        return "-" if value is None else f"{value:.3g}{unit}"

    print(f"{document['method']} registration written to {out}")
    print(
        f"  RMS residual {fmt(metrics['rms_residual_mm'], ' mm')}, "
        f"fitness {fmt(metrics['fitness'])}, FRE {fmt(metrics['fre_mm'], ' mm')}, "
        f"{metrics['time_s']:.2f} s"
    )
    tre = metrics["predicted_tre_mm"] or [None] * len(document["targets"])
    for target, tre_mm in zip(document["targets"], tre, strict=True):
        position = target["deformable"] or target["rigid"]
        print(
            f"  target {target['name']}: [{', '.join(f'{c:.1f}' for c in position)}] mm"
            + ("" if tre_mm is None else f", predicted TRE {tre_mm:.2f} mm")
        )


def add_register_parser(commands: Any) -> None:
    """Register ``ornav register`` on ``commands`` (an argparse subparsers object)."""
    parser = commands.add_parser(
        "register",
        help="register the model to the patient: fiducials, surface ICP, deformable",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model mesh, image frame (PLY/STL/OBJ/GLB)")
    parser.add_argument("--points", help="intraoperative points, patient frame (PLY/XYZ/CSV/TXT)")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--out", required=True, help="result JSON file")
    parser.add_argument("--targets", help="targets, model frame (.mrk.json or .fcsv)")
    parser.add_argument("--fiducials-model", help="fiducials, model frame (.mrk.json or .fcsv)")
    parser.add_argument("--fiducials-patient", help="the same fiducials, patient frame")
    parser.add_argument(
        "--fle-mm", type=float, help="RMS fiducial localisation error (default: from the FRE)"
    )
    parser.add_argument(
        "--global-init",
        action="store_true",
        help="search globally (FPFH + RANSAC) even when fiducials give a start",
    )
    parser.add_argument("--out-mesh", help="write the registered model here (.ply)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing --out / --out-mesh files"
    )
    parser.set_defaults(func=cmd_register)

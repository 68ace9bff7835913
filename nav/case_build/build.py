"""Build a case bundle from a CT and its segmentation (``ornav case build``).

Steps, each reported through ``progress``: read the CT (``nav.imaging``), read the label
map and put it on the CT's grid (reindexed exactly, or resampled when asked, else
refused), check every requested label is there, mesh each structure
(``nav.case_build.mesh``), add lesions (``nav.case_build.lesion``), place or read the
fiducials, downsample the CT into the bundle's brick (``nav.imaging.brick``), write
``case.toml`` with names, colours and provenance (input hashes, parameters) and
``build_report.json`` (each mesh's volume against its voxels, Hausdorff distance).

Atomic: everything is written into a temporary folder beside ``out``, loaded back with
``nav.case.load_case`` (the bundle ``ornav case check`` would refuse is never kept), and
only then renamed to ``out``. Any error leaves no bundle, not even part of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from nav.case import (
    DEFAULT_COLOURS,
    ROLES,
    STRUCTURE_NAME_PATTERN,
    CaseError,
    Markups,
    load_case,
    read_markups,
)
from nav.case_build.defaults import DEFAULT_SMOOTHING_ITERATIONS, DEFAULT_TRIANGLE_BUDGET
from nav.case_build.landmarks import surface_landmarks
from nav.case_build.lesion import LesionSpec, deepest_point, sphere_mesh
from nav.case_build.mesh import (
    MeshError,
    MeshReport,
    mesh_structure,
)
from nav.imaging.brick import encode_brick, make_brick, volume_table
from nav.imaging.geometry import align_labels
from nav.imaging.read import read_volume
from nav.imaging.volume import ImagingError, Volume
from nav.phantom import markups_json

log = logging.getLogger(__name__)

DEFAULT_FIDUCIALS: Final = 6
AIR_HU_ABOVE: Final = -500.0
"""A CT's darkest percent of voxels is air, about -1000 HU; above this it is not HU."""
REPORT_FILE: Final = "build_report.json"
_VESSEL_NAMES: Final = re.compile(r"vein|vena|aorta|arter|vessel|portal|hepatic_v", re.I)
# Colours a surgeon expects: veins blue, arteries red, organs their own.
_COLOURS: Final = {
    "liver": (0.72, 0.42, 0.33),
    "spleen": (0.55, 0.2, 0.25),
    "stomach": (0.85, 0.65, 0.55),
    "pancreas": (0.9, 0.8, 0.45),
    "gallbladder": (0.35, 0.6, 0.3),
    "kidney": (0.65, 0.35, 0.3),
    "aorta": (0.85, 0.15, 0.15),
    "arter": (0.85, 0.15, 0.15),
    "vena": (0.2, 0.3, 0.85),
    "vein": (0.25, 0.45, 0.9),
}


class BuildError(ValueError):
    """Bad input to a case build: one line; no bundle was written."""


@dataclass(frozen=True)
class StructureSpec:
    """One structure to build: its name in the case, its label number and role."""

    name: str
    label: int
    role: str


@dataclass(frozen=True)
class BuildSpec:
    """Everything ``ornav case build`` was asked for."""

    image: Path
    labels: Path
    structures: tuple[StructureSpec, ...]
    out: Path
    name: str = ""
    fiducials: Path | None = None
    lesions: tuple[LesionSpec, ...] = ()
    triangle_budget: int = DEFAULT_TRIANGLE_BUDGET
    smoothing_iterations: int = DEFAULT_SMOOTHING_ITERATIONS
    keep_all_components: bool = False
    resample_labels: bool = False
    force: bool = False


@dataclass
class BuildResult:
    """What was built: the bundle, each mesh's checks, the lesions and the fiducials."""

    out: Path
    reports: dict[str, MeshReport]
    lesions: dict[str, tuple[npt.NDArray[np.float64], float]]
    fiducials: Markups
    alignment: str
    warnings: list[str] = field(default_factory=list)


# --- parsing the command's words -----------------------------------------------------------


def role_for(name: str) -> str:
    """The role a structure's name suggests: vessels by name, else organ."""
    if re.search(r"tumou?r|lesion", name, re.I):
        return "tumor"
    return "vessel" if _VESSEL_NAMES.search(name) else "organ"


def colour_for(name: str, role: str) -> tuple[float, float, float]:
    for key, colour in _COLOURS.items():
        if key in name.lower():
            return colour
    return DEFAULT_COLOURS[role]


def read_label_names(path: Path) -> dict[str, int]:
    """``labels.json`` (TotalSegmentator's ``{"labels": {"5": "liver"}}``, or the mapping
    alone) to name -> label number. BuildError for a bad file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BuildError(f"{path}: not a JSON label list: {error}") from None
    mapping = document.get("labels", document) if isinstance(document, dict) else None
    if not isinstance(mapping, dict):
        raise BuildError(f"{path}: expected {{'labels': {{number: name}}}}")
    names = {}
    for number, name in mapping.items():
        if not str(number).isdigit() or not isinstance(name, str):
            raise BuildError(f"{path}: entry {number!r}: {name!r} is not number: name")
        names[name] = int(number)
    return names


def parse_structures(text: str, names: dict[str, int]) -> tuple[StructureSpec, ...]:
    """``liver=5,portal_vein=64:vessel,spleen`` (a bare name is looked up in ``names``)."""
    specs: list[StructureSpec] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, rest = item.partition("=")
        label_text, _, role = rest.partition(":")
        name = name.strip()
        if not STRUCTURE_NAME_PATTERN.match(name):
            raise BuildError(f"structure {name!r}: a name is a letter then letters, digits, _ or -")
        if label_text:
            if not label_text.strip().isdigit():
                raise BuildError(f"structure {item!r}: the label must be a whole number")
            label = int(label_text)
        elif name in names:
            label = names[name]
        else:
            raise BuildError(
                f"structure {name!r} has no label number: give {name}=N or a --labels-names "
                "file that names it"
            )
        role = role.strip() or role_for(name)
        if role not in ROLES:
            raise BuildError(
                f"structure {item!r}: unknown role {role!r}; roles: {', '.join(ROLES)}"
            )
        if label <= 0:
            raise BuildError(f"structure {item!r}: label 0 is the background")
        specs.append(StructureSpec(name=name, label=label, role=role))
    if not specs:
        raise BuildError("--structures names no structure")
    seen = [s.name for s in specs]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise BuildError(f"structure {duplicates[0]!r} named twice")
    return tuple(specs)


# --- hashing and writing -------------------------------------------------------------------


def input_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (name and hash of each, sorted)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for child in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(child.name.encode() + b"\0" + hashlib.sha256(child.read_bytes()).digest())
    return digest.hexdigest()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def case_toml_text(document: dict[str, Any]) -> str:
    """``case.toml`` from its keys: plain keys, then tables, then ``[[structures]]``."""
    lines = ["# Built by `ornav case build` (nav/case_build); see [provenance]."]
    tables = {k: v for k, v in document.items() if isinstance(v, dict)}
    for key, value in document.items():
        if key != "structures" and key not in tables:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables.items():
        lines += ["", f"[{key}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    for structure in document["structures"]:
        lines += ["", "[[structures]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in structure.items()]
    return "\n".join(lines) + "\n"


def _hex(colour: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in colour)


# --- the build -------------------------------------------------------------------------------


def _check_out(spec: BuildSpec) -> None:
    out = spec.out
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not spec.force:
        raise BuildError(f"{out}: not empty; --force replaces it")
    if out.parent.exists() and not out.parent.is_dir():
        raise BuildError(f"{out.parent}: not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)


def _structure_masks(
    spec: BuildSpec, raw: Volume, labels: Volume
) -> dict[str, npt.NDArray[np.bool_]]:
    """Each structure's voxels on the CT's grid; BuildError for a label the segmentation
    lacks, or one that has no voxel inside the CT (an empty structure)."""
    present = np.unique(raw.array)
    present_text = ", ".join(str(v) for v in present[present > 0][:40])
    masks = {}
    for s in spec.structures:
        if s.label not in present:
            raise BuildError(
                f"{spec.labels}: label {s.label} ({s.name}) is not in the segmentation; "
                f"labels present: {present_text or 'none'}"
            )
        masks[s.name] = labels.array == s.label
        if not masks[s.name].any():
            raise BuildError(
                f"{spec.labels}: structure {s.name} (label {s.label}) is empty on the CT's "
                "grid: its voxels lie outside the CT"
            )
    return masks


def build_case(spec: BuildSpec, *, progress: Callable[[str], None] = log.info) -> BuildResult:
    """Build the bundle ``spec.out``; BuildError (one line) for any bad input, and then
    nothing is written."""
    _check_out(spec)
    warnings: list[str] = []
    try:
        progress(f"reading the image {spec.image}")
        ct = read_volume(
            spec.image,
            require_ct=True,
            progress=lambda done, total: (
                progress(f"  {done}/{total} slices") if done % 50 == 0 or done == total else None
            ),
        )
        warnings += ct.warnings
        if ct.kind != "ct":  # NIfTI and NRRD carry no modality: look at the values
            p1 = float(np.percentile(np.asarray(ct.array, dtype=np.float32), 1))
            if p1 > AIR_HU_ABOVE:
                warning = (
                    f"{spec.image}: 1 % of voxels are below {p1:.0f}, but a CT's air is about "
                    "-1000 HU: is this a CT in Hounsfield units? (the brick assumes so)"
                )
                warnings.append(warning)
                log.warning("%s", warning)
        progress(
            f"image {ct.shape[0]}x{ct.shape[1]}x{ct.shape[2]}, spacing "
            f"{' x '.join(f'{s:.3g}' for s in ct.spacing_mm)} mm ({ct.kind})"
        )
        progress(f"reading the segmentation {spec.labels}")
        labels_raw = read_volume(spec.labels, labels=True)
        labels, alignment = align_labels(labels_raw, ct, resample=spec.resample_labels)
    except ImagingError as error:
        raise BuildError(str(error)) from None
    progress(f"segmentation {alignment}")
    if "resampled" in alignment:
        warnings.append(f"segmentation {alignment}")
    masks = _structure_masks(spec, labels_raw, labels)

    reports: dict[str, MeshReport] = {}
    for n, s in enumerate(spec.structures, start=1):
        progress(f"meshing {s.name} (label {s.label}, {n}/{len(spec.structures)})")
        try:
            reports[s.name] = mesh_structure(
                masks[s.name],
                ct.T_image_from_ijk,
                triangle_budget=spec.triangle_budget,
                smoothing_iterations=spec.smoothing_iterations,
                keep_all=spec.keep_all_components or s.role == "vessel",
            )
        except MeshError as error:
            raise BuildError(f"structure {s.name} (label {s.label}): {error}") from None
        r = reports[s.name]
        if not r.watertight and s.role in ("organ", "tumor"):
            raise BuildError(f"structure {s.name}: its mesh is not closed after decimation")
        progress(
            f"  {s.name}: {len(r.mesh.faces)} triangles, {r.voxel_count} voxels, volume "
            f"{r.mesh_volume_mm3 / 1e3:.1f} ml vs voxels {r.voxel_volume_mm3 / 1e3:.1f} ml "
            f"({100 * (r.volume_ratio - 1):+.1f} %; smoothing alone "
            f"{100 * (r.smoothed_volume_mm3 / r.voxel_volume_mm3 - 1):+.1f} %), "
            f"Hausdorff {r.hausdorff_mm:.2f} mm"
            + (f", {r.components} components, kept {r.kept_components}" if r.components > 1 else "")
        )

    names = {s.name for s in spec.structures}
    lesions: dict[str, tuple[npt.NDArray[np.float64], float]] = {}
    for lesion in spec.lesions:
        if lesion.name in names or lesion.name in lesions:
            raise BuildError(f"lesion {lesion.name!r}: a structure already has that name")
        if lesion.inside is not None:
            if lesion.inside not in masks:
                raise BuildError(
                    f"lesion {lesion.name!r}: inside {lesion.inside!r}, which is not a structure"
                )
            centre, depth = deepest_point(masks[lesion.inside], ct.T_image_from_ijk)
            if depth < lesion.radius_mm:
                raise BuildError(
                    f"lesion {lesion.name!r}: a sphere of {lesion.radius_mm:g} mm does not fit "
                    f"inside {lesion.inside} (at most {depth:.1f} mm)"
                )
            progress(
                f"lesion {lesion.name}: {lesion.radius_mm:g} mm sphere placed inside "
                f"{lesion.inside} at LPS {np.round(centre, 1).tolist()} mm (its deepest point; "
                "a demonstration lesion, not from the images)"
            )
        else:
            assert lesion.centre_lps is not None
            centre = np.asarray(lesion.centre_lps, dtype=np.float64)
            inside = ct.lps_to_ijk(centre)[0]
            if np.any(inside < -0.5) or np.any(inside > np.array(ct.shape) - 0.5):
                raise BuildError(
                    f"lesion {lesion.name!r}: centre {centre.tolist()} is outside the CT"
                )
        lesions[lesion.name] = (centre, lesion.radius_mm)

    if spec.fiducials is not None:
        try:
            fiducials = read_markups(spec.fiducials)
        except CaseError as error:
            raise BuildError(str(error)) from None
    else:
        organ = next((s for s in spec.structures if s.role == "organ"), spec.structures[0])
        organ_mesh = reports[organ.name].mesh
        # Not on the flat faces where the scan's first or last slice cut the organ.
        ijk = ct.lps_to_ijk(organ_mesh.vertices)
        margin = 1.0
        usable = np.all((ijk > margin) & (ijk < np.array(ct.shape) - 1 - margin), axis=1)
        points = surface_landmarks(organ_mesh, DEFAULT_FIDUCIALS, usable=usable)
        fiducials = Markups(tuple(f"F-{i + 1}" for i in range(len(points))), points)
        progress(f"no --fiducials: {len(points)} landmarks on the anterior surface of {organ.name}")

    progress("downsampling the CT into the bundle's volume brick")
    values, T_brick, factors = make_brick(ct)
    brick = encode_brick(values)
    progress(
        f"volume brick {'x'.join(map(str, values.shape))} (factors {factors}), "
        f"{len(brick) / 1e6:.2f} MB gzip"
    )

    provenance = {
        "tool": "ornav case build",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "image": str(spec.image),
        "image_sha256": input_sha256(spec.image),
        "labels": str(spec.labels),
        "labels_sha256": input_sha256(spec.labels),
        "segmentation_alignment": alignment,
        "structures": ",".join(f"{s.name}={s.label}" for s in spec.structures),
        "triangle_budget": spec.triangle_budget,
        "smoothing": f"Taubin lambda 0.5 mu -0.53, {spec.smoothing_iterations} iterations",
        "components": "all" if spec.keep_all_components else "largest (vessels: all)",
        "lesions": ", ".join(
            f"{name}: {r:g} mm sphere at {np.round(c, 2).tolist()}"
            + (
                f" (demonstration: placed inside {spec_.inside}, not from the images)"
                if spec_.inside
                else ""
            )
            for (name, (c, r)), spec_ in zip(lesions.items(), spec.lesions, strict=True)
        ),
        "fiducials": str(spec.fiducials) if spec.fiducials else "landmarks on the organ surface",
    }
    if spec.fiducials is not None:
        provenance["fiducials_sha256"] = input_sha256(spec.fiducials)

    structures = [
        {
            "name": s.name,
            "role": s.role,
            "mesh": f"{s.name}.ply",
            "colour": _hex(colour_for(s.name, s.role)),
            "opacity": 0.6 if s.role == "organ" else 1.0,
        }
        for s in spec.structures
    ] + [
        {
            "name": name,
            "role": "tumor",
            "mesh": f"{name}.ply",
            "colour": _hex(DEFAULT_COLOURS["tumor"]),
        }
        for name in lesions
    ]
    brick_file = f"volume/{hashlib.sha256(brick).hexdigest()[:16]}.u16.gz"
    document: dict[str, Any] = {
        "name": spec.name or spec.out.name,
        "units": "mm",
        "coordinate_system": "LPS",
        "fiducials": "fiducials.mrk.json",
    }
    if lesions:
        document["targets"] = "targets.mrk.json"
    document["volume"] = volume_table(file=brick_file, data=brick, shape=values.shape, T=T_brick)
    document["provenance"] = provenance
    document["structures"] = structures
    report = {
        "alignment": alignment,
        "warnings": warnings,
        "structures": {
            name: {
                "triangles": len(r.mesh.faces),
                "voxels": r.voxel_count,
                "voxel_volume_mm3": r.voxel_volume_mm3,
                "mesh_volume_mm3": r.mesh_volume_mm3,
                "volume_ratio": r.volume_ratio,
                "smoothed_volume_mm3": r.smoothed_volume_mm3,
                "hausdorff_mm": r.hausdorff_mm,
                "boundary_p95_mm": r.boundary_p95_mm,
                "components": r.components,
                "kept_components": r.kept_components,
                "watertight": r.watertight,
            }
            for name, r in reports.items()
        },
        "lesions": {n: {"centre_lps": c.tolist(), "radius_mm": r} for n, (c, r) in lesions.items()},
    }

    progress(f"writing {spec.out}")
    temp = Path(tempfile.mkdtemp(prefix=f".{spec.out.name}.partial-", dir=spec.out.parent))
    try:
        (temp / "models").mkdir()
        (temp / "volume").mkdir()
        for name, r in reports.items():
            r.mesh.export(temp / "models" / f"{name}.ply", file_type="ply")
        for name, (centre, radius) in lesions.items():
            sphere_mesh(centre, radius).export(temp / "models" / f"{name}.ply", file_type="ply")
        (temp / brick_file).write_bytes(brick)
        (temp / "fiducials.mrk.json").write_bytes(
            markups_json(fiducials.labels, fiducials.points_lps)
        )
        if lesions:
            (temp / "targets.mrk.json").write_bytes(
                markups_json(tuple(lesions), np.array([c for c, _ in lesions.values()]))
            )
        (temp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (temp / "case.toml").write_text(case_toml_text(document), encoding="utf-8")
        try:
            case = load_case(temp)  # what `ornav case check` reads: never keep a bundle it refuses
            assert case.volume is not None
            case.volume.read()
        except CaseError as error:
            raise BuildError(f"the built bundle does not load: {error}") from None
        os.chmod(temp, 0o755)
        _replace(temp, spec.out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return BuildResult(
        out=spec.out,
        reports=reports,
        lesions=lesions,
        fiducials=fiducials,
        alignment=alignment,
        warnings=warnings,
    )


def _replace(temp: Path, out: Path) -> None:
    """Rename the finished ``temp`` to ``out``; an old ``out`` is moved aside first and
    deleted only once the new one is in place."""
    old = None
    if out.exists():
        if not any(out.iterdir()):
            out.rmdir()
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
    os.rename(temp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

"""A deterministic phantom case: a liver-sized organ, a tumor, two veins and a bile duct.

The repo ships the output in ``nav/cases/phantom/`` (``SHIPPED_PHANTOM_DIR``) so that the
stack runs with no outside data; ``tests/unit/test_case.py`` checks that the shipped files are
byte-identical to what :func:`phantom_files` builds now. Regenerate them after a change here
with ``ornav case phantom nav/cases/phantom --force``.

Geometry, all in the ``image`` frame (the case's LPS coordinates, mm; x to the patient's
left, y posterior, z superior):

- ``liver`` (organ): an ellipsoid, tapered so the right lobe (-x) is thicker than the left,
  with a flatter inferior face and smooth bumps, scaled to a bounding box of exactly
  ``ORGAN_EXTENTS_MM`` (190 x 150 x 100) centred on ``ORGAN_CENTRE_LPS``; 5120 triangles.
- ``tumor``: a bumpy sphere of radius ``TUMOR_RADIUS_MM`` (about 25 mm across) in the
  right lobe, centred on ``TUMOR_CENTRE_LPS``.
- ``portal_vein``, ``hepatic_vein`` (vessels) and ``bile_duct`` (critical): closed curved
  tubes (flat end caps), all inside the organ; the hepatic vein passes a few mm from the
  tumor, so a navigated needle to the tumor has a critical structure to keep clear of.
- 8 fiducials: organ vertices that lie furthest along 8 spread directions, so they are on
  the surface exactly and far from coplanar.
- 3 targets inside the organ: the tumor centre, a point 5 mm beyond the tumor's posterior
  margin, and a point in the left lobe.

Determinism: the geometry is built from closed-form expressions with numpy (no random
numbers, no trimesh), every vertex is rounded to 1 um and the PLY files are written by
:func:`ply_ascii` with fixed formatting, so the bytes do not depend on the platform's last
ulp of ``sin`` or on a library version. Everything here is pure except
:func:`write_phantom_case`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from nav.arrays import FloatArray, IntArray

SHIPPED_PHANTOM_DIR: Final = Path(__file__).resolve().parent / "cases" / "phantom"
"""The committed output of :func:`write_phantom_case` (package data)."""

ORGAN_CENTRE_LPS: Final = (-70.0, 20.0, 50.0)
"""Centre of the organ's bounding box, mm (the liver sits on the patient's right, -x)."""
ORGAN_EXTENTS_MM: Final = (190.0, 150.0, 100.0)
"""Organ bounding box: left-right, anterior-posterior, inferior-superior, mm."""
TUMOR_CENTRE_LPS: Final = (-115.0, 25.0, 58.0)
TUMOR_RADIUS_MM: Final = 12.5

VERTEX_DECIMALS: Final = 3
"""Vertices are rounded to 1 um, and written with exactly this many decimals."""
TARGET_DECIMALS: Final = 2


@dataclass(frozen=True, eq=False)
class PhantomMesh:
    """One structure of the phantom: a closed triangle mesh and how to show it.

    ``vertices_lps`` (V, 3) float64 mm, ``faces`` (F, 3) int64, wound counter-clockwise
    seen from outside (outward normals).
    """

    name: str
    role: str
    vertices_lps: FloatArray
    faces: IntArray
    colour_hex: str
    opacity: float
    critical: bool


@dataclass(frozen=True, eq=False)
class Phantom:
    """The phantom case in memory: meshes, fiducials on the organ, targets inside it."""

    meshes: tuple[PhantomMesh, ...]
    fiducial_labels: tuple[str, ...]
    fiducials_lps: FloatArray
    """(N, 3) mm, each an organ vertex."""
    target_labels: tuple[str, ...]
    targets_lps: FloatArray
    """(M, 3) mm."""


# The regular icosahedron, wound counter-clockwise seen from outside.
_T = (1.0 + math.sqrt(5.0)) / 2.0
_ICOSAHEDRON_VERTICES = (
    (-1, _T, 0), (1, _T, 0), (-1, -_T, 0), (1, -_T, 0),
    (0, -1, _T), (0, 1, _T), (0, -1, -_T), (0, 1, -_T),
    (_T, 0, -1), (_T, 0, 1), (-_T, 0, -1), (-_T, 0, 1),
)  # fmt: skip
_ICOSAHEDRON_FACES = (
    (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11),
    (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6), (7, 1, 8),
    (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
    (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
)  # fmt: skip


def icosphere(subdivisions: int) -> tuple[FloatArray, IntArray]:
    """Return the unit icosphere: vertices (V, 3) on the unit sphere and faces (F, 3).

    Each subdivision splits every triangle into four at its edge midpoints, so
    F = 20 * 4**subdivisions and V = F / 2 + 2. The vertex order is fixed by this code.
    """
    vertices = [tuple(float(c) for c in v) for v in _ICOSAHEDRON_VERTICES]
    faces = list(_ICOSAHEDRON_FACES)
    for _ in range(subdivisions):
        midpoints: dict[tuple[int, int], int] = {}  # edge (low, high) -> its midpoint vertex
        next_faces = []
        for corners in faces:
            mid = []
            for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
                key = (min(a, b), max(a, b))
                if key not in midpoints:
                    va, vb = vertices[a], vertices[b]
                    vertices.append(tuple((va[k] + vb[k]) / 2.0 for k in range(3)))
                    midpoints[key] = len(vertices) - 1
                mid.append(midpoints[key])
            (a, b, c), (ab, bc, ca) = corners, mid
            next_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = next_faces
    v = np.array(vertices, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, np.array(faces, dtype=np.int64)


def _bumps(
    u: FloatArray, bumps: tuple[tuple[tuple[float, float, float], float, float], ...]
) -> FloatArray:
    """Sum of smooth bumps on the unit sphere: each (direction, amplitude, width in rad)."""
    total = np.zeros(len(u))
    for direction, amplitude, width_rad in bumps:
        d = np.asarray(direction, dtype=np.float64)
        d /= np.linalg.norm(d)
        angle = np.arccos(np.clip(u @ d, -1.0, 1.0))
        total += amplitude * np.exp(-0.5 * (angle / width_rad) ** 2)
    return total


def _round(vertices: FloatArray) -> FloatArray:
    # + 0.0 turns -0.0 into 0.0, so it is never written as "-0.000".
    rounded: FloatArray = np.round(vertices, VERTEX_DECIMALS) + 0.0
    return rounded


def organ_mesh() -> tuple[FloatArray, IntArray]:
    """The liver surface: vertices (2562, 3) LPS mm and faces (5120, 3); see the module doc."""
    u, faces = icosphere(4)
    x, y, z = u[:, 0], u[:, 1] * 0.8, u[:, 2] * 0.55
    # Taper: thicker (in z and y) on the right (-x), thinning to the left lobe. Each factor
    # stays positive and varies along x only, so the map is one-to-one: no fold-over.
    z = z * (1.0 - 0.38 * x)
    y = y * (1.0 - 0.12 * x)
    # A domed top and a flatter inferior (visceral) face; d/dz > 0 keeps it one-to-one.
    z = z * (0.8 + 0.2 * np.tanh(z / 0.15))
    p = np.stack([x, y, z], axis=1)
    bumps = (
        ((-0.6, -0.5, 0.6), 0.06, 0.35),  # anterior bulge of the right lobe
        ((0.7, -0.3, 0.4), -0.05, 0.30),  # a shallow dip near the falciform ligament
        ((0.1, -0.4, -0.9), -0.07, 0.30),  # gallbladder fossa on the inferior face
        ((-0.3, 0.8, -0.3), 0.05, 0.45),  # posterior bulge
        ((0.9, 0.2, -0.2), 0.04, 0.30),  # left lobe tip
    )
    p = p * (1.0 + _bumps(u, bumps))[:, None]
    # Scale each axis to the stated box and centre it.
    lo, hi = p.min(axis=0), p.max(axis=0)
    p = (p - (lo + hi) / 2.0) * (np.asarray(ORGAN_EXTENTS_MM) / (hi - lo))
    return _round(p + np.asarray(ORGAN_CENTRE_LPS)), faces


def tumor_mesh() -> tuple[FloatArray, IntArray]:
    """The tumor: a bumpy sphere, vertices (642, 3) LPS mm and faces (1280, 3)."""
    u, faces = icosphere(3)
    bumps = (
        ((1.0, 0.3, 0.2), 0.08, 0.5),
        ((-0.4, -0.9, 0.1), -0.05, 0.6),
        ((0, 0.2, 1), 0.05, 0.5),
    )
    r = TUMOR_RADIUS_MM * (1.0 + _bumps(u, bumps))
    return _round(u * r[:, None] + np.asarray(TUMOR_CENTRE_LPS)), faces


def _bezier(control: FloatArray, n: int) -> FloatArray:
    """Points (n, 3) on the cubic Bezier curve with control points (4, 3)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    c0, c1, c2, c3 = control
    path: FloatArray = (
        (1 - t) ** 3 * c0 + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t**2 * c2 + t**3 * c3
    )
    return path


def tube_mesh(
    path: FloatArray, radius_mm: float, *, sides: int = 16
) -> tuple[FloatArray, IntArray]:
    """A closed tube along ``path`` (N, 3) mm: rings of ``sides`` vertices and flat end caps.

    Ring frames are carried along the path by projection (a discrete rotation-minimising
    frame), so the tube does not twist. The path must bend gently (curvature radius well
    above ``radius_mm``) or the tube folds into itself. Returns vertices (N * sides + 2, 3)
    and faces (2 * sides * N, 3), wound for outward normals.
    """
    n = len(path)
    tangents = np.gradient(path, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    # Start with the axis least aligned with the first tangent, made perpendicular to it.
    seed = np.eye(3)[int(np.argmin(np.abs(tangents[0])))]
    normal = seed - (seed @ tangents[0]) * tangents[0]
    normals = np.empty_like(path)
    for i in range(n):
        normal = normal - (normal @ tangents[i]) * tangents[i]
        normal /= np.linalg.norm(normal)
        normals[i] = normal
    binormals = np.cross(tangents, normals)
    theta = 2.0 * np.pi * np.arange(sides) / sides
    rings = (
        path[:, None, :]
        + radius_mm * np.cos(theta)[None, :, None] * normals[:, None, :]
        + radius_mm * np.sin(theta)[None, :, None] * binormals[:, None, :]
    )
    vertices = np.concatenate([rings.reshape(-1, 3), path[[0, -1]]])
    start, end = n * sides, n * sides + 1
    j = np.arange(sides)
    k = (j + 1) % sides
    faces = []
    for i in range(n - 1):
        a, b = i * sides + j, i * sides + k
        c, d = a + sides, b + sides
        faces += [np.stack([a, b, d], axis=1), np.stack([a, d, c], axis=1)]
    faces.append(np.stack([np.full(sides, start), k, j], axis=1))
    last = (n - 1) * sides
    faces.append(np.stack([np.full(sides, end), last + j, last + k], axis=1))
    return _round(vertices), np.concatenate(faces).astype(np.int64)


_VESSELS: Final = (
    # name, role, radius mm, cubic Bezier control points as offsets from the organ centre
    ("portal_vein", "vessel", 6.0, ((45, 20, -22), (15, 35, -28), (-20, 20, -26), (-65, 5, -22))),
    ("hepatic_vein", "vessel", 5.0, ((-5, 40, 28), (-25, 30, 30), (-35, -5, 33), (-55, -30, 22))),
    (
        "bile_duct",
        "critical",
        3.0,
        ((35, -5, -22), (15, -15, -25), (-5, -20, -20), (-25, -30, -12)),
    ),
)

_FIDUCIAL_DIRECTIONS: Final = (
    (-1.0, 0.0, 0.3),  # right lobe tip
    (1.0, 0.0, 0.3),  # left lobe tip
    (0.0, -1.0, 0.0),  # anterior
    (0.0, 0.0, 1.0),  # dome
    (-0.7, -0.7, 0.5),  # anterior right, superior
    (0.6, -0.6, -0.5),  # anterior left, inferior
    (-0.5, 0.4, -1.0),  # inferior right, posterior
    (0.3, 1.0, 0.4),  # posterior
)


def make_phantom() -> Phantom:
    """Build the phantom case in memory (pure and deterministic); see the module doc."""
    organ_v, organ_f = organ_mesh()
    tumor_v, tumor_f = tumor_mesh()
    meshes = [
        PhantomMesh("liver", "organ", organ_v, organ_f, "#b86b53", 0.35, False),
        PhantomMesh("tumor", "tumor", tumor_v, tumor_f, "#f2c12e", 1.0, False),
    ]
    colours = {"portal_vein": "#7b4fc9", "hepatic_vein": "#3d6fe0", "bile_duct": "#2fa84f"}
    centre = np.asarray(ORGAN_CENTRE_LPS)
    for name, role, radius_mm, control in _VESSELS:
        path = _bezier(np.asarray(control, dtype=np.float64) + centre, 48)
        v, f = tube_mesh(path, radius_mm)
        meshes.append(PhantomMesh(name, role, v, f, colours[name], 1.0, True))

    offsets = organ_v - centre
    picks = []
    for direction in _FIDUCIAL_DIRECTIONS:
        d = np.asarray(direction) / np.linalg.norm(direction)
        picks.append(int(np.argmax(offsets @ d)))
    fiducials = organ_v[picks].copy()

    tumor_centre = np.asarray(TUMOR_CENTRE_LPS)
    targets = np.round(
        np.stack(
            [
                tumor_centre,
                tumor_centre + (0.0, TUMOR_RADIUS_MM + 5.0, 0.0),  # +y is posterior
                centre + (55.0, -5.0, 5.0),
            ]
        ),
        TARGET_DECIMALS,
    )
    return Phantom(
        meshes=tuple(meshes),
        fiducial_labels=tuple(f"F-{i + 1}" for i in range(len(picks))),
        fiducials_lps=fiducials,
        target_labels=("tumor_centre", "tumor_posterior_margin", "left_lobe_lesion"),
        targets_lps=targets + 0.0,
    )


def ply_ascii(vertices: FloatArray, faces: IntArray, *, comment: str) -> bytes:
    """An ASCII PLY file of a triangle mesh, coordinates with ``VERTEX_DECIMALS`` decimals.

    ASCII rather than binary: as small at this precision, diffable in review, and the bytes
    depend on this function alone.
    """
    header = [
        "ply",
        "format ascii 1.0",
        f"comment {comment}",
        f"element vertex {len(vertices)}",
        "property double x",
        "property double y",
        "property double z",
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    fmt = f"{{:.{VERTEX_DECIMALS}f}}"
    lines = header + [" ".join(fmt.format(c) for c in v) for v in vertices.tolist()]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces.tolist()]
    return ("\n".join(lines) + "\n").encode("ascii")


def markups_json(labels: tuple[str, ...], points_lps: FloatArray) -> bytes:
    """A 3D Slicer point list (``.mrk.json``, schema v1.0.3) in LPS mm."""
    document = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
        "Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "controlPoints": [
                    {
                        "id": str(i + 1),
                        "label": label,
                        "position": [float(c) for c in point],
                        "positionStatus": "defined",
                    }
                    for i, (label, point) in enumerate(zip(labels, points_lps, strict=True))
                ],
            }
        ],
    }
    return (json.dumps(document, indent=4) + "\n").encode("utf-8")


def case_toml(phantom: Phantom) -> bytes:
    """The phantom's ``case.toml`` (see ``nav.case`` for the format)."""
    lines = [
        "# The ornav phantom case. Generated by nav/phantom.py",
        "# (`ornav case phantom DIR`); edit the generator, not this file.",
        'name = "phantom"',
        'units = "mm"',
        'coordinate_system = "LPS"',
        'fiducials = "fiducials.mrk.json"',
        'targets = "targets.mrk.json"',
    ]
    for mesh in phantom.meshes:
        lines += [
            "",
            "[[structures]]",
            f'name = "{mesh.name}"',
            f'role = "{mesh.role}"',
            f'mesh = "{mesh.name}.ply"',
            f'colour = "{mesh.colour_hex}"',
            f"opacity = {mesh.opacity}",
            f"critical = {'true' if mesh.critical else 'false'}",
        ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def phantom_files() -> dict[str, bytes]:
    """Every file of the phantom case: path relative to the case folder -> its bytes."""
    phantom = make_phantom()
    files = {"case.toml": case_toml(phantom)}
    for mesh in phantom.meshes:
        comment = f"ornav phantom {mesh.name}, LPS mm"
        files[f"models/{mesh.name}.ply"] = ply_ascii(mesh.vertices_lps, mesh.faces, comment=comment)
    files["fiducials.mrk.json"] = markups_json(phantom.fiducial_labels, phantom.fiducials_lps)
    files["targets.mrk.json"] = markups_json(phantom.target_labels, phantom.targets_lps)
    return files


def write_phantom_case(out_dir: str | Path) -> list[Path]:
    """Write the phantom case into ``out_dir`` (created if needed); return the files written.

    Existing files of the same names are overwritten; other files are left alone.
    """
    out = Path(out_dir)
    written = []
    for relative, content in phantom_files().items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written

"""The assets a surface or deformable registration asks for: its error field, its deformed case.

Pure (no sockets, no clocks). ``render.case_models`` calls these once per accepted or
restored registration; the new hashes give a new scene version and a headset fetches
the assets whose bytes changed, as for any case.

- Surface (rigid, traced organ): the organ coloured by the error field the registration
  carries (``RegistrationResult.organ_confidence_mm``, one value per vertex of the
  case's organ mesh), the other structures untouched.
- Deformable: every structure rebuilt from the accepted field: a vertex ``p`` (image
  frame) goes to ``deformation.moved_image_mm(p, T)`` = ``p + R^T u(p)``, the deformed
  position in the image frame of the registration's rigid part, so the scene's
  ``T_display_from_structures`` (built from that rigid part) places it where
  ``T p + u(p)`` is: organ, tumour, vessels and targets move with one field. The organ
  is coloured by the method's posterior error estimate.

Why whole assets and not a per-vertex displacement stream: a deformation moves every
structure, so every asset changes; but it happens once per accepted registration, never
per frame, and rides on the hash-cached asset path every client already has.
Measured on the shipped phantom (5 structures, 5 514 vertices): the deformed asset set
is 281 kB of GLB (organ colours included) where float16 per-vertex displacements would
be 33 kB and the field itself 4.8 kB (computed: 100 control points x 6 float64). At
a headset's link rates (Wi-Fi, tens of MB/s) 281 kB arrive in tens of milliseconds,
below the time of the fit itself, so the simpler path is kept
(``tests/unit/test_registered_assets.py`` prints the sizes and checks their order).

A vertex's error value is looked up at the nearest vertex of the full-resolution organ
(the asset may be decimated; decimation keeps vertices on the surface, so the nearest
full-resolution vertex is at most an edge length away).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from nav.arrays import FloatArray
from nav.case import Case, Structure
from nav.messages import MAX_ASSET_BYTES, RegistrationResult
from render.assets import (
    DEFAULT_TRIANGLE_BUDGET,
    AssetSet,
    ErrorField,
    asset_info,
    structure_glb,
    with_confidence,
)


def vertex_error_field(vertices_mm: np.ndarray, error_mm: np.ndarray) -> ErrorField:
    """An error field that gives each query point the error of its nearest vertex.

    ``vertices_mm`` (V, 3) and ``error_mm`` (V,): the field's values at the vertices of the
    mesh they belong to. ValueError when the lengths differ or a value is negative or NaN.
    """
    v = np.asarray(vertices_mm, dtype=np.float64).reshape(-1, 3)
    e = np.asarray(error_mm, dtype=np.float64).reshape(-1)
    if len(e) != len(v):
        raise ValueError(f"{len(e)} error values for an organ of {len(v)} vertices")
    if not np.all(e >= 0.0):  # NaN fails too
        raise ValueError("the error field holds a negative or NaN value")
    tree = cKDTree(v)

    def field(query: np.ndarray) -> np.ndarray:
        _, nearest = tree.query(np.asarray(query, dtype=np.float64).reshape(-1, 3))
        values: FloatArray = e[nearest]
        return values

    return field


def surface_error_assets(
    plain: AssetSet,
    organ: Structure,
    result: RegistrationResult,
    *,
    triangle_budget: int = DEFAULT_TRIANGLE_BUDGET,
) -> AssetSet:
    """``plain`` with the organ coloured by ``result.organ_confidence_mm`` (see the module).

    ValueError when the field does not fit the organ (wrong length, bad values).
    """
    field = vertex_error_field(organ.mesh.vertices, result.organ_confidence_mm)
    return with_confidence(plain, organ, field, triangle_budget=triangle_budget)


def deformed_assets(
    case: Case,
    plain: AssetSet,
    result: RegistrationResult,
    *,
    triangle_budget: int = DEFAULT_TRIANGLE_BUDGET,
) -> AssetSet:
    """Every structure of ``case`` moved by ``result.deformation``, the organ coloured by
    ``result.organ_confidence_mm`` (see the module); the CT volume (``plain``'s) is kept.

    ValueError for a result without a deformation, an error field that does not fit the
    organ, or an asset over ``MAX_ASSET_BYTES``.
    """
    deformation = result.deformation
    if deformation is None:
        raise ValueError(f"registration {result.registration_id} carries no deformation")
    T = np.asarray(result.T_reference_from_image, dtype=np.float64)
    organ = next((s for s in case.structures if s.role == "organ"), None)
    organ_field: ErrorField | None = None
    if organ is not None and len(result.organ_confidence_mm):
        moved_organ = deformation.moved_image_mm(organ.mesh.vertices, T)
        organ_field = vertex_error_field(moved_organ, result.organ_confidence_mm)
    infos = []
    data_by_sha: dict[str, bytes] = {}
    for structure in case.structures:
        moved = deformation.moved_image_mm(structure.mesh.vertices, T)
        warped = replace(
            structure,
            mesh=trimesh.Trimesh(vertices=moved, faces=structure.mesh.faces, process=False),
        )
        field = organ_field if structure is organ else None
        data, triangles = structure_glb(warped, triangle_budget, error_field=field)
        if len(data) > MAX_ASSET_BYTES:
            raise ValueError(f"structure {structure.name!r}: {len(data)} bytes of GLB too big")
        info = asset_info(structure, data, triangles)
        infos.append(info)
        data_by_sha[info.sha256] = data
    if plain.volume is not None:
        data_by_sha[plain.volume.sha256] = plain.data_by_sha256[plain.volume.sha256]
    return AssetSet(tuple(infos), data_by_sha, plain.volume, deformed_for=result.registration_id)

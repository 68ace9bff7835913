"""Mesh assets for the headset: each case structure as binary glTF (GLB), fetched by hash.

Pure: data in, bytes out (no sockets, files or clocks). The render node builds the asset
set once per case and serves it by SHA-256; a headset caches assets by hash, so it
downloads a structure again only when its bytes change (see docs/headset-protocol.md).

What one asset holds:

- one glTF 2.0 mesh named after the structure, one triangle primitive: ``POSITION``
  (float32, mm), ``NORMAL`` (float32, unit), ``indices`` (uint32);
- vertices in the case ``image`` frame (LPS, mm), exactly as the case stores them: the
  per-frame ``SceneUpdate`` carries ``T_display_from_structures`` that places them;
- one PBR material: ``baseColorFactor`` = the structure's colour with its opacity as
  alpha (``alphaMode`` BLEND when the opacity is below 1, double sided). glTF stores the
  factor as given; trimesh's exporter rounds it to 8 bits per channel, which no display
  can tell apart.

Decimation: a mesh with more triangles than ``triangle_budget`` is reduced with Open3D's
quadric error metric (Garland & Heckbert 1997, "Surface simplification using quadric
error metrics"); a mesh within budget travels untouched. Both Open3D's decimation and
trimesh's GLB writer are deterministic (no random seeds, no timestamps, no file names in
the output), so the SHA-256 of an asset is stable across runs and processes: a restarted
render node advertises the same hashes and no headset downloads anything again.

Measured on the shipped phantom (5 structures, 11 008 triangles in all, none above the
default budget of 20 000), best of 5 on a shared 2-core machine: :func:`build_assets`
~8 ms, 5 GLBs of 270 648 bytes in all (liver: 5120 triangles, 124 116 bytes); with a
budget of 2000 the liver decimates to 2000 triangles (49 316 bytes) and the set takes
~21 ms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import open3d as o3d
import trimesh

from nav.case import Case, Structure
from nav.messages import MAX_ASSET_BYTES, AssetInfo

DEFAULT_TRIANGLE_BUDGET: Final = 20_000
MEDIA_TYPE: Final = "model/gltf-binary"


@dataclass(frozen=True, eq=False)
class AssetSet:
    """A case's assets: ``infos`` in case order and the GLB bytes by SHA-256 (hex)."""

    infos: tuple[AssetInfo, ...]
    data_by_sha256: Mapping[str, bytes]

    def info(self, name: str) -> AssetInfo:
        """The asset of structure ``name``; KeyError if there is none."""
        for info in self.infos:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(info.name for info in self.infos)

    @property
    def total_bytes(self) -> int:
        return sum(info.size_bytes for info in self.infos)


def decimate(
    vertices: np.ndarray, faces: np.ndarray, triangle_budget: int
) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) float64 vertices and (F, 3) int64 faces with F <= ``triangle_budget``.

    Within budget: returned unchanged. Otherwise quadric decimation (Open3D), then
    unreferenced vertices and degenerate triangles removed.
    """
    if triangle_budget < 1:
        raise ValueError(f"triangle budget must be >= 1, got {triangle_budget}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if len(f) <= triangle_budget:
        return v, f
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f.astype(np.int32))
    )
    reduced = mesh.simplify_quadric_decimation(target_number_of_triangles=triangle_budget)
    reduced.remove_degenerate_triangles()
    reduced.remove_unreferenced_vertices()
    v_out = np.asarray(reduced.vertices, dtype=np.float64)
    f_out = np.asarray(reduced.triangles, dtype=np.int64)
    # Quadric decimation stops at or below the target; keep the contract explicit anyway.
    if len(f_out) > triangle_budget or len(f_out) == 0:
        raise ValueError(
            f"decimation gave {len(f_out)} triangles for a budget of {triangle_budget}"
        )
    return v_out, f_out


def structure_glb(
    structure: Structure, triangle_budget: int = DEFAULT_TRIANGLE_BUDGET
) -> tuple[bytes, int]:
    """One structure as (GLB bytes, triangle count): image frame, mm, within the budget."""
    vertices, faces = decimate(structure.mesh.vertices, structure.mesh.faces, triangle_budget)
    # A fresh Trimesh without metadata: the loaded one may carry file names, which would
    # make the bytes (and the hash) depend on where the case lives.
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    alpha = float(structure.opacity)
    mesh.visual = trimesh.visual.TextureVisuals(
        material=trimesh.visual.material.PBRMaterial(
            name=structure.name,
            baseColorFactor=[*structure.colour, alpha],
            alphaMode="BLEND" if alpha < 1.0 else "OPAQUE",
            doubleSided=True,
            metallicFactor=0.0,
            roughnessFactor=0.8,
        )
    )
    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name=structure.name, node_name=structure.name)
    data: bytes = scene.export(file_type="glb", include_normals=True)
    return data, len(faces)


def asset_info(structure: Structure, data: bytes, triangles: int) -> AssetInfo:
    """The ``AssetInfo`` advertised for ``data`` (the GLB of ``structure``)."""
    r, g, b = (float(c) for c in structure.colour)
    return AssetInfo(
        name=structure.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        triangles=triangles,
        color_rgba=(r, g, b, float(structure.opacity)),
    )


def build_assets(case: Case, *, triangle_budget: int = DEFAULT_TRIANGLE_BUDGET) -> AssetSet:
    """Every structure of ``case`` as a GLB asset, in case order.

    Raises ValueError if an asset would exceed ``MAX_ASSET_BYTES`` (lower the budget).
    """
    infos: list[AssetInfo] = []
    data_by_sha: dict[str, bytes] = {}
    for structure in case.structures:
        data, triangles = structure_glb(structure, triangle_budget)
        if len(data) > MAX_ASSET_BYTES:
            raise ValueError(
                f"structure {structure.name!r}: {len(data)} bytes of GLB exceed "
                f"{MAX_ASSET_BYTES}; lower the triangle budget"
            )
        info = asset_info(structure, data, triangles)
        infos.append(info)
        data_by_sha[info.sha256] = data
    return AssetSet(tuple(infos), data_by_sha)


def load_glb(data: bytes) -> trimesh.Trimesh:
    """GLB bytes -> one Trimesh (vertices in the file's frame: ``image``, mm)."""
    loaded = trimesh.load(trimesh.util.wrap_as_stream(data), file_type="glb", force="mesh")
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError("GLB does not hold one triangle mesh")
    return loaded


def scene_version(assets: AssetSet) -> int:
    """A 63-bit number naming this asset set: equal hashes and names give equal versions.

    Stable across restarts (content-derived), so a client can compare it with the one it
    cached; it is never 0 (0 means "no scene" to nobody, but keeps the field unambiguous).
    """
    digest = hashlib.sha256()
    for info in assets.infos:
        digest.update(info.name.encode())
        digest.update(b"\0")
        digest.update(info.sha256.encode())
    value = int.from_bytes(digest.digest()[:8], "big") & ((1 << 63) - 1)
    return value or 1

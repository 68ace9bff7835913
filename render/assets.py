"""Assets for the headset: each case structure as binary glTF (GLB), and the case's CT
brick, fetched by hash.

Pure: data in, bytes out (no sockets or clocks; the one file read is the CT brick, which
the case names and ``load_case`` has checked). The render node builds the asset set once
per case and serves it by SHA-256; a headset caches assets by hash, so it downloads a
structure again only when its bytes change (see docs/headset-protocol.md).

The CT volume (a case with ``[volume]``, ``nav.imaging.brick``) is one more asset: its bytes
are the brick file exactly as stored (already gzip, already named by its SHA-256), its
metadata a ``VolumeInfo`` (shape, dtype, ``hu_offset``, ``T_image_from_ijk``) that a
protocol-3 ``Welcome`` carries. It is sent once per client per hash, like a mesh, never
per frame. A case without a volume gives the same asset set, hashes and scene version as
before volumes existed.

What one asset holds:

- one glTF 2.0 mesh named after the structure, one triangle primitive: ``POSITION``
  (float32, mm), ``NORMAL`` (float32, unit), ``indices`` (uint32);
- vertices in the case ``image`` frame (LPS, mm), exactly as the case stores them: the
  per-frame ``SceneUpdate`` carries ``T_display_from_structures`` that places them;
- one PBR material: ``baseColorFactor`` = the structure's colour with its opacity as
  alpha (``alphaMode`` BLEND when the opacity is below 1, double sided). glTF stores the
  factor as given; trimesh's exporter rounds it to 8 bits per channel, which no display
  can tell apart;
- optionally (confidence colouring, :func:`confidence_rgba`) ``COLOR_0``: one RGBA per
  vertex, normalized uint8, alpha = the structure's opacity; the factor is then white
  (1, 1, 1, 1), so the vertex colours are what glTF draws (colour = factor x COLOR_0).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import open3d as o3d
import trimesh

from nav.case import Case, Structure
from nav.imaging.brick import VolumeRef
from nav.messages import MAX_ASSET_BYTES, AssetInfo
from nav.messages.headset import VolumeInfo

DEFAULT_TRIANGLE_BUDGET: Final = 20_000
MEDIA_TYPE: Final = "model/gltf-binary"
VOLUME_MEDIA_TYPE: Final = "application/gzip"
VOLUME_ASSET_NAME: Final = "volume"

CONFIDENCE_SCALE_MM: Final = (1.0, 2.0, 3.0)
"""Predicted error (mm) at which a vertex is green, yellow and red (:func:`confidence_rgba`)."""
CONFIDENCE_COLOURS: Final = ((0.0, 0.8, 0.0), (0.9, 0.8, 0.0), (0.9, 0.0, 0.0))
"""Green, yellow, red (linear RGB, 0..1) at the ``CONFIDENCE_SCALE_MM`` stops."""

ErrorField = Callable[[np.ndarray], np.ndarray]
"""(V, 3) vertices in ``image`` (mm) -> (V,) predicted error at each vertex (mm)."""


@dataclass(frozen=True, eq=False)
class AssetSet:
    """A case's assets: ``infos`` in case order, the CT ``volume`` (None: the case has
    none) and every asset's bytes (GLBs and the brick) by SHA-256 (hex).
    ``deformed_for``: the registration the structures were deformed for, 0 for the case as
    planned (``render.registered_assets``)."""

    infos: tuple[AssetInfo, ...]
    data_by_sha256: Mapping[str, bytes]
    volume: VolumeInfo | None = None
    deformed_for: int = 0

    def name_of(self, sha256: str) -> str | None:
        """The name of the asset with this hash (a structure's, or the volume's), or None."""
        for info in self.infos:
            if info.sha256 == sha256:
                return info.name
        if self.volume is not None and self.volume.sha256 == sha256:
            return self.volume.name
        return None

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
        """The GLBs' bytes (the volume's: ``volume.size_bytes``)."""
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


def confidence_rgba(error_mm: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """(V,) predicted error (mm) -> (V, 4) uint8 RGBA: the fixed confidence scale.

    Up to 1 mm green, 2 mm yellow, 3 mm and above red (``CONFIDENCE_SCALE_MM``,
    ``CONFIDENCE_COLOURS``), linearly interpolated per channel in between; a NaN or
    infinite error is red (nothing vouches for it). Alpha is ``alpha`` (the structure's
    opacity) for every vertex. Pure and deterministic: equal inputs give equal bytes.
    """
    e = np.asarray(error_mm, dtype=np.float64).reshape(-1)
    e = np.where(np.isfinite(e), e, np.inf)
    e = np.clip(e, CONFIDENCE_SCALE_MM[0], CONFIDENCE_SCALE_MM[-1])
    stops = np.asarray(CONFIDENCE_SCALE_MM)
    colours = np.asarray(CONFIDENCE_COLOURS)
    rgb = np.stack([np.interp(e, stops, colours[:, k]) for k in range(3)], axis=1)
    a = np.full((len(e), 1), float(np.clip(alpha, 0.0, 1.0)))
    return np.round(np.concatenate([rgb, a], axis=1) * 255.0).astype(np.uint8)


def vertex_rgba(mesh: trimesh.Trimesh) -> np.ndarray | None:
    """A loaded GLB mesh's ``COLOR_0`` as (V, 4) float64 in 0..1, or None if it has none."""
    visual = mesh.visual
    colours = None
    if getattr(visual, "kind", None) == "vertex":
        colours = visual.vertex_colors  # type: ignore[union-attr]
    elif "color" in getattr(visual, "vertex_attributes", {}):
        colours = visual.vertex_attributes["color"]  # type: ignore[union-attr]
    if colours is None or len(colours) != len(mesh.vertices):
        return None
    c = np.asarray(colours)
    out = c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c.astype(np.float64)
    if out.shape[1] == 3:
        out = np.concatenate([out, np.ones((len(out), 1))], axis=1)
    return out


def structure_glb(
    structure: Structure,
    triangle_budget: int = DEFAULT_TRIANGLE_BUDGET,
    *,
    error_field: ErrorField | None = None,
) -> tuple[bytes, int]:
    """One structure as (GLB bytes, triangle count): image frame, mm, within the budget.

    ``error_field``: given, it is evaluated on the (decimated) vertices and the asset
    carries their confidence colours (:func:`confidence_rgba`) as ``COLOR_0``.
    """
    vertices, faces = decimate(structure.mesh.vertices, structure.mesh.faces, triangle_budget)
    # A fresh Trimesh without metadata: the loaded one may carry file names, which would
    # make the bytes (and the hash) depend on where the case lives.
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    alpha = float(structure.opacity)
    factor = [*structure.colour, alpha]
    attributes: dict[str, np.ndarray] = {}
    if error_field is not None:
        error = np.asarray(error_field(vertices), dtype=np.float64)
        if error.shape != (len(vertices),):
            raise ValueError(f"error field gave {error.shape} for {len(vertices)} vertices")
        attributes["color"] = confidence_rgba(error, alpha)
        factor = [1.0, 1.0, 1.0, 1.0]
    mesh.visual = trimesh.visual.TextureVisuals(
        material=trimesh.visual.material.PBRMaterial(
            name=structure.name,
            baseColorFactor=factor,
            alphaMode="BLEND" if alpha < 1.0 else "OPAQUE",
            doubleSided=True,
            metallicFactor=0.0,
            roughnessFactor=0.8,
        )
    )
    if attributes:
        mesh.visual.vertex_attributes.update(attributes)
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


def volume_asset(ref: VolumeRef, data: bytes) -> VolumeInfo:
    """The ``VolumeInfo`` advertised for the brick file ``data`` that ``ref`` names.

    ValueError if the bytes are not the file ``ref`` names (hash) or exceed
    ``MAX_ASSET_BYTES``.
    """
    sha = hashlib.sha256(data).hexdigest()
    if sha != ref.sha256:
        raise ValueError(f"volume brick: sha256 {sha[:12]}... is not {ref.sha256[:12]}...")
    if len(data) > MAX_ASSET_BYTES:
        raise ValueError(f"volume brick: {len(data)} bytes exceed {MAX_ASSET_BYTES}")
    return VolumeInfo(
        name=VOLUME_ASSET_NAME,
        sha256=sha,
        size_bytes=len(data),
        shape=ref.shape,
        dtype="uint16",
        hu_offset=ref.hu_offset,
        T_image_from_ijk=np.array(ref.T_image_from_ijk, dtype=np.float64),
    )


def build_assets(case: Case, *, triangle_budget: int = DEFAULT_TRIANGLE_BUDGET) -> AssetSet:
    """Every structure of ``case`` as a GLB asset, in case order, and its CT brick if any.

    Raises ValueError if an asset would exceed ``MAX_ASSET_BYTES`` (lower the budget), and
    ``nav.imaging.brick.BrickError`` (a ValueError) if the brick cannot be read or its
    bytes are not the ones ``case.toml`` names.
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
    volume = None
    if case.volume is not None:
        brick = case.volume.read_bytes()
        volume = volume_asset(case.volume, brick)
        data_by_sha[volume.sha256] = brick
    return AssetSet(tuple(infos), data_by_sha, volume)


def with_confidence(
    assets: AssetSet,
    structure: Structure,
    error_field: ErrorField | None,
    *,
    triangle_budget: int = DEFAULT_TRIANGLE_BUDGET,
) -> AssetSet:
    """``assets`` with ``structure``'s asset rebuilt: confidence colours from ``error_field``
    (None: the plain case colours). Other structures keep their bytes and hashes.
    """
    data, triangles = structure_glb(structure, triangle_budget, error_field=error_field)
    if len(data) > MAX_ASSET_BYTES:
        raise ValueError(f"structure {structure.name!r}: {len(data)} bytes of GLB too big")
    new = asset_info(structure, data, triangles)
    infos = tuple(new if i.name == structure.name else i for i in assets.infos)
    data_by_sha = {i.sha256: assets.data_by_sha256[i.sha256] for i in infos if i is not new}
    data_by_sha[new.sha256] = data
    if assets.volume is not None:
        data_by_sha[assets.volume.sha256] = assets.data_by_sha256[assets.volume.sha256]
    return AssetSet(infos, data_by_sha, assets.volume)


def load_glb(data: bytes) -> trimesh.Trimesh:
    """GLB bytes -> one Trimesh (vertices in the file's frame: ``image``, mm)."""
    loaded = trimesh.load(trimesh.util.wrap_as_stream(data), file_type="glb", force="mesh")
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError("GLB does not hold one triangle mesh")
    return loaded


def glb_vertex_rgba(data: bytes) -> np.ndarray | None:
    """A one-mesh GLB's ``COLOR_0`` as (V, 4) float64 in 0..1 (vertices in file order, as
    ``trimesh.load(..., process=False)`` gives them), or None if it carries none.

    Read from the scene: trimesh's ``force="mesh"`` concatenation drops the colours of a
    mesh that also has a material.
    """
    loaded = trimesh.load(trimesh.util.wrap_as_stream(data), file_type="glb", process=False)
    geometries = list(loaded.geometry.values()) if isinstance(loaded, trimesh.Scene) else [loaded]
    if len(geometries) != 1 or not isinstance(geometries[0], trimesh.Trimesh):
        return None
    return vertex_rgba(geometries[0])


def scene_version(assets: AssetSet) -> int:
    """A 63-bit number naming this asset set: equal hashes and names give equal versions.

    Stable across restarts (content-derived), so a client can compare it with the one it
    cached; it is never 0 (0 means "no scene" to nobody, but keeps the field unambiguous).
    The volume counts when there is one; a set without one has the version it had before
    volumes existed.
    """
    digest = hashlib.sha256()
    for info in assets.infos:
        digest.update(info.name.encode())
        digest.update(b"\0")
        digest.update(info.sha256.encode())
    if assets.volume is not None:
        digest.update(b"\0volume\0")
        digest.update(assets.volume.sha256.encode())
    value = int.from_bytes(digest.digest()[:8], "big") & ((1 << 63) - 1)
    return value or 1

"""Headset mesh assets: GLB per structure, within the triangle budget, stable hashes."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import open3d as o3d
import pytest

from nav.case import Case, load_case
from nav.phantom import SHIPPED_PHANTOM_DIR
from render.assets import (
    DEFAULT_TRIANGLE_BUDGET,
    AssetSet,
    build_assets,
    decimate,
    load_glb,
    scene_version,
)

BUDGET = 2000  # below the phantom liver's 5120 triangles, above every other structure's


@pytest.fixture(scope="module")
def phantom() -> Case:
    return load_case(SHIPPED_PHANTOM_DIR)


@pytest.fixture(scope="module")
def full(phantom: Case) -> AssetSet:
    return build_assets(phantom)


@pytest.fixture(scope="module")
def decimated(phantom: Case) -> AssetSet:
    return build_assets(phantom, triangle_budget=BUDGET)


def _glb_json(data: bytes) -> dict[str, object]:
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack("<I4s", data[12:20])
    assert chunk_type == b"JSON"
    doc: dict[str, object] = json.loads(data[20 : 20 + chunk_length])
    return doc


def _surface_distance_mm(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(vertices, np.float32)),
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(faces, np.uint32)),
    )
    d: np.ndarray = scene.compute_distance(
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(points, np.float32))
    ).numpy()
    return d


def test_one_asset_per_structure_in_case_order_with_hash_size_and_colour(
    phantom: Case, full: AssetSet
) -> None:
    assert full.names == tuple(s.name for s in phantom.structures)
    for info, structure in zip(full.infos, phantom.structures, strict=True):
        data = full.data_by_sha256[info.sha256]
        assert hashlib.sha256(data).hexdigest() == info.sha256
        assert info.size_bytes == len(data)
        assert info.color_rgba == (*structure.colour, structure.opacity)
        material = _glb_json(data)["materials"][0]  # type: ignore[index]
        factor = material["pbrMetallicRoughness"]["baseColorFactor"]
        assert factor == pytest.approx(info.color_rgba, abs=1 / 255)  # 8-bit in trimesh
        assert material["alphaMode"] == ("BLEND" if structure.opacity < 1 else "OPAQUE")


def test_meshes_within_budget_travel_unchanged_in_the_image_frame(
    phantom: Case, full: AssetSet
) -> None:
    assert all(len(s.mesh.faces) <= DEFAULT_TRIANGLE_BUDGET for s in phantom.structures)
    for info, structure in zip(full.infos, phantom.structures, strict=True):
        mesh = load_glb(full.data_by_sha256[info.sha256])
        assert info.triangles == len(mesh.faces) == len(structure.mesh.faces)
        # float32 on the wire: a few hundred mm keep ~1e-5 mm.
        np.testing.assert_allclose(mesh.vertices, structure.mesh.vertices, atol=1e-4)
        np.testing.assert_array_equal(mesh.faces, structure.mesh.faces)


def test_the_triangle_budget_is_respected_and_the_surface_stays_within_a_millimetre(
    phantom: Case, full: AssetSet, decimated: AssetSet
) -> None:
    liver = phantom.structure("liver")
    assert len(liver.mesh.faces) > BUDGET
    for info, structure in zip(decimated.infos, phantom.structures, strict=True):
        mesh = load_glb(decimated.data_by_sha256[info.sha256])
        assert info.triangles == len(mesh.faces) <= BUDGET
        assert len(mesh.faces) > 0.9 * min(BUDGET, len(structure.mesh.faces))
        # Both ways: decimated vertices on the original surface, original on the decimated.
        there = _surface_distance_mm(mesh.vertices, structure.mesh.vertices, structure.mesh.faces)
        back = _surface_distance_mm(structure.mesh.vertices, mesh.vertices, mesh.faces)
        assert there.max() < 1.0, structure.name
        assert back.max() < 2.0, structure.name
        np.testing.assert_allclose(mesh.bounds, structure.mesh.bounds, atol=2.0)
    assert decimated.info("liver").triangles <= BUDGET
    assert decimated.info("liver").size_bytes < full.info("liver").size_bytes / 2


def test_hashes_are_stable_across_builds_and_name_the_content(
    phantom: Case, full: AssetSet, decimated: AssetSet
) -> None:
    again = build_assets(phantom)
    assert [i.sha256 for i in again.infos] == [i.sha256 for i in full.infos]
    assert scene_version(again) == scene_version(full)
    decimated_again = build_assets(phantom, triangle_budget=BUDGET)
    assert [i.sha256 for i in decimated_again.infos] == [i.sha256 for i in decimated.infos]
    # Only the decimated structure changes hash; the scene version follows the content.
    changed = {a.name for a, b in zip(full.infos, decimated.infos, strict=True) if a != b}
    assert "liver" in changed
    assert full.info("tumor").sha256 == decimated.info("tumor").sha256
    assert scene_version(full) != scene_version(decimated)
    assert 0 < scene_version(full) < 1 << 63


def test_decimate_refuses_a_budget_below_one() -> None:
    with pytest.raises(ValueError, match="budget"):
        decimate(np.zeros((3, 3)), np.array([[0, 1, 2]]), 0)

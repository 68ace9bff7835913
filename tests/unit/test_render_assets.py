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
    CONFIDENCE_COLOURS,
    DEFAULT_TRIANGLE_BUDGET,
    AssetSet,
    build_assets,
    confidence_rgba,
    decimate,
    glb_vertex_rgba,
    load_glb,
    scene_version,
    with_confidence,
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


# --- confidence colours --------------------------------------------------------------------


def test_confidence_colours_are_green_to_yellow_to_red_monotonically_keeping_alpha() -> None:
    e = np.array([0.0, 1.0, 2.0, 3.0, 10.0, np.nan, np.inf])
    rgba = confidence_rgba(e, alpha=0.35)
    assert rgba.dtype == np.uint8 and rgba.shape == (7, 4)
    expected = np.round(np.asarray(CONFIDENCE_COLOURS) * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgba[[0, 1], :3], expected[[0, 0]])  # <= 1 mm: green
    np.testing.assert_array_equal(rgba[2, :3], expected[1])  # 2 mm: yellow
    np.testing.assert_array_equal(rgba[3:, :3], np.repeat(expected[2:], 4, axis=0))  # red
    assert (rgba[:, 3] == round(0.35 * 255)).all()
    ramp = confidence_rgba(np.linspace(0.0, 4.0, 401)).astype(int)
    # As the error grows red never falls (it rises 1 -> 2 mm) and green never rises (it
    # falls 2 -> 3 mm); blue stays 0.
    assert (np.diff(ramp[:, 0]) >= 0).all() and (np.diff(ramp[:, 1]) <= 0).all()
    assert (ramp[:, 2] == 0).all()
    assert (np.diff(ramp[:, 0]) > 0).any() and (np.diff(ramp[:, 1]) < 0).any()
    np.testing.assert_array_equal(confidence_rgba(e, 0.35), rgba)  # deterministic


def test_a_confidence_coloured_glb_round_trips_with_its_colours_and_a_new_hash(
    phantom: Case, full: AssetSet
) -> None:
    liver = phantom.structure("liver")
    centre = liver.mesh.vertices.mean(axis=0)

    def field(v: np.ndarray) -> np.ndarray:
        return np.linalg.norm(v - centre, axis=1) / 20.0

    coloured = with_confidence(full, liver, field)
    again = with_confidence(full, liver, field)
    info = coloured.info("liver")
    assert info.sha256 != full.info("liver").sha256
    assert again.info("liver").sha256 == info.sha256  # deterministic bytes
    assert scene_version(coloured) != scene_version(full)
    for name in full.names:  # the other structures keep their bytes
        if name != "liver":
            assert coloured.info(name) == full.info(name)
    assert set(coloured.data_by_sha256) == {i.sha256 for i in coloured.infos}
    data = coloured.data_by_sha256[info.sha256]
    length = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20 : 20 + length])
    assert "COLOR_0" in gltf["meshes"][0]["primitives"][0]["attributes"]
    colours = glb_vertex_rgba(data)
    mesh = load_glb(data)
    assert colours is not None and len(colours) == len(liver.mesh.vertices)
    assert len(mesh.faces) == info.triangles
    assert np.allclose(colours[:, 3], liver.opacity, atol=1 / 255)
    assert glb_vertex_rgba(full.data_by_sha256[full.info("liver").sha256]) is None
    plain = with_confidence(coloured, liver, None)
    assert plain.info("liver") == full.info("liver")

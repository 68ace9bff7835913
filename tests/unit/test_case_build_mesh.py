"""Label to mesh: spheres of known radius and volume, orientation, components, budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.case_build.mesh import (
    MeshError,
    boundary_points,
    mesh_structure,
    raw_marching_cubes,
)
from nav.imaging.geometry import affine_from


def sphere_mask(
    radius_mm: float, centre_mm: np.ndarray, spacing_mm: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """Voxels whose centre (index * spacing) lies within the sphere."""
    grid = np.indices(shape).reshape(3, -1).T * spacing_mm
    inside = np.linalg.norm(grid - centre_mm, axis=1) <= radius_mm
    return inside.reshape(shape)


@settings(max_examples=8)
@given(
    radius_mm=st.floats(6.0, 14.0),
    spacing_mm=st.tuples(st.floats(0.6, 1.2), st.floats(0.6, 1.2), st.floats(0.8, 2.5)),
    offset=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_a_sphere_gives_its_volume_and_radius(
    radius_mm: float, spacing_mm: tuple[float, float, float], offset: tuple[float, float, float]
) -> None:
    """Closed form: V = 4/3 pi r^3; every vertex at r from the centre within half a voxel."""
    spacing = np.asarray(spacing_mm)
    shape = tuple(int(math.ceil((2 * radius_mm + 6) / s)) for s in spacing)
    centre = (np.array(shape) - 1) / 2 * spacing + (np.asarray(offset) - 0.5) * spacing
    mask = sphere_mask(radius_mm, centre, spacing, shape)  # type: ignore[arg-type]
    T = affine_from(origin_lps=[10.0, -20.0, 30.0], directions=np.eye(3), spacing_mm=spacing)
    report = mesh_structure(mask, T, triangle_budget=4000)
    true_volume = 4 / 3 * math.pi * radius_mm**3
    # the voxels approximate the ball: within a half-voxel shell of it
    shell = 4 * math.pi * radius_mm**2 * spacing.max() / 2
    assert abs(report.voxel_volume_mm3 - true_volume) < shell
    assert report.mesh_volume_mm3 == pytest.approx(report.voxel_volume_mm3, rel=1e-3)
    assert report.smoothed_volume_mm3 < report.voxel_volume_mm3  # why restore_volume exists
    p_centre = centre + [10.0, -20.0, 30.0]
    r = np.linalg.norm(report.mesh.vertices - p_centre, axis=1)
    assert np.all(np.abs(r - radius_mm) < spacing.max() / 2 + 0.05), (r.min(), r.max())
    assert np.linalg.norm(report.mesh.center_mass - p_centre) < spacing.min() / 2
    assert report.watertight
    assert len(report.mesh.faces) <= 4000
    assert report.hausdorff_mm < spacing.max()


@pytest.mark.parametrize("flip", [False, True])
def test_normals_point_out_on_a_left_handed_grid(flip: bool) -> None:
    mask = sphere_mask(8.0, np.array([10.0, 10.0, 10.0]), np.ones(3), (21, 21, 21))
    directions = np.diag([1.0, -1.0 if flip else 1.0, 1.0])  # a flipped axis: det < 0
    T = affine_from(origin_lps=[0, 0, 0], directions=directions, spacing_mm=[1, 1, 1])
    for mesh in (raw_marching_cubes(mask, T), mesh_structure(mask, T).mesh):
        assert mesh.volume > 0
        assert mesh.is_watertight and mesh.is_winding_consistent
        outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - mesh.centroid)
        assert np.mean(outward > 0) > 0.99


def test_largest_component_or_all() -> None:
    mask = np.zeros((30, 20, 20), bool)
    mask[2:12, 5:15, 5:15] = True  # 1000 voxels
    mask[18:23, 5:10, 5:10] = True  # 125 voxels
    T = np.eye(4)
    largest = mesh_structure(mask, T)
    both = mesh_structure(mask, T, keep_all=True)
    assert (largest.components, largest.kept_components, largest.voxel_count) == (2, 1, 1000)
    assert (both.kept_components, both.voxel_count) == (2, 1125)
    assert both.mesh.body_count == 2


def test_an_empty_structure_is_refused() -> None:
    with pytest.raises(MeshError, match="no voxels"):
        mesh_structure(np.zeros((5, 5, 5), bool), np.eye(4))


def test_a_structure_touching_the_scan_edge_is_closed_there() -> None:
    """Cut by the scan's last slice: the mesh is closed by a flat face, not left open, at
    the last slice's outer face (9.5) within half a voxel: smoothing rounds the box's
    edges and giving back their volume pushes the faces out a little."""
    mask = np.zeros((20, 20, 10), bool)
    mask[5:15, 5:15, 3:] = True
    report = mesh_structure(mask, np.eye(4))
    assert report.watertight
    assert report.mesh.bounds[1][2] == pytest.approx(9.5, abs=0.5)


def test_boundary_points_are_the_voxel_faces() -> None:
    """One voxel at (1, 2, 3) with 2 mm spacing: six face centres 1 mm from its centre."""
    mask = np.zeros((4, 4, 5), bool)
    mask[1, 2, 3] = True
    T = affine_from(origin_lps=[0, 0, 0], directions=np.eye(3), spacing_mm=[2, 2, 2])
    points = boundary_points(mask, T)
    assert len(points) == 6
    np.testing.assert_allclose(np.linalg.norm(points - [2, 4, 6], axis=1), 1.0)

"""The offscreen torch ray-marcher against closed forms, and on the case built from the CT."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.imaging.geometry import affine_from
from render import volume_render
from render.volume_render import Camera, anterior_camera, render

SCREENSHOTS = Path("/tmp/ornav-volume-render")


def _constant_preset(monkeypatch: pytest.MonkeyPatch, kappa_per_mm: float) -> None:
    """One colour (1, 0.5, 0.25) and one opacity per mm at every value."""
    points = ((0.0, 1.0, 0.5, 0.25, kappa_per_mm), (1.0, 1.0, 0.5, 0.25, kappa_per_mm))
    monkeypatch.setitem(volume_render.PRESETS, "flat", (0.0, 100.0, points))


@settings(max_examples=10)
@given(kappa=st.floats(0.001, 0.2), depth_voxels=st.integers(4, 40))
def test_a_uniform_slab_composites_to_the_closed_form(kappa: float, depth_voxels: int) -> None:
    """A ray through L mm of constant opacity kappa per mm: alpha = 1 - (1 - kappa)^L."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _constant_preset(monkeypatch, kappa)
        spacing = 1.5
        volume = np.zeros((6, depth_voxels, 6), np.float32)
        T = affine_from(origin_lps=[0, 0, 0], directions=np.eye(3), spacing_mm=[1, spacing, 1])
        # looking along +P through the middle; the slab spans j = -0.5 .. n - 0.5 voxels
        camera = Camera((2.5, -100.0, 2.5), (2.5, 0.0, 2.5), width=1, height=1, fov_deg=1.0)
        image = render(volume, T, camera, preset="flat", step_mm=0.05, device="cpu")
        alpha = 1 - (1 - kappa) ** (depth_voxels * spacing)
        # early ray termination stops a ray once 98 % opaque: at most 0.02 short
        tolerance = 3 / 255 + (0.02 if alpha > 0.97 else 0.0)
        np.testing.assert_allclose(
            image[0, 0] / 255, np.array([1.0, 0.5, 0.25]) * alpha, atol=tolerance
        )


def test_a_bright_cube_is_drawn_where_the_camera_projects_it() -> None:
    volume = np.full((40, 40, 40), -1000.0, np.float32)
    volume[26:32, 8:14, 20:26] = 1500.0  # bone, off-centre
    T = affine_from(
        origin_lps=[-30, 50, -700], directions=np.diag([1, 1, -1]), spacing_mm=[2, 2, 2]
    )
    centre_lps = T[:3, :3] @ [28.5, 10.5, 22.5] + T[:3, 3]
    corners = np.array([T[:3, 3], T[:3, :3] @ [39, 39, 39] + T[:3, 3]])
    camera = anterior_camera(np.sort(corners, axis=0), width=160, height=120)
    image = render(volume, T, camera, preset="bone", device="cpu").astype(float)
    bright = np.argwhere(image.sum(axis=2) > 200)
    x, y = camera.project(centre_lps)[0]
    assert len(bright) > 10
    assert abs(bright[:, 1].mean() + 0.5 - x) < 1.5
    assert abs(bright[:, 0].mean() + 0.5 - y) < 1.5


def test_a_mesh_stops_the_rays_in_front_of_what_is_behind_it() -> None:
    """An opaque cube of bone behind a sphere mesh: the sphere's colour at the centre;
    a sphere behind the cube is hidden by it."""
    volume = np.full((20, 20, 20), -1000.0, np.float32)
    volume[5:15, 5:15, 5:15] = 3000.0
    T = np.eye(4)
    camera = Camera((9.5, -60.0, 9.5), (9.5, 0.0, 9.5), width=41, height=41, fov_deg=30)
    green = (0.1, 0.9, 0.2)
    front = trimesh.creation.icosphere(radius=2.0)
    front.apply_translation([9.5, 1.0, 9.5])
    image = render(volume, T, camera, preset="bone", meshes=[(front, green)], device="cpu")
    centre = image[20, 20] / 255
    assert centre[1] > 0.8 and centre[0] < 0.2, centre  # lit straight on: the full colour
    behind = trimesh.creation.icosphere(radius=2.0)
    behind.apply_translation([9.5, 18.0, 9.5])
    image = render(volume, T, camera, preset="bone", meshes=[(behind, green)], device="cpu")
    seen = image[20, 20] / 255
    assert seen[1] < seen[0] + 0.1, seen  # the bone's white-grey, not green


def test_meshes_alone_without_a_volume() -> None:
    sphere = trimesh.creation.icosphere(radius=5.0)
    camera = Camera((0.0, -50.0, 0.0), (0.0, 0.0, 0.0), width=21, height=21)
    image = render(None, None, camera, meshes=[(sphere, (1.0, 0.0, 0.0))])
    assert image[10, 10, 0] > 240 and image[10, 10, 1] == 0
    assert image[0, 0].tolist() == [0, 0, 0]


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        render(np.zeros((2, 2, 2)), np.eye(4), Camera((0, -9, 0), (0, 0, 0)), preset="lungs")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_renders_what_the_cpu_renders() -> None:
    rng = np.random.default_rng(3)
    volume = rng.uniform(-1000, 1500, (30, 30, 30)).astype(np.float32)
    camera = Camera((14.5, -80.0, 14.5), (14.5, 14.5, 14.5), width=64, height=48)
    cpu = render(volume, np.eye(4), camera, preset="bone", device="cpu").astype(int)
    cuda = render(volume, np.eye(4), camera, preset="bone", device="cuda").astype(int)
    assert np.abs(cpu - cuda).max() <= 2


@pytest.mark.slow
def test_the_ct_case_renders_with_the_liver_where_it_is() -> None:
    """The case built from the shared CT: the liver's centroid pixel has the liver's colour
    (vessels preset: the abdominal wall in front is transparent)."""
    from PIL import Image

    from nav.case import bounds_lps, load_case
    from tests.ct_case import ct_case

    out = ct_case()
    case = load_case(out)
    assert case.volume is not None
    values = case.volume.read().astype(np.float32) + case.volume.hu_offset
    camera = anterior_camera(bounds_lps(case), width=200, height=150)
    image = render(
        values,
        case.volume.T_image_from_ijk,
        camera,
        preset="vessels",
        meshes=[(s.mesh, s.colour) for s in case.structures],
        step_mm=2.0,
    )
    SCREENSHOTS.mkdir(exist_ok=True)
    Image.fromarray(image).save(SCREENSHOTS / "ct_vessels.png")
    liver = case.structure("liver")
    x, y = camera.project(liver.mesh.center_mass)[0]
    pixel = image[int(y), int(x)] / 255
    cosine = pixel @ np.array(liver.colour) / (np.linalg.norm(pixel) * np.linalg.norm(liver.colour))
    assert cosine > 0.98, (pixel, liver.colour)
    assert not math.isclose(float(pixel.sum()), 0.0)

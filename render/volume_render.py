"""Offscreen volume rendering of a case's CT with its meshes, in torch: snapshots, reports.

A pinhole camera in the ``image`` frame (LPS mm) casts one ray per pixel; each ray is
marched front to back through the CT (trilinear samples, ``torch.nn.functional
.grid_sample``) with a transfer function over a window (the same presets as the browser's
``render/web/volume/volume.js``): opacity is given per mm, so a step of s mm keeps
``1 - (1 - a)^s`` and the picture does not depend on the step. Meshes are hit exactly
(Open3D ray casting); a ray stops at its first mesh, whose colour (Lambert, headlight) is
seen through the volume in front of it.

CUDA when present (``device="auto"``), else CPU: the same code, the same result to float
rounding. Front-to-back compositing (Levoy, IEEE CG&A 1988), ``step_mm`` chunks so the
memory stays at rays x ``CHUNK_STEPS`` samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import open3d as o3d
import torch
import trimesh

CHUNK_STEPS: Final = 16

# Control points over the window: (t, r, g, b, opacity per mm), t = 0 at level - width/2.
PRESETS: Final[dict[str, tuple[float, float, tuple[tuple[float, ...], ...]]]] = {
    "soft_tissue": (
        40.0,
        500.0,
        (
            (0.0, 0, 0, 0, 0),
            (0.25, 0.55, 0.35, 0.25, 0.0),
            (0.45, 0.75, 0.45, 0.35, 0.004),
            (0.6, 0.9, 0.6, 0.5, 0.015),
            (0.8, 1.0, 0.9, 0.8, 0.05),
            (1.0, 1, 1, 1, 0.2),
        ),
    ),
    "vessels": (
        250.0,
        300.0,
        (
            (0.0, 0, 0, 0, 0),
            (0.3, 0.6, 0.1, 0.1, 0.0),
            (0.5, 0.85, 0.15, 0.12, 0.06),
            (0.8, 1.0, 0.5, 0.4, 0.2),
            (1.0, 1, 0.95, 0.9, 0.5),
        ),
    ),
    "bone": (
        700.0,
        1400.0,
        (
            (0.0, 0, 0, 0, 0),
            (0.15, 0.7, 0.6, 0.5, 0.0),
            (0.3, 0.9, 0.85, 0.75, 0.1),
            (1.0, 1, 1, 1, 0.6),
        ),
    ),
}


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in LPS mm: ``width`` x ``height`` pixels, vertical field of view."""

    eye_lps: tuple[float, float, float]
    target_lps: tuple[float, float, float]
    up_lps: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov_deg: float = 35.0
    width: int = 640
    height: int = 480

    def basis(self) -> tuple[npt.NDArray[np.float64], ...]:
        """(forward, right, up) unit vectors; the image's x runs right, y down."""
        forward = np.subtract(self.target_lps, self.eye_lps, dtype=np.float64)
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, self.up_lps)
        right /= np.linalg.norm(right)
        return forward, right, np.cross(right, forward)

    def rays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Origin (3,) and unit directions (height * width, 3) through pixel centres."""
        forward, right, up = self.basis()
        f = self.height / 2 / math.tan(math.radians(self.fov_deg) / 2)  # pixels
        x = np.arange(self.width) + 0.5 - self.width / 2
        y = np.arange(self.height) + 0.5 - self.height / 2
        xx, yy = np.meshgrid(x, y)
        d = forward * f + xx.reshape(-1, 1) * right - yy.reshape(-1, 1) * up
        return np.asarray(self.eye_lps, dtype=np.float64), d / np.linalg.norm(d, axis=1)[:, None]

    def project(self, p_lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Pixel coordinates (x right, y down; pixel centres at .5) of points (N, 3)."""
        forward, right, up = self.basis()
        f = self.height / 2 / math.tan(math.radians(self.fov_deg) / 2)
        v = np.asarray(p_lps, dtype=np.float64).reshape(-1, 3) - self.eye_lps
        z = v @ forward
        return np.stack(
            [self.width / 2 + f * (v @ right) / z, self.height / 2 - f * (v @ up) / z], axis=1
        )


def anterior_camera(
    bounds_lps: npt.ArrayLike, *, width: int = 640, height: int = 480, fov_deg: float = 35.0
) -> Camera:
    """Looking from the patient's front (-P) at the centre of ``bounds_lps`` (2, 3), framed to
    fit; superior up, the patient's left on the right as in radiology."""
    lo, hi = np.asarray(bounds_lps, dtype=np.float64)
    centre, size = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    distance = size / 2 / math.tan(math.radians(fov_deg) / 2) * 1.05
    eye = centre - np.array([0.0, distance, 0.0])
    return Camera(
        (float(eye[0]), float(eye[1]), float(eye[2])),
        (float(centre[0]), float(centre[1]), float(centre[2])),
        fov_deg=fov_deg,
        width=width,
        height=height,
    )


def transfer_table(points: Sequence[Sequence[float]], n: int = 256) -> npt.NDArray[np.float32]:
    """The preset's control points as an (n, 4) table over t in 0..1 (linear in between)."""
    p = np.asarray(points, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, p[:, 0], p[:, c]) for c in range(1, 5)], axis=1).astype(
        np.float32
    )


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _mesh_hits(
    meshes: Sequence[tuple[trimesh.Trimesh, Sequence[float]]],
    origin: npt.NDArray[np.float64],
    directions: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distance (mm, inf for none) to each ray's first mesh and its shaded colour (N, 3)."""
    n = len(directions)
    if not meshes:
        return np.full(n, np.inf), np.zeros((n, 3))
    scene = o3d.t.geometry.RaycastingScene()
    colours = []
    for mesh, colour in meshes:
        scene.add_triangles(
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
        )
        colours.append(colour)
    rays = np.hstack([np.broadcast_to(origin, (n, 3)), directions]).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays)))
    t_hit = hit["t_hit"].numpy().astype(np.float64)
    ids = hit["geometry_ids"].numpy().astype(np.int64)
    normals = hit["primitive_normals"].numpy().astype(np.float64)
    found = np.isfinite(t_hit)
    shade = 0.45 + 0.55 * np.abs(np.einsum("ij,ij->i", normals, directions))
    palette = np.asarray(colours, dtype=np.float64)
    shaded = np.zeros((n, 3))
    shaded[found] = palette[ids[found]] * shade[found, None]
    return t_hit, shaded


def render(
    volume_hu: npt.ArrayLike | None,
    T_image_from_ijk: npt.ArrayLike | None,
    camera: Camera,
    *,
    preset: str = "soft_tissue",
    level: float | None = None,
    width: float | None = None,
    clip: tuple[Sequence[float], Sequence[float]] | None = None,
    meshes: Sequence[tuple[trimesh.Trimesh, Sequence[float]]] = (),
    step_mm: float | None = None,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    device: str = "auto",
) -> npt.NDArray[np.uint8]:
    """An RGB image (height, width, 3) of the CT ``volume_hu`` [i, j, k] (HU, placed by
    ``T_image_from_ijk``) and ``meshes`` (LPS mm, colour in 0..1) seen by ``camera``.

    ``level``/``width`` override the preset's window (HU); ``clip`` is a box (lo, hi) in
    fractions 0..1 of the volume along i, j, k; ``step_mm`` defaults to half the smallest
    voxel spacing. ``volume_hu`` None draws the meshes alone.
    """
    origin, directions = camera.rays()
    t_mesh, mesh_colour = _mesh_hits(meshes, origin, directions)
    back = np.asarray(background, dtype=np.float64)
    behind = np.where(np.isfinite(t_mesh)[:, None], mesh_colour, back)
    if volume_hu is None:
        return _image(behind, camera)
    assert T_image_from_ijk is not None
    colour, transmittance = march(
        volume_hu,
        T_image_from_ijk,
        origin,
        directions,
        t_stop_mm=t_mesh,
        preset=preset,
        level=level,
        width=width,
        clip=clip,
        step_mm=step_mm,
        device=device,
    )
    return _image(colour + transmittance[:, None] * behind, camera)


def march(
    volume_hu: npt.ArrayLike,
    T_image_from_ijk: npt.ArrayLike,
    origin: npt.ArrayLike,
    directions: npt.ArrayLike,
    *,
    t_stop_mm: npt.ArrayLike | None = None,
    preset: str = "soft_tissue",
    level: float | None = None,
    width: float | None = None,
    clip: tuple[Sequence[float], Sequence[float]] | None = None,
    step_mm: float | None = None,
    device: str = "auto",
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The CT along rays: premultiplied colour (N, 3) in 0..1 and transmittance (N,).

    Rays start at ``origin`` (3,) and run along unit ``directions`` (N, 3), both in the
    ``image`` frame (LPS mm); each stops at ``t_stop_mm`` (N,) mm (e.g. its first mesh; inf
    or None: at the volume's far side). What lies behind shows through by the
    transmittance: ``colour + transmittance * behind``. Other arguments as :func:`render`.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: {', '.join(PRESETS)}")
    preset_level, preset_width, points = PRESETS[preset]
    level = preset_level if level is None else level
    width = max(1.0, preset_width if width is None else width)
    dev = resolve_device(device)
    origin = np.asarray(origin, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64).reshape(-1, 3)

    values = torch.as_tensor(np.asarray(volume_hu, dtype=np.float32), device=dev)
    ni, nj, nk = values.shape
    T = np.asarray(T_image_from_ijk, dtype=np.float64)
    spacing = np.linalg.norm(T[:3, :3], axis=0)
    step = float(step_mm if step_mm is not None else spacing.min() / 2)
    T_inv = np.linalg.inv(T)
    o_ijk = T_inv[:3, :3] @ origin + T_inv[:3, 3]
    d_ijk = directions @ T_inv[:3, :3].T  # per mm of ray
    lo = np.array([-0.5, -0.5, -0.5])
    hi = np.array([ni, nj, nk], dtype=np.float64) - 0.5
    if clip is not None:
        size = hi - lo
        lo, hi = lo + np.asarray(clip[0]) * size, lo + np.asarray(clip[1]) * size
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (lo - o_ijk) / d_ijk
        b = (hi - o_ijk) / d_ijk
    t_near = np.nan_to_num(np.minimum(a, b), nan=-np.inf).max(axis=1).clip(min=0.0)
    t_far = np.nan_to_num(np.maximum(a, b), nan=np.inf).min(axis=1)
    if t_stop_mm is not None:
        t_far = np.minimum(t_far, np.asarray(t_stop_mm, dtype=np.float64))

    table = torch.as_tensor(transfer_table(points), device=dev)
    # grid_sample wants (N, C, D, H, W) = (1, 1, k, j, i) and x, y, z = i, j, k in -1..1
    grid_volume = values.permute(2, 1, 0)[None, None]
    scale = torch.as_tensor(
        2.0 / np.maximum(np.array([ni, nj, nk], dtype=np.float64) - 1, 1), device=dev
    )
    o = torch.as_tensor(o_ijk, device=dev, dtype=torch.float32)
    d = torch.as_tensor(d_ijk, device=dev, dtype=torch.float32)
    t0 = torch.as_tensor(t_near, device=dev, dtype=torch.float32)
    t1 = torch.as_tensor(t_far, device=dev, dtype=torch.float32)
    n_rays = len(directions)
    colour = torch.zeros((n_rays, 3), device=dev)
    transmittance = torch.ones(n_rays, device=dev)
    active = t1 > t0
    n_steps = int(math.ceil(float((t_far - t_near)[t_far > t_near].max(initial=0.0)) / step))
    low = level - width / 2
    offsets = torch.arange(CHUNK_STEPS, device=dev, dtype=torch.float32)
    for start in range(0, n_steps, CHUNK_STEPS):
        index = torch.nonzero(active & (transmittance > 0.02)).squeeze(1)
        if len(index) == 0:
            break
        s = t0[index, None] + (start + offsets[None, :] + 0.5) * step  # (R, S) mm
        inside = s < t1[index, None]
        # a ray whose segment has ended takes no more chunks
        active[index] = inside[:, -1]
        p = o[None, None, :] + s[..., None] * d[index, None, :]  # (R, S, 3) ijk
        g = (p * scale.to(torch.float32)) - 1.0
        hu = torch.nn.functional.grid_sample(
            grid_volume, g[None, None], mode="bilinear", padding_mode="border", align_corners=True
        )[0, 0, 0]  # (R, S)
        t = ((hu - low) / width).clamp(0.0, 1.0) * (len(table) - 1)
        i0 = t.floor().long().clamp(max=len(table) - 2)
        f = (t - i0)[..., None]
        tf = table[i0] * (1 - f) + table[i0 + 1] * f  # (R, S, 4)
        alpha = 1.0 - torch.pow(1.0 - tf[..., 3].clamp(max=0.999), step)
        alpha = torch.where(inside, alpha, torch.zeros_like(alpha))
        keep = torch.cumprod(1.0 - alpha, dim=1)
        before = torch.cat([torch.ones_like(keep[:, :1]), keep[:, :-1]], dim=1)
        tr = transmittance[index]
        colour[index] += tr[:, None] * (before[..., None] * alpha[..., None] * tf[..., :3]).sum(1)
        transmittance[index] = tr * keep[:, -1]
    return (
        colour.cpu().numpy().astype(np.float64),
        transmittance.cpu().numpy().astype(np.float64),
    )


def _image(rgb: npt.NDArray[np.float64], camera: Camera) -> npt.NDArray[np.uint8]:
    out = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return out.reshape(camera.height, camera.width, 3)

"""What the headset would show now, as an image: the overlay drawn from the display's pose.

The camera sits at the origin of the ``display`` frame with the display calibration's
pinhole intrinsics (``calibration.files`` kind ``display``: ``camera_matrix``,
``image_size``), OpenCV convention: x right, y down, z forward, pixel (u, v) =
``K @ p_display / z``. Each structure's GLB mesh (vertices in ``image``, mm) is placed by
its ``SceneUpdate.T_tracker_from_structures`` pose, seen from the display
(``DisplayCamera.display_from_tracker``: the display calibration and the update's headset
marker pose), and drawn in its case colour and
opacity; the pointer tip is a small sphere. A banner on top states the overlay state,
the navigation status, the nearest target's distance and the predicted TRE.

Safety, as the headset must draw it:
- CURRENT: the model in its colours.
- STALE: the model dimmed and greyed, an amber frame and a "STALE" banner: visibly not
  current.
- HIDDEN: no model and no tip at all; the banner says why (REFERENCE_LOST, no update...).

Renderers: ``open3d`` is Open3D's ``OffscreenRenderer`` (Filament; without a GPU it runs on
Mesa's software Vulkan, llvmpipe, which is what this machine uses); ``raycast`` is a CPU
fallback with ``open3d.t.geometry.RaycastingScene`` (first-hit per structure, Lambert
shading by the normal, transparent structures blended back to front over the opaque
ones). ``auto`` runs ``open3d`` in a child process with a deadline and falls back to
``raycast`` for the rest of the process if it fails or is too slow; ``Snapshot.renderer``
says which one drew the image. Measured on this 2-core machine (Mesa llvmpipe, no GPU):
with multisampling on, Filament took 30-60 s for the phantom; with it off (as here) the
opaque structures draw in ~0.1 s, but the translucent liver over them still takes
14-22 s, so ``auto`` gives up after 5 s and the ray caster (~0.2 s) draws it. On a
machine with a GPU the Filament path takes milliseconds.

The CT volume (the case's brick, ``CtVolume``): when the scene has one it is ray-marched
with ``render.volume_render.march`` (torch; CUDA where present) in the structures'
``image`` frame, placed by their pose in the update, each ray stopping at the first mesh
(or the tip) it meets, and composited over the meshes (front to back: what lies in front
of a mesh tints it, the mesh hides what lies behind it). It obeys the same rule as the
meshes: dimmed and more transparent when STALE, not drawn at all when HIDDEN. The rays are
cast on a grid ``volume_ray_stride`` pixels apart (4: a 160 x 120 grid for the 640 x 480
simulated display) and the layer is scaled up (bilinear) over the full-resolution meshes:
the CT is smooth at that scale and the time stays reasonable on a CPU. Measured on this
2-core machine (CPU torch), the shared CT case (a 256 x 256 x 20 brick), the display
looking at the liver from ~0.5 m: ~0.5-1 s for the volume layer at stride 4, several
seconds at stride 1 (tests/process/test_volume_snapshot.py prints the figures).

The background is black: an optical see-through display adds light, so black is "nothing".
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d
import trimesh

import calibration
from calibration.files import CalibrationFileError, read_calibration
from nav.imaging.brick import decode_brick
from nav.messages import AssetInfo, OverlayState, SceneUpdate
from nav.messages.headset import VolumeInfo
from nav.transforms import invert_rigid
from render.assets import glb_vertex_rgba
from render.volume_render import PRESETS, march

log = logging.getLogger(__name__)

DEFAULT_DISPLAY_CALIBRATION = (
    Path(calibration.__file__).parent / "data" / "sim_headset_display.toml"
)
RENDERERS = ("auto", "open3d", "raycast")
TIP_RADIUS_MM = 2.5
TIP_RGBA = (0.2, 1.0, 1.0, 1.0)
STALE_RGB = (255, 176, 0)  # amber
HIDDEN_RGB = (230, 40, 40)
CURRENT_RGB = (40, 200, 90)
_BANNER_PX = 28

ImageRGB = npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class DisplayCamera:
    """The display's pinhole: ``K`` (3, 3) px, image ``width`` x ``height`` px, and where it
    sits on the headset marker: ``T_display_from_headset`` (4, 4) mm (identity: the view is
    the marker's)."""

    K: npt.NDArray[np.float64]
    width: int
    height: int
    T_display_from_headset: npt.NDArray[np.float64] = field(default_factory=lambda: np.eye(4))

    def display_from_tracker(self, update: SceneUpdate) -> npt.NDArray[np.float64] | None:
        """``T_display_from_tracker`` for ``update`` (protocol 2 sends tracker-frame poses):
        ``T_display_from_headset @ inv(T_tracker_from_headset)``; None without a headset pose.
        """
        if not update.headset_ok:
            return None
        out: npt.NDArray[np.float64] = self.T_display_from_headset @ invert_rigid(
            update.T_tracker_from_headset
        )
        return out

    def project(self, p_display: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Points (N, 3) mm in the display frame -> pixels (N, 2) (u right, v down)."""
        p = np.atleast_2d(np.asarray(p_display, dtype=np.float64))
        uvw = p @ self.K.T
        out: npt.NDArray[np.float64] = uvw[:, :2] / uvw[:, 2:3]
        return out


def load_display_camera(path: str | os.PathLike[str] | None = None) -> DisplayCamera:
    """The display calibration's camera (default: the simulated headset's, package data).

    Raises ``CalibrationFileError`` (one line) for an unreadable file or one of another kind.
    """
    path = Path(path) if path is not None else DEFAULT_DISPLAY_CALIBRATION
    cal = read_calibration(path)
    if cal.kind != "display":
        raise CalibrationFileError(f"{path}: kind {cal.kind!r}, expected a 'display' calibration")
    K = cal.array("camera_matrix")
    width, height = (int(v) for v in cal.array("image_size"))
    return DisplayCamera(
        K=K, width=width, height=height, T_display_from_headset=cal.array("T_display_from_headset")
    )


@dataclass(frozen=True, eq=False)
class StructureMesh:
    """One structure's triangles: ``vertices`` (V, 3) mm in ``image``, ``faces`` (F, 3).

    ``vertex_rgba`` (V, 4) in 0..1: per-vertex colours (the asset's ``COLOR_0``, e.g.
    confidence colours), drawn instead of ``color_rgba``'s RGB when present.
    """

    name: str
    vertices: npt.NDArray[np.float64]
    faces: npt.NDArray[np.int64]
    color_rgba: tuple[float, float, float, float]
    vertex_rgba: npt.NDArray[np.float64] | None = None


def mesh_from_glb(info: AssetInfo, data: bytes) -> StructureMesh:
    """Decode one GLB asset (ValueError if it is not one triangle mesh)."""
    loaded = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh", process=False)
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"asset {info.name!r}: not a triangle mesh")
    colours = glb_vertex_rgba(data)
    if colours is not None and len(colours) != len(loaded.vertices):
        colours = None
    return StructureMesh(
        name=info.name,
        vertices=np.asarray(loaded.vertices, dtype=np.float64),
        faces=np.asarray(loaded.faces, dtype=np.int64),
        color_rgba=info.color_rgba,
        vertex_rgba=colours,
    )


def meshes_from_assets(assets: Mapping[str, tuple[AssetInfo, bytes]]) -> dict[str, StructureMesh]:
    """Every asset decoded, by structure name."""
    return {name: mesh_from_glb(info, data) for name, (info, data) in assets.items()}


@dataclass(frozen=True, eq=False)
class CtVolume:
    """The case's CT for drawing: ``hu`` [i, j, k] float32 (HU) and ``T_image_from_ijk``
    (4, 4): voxel centre -> ``image`` (LPS, mm)."""

    hu: npt.NDArray[np.float32]
    T_image_from_ijk: npt.NDArray[np.float64]


def volume_from_asset(info: VolumeInfo, data: bytes) -> CtVolume:
    """Decode the CT brick asset (``nav.imaging.brick.BrickError``, a ValueError, if its
    bytes do not hold ``info.shape``)."""
    values = decode_brick(data, info.shape)
    hu = values.astype(np.float32) + np.float32(info.hu_offset)
    return CtVolume(hu=hu, T_image_from_ijk=np.asarray(info.T_image_from_ijk, np.float64))


def volume_or_none(asset: tuple[VolumeInfo, bytes] | None) -> CtVolume | None:
    """``volume_from_asset`` of a client's volume asset, or None (none, or its bytes do not
    hold its shape: logged once as a warning, and the snapshot is drawn without it)."""
    if asset is None:
        return None
    try:
        return volume_from_asset(*asset)
    except ValueError as error:
        log.warning("CT volume %s... not drawn: %s", asset[0].sha256[:12], error)
        return None


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A rendered view: ``image`` (H, W, 3) uint8 RGB and which renderer drew it."""

    image: ImageRGB
    renderer: str
    overlay: OverlayState
    banner: str
    volume_ms: float | None = None
    """Time spent on the CT volume layer (ms); None: none was drawn."""


@dataclass(frozen=True, eq=False)
class _Drawable:
    vertices_display: npt.NDArray[np.float64]
    faces: npt.NDArray[np.int64]
    rgba: tuple[float, float, float, float]
    vertex_rgb: npt.NDArray[np.float64] | None = None
    """(V, 3) per-vertex colours, 0..1, replacing ``rgba``'s RGB (alpha stays ``rgba``'s)."""


def _dim(rgba: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """STALE look: towards grey, half as bright, more transparent."""
    r, g, b, a = rgba
    grey = (r + g + b) / 3.0
    mix = [0.45 * (0.4 * c + 0.6 * grey) for c in (r, g, b)]
    return (mix[0], mix[1], mix[2], 0.6 * a)


def _dim_rgb(rgb: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``_dim``'s colour change for (V, 3) colours."""
    grey = rgb.mean(axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = 0.45 * (0.4 * rgb + 0.6 * grey)
    return out


def _drawables(
    update: SceneUpdate | None,
    overlay: OverlayState,
    meshes: Mapping[str, StructureMesh],
    camera: DisplayCamera,
) -> list[_Drawable]:
    if update is None or overlay is OverlayState.HIDDEN:
        return []  # never draw what the system cannot vouch for
    T_display_from_tracker = camera.display_from_tracker(update)
    if T_display_from_tracker is None:
        return []  # no headset pose: nowhere to draw from
    out: list[_Drawable] = []
    for name, T_tracker in zip(
        update.structure_names, update.T_tracker_from_structures, strict=True
    ):
        mesh = meshes.get(name)
        if mesh is None:
            continue
        T = T_display_from_tracker @ T_tracker
        v = mesh.vertices @ T[:3, :3].T + T[:3, 3]
        current = overlay is OverlayState.CURRENT
        rgba = mesh.color_rgba if current else _dim(mesh.color_rgba)
        vertex_rgb = None
        if mesh.vertex_rgba is not None:
            vertex_rgb = mesh.vertex_rgba[:, :3] if current else _dim_rgb(mesh.vertex_rgba[:, :3])
        out.append(_Drawable(v, mesh.faces, rgba, vertex_rgb))
    tip = T_display_from_tracker[:3, :3] @ update.p_tip_tracker + T_display_from_tracker[:3, 3]
    if np.isfinite(tip).all():
        sphere = trimesh.creation.icosphere(subdivisions=2, radius=TIP_RADIUS_MM)
        rgba = TIP_RGBA if overlay is OverlayState.CURRENT else _dim(TIP_RGBA)
        out.append(
            _Drawable(
                np.asarray(sphere.vertices) + tip, np.asarray(sphere.faces, dtype=np.int64), rgba
            )
        )
    return out


# --- renderers ------------------------------------------------------------------------

OPEN3D_EXPLICIT_TIMEOUT_S = 120.0
"""Deadline for ``renderer="open3d"`` (no fallback): generous, it is only a stall guard."""

_OFFSCREEN: dict[tuple[int, int], Any] = {}
_OFFSCREEN_BROKEN: list[str] = []


def _offscreen(width: int, height: int) -> Any:
    # Filament's engine is per process and slow to start (~0.4 s): one renderer per size.
    key = (width, height)
    if key not in _OFFSCREEN:
        _OFFSCREEN[key] = o3d.visualization.rendering.OffscreenRenderer(width, height)
    return _OFFSCREEN[key]


def _render_open3d(drawables: list[_Drawable], camera: DisplayCamera) -> ImageRGB:
    rendering = o3d.visualization.rendering
    renderer = _offscreen(camera.width, camera.height)
    scene = renderer.scene
    scene.clear_geometry()
    scene.set_background([0.0, 0.0, 0.0, 1.0])
    # Multisampling on Mesa's software rasteriser (no GPU) costs ~30 s a frame for the
    # phantom instead of ~0.1 s (measured): a headset preview does not need it.
    scene.view.set_antialiasing(False)
    scene.view.set_sample_count(1)
    # The light travels along the view direction (display +z): what faces the viewer is lit.
    scene.set_lighting(rendering.Open3DScene.LightingProfile.NO_SHADOWS, np.array([0.0, 0.3, 1.0]))
    for i, d in enumerate(drawables):
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(d.vertices_display), o3d.utility.Vector3iVector(d.faces)
        )
        mesh.compute_vertex_normals()
        material = rendering.MaterialRecord()
        material.base_color = list(d.rgba)
        if d.vertex_rgb is not None:  # Filament multiplies base colour and vertex colour
            mesh.vertex_colors = o3d.utility.Vector3dVector(d.vertex_rgb)
            material.base_color = [1.0, 1.0, 1.0, d.rgba[3]]
        material.shader = "defaultLitTransparency" if d.rgba[3] < 1.0 else "defaultLit"
        material.base_roughness = 0.8
        scene.add_geometry(f"s{i}", mesh, material)
    # Extrinsic = T_camera_from_world = identity: the camera is the display frame.
    renderer.setup_camera(camera.K, np.eye(4), camera.width, camera.height)
    image = np.asarray(renderer.render_to_image())
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


def _pixel_rays(camera: DisplayCamera) -> npt.NDArray[np.float32]:
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    d = pix @ np.linalg.inv(camera.K).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rays = np.concatenate([np.zeros_like(d), d], axis=1)
    return rays.astype(np.float32)


def _render_raycast(drawables: list[_Drawable], camera: DisplayCamera) -> ImageRGB:
    n_pix = camera.width * camera.height
    rgb = np.zeros((n_pix, 3), dtype=np.float64)
    if not drawables:
        return rgb.reshape(camera.height, camera.width, 3).astype(np.uint8)
    rays = _pixel_rays(camera)
    directions = rays[:, 3:].astype(np.float64)
    hits: list[
        tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], _Drawable, npt.NDArray[np.float64]]
    ] = []
    for d in drawables:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(d.vertices_display, dtype=np.float32)),
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(d.faces, dtype=np.uint32)),
        )
        result = scene.cast_rays(o3d.core.Tensor.from_numpy(rays))
        t = result["t_hit"].numpy().astype(np.float64)
        normals = result["primitive_normals"].numpy().astype(np.float64)
        shade = 0.25 + 0.75 * np.abs(np.einsum("ij,ij->i", normals, directions))
        colour = np.broadcast_to(np.array(d.rgba[:3]), (n_pix, 3))
        if d.vertex_rgb is not None:  # barycentric interpolation over the hit triangle
            hit = np.isfinite(t)
            ids = result["primitive_ids"].numpy()[hit].astype(np.int64)
            uv = result["primitive_uvs"].numpy()[hit].astype(np.float64)
            corners = d.vertex_rgb[d.faces[ids]]  # (H, 3 corners, 3 channels)
            weights = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
            colour = np.array(colour)
            colour[hit] = np.einsum("hk,hkc->hc", weights, corners)
        hits.append((t, shade, d, colour))
    opaque_t = np.full(n_pix, np.inf)
    for t, shade, d, colour in hits:
        if d.rgba[3] >= 1.0:
            nearer = t < opaque_t
            opaque_t[nearer] = t[nearer]
            rgb[nearer] = shade[nearer, None] * colour[nearer]
    transparent = [h for h in hits if h[2].rgba[3] < 1.0]
    # Back to front per pixel would need a sort per pixel; structures rarely interleave,
    # so blending each whole structure farthest-first (by median depth) is close enough.
    transparent.sort(
        key=lambda h: -float(np.median(h[0][np.isfinite(h[0])])) if np.isfinite(h[0]).any() else 0.0
    )
    for t, shade, d, colour in transparent:
        seen = np.isfinite(t) & (t < opaque_t)
        a = d.rgba[3]
        rgb[seen] = (1 - a) * rgb[seen] + a * shade[seen, None] * colour[seen]
    image = np.clip(rgb * 255.0, 0, 255).astype(np.uint8)
    return image.reshape(camera.height, camera.width, 3)


def _open3d_child(conn: Any, drawables: list[_Drawable], camera: DisplayCamera) -> None:
    try:
        conn.send(("ok", _render_open3d(drawables, camera)))
    except Exception as error:  # reported to the parent, which falls back
        conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


def _render_open3d_isolated(
    drawables: list[_Drawable], camera: DisplayCamera, timeout_s: float
) -> ImageRGB:
    """``_render_open3d`` in a spawned process that is killed after ``timeout_s``.

    Why: on Mesa's software Vulkan (llvmpipe) Filament renders some meshes in 0.2 s and
    others (the phantom's thin vessel tubes) in over a minute on a loaded 2-core machine,
    and a C++ call cannot be interrupted in-process. A fresh process also keeps Filament's
    engine out of a process that holds ZeroMQ sockets. TimeoutError / RuntimeError.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_open3d_child, args=(child, drawables, camera), daemon=True)
    process.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise TimeoutError(f"Open3D offscreen rendering took over {timeout_s:g} s")
        status, payload = parent.recv()
    except EOFError:
        raise RuntimeError("the Open3D renderer process died") from None
    finally:
        parent.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
    if status != "ok":
        raise RuntimeError(str(payload))
    image: ImageRGB = payload
    return image


def _render_3d(
    drawables: list[_Drawable], camera: DisplayCamera, renderer: str, timeout_s: float
) -> tuple[ImageRGB, str]:
    if renderer not in RENDERERS:
        raise ValueError(f"renderer {renderer!r}: use one of {RENDERERS}")
    if renderer == "raycast" or (renderer == "auto" and _OFFSCREEN_BROKEN):
        return _render_raycast(drawables, camera), "raycast"
    if renderer == "open3d":
        # Asked for by name: no fallback, but still in a child with a deadline, because a
        # Filament call on a software rasteriser can stall for minutes and cannot be
        # interrupted in-process (seen once in CI: a test stuck past its timeout).
        limit_s = max(timeout_s, OPEN3D_EXPLICIT_TIMEOUT_S)
        return _render_open3d_isolated(drawables, camera, limit_s), "open3d"
    try:
        return _render_open3d_isolated(drawables, camera, timeout_s), "open3d"
    except (TimeoutError, RuntimeError, OSError) as error:
        _OFFSCREEN_BROKEN.append(str(error))
        log.warning("Open3D offscreen renderer unusable here (%s): CPU ray casting", error)
        return _render_raycast(drawables, camera), "raycast"


# --- the banner -----------------------------------------------------------------------


def banner_text(
    update: SceneUpdate | None, overlay: OverlayState, reason: str, *, deformed: bool = False
) -> str:
    """The one-line status the headset shows above the overlay; ``deformed``: the models
    are those of a deformable registration (the banner says "DEFORMABLE")."""
    if overlay is OverlayState.HIDDEN:
        return f"HIDDEN: {reason or 'no overlay'} - model not shown"
    assert update is not None
    parts = [overlay.value if overlay is OverlayState.STALE else "LIVE", update.status.value]
    if deformed:
        parts.append("DEFORMABLE")
    if update.needs_verification:
        parts.append("VERIFY REGISTRATION")
    distances = update.target_distances_mm
    if len(distances) and np.isfinite(distances).any():
        i = int(np.nanargmin(distances))
        parts.append(f"{update.target_names[i]} {distances[i]:.1f} mm")
    if math.isfinite(update.predicted_tre_mm):
        parts.append(f"TRE {update.predicted_tre_mm:.1f} mm")
    if overlay is OverlayState.STALE and reason:
        parts.append(reason)
    return " | ".join(parts)


def _draw_banner(image: ImageRGB, text: str, overlay: OverlayState) -> None:
    colour = {
        OverlayState.CURRENT: CURRENT_RGB,
        OverlayState.STALE: STALE_RGB,
        OverlayState.HIDDEN: HIDDEN_RGB,
    }[overlay]
    h, w = image.shape[:2]
    bar = min(_BANNER_PX, h)
    image[:bar] = (np.asarray(colour, dtype=np.float64) * 0.35).astype(np.uint8)
    cv2.putText(image, text, (6, bar - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    if overlay is OverlayState.STALE:
        cv2.rectangle(image, (0, 0), (w - 1, h - 1), STALE_RGB, 6)
        cv2.putText(
            image,
            "STALE",
            (w - 110, h - 16),
            cv2.FONT_HERSHEY_SIMPLEX,
            1.1,
            STALE_RGB,
            2,
            cv2.LINE_AA,
        )


def render_view(
    *,
    update: SceneUpdate | None,
    overlay: OverlayState,
    reason: str = "",
    meshes: Mapping[str, StructureMesh],
    camera: DisplayCamera,
    renderer: str = "auto",
    open3d_timeout_s: float = 5.0,
    volume: CtVolume | None = None,
    volume_preset: str = "soft_tissue",
    volume_ray_stride: int = 4,
    device: str = "auto",
    deformed: bool = False,
) -> Snapshot:
    """Draw ``update`` as the headset would under ``overlay`` (the client's verdict).

    ``meshes`` by structure name; structures without a mesh are skipped. ``renderer``:
    "open3d" (in this process), "raycast", or "auto": Open3D in a child process, given
    ``open3d_timeout_s``, else ray casting for the rest of this process (ValueError for
    another name). ``volume``: the case's CT, drawn with the transfer function
    ``volume_preset`` (``render.volume_render.PRESETS``) on rays ``volume_ray_stride``
    pixels apart (see the module docstring), on torch's ``device``.
    """
    if volume_preset not in PRESETS:
        raise ValueError(f"volume preset {volume_preset!r}: use one of {', '.join(PRESETS)}")
    if volume_ray_stride < 1:
        raise ValueError(f"volume_ray_stride must be >= 1, got {volume_ray_stride}")
    if update is None:
        overlay = OverlayState.HIDDEN
        reason = reason or "no scene yet"
    drawables = _drawables(update, overlay, meshes, camera)
    image, used = _render_3d(drawables, camera, renderer, open3d_timeout_s)
    image = image.copy()
    volume_ms = None
    if volume is not None and update is not None and overlay is not OverlayState.HIDDEN:
        t0 = time.perf_counter()
        layer = _volume_layer(
            update, volume, drawables, camera, volume_preset, volume_ray_stride, device
        )
        if layer is not None:
            colour, transmittance = layer
            if overlay is OverlayState.STALE:  # as the meshes: greyed, dimmer, fainter
                colour = 0.6 * _dim_rgb(colour.reshape(-1, 3)).reshape(colour.shape)
                transmittance = 1.0 - 0.6 * (1.0 - transmittance)
            blended = colour * 255.0 + transmittance[..., None] * image.astype(np.float64)
            image = np.clip(np.round(blended), 0, 255).astype(np.uint8)
            volume_ms = (time.perf_counter() - t0) * 1e3
    text = banner_text(update, overlay, reason, deformed=deformed)
    _draw_banner(image, text, overlay)
    return Snapshot(image=image, renderer=used, overlay=overlay, banner=text, volume_ms=volume_ms)


def _volume_layer(
    update: SceneUpdate,
    volume: CtVolume,
    drawables: list[_Drawable],
    camera: DisplayCamera,
    preset: str,
    stride: int,
    device: str,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The CT's premultiplied colour (H, W, 3) and transmittance (H, W) over the full
    image, marched on a grid ``stride`` pixels apart; None with no pose to draw it by.

    The volume lies in ``image``, placed like the structures (they share that frame: the
    update's first structure pose). Each ray stops at the first drawable it meets.
    """
    T_display_from_tracker = camera.display_from_tracker(update)
    if T_display_from_tracker is None or not len(update.structure_names):
        return None
    T_display_from_image = T_display_from_tracker @ update.T_tracker_from_structures[0]
    T_image_from_display = invert_rigid(T_display_from_image)
    w = -(-camera.width // stride)
    h = -(-camera.height // stride)
    # Grid points at the centres of stride x stride blocks: what a bilinear resize assumes.
    u = np.arange(w) * stride + (stride - 1) / 2
    v = np.arange(h) * stride + (stride - 1) / 2
    uu, vv = np.meshgrid(u, v)
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], axis=1)
    d_display = pix @ np.linalg.inv(camera.K).T
    d_display /= np.linalg.norm(d_display, axis=1, keepdims=True)
    t_stop = _first_hits(drawables, d_display)  # mm: the same in image (a rigid move)
    colour, transmittance = march(
        volume.hu,
        volume.T_image_from_ijk,
        T_image_from_display[:3, 3],
        d_display @ T_image_from_display[:3, :3].T,
        t_stop_mm=t_stop,
        preset=preset,
        device=device,
    )
    size = (camera.width, camera.height)
    colour_full = cv2.resize(
        colour.reshape(h, w, 3).astype(np.float32), size, interpolation=cv2.INTER_LINEAR
    )
    trans_full = cv2.resize(
        transmittance.reshape(h, w).astype(np.float32), size, interpolation=cv2.INTER_LINEAR
    )
    return colour_full.astype(np.float64), trans_full.astype(np.float64)


def _first_hits(
    drawables: list[_Drawable], directions: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Distance (mm, inf: none) from the display origin along each unit direction (N, 3)
    to the first drawable's surface."""
    if not drawables:
        return np.full(len(directions), np.inf)
    scene = o3d.t.geometry.RaycastingScene()
    for d in drawables:
        scene.add_triangles(
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(d.vertices_display, dtype=np.float32)),
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(d.faces, dtype=np.uint32)),
        )
    rays = np.concatenate([np.zeros_like(directions), directions], axis=1).astype(np.float32)
    hits = scene.cast_rays(o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays)))
    return hits["t_hit"].numpy().astype(np.float64)


def write_png(path: str | os.PathLike[str], snapshot: Snapshot) -> Path:
    """Write the snapshot as PNG; OSError (one line) if it cannot be written."""
    path = Path(path)
    ok, data = cv2.imencode(".png", cv2.cvtColor(snapshot.image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(data.tobytes())
    return path

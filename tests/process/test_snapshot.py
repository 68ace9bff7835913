"""The headset snapshot: the phantom placed by a known SceneUpdate, seen through the
simulated display's intrinsics; STALE visibly marked, HIDDEN not drawn."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from calibration.files import CalibrationFileError, read_calibration
from nav.case import load_case
from nav.messages import NavStatus, OverlayState, SceneUpdate
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.transforms import axis_angle_to_matrix, invert_rigid, make_rigid
from render.assets import CONFIDENCE_COLOURS, build_assets, with_confidence
from render.snapshot import (
    DEFAULT_DISPLAY_CALIBRATION,
    DisplayCamera,
    Snapshot,
    StructureMesh,
    load_display_camera,
    mesh_from_glb,
    meshes_from_assets,
    render_view,
    write_png,
)
from tracking.sim_model import SimConfig, SimulatedTracker

BANNER_ROWS = 40  # the banner and the frame: excluded when looking at the model


@pytest.fixture(scope="module")
def meshes() -> dict[str, StructureMesh]:
    assets = build_assets(load_case(SHIPPED_PHANTOM_DIR))
    return meshes_from_assets({i.name: (i, assets.data_by_sha256[i.sha256]) for i in assets.infos})


@pytest.fixture(scope="module")
def camera() -> DisplayCamera:
    return load_display_camera()


def _T_display_from_image() -> np.ndarray:
    """The chain the render node computes, at sim time 0 with the sim's true registration."""
    T_reference_from_image = make_rigid(
        axis_angle_to_matrix([0.0, 0.0, 1.0], math.radians(15.0))
        @ axis_angle_to_matrix([1.0, 0.0, 0.0], math.radians(-90.0)),
        [160.0, -30.0, -70.0],
    )
    tracker = SimulatedTracker(SimConfig())
    T_display_from_headset = read_calibration(DEFAULT_DISPLAY_CALIBRATION).array(
        "T_display_from_headset"
    )
    T: np.ndarray = (
        T_display_from_headset
        @ invert_rigid(tracker.true_pose("headset", 0.0))
        @ tracker.true_pose("reference", 0.0)
        @ T_reference_from_image
    )
    return T


def _T_tracker_from_headset() -> np.ndarray:
    T: np.ndarray = SimulatedTracker(SimConfig()).true_pose("headset", 0.0)
    return T


def _update(names: tuple[str, ...], overlay: OverlayState, tip: np.ndarray) -> SceneUpdate:
    """Protocol 2: the poses of ``_T_display_from_image``'s chain in the tracker frame;
    ``tip`` is given in the display frame."""
    T_tracker_from_headset = _T_tracker_from_headset()
    T_display_from_tracker = read_calibration(DEFAULT_DISPLAY_CALIBRATION).array(
        "T_display_from_headset"
    ) @ invert_rigid(T_tracker_from_headset)
    T = invert_rigid(T_display_from_tracker) @ _T_display_from_image()
    T_tracker_from_display = invert_rigid(T_display_from_tracker)
    tip_tracker = T_tracker_from_display[:3, :3] @ tip + T_tracker_from_display[:3, 3]
    status = NavStatus.REFERENCE_LOST if overlay is OverlayState.HIDDEN else NavStatus.OK
    return SceneUpdate(
        session="c" * 32,
        scene_version=1,
        t_sensor_ns=1,
        frame_number=1,
        status=status,
        overlay=overlay,
        headset_ok=True,
        needs_verification=False,
        registration_id=1,
        structure_names=names,
        T_tracker_from_structures=np.stack([T] * len(names)),
        p_tip_tracker=tip_tracker,
        T_tracker_from_headset=T_tracker_from_headset,
        target_names=("T1",),
        target_distances_mm=np.array([23.4]),
        critical_names=(),
        critical_distances_mm=np.zeros(0),
        predicted_tre_mm=1.25,
        age_ms=2.0,
    )


def _liver_pixel(meshes: dict[str, StructureMesh], camera: DisplayCamera) -> tuple[int, int]:
    T = _T_display_from_image()
    c = meshes["liver"].vertices.mean(axis=0)
    ((u, v),) = camera.project(T[:3, :3] @ c + T[:3, 3])
    return int(round(u)), int(round(v))


def _hue_close(pixel: np.ndarray, rgb: tuple[float, float, float]) -> bool:
    """Same colour up to brightness (shading and opacity scale it): cosine of the RGB vectors."""
    p = pixel.astype(np.float64)
    c = np.asarray(rgb)
    return bool(p.sum() > 15 and p @ c / (np.linalg.norm(p) * np.linalg.norm(c)) > 0.97)


def test_the_liver_is_drawn_in_its_colour_where_its_centroid_projects(
    meshes: dict[str, StructureMesh], camera: DisplayCamera, tmp_path: Path
) -> None:
    liver_only = {"liver": meshes["liver"]}
    snapshot = render_view(
        update=_update(("liver",), OverlayState.CURRENT, np.full(3, np.nan)),
        overlay=OverlayState.CURRENT,
        meshes=liver_only,
        camera=camera,
        renderer="raycast",
    )
    assert snapshot.image.shape == (camera.height, camera.width, 3)
    u, v = _liver_pixel(meshes, camera)
    assert BANNER_ROWS < v < camera.height and 0 < u < camera.width
    assert _hue_close(snapshot.image[v, u], meshes["liver"].color_rgba[:3])
    assert snapshot.banner.startswith("LIVE | OK | T1 23.4 mm | TRE 1.2 mm")
    path = write_png(tmp_path / "view.png", snapshot)
    read = cv2.imread(str(path))
    assert read is not None and read.shape == (480, 640, 3) and path.stat().st_size > 1000


def test_the_whole_phantom_and_the_tip_are_drawn_and_hidden_draws_nothing(
    meshes: dict[str, StructureMesh], camera: DisplayCamera
) -> None:
    names = tuple(meshes)
    u, v = _liver_pixel(meshes, camera)
    T = _T_display_from_image()
    tip = T[:3, :3] @ meshes["liver"].vertices.mean(axis=0) + T[:3, 3] - [0.0, 0.0, 60.0]
    views = {
        overlay: render_view(
            update=_update(names, overlay, tip),
            overlay=overlay,
            reason="REFERENCE_LOST" if overlay is OverlayState.HIDDEN else "pose 150 ms old",
            meshes=meshes,
            camera=camera,
            renderer="raycast",
        )
        for overlay in OverlayState
    }
    current = views[OverlayState.CURRENT].image[BANNER_ROWS:-10, 10:-10]
    covered = (current.sum(axis=2) > 0).mean()
    assert 0.02 < covered < 0.9  # the model fills part of the view, not all of it
    tip_pixel = views[OverlayState.CURRENT].image[v, u]  # the tip sphere is in front
    assert _hue_close(tip_pixel, (0.2, 1.0, 1.0))
    hidden = views[OverlayState.HIDDEN]
    assert not hidden.image[BANNER_ROWS:].any()  # nothing at all below the banner
    assert hidden.banner.startswith("HIDDEN: REFERENCE_LOST")
    stale = views[OverlayState.STALE]
    assert stale.banner.startswith("STALE")
    model = views[OverlayState.CURRENT].image[BANNER_ROWS:-10, 10:-10].sum(axis=2) > 0
    stale_inner = stale.image[BANNER_ROWS:-10, 10:-10].astype(np.float64)
    # Dimmed: where the model is, the stale view is clearly darker than the current one.
    assert stale_inner[model].mean() < 0.7 * current[model].astype(np.float64).mean()
    # And framed in amber, which the current view is not.
    assert tuple(stale.image[camera.height // 2, 1]) == (255, 176, 0)
    assert not views[OverlayState.CURRENT].image[camera.height // 2, 1].any()


def test_no_update_renders_hidden_with_the_reason(camera: DisplayCamera) -> None:
    snapshot = render_view(
        update=None, overlay=OverlayState.CURRENT, meshes={}, camera=camera, renderer="raycast"
    )
    assert snapshot.overlay is OverlayState.HIDDEN and "no scene yet" in snapshot.banner


def test_a_calibration_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="no such file"):
        load_display_camera(tmp_path / "missing.toml")


def _render_or_skip_a_stall(**kwargs: Any) -> Snapshot:
    """``render_view``, skipping (with the reason) when Filament stalls past its deadline.

    Filament on Mesa's software rasteriser usually draws the liver in ~0.2 s but has
    stalled for minutes on a loaded CI machine; a stall says nothing about correctness.
    """
    try:
        return render_view(open3d_timeout_s=60.0, **kwargs)
    except TimeoutError as error:
        pytest.skip(f"Open3D offscreen renderer stalled on this machine: {error}")


@pytest.mark.slow
def test_open3d_offscreen_and_the_ray_caster_agree_on_the_liver_silhouette(
    meshes: dict[str, StructureMesh], camera: DisplayCamera
) -> None:
    """Differential: Filament (Mesa llvmpipe here) against the CPU ray caster."""
    update = _update(("liver",), OverlayState.CURRENT, np.full(3, np.nan))
    images = {
        r: _render_or_skip_a_stall(
            update=update,
            overlay=OverlayState.CURRENT,
            meshes={"liver": meshes["liver"]},
            camera=camera,
            renderer=r,
        )
        for r in ("open3d", "raycast")
    }
    assert images["open3d"].renderer == "open3d"
    a, b = (images[r].image[BANNER_ROWS:].sum(axis=2) > 8 for r in ("open3d", "raycast"))
    iou = (a & b).sum() / (a | b).sum()
    assert iou > 0.9, iou
    u, v = _liver_pixel(meshes, camera)
    assert _hue_close(images["open3d"].image[v, u], meshes["liver"].color_rgba[:3])


@pytest.mark.slow
def test_auto_renders_in_a_child_process_or_falls_back_to_ray_casting(
    meshes: dict[str, StructureMesh], camera: DisplayCamera
) -> None:
    snapshot = render_view(
        update=_update(("liver",), OverlayState.CURRENT, np.full(3, np.nan)),
        overlay=OverlayState.CURRENT,
        meshes={"liver": meshes["liver"]},
        camera=camera,
        renderer="auto",
        open3d_timeout_s=60.0,
    )
    assert snapshot.renderer in ("open3d", "raycast")
    u, v = _liver_pixel(meshes, camera)
    assert _hue_close(snapshot.image[v, u], meshes["liver"].color_rgba[:3])


@pytest.mark.parametrize("renderer", ["raycast", pytest.param("open3d", marks=pytest.mark.slow)])
def test_vertex_colours_are_drawn_instead_of_the_structure_colour(
    meshes: dict[str, StructureMesh], camera: DisplayCamera, renderer: str
) -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    plain = build_assets(case)
    # Confidence colours: 0 mm everywhere -> every vertex green.
    assets = with_confidence(plain, case.structure("liver"), lambda v: np.zeros(len(v)))
    info = assets.info("liver")
    liver = mesh_from_glb(info, assets.data_by_sha256[info.sha256])
    assert liver.vertex_rgba is not None and meshes["liver"].vertex_rgba is None
    snapshot = _render_or_skip_a_stall(
        update=_update(("liver",), OverlayState.CURRENT, np.full(3, np.nan)),
        overlay=OverlayState.CURRENT,
        meshes={"liver": liver},
        camera=camera,
        renderer=renderer,
    )
    u, v = _liver_pixel(meshes, camera)
    r, g, b = (int(c) for c in snapshot.image[v, u])
    assert CONFIDENCE_COLOURS[0][1] > 0 and g > 15 and g > 2 * r and g > 2 * b, (r, g, b)
    assert not _hue_close(snapshot.image[v, u], liver.color_rgba[:3])

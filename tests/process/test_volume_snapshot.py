"""The CT volume in the headset snapshot (render/snapshot.py) on the case built from the
shared CT: liver, vessels and lesion drawn on the CT where they are; STALE dimmed, HIDDEN
nothing. And through the real render node: the brick reaches the reference client once,
by hash, and a protocol-2 client is served as before."""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from nav.case import Case, load_case
from nav.messages import (
    Hello,
    NavState,
    NavStatus,
    OverlayState,
    RegistrationResult,
    SceneUpdate,
    ToolStatus,
    encode,
)
from nav.navigation import case_id
from nav.runtime import bus
from nav.transforms import invert_rigid
from render.assets import build_assets
from render.headset_client import ClientConfig, HeadsetClient, Phase
from render.snapshot import (
    CtVolume,
    DisplayCamera,
    Snapshot,
    StructureMesh,
    load_display_camera,
    meshes_from_assets,
    render_view,
    volume_from_asset,
    volume_or_none,
    write_png,
)
from tests.conftest import NodeProcess, start_node
from tests.ct_case import ct_case as built_ct_case
from tests.process.test_render_node import Listener, render_spec

pytestmark = pytest.mark.slow

SCREENSHOTS = Path("/tmp/ornav-volume-snapshot")
BANNER_ROWS = 40
VIEW_DISTANCE_MM = 450.0


# --- the view: the display looks up the patient's axis from the feet ----------------------


def display_from_image(case: Case) -> np.ndarray:
    """``T_display_from_image``: the display 450 mm below the liver's centre (inferior),
    looking superior (+S), anterior up and the patient's left on the right (radiology's
    axial convention): display x = L, y = P (down the screen), z = S."""
    centre = case.structure("liver").mesh.bounds.mean(axis=0)
    T_image_from_display = np.eye(4)
    T_image_from_display[:3, 3] = centre - [0.0, 0.0, VIEW_DISTANCE_MM]
    return invert_rigid(T_image_from_display)


def tracker_from_image(case: Case, camera: DisplayCamera) -> np.ndarray:
    """The pose that puts the display there when the headset marker is the tracker's origin
    (a stack without a headset marker sends ``T_tracker_from_headset`` = identity)."""
    T: np.ndarray = invert_rigid(camera.T_display_from_headset) @ display_from_image(case)
    return T


def scene_update(case: Case, camera: DisplayCamera, overlay: OverlayState) -> SceneUpdate:
    names = tuple(s.name for s in case.structures)
    T = tracker_from_image(case, camera)
    return SceneUpdate(
        session="c" * 32,
        scene_version=1,
        t_sensor_ns=1,
        frame_number=1,
        status=NavStatus.REFERENCE_LOST if overlay is OverlayState.HIDDEN else NavStatus.OK,
        overlay=overlay,
        headset_ok=True,
        needs_verification=False,
        registration_id=1,
        structure_names=names,
        T_tracker_from_structures=np.stack([T] * len(names)),
        p_tip_tracker=np.full(3, np.nan),
        T_tracker_from_headset=np.eye(4),
        target_names=(),
        target_distances_mm=np.zeros(0),
        critical_names=(),
        critical_distances_mm=np.zeros(0),
        predicted_tre_mm=1.0,
        age_ms=1.0,
    )


@dataclass(frozen=True, eq=False)
class CtScene:
    case: Case
    meshes: dict[str, StructureMesh]
    volume: CtVolume
    camera: DisplayCamera


@pytest.fixture(scope="module")
def ct() -> CtScene:
    case = load_case(built_ct_case())
    assets = build_assets(case)
    assert assets.volume is not None
    meshes = meshes_from_assets(
        {i.name: (i, assets.data_by_sha256[i.sha256]) for i in assets.infos}
    )
    volume = volume_from_asset(assets.volume, assets.data_by_sha256[assets.volume.sha256])
    return CtScene(case, meshes, volume, load_display_camera())


def _snapshot(
    ct: CtScene,
    overlay: OverlayState,
    *,
    volume: bool = True,
    meshes: bool = True,
    preset: str = "soft_tissue",
) -> Snapshot:
    return render_view(
        update=scene_update(ct.case, ct.camera, overlay),
        overlay=overlay,
        meshes=ct.meshes if meshes else {},
        camera=ct.camera,
        renderer="raycast",
        volume=ct.volume if volume else None,
        volume_preset=preset,
        device="cpu",
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_a_snapshot_shows_liver_vessels_and_lesion_on_the_ct(ct: CtScene) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    plain = _snapshot(ct, OverlayState.CURRENT, volume=False)
    plain_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    shot = _snapshot(ct, OverlayState.CURRENT)
    total_ms = (time.perf_counter() - t0) * 1e3
    write_png(SCREENSHOTS / "ct_current.png", shot)
    write_png(SCREENSHOTS / "ct_meshes_only.png", plain)
    assert shot.volume_ms is not None and plain.volume_ms is None
    print(
        f"\nsnapshot 640x480, CPU: meshes alone {plain_ms:.0f} ms; with the CT volume "
        f"{total_ms:.0f} ms (volume layer {shot.volume_ms:.0f} ms, rays every 4 px)"
    )
    rows = slice(BANNER_ROWS, None)
    with_ct = shot.image[rows].reshape(-1, 3)
    meshes_only = plain.image[rows].reshape(-1, 3)
    # Each structure where it is: its own pixels (drawn alone) keep the colour the meshes
    # have there, the CT in front only tinting them.
    for name in ("liver", "portal_vein_and_splenic_vein", "aorta", "lesion"):
        alone = render_view(
            update=scene_update(ct.case, ct.camera, OverlayState.CURRENT),
            overlay=OverlayState.CURRENT,
            meshes={name: ct.meshes[name]},
            camera=ct.camera,
            renderer="raycast",
        )
        mask = alone.image[rows].reshape(-1, 3).sum(axis=1) > 30
        if name == "lesion":  # inside the translucent liver: seen through it
            mask &= meshes_only.sum(axis=1) > 30
        assert mask.sum() > 20, f"{name} is not in view"
        cosine = _cosine(with_ct[mask], meshes_only[mask])
        assert np.median(cosine) > 0.95, f"{name}: colour lost on the CT ({np.median(cosine)})"
    # The CT itself around them: most of the body's slice is drawn where no mesh is.
    lo, hi = _projected_box(ct)
    v, u = np.mgrid[BANNER_ROWS : ct.camera.height, 0 : ct.camera.width]
    inside = ((u >= lo[0]) & (u <= hi[0]) & (v >= lo[1]) & (v <= hi[1])).ravel()
    background = inside & (meshes_only.sum(axis=1) == 0)
    drawn = (with_ct[background].sum(axis=1) > 30).mean()
    assert drawn > 0.3, f"only {drawn:.0%} of the CT's footprint shows anything"
    outside = ~inside & (meshes_only.sum(axis=1) == 0)
    assert with_ct[outside].max() == 0, "something drawn outside the CT's footprint"


def _projected_box(ct: CtScene) -> tuple[np.ndarray, np.ndarray]:
    """The pixel bounds of the brick's corners seen from the display."""
    ni, nj, nk = ct.volume.hu.shape
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (-0.5, ni - 0.5)
            for j in (-0.5, nj - 0.5)
            for k in (-0.5, nk - 0.5)
        ]
    )
    p_display = (display_from_image(ct.case) @ ct.volume.T_image_from_ijk @ corners.T).T[:, :3]
    uv = ct.camera.project(p_display)
    return uv.min(axis=0), uv.max(axis=0)


def test_the_ct_lands_where_the_display_projects_its_voxels(ct: CtScene) -> None:
    """Bone alone (no meshes): the bright pixels line up with the bone voxels (> 300 HU)
    projected through T_image_from_ijk and the update's pose: the best of all shifts
    within 30 px is (0, 0) give or take 3 px."""
    shot = _snapshot(ct, OverlayState.CURRENT, meshes=False, preset="bone")
    write_png(SCREENSHOTS / "ct_bone.png", shot)
    h, w = ct.camera.height, ct.camera.width
    drawn = shot.image.astype(np.float64).sum(axis=2) > 150
    drawn[:BANNER_ROWS] = False
    ijk = np.argwhere(ct.volume.hu > 300.0)
    p_image = ijk @ ct.volume.T_image_from_ijk[:3, :3].T + ct.volume.T_image_from_ijk[:3, 3]
    T = display_from_image(ct.case)
    uv = np.round(ct.camera.project(p_image @ T[:3, :3].T + T[:3, 3])).astype(int)
    keep = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= BANNER_ROWS) & (uv[:, 1] < h)
    expected = np.zeros((h, w), np.uint8)
    expected[uv[keep, 1], uv[keep, 0]] = 1
    expected = cv2.dilate(expected, np.ones((3, 3), np.uint8)).astype(bool)  # voxel gaps
    assert drawn.sum() > 500 and expected.sum() > 500
    shifts = range(-30, 31)
    overlap = np.array(
        [
            [(np.roll(drawn, (dy, dx), axis=(0, 1)) & expected).sum() for dx in shifts]
            for dy in shifts
        ]
    )
    dy, dx = np.unravel_index(int(overlap.argmax()), overlap.shape)
    assert abs(shifts[dx]) <= 3 and abs(shifts[dy]) <= 3, (shifts[dx], shifts[dy])
    assert overlap.max() > 0.5 * drawn.sum()


def test_stale_dims_the_ct_and_hidden_draws_nothing(ct: CtScene) -> None:
    current = _snapshot(ct, OverlayState.CURRENT, meshes=False)
    stale = _snapshot(ct, OverlayState.STALE, meshes=False)
    hidden = _snapshot(ct, OverlayState.HIDDEN)
    write_png(SCREENSHOTS / "ct_stale.png", stale)
    inner = (slice(BANNER_ROWS, -12), slice(12, -12))  # inside STALE's amber frame
    assert stale.volume_ms is not None
    assert 0 < stale.image[inner].mean() < 0.7 * current.image[inner].mean()
    assert hidden.volume_ms is None and hidden.image[BANNER_ROWS:].max() == 0
    assert hidden.banner.startswith("HIDDEN")


def test_a_brick_that_does_not_hold_its_shape_is_left_out_with_a_warning(
    ct: CtScene, caplog: pytest.LogCaptureFixture
) -> None:
    assets = build_assets(ct.case)
    assert assets.volume is not None
    info = assets.volume
    assert volume_or_none((info, b"\x1f\x8b not a brick")) is None
    assert "not drawn" in caplog.text
    assert volume_or_none(None) is None


# --- through the render node -------------------------------------------------------------


class FakeNav:
    """A nav node's output for the render node: one accepted registration of ``case`` and
    navigation states at ``rate_hz`` placing the case at ``T_tracker_from_image``, from a
    thread; ``pause()`` stops the states (the overlay goes STALE, then HIDDEN)."""

    def __init__(self, endpoint: str, case: Case, T_tracker_from_image: np.ndarray) -> None:
        self.publisher = bus.Publisher(endpoint)
        self.case_id = case_id(case)
        self.T = T_tracker_from_image
        self.publishing = threading.Event()
        self.publishing.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _registration(self) -> RegistrationResult:
        return RegistrationResult(
            registration_id=7,
            state="accepted",
            method="surface",
            needs_verification=False,
            T_reference_from_image=np.eye(4),
            fre_mm=0.5,
            fiducial_errors_mm=np.zeros(0),
            target_names=(),
            predicted_tre_mm=np.zeros(0),
            true_tre_mm=np.zeros(0),
            case_id=self.case_id,
        )

    def _state(self, frame: int) -> NavState:
        return NavState(
            t_sensor_ns=time.monotonic_ns(),
            frame_number=frame,
            status=NavStatus.OK,
            needs_verification=False,
            registration_id=7,
            T_tracker_from_image=self.T,
            pointer_status=ToolStatus.MISSING,
            p_tip_image=np.full(3, np.nan),
            target_names=(),
            target_distances_mm=np.zeros(0),
            critical_names=(),
            critical_distances_mm=np.zeros(0),
            predicted_tre_mm=1.0,
            case_id=self.case_id,
        )

    def _run(self) -> None:
        frame = 0
        next_registration = 0.0
        while not self._stop.wait(0.01):
            now = time.monotonic()
            if now >= next_registration:  # republished: the render node takes it once
                next_registration = now + 0.25
                self.publisher.publish("nav/registration", self._registration())
            if self.publishing.is_set():
                frame += 1
                self.publisher.publish("nav/state", self._state(frame))

    def pause(self) -> None:
        self.publishing.clear()

    def resume(self) -> None:
        self.publishing.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.publisher.close()


@dataclass
class CtRender:
    ipc_dir: Path
    case_dir: Path
    case: Case
    nav: FakeNav
    render: NodeProcess

    @property
    def headset_endpoint(self) -> str:
        return f"ipc://{self.ipc_dir}/render.headset"

    @property
    def render_pub(self) -> str:
        return f"ipc://{self.ipc_dir}/render.pub"

    def stop(self) -> None:
        if self.render.process.poll() is None:
            self.render.process.kill()
            self.render.process.wait()
        self.nav.close()


def start_ct_render(ipc_dir: Path, camera: DisplayCamera) -> CtRender:
    """The render node on the CT case (no headset marker: world-locked clients), fed by a
    FakeNav that places the case where ``display_from_image`` looks at it."""
    case_dir = built_ct_case()
    case = load_case(case_dir)
    nav = FakeNav(f"ipc://{ipc_dir}/nav.pub", case, tracker_from_image(case, camera))
    render = start_node(
        render_spec(ipc_dir, case=str(case_dir), headset_tool=""), ready_timeout_s=120.0
    )
    return CtRender(ipc_dir, case_dir, case, nav, render)


@pytest.fixture(scope="module")
def ct_render() -> Iterator[CtRender]:
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-v-", dir="/tmp"))
    running = start_ct_render(ipc_dir, load_display_camera())
    yield running
    running.stop()
    shutil.rmtree(ipc_dir, ignore_errors=True)


def _raw_welcome_body(endpoint: str, protocol: int) -> dict[str, object]:
    """Hello with ``protocol`` on a raw DEALER; the Welcome's body as msgpack decodes it
    (what a client of that version reads, before its own decoder)."""
    sock = bus.context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(encode(Hello(protocol, f"raw-v{protocol}"), seq=0, t_pub_ns=1))
        assert sock.poll(10_000), "no answer to Hello"
        raw = msgpack.unpackb(sock.recv(), raw=False)
    finally:
        sock.close(linger=0)
    assert raw["type"] == "Welcome", raw
    body: dict[str, object] = raw["body"]
    return body


@pytest.mark.timeout(600)
def test_the_client_gets_the_brick_once_and_its_snapshot_draws_it(ct_render: CtRender) -> None:
    expected = build_assets(ct_render.case)
    assert expected.volume is not None
    heartbeats = Listener(ct_render.render_pub, ("heartbeat/render",))
    client = HeadsetClient(ClientConfig(endpoint=ct_render.headset_endpoint, name="ct-client"))
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            client.step(0.05)
            view = client.view()
            if client.phase is Phase.LIVE and view.overlay is OverlayState.CURRENT:
                break
        assert client.phase is Phase.LIVE and view.overlay is OverlayState.CURRENT, view.reason
        assert view.volume is not None
        info, data = view.volume
        assert info.sha256 == expected.volume.sha256 and len(data) == info.size_bytes
        assert info.shape == (256, 256, 20)
        frames_before = client.stats.frames
        while client.stats.frames < frames_before + 100:  # updates flow; nothing re-sent
            client.step(0.05)
        counters = heartbeats.heartbeat(lambda c: c.get("updates_CURRENT", 0) > 100)
        assert counters["assets_served"] == len(expected.infos) + 1
        assert counters["asset_bytes_served"] == expected.total_bytes + info.size_bytes
        assert client.summary()["assets"]["volume_bytes"] == info.size_bytes
        shot = render_view(
            update=view.update,
            overlay=view.overlay,
            reason=view.reason,
            meshes=meshes_from_assets(view.assets),
            camera=load_display_camera(),
            renderer="raycast",
            volume=volume_or_none(view.volume),
            device="cpu",
        )
        SCREENSHOTS.mkdir(exist_ok=True)
        write_png(SCREENSHOTS / "ct_client.png", shot)
        assert shot.volume_ms is not None and shot.image[BANNER_ROWS:].mean() > 5
    finally:
        client.close()
        heartbeats.close()


def test_a_protocol_2_client_gets_the_welcome_it_knows(ct_render: CtRender) -> None:
    v2 = _raw_welcome_body(ct_render.headset_endpoint, 2)
    assert v2["protocol"] == 2 and "volume" not in v2
    v3 = _raw_welcome_body(ct_render.headset_endpoint, 3)
    assert v3["protocol"] == 3 and isinstance(v3["volume"], dict)
    assert v2["assets"] == v3["assets"] and v2["scene_version"] == v3["scene_version"]
    assert math.isnan(float(v2["xr_rms_mm"]))  # type: ignore[arg-type]

"""The headset registration through the render node: a client sends its controller's grip
poses in its own world with their instants (``XrPairedPoses``); the render node pairs them
with the tracker's poses of the marker on the controller, solves ``T_xr_from_tracker``, and
keeps it for the session, or says why not. The simulated "controller" is the sim tracker's
headset marker swaying widely; the client's world is a transform the test chose."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cli.demo.sim_registration import write_true_registration
from nav.messages import Reply, TrackerFrame, Welcome, XrPairedPoses, XrRegistration
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.transforms import make_rigid
from tests.conftest import NodeProcess, start_node
from tests.process.test_render_node import Client, render_spec

pytestmark = pytest.mark.slow

X = make_rigid(
    Rotation.from_euler("xyz", [90, 10, -30], degrees=True).as_matrix(), [200, 1400, -900]
)
Y = make_rigid(Rotation.from_euler("xyz", [5, -20, 40], degrees=True).as_matrix(), [30, -10, 60])
"""The client's world (T_xr_from_tracker) and the marker on its grip (T_grip_from_marker)."""


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Path, list[NodeProcess]]]:
    ipc = Path(tempfile.mkdtemp(prefix="ornav-x-", dir="/tmp"))
    registration = ipc / "registration.json"
    write_true_registration(registration, registration_id=77)
    nodes = [
        start_node(
            NodeSpec(
                name="tracker",
                module="tracking.sim_node",
                pub=f"ipc://{ipc}/tracker.pub",
                control=f"ipc://{ipc}/tracker.ctl",
                rate_hz=100.0,
                # The "controller": the headset marker, waved widely (a hand, not a head).
                params={
                    "seed": 5,
                    "dropout_rate_hz": 0.0,
                    "head_sway_mm": 120.0,
                    "head_sway_deg": 35.0,
                },
            )
        ),
        start_node(
            NodeSpec(
                name="nav",
                module="nav.nav_node",
                pub=f"ipc://{ipc}/nav.pub",
                control=f"ipc://{ipc}/nav.ctl",
                subscribe=("tracker",),
                subscribe_endpoints=(f"ipc://{ipc}/tracker.pub",),
                params={"registration_file": str(registration)},
            )
        ),
        start_node(render_spec(ipc, xr_marker_tool="headset")),
    ]
    yield ipc, nodes
    for node in reversed(nodes):
        node.terminate()
    shutil.rmtree(ipc, ignore_errors=True)


def collect(ipc: Path, seconds: float, noise_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The client's view of the waved controller: at each tracker instant the grip pose in
    its world, G = X @ M @ inv(Y), with its own position noise."""
    sub = bus.QueueSubscriber([f"ipc://{ipc}/tracker.pub"], ("pose/",))
    rng = np.random.default_rng(3)
    times: list[int] = []
    grips: list[np.ndarray] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for r in sub.poll(0.1):
                frame = r.message
                if not isinstance(frame, TrackerFrame) or "headset" not in frame.tools:
                    continue
                i = frame.tools.index("headset")
                if frame.statuses[i].value != "OK" or frame.frame_number % 5:
                    continue  # 20 Hz of it is plenty
                G = X @ frame.T_tracker_from_tools[i] @ np.linalg.inv(Y)
                G[:3, 3] += rng.normal(scale=noise_mm / np.sqrt(3), size=3)
                times.append(frame.t_sensor_ns)
                grips.append(G)
    finally:
        sub.close()
    return np.array(times, np.int64), np.stack(grips)


def test_the_render_node_solves_and_keeps_the_sessions_registration(
    stack: tuple[Path, list[NodeProcess]],
) -> None:
    ipc, _ = stack
    times, grips = collect(ipc, 8.0, noise_mm=0.5)
    client = Client(f"ipc://{ipc}/render.headset")
    try:
        client.hello()
        held = client.request(XrPairedPoses(times, grips), timeout_s=20.0)
        assert isinstance(held, XrRegistration), held
        # Residual: the client's 0.5 mm and the tracker's 0.25 mm noise, not more.
        assert 0.1 < held.rms_mm < 1.5, held.rms_mm
        # Where the registration puts the patient's region (1.3 m from the tracker).
        p = np.array([0.0, 150.0, -1300.0, 1.0])
        assert np.linalg.norm(held.T_xr_from_tracker @ p - X @ p) < 3.0
        again = client.hello()
        assert isinstance(again, Welcome)
        np.testing.assert_array_equal(again.T_xr_from_tracker, held.T_xr_from_tracker)
        assert again.xr_rms_mm == held.rms_mm
    finally:
        client.close()


def test_a_collection_that_cannot_determine_it_is_refused_with_the_reason(
    stack: tuple[Path, list[NodeProcess]],
) -> None:
    ipc, _ = stack
    times, grips = collect(ipc, 2.0, noise_mm=0.5)
    client = Client(f"ipc://{ipc}/render.headset")
    try:
        client.hello()
        few = client.request(XrPairedPoses(times[:3], grips[:3]))
        assert isinstance(few, Reply) and not few.ok and few.result == {"code": "xr_registration"}
        assert "refused" in few.error and "\n" not in few.error
        # Instants the tracker never sampled (an hour ago): nothing pairs up.
        stale = client.request(XrPairedPoses(times - 3_600_000_000_000, grips))
        assert isinstance(stale, Reply) and "tracker sample" in stale.error
        # A marker that slipped on the controller midway: the residual says so.
        slipped = grips.copy()
        slipped[len(grips) // 2 :, :3, 3] += [0.0, 40.0, 0.0]
        loose = client.request(XrPairedPoses(times, slipped), timeout_s=20.0)
        assert isinstance(loose, Reply) and "residual" in loose.error, loose
        # The session keeps its previous registration (identity, the default).
        np.testing.assert_array_equal(client.hello().T_xr_from_tracker, np.eye(4))
    finally:
        client.close()

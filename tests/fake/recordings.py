"""Synthetic ornav session recordings with a known truth, for validation tests.

A pointer at 60 Hz touches the shipped phantom's fiducials (each held still for 1 s,
moving 0.6 s between them) with the patient reference fixed in the tracker, tracker noise
``noise_mm`` on the tip. The launch file recorded with it (metadata ``ornav.launch``)
carries the truth, as a simulated session's does, so ``ornav validate`` can measure TRE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nav.case import load_case
from nav.messages import ToolStatus, TrackerFrame, encode
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime.recording import RecordingWriter
from nav.transforms import apply, axis_angle_to_matrix, invert_rigid, make_rigid

TRUTH = make_rigid(axis_angle_to_matrix([0.2, 1.0, 0.3], 0.7), [150.0, -40.0, -60.0])
T_TRACKER_FROM_REFERENCE = make_rigid(axis_angle_to_matrix([1.0, 0.0, 0.0], 0.3), [0, 0, -1200.0])
P_TIP_IN_POINTER = np.array([0.0, 0.0, -160.0])  # the nav node's default tip
RATE_HZ = 60.0

LAUNCH = """[stack]
name = "synthetic"

[nodes.nav]
module = "nav.nav_node"

[nodes.nav.params]
truth_T_reference_from_image = {truth}
"""


def pointer_pose(p_tip_tracker: np.ndarray) -> np.ndarray:
    """A pointer pose whose tip is at ``p_tip_tracker`` (pointer pointing down -z)."""
    return make_rigid(np.eye(3), p_tip_tracker - P_TIP_IN_POINTER)


def write_touch_session(
    path: Path,
    *,
    n_fiducials: int = 6,
    noise_mm: float = 0.1,
    seed: int = 0,
    with_launch: bool = True,
    trace: bool = False,
    nav_params: str = "",
) -> Path:
    """Write the session (see the module docstring); returns ``path``. ``trace``: then
    trace the organ's anterior face (a raster) at 20 mm/s, tip on the surface.
    ``nav_params``: more lines for the recorded launch file's ``[nodes.nav.params]``."""
    rng = np.random.default_rng(seed)
    case = load_case(SHIPPED_PHANTOM_DIR)
    fiducials = case.fiducials.points_lps[:n_fiducials]
    T_tracker_from_image = T_TRACKER_FROM_REFERENCE @ TRUTH
    stops = apply(T_tracker_from_image, fiducials)
    start = stops[0] + np.array([0.0, 0.0, 80.0])  # from above: a rest there is no touch
    path_points: list[np.ndarray] = []
    for k, stop in enumerate(stops):
        frm = start if k == 0 else stops[k - 1]
        for u in np.linspace(0.0, 1.0, int(0.6 * RATE_HZ)):
            lift = np.array([0.0, 0.0, 30.0 * np.sin(np.pi * u)])
            path_points.append(frm + u * (stop - frm) + lift)
        path_points += [stop] * int(1.0 * RATE_HZ)
    if trace:
        for trace_image in _traces(case):
            lead_in = np.linspace(
                path_points[-1], apply(T_tracker_from_image, trace_image[:1])[0], 30
            )
            path_points += list(lead_in)
            path_points += list(apply(T_tracker_from_image, trace_image))
    metadata: dict[str, str] = {}
    launch = LAUNCH.format(truth=[float(v) for v in TRUTH.reshape(-1)]) + nav_params
    mono0 = 10_000_000_000
    with RecordingWriter(
        path,
        metadata=metadata,
        monotonic_ns_at_open=mono0,
        wall_ns_at_open=1_800_000_000_000_000_000,
    ) as writer:
        if with_launch:
            writer.add_metadata(
                "ornav.launch", {"path": "synthetic.toml", "sha256": "0" * 64, "toml": launch}
            )
        for i, tip in enumerate(path_points):
            t = mono0 + int(i * 1e9 / RATE_HZ)
            noisy = tip + rng.normal(0, noise_mm, 3)
            frame = TrackerFrame(
                tracker="sim",
                t_sensor_ns=t,
                frame_number=i,
                tools=("pointer", "reference"),
                T_tracker_from_tools=np.stack([pointer_pose(noisy), T_TRACKER_FROM_REFERENCE]),
                statuses=(ToolStatus.OK, ToolStatus.OK),
                fit_errors_mm=np.zeros(2),
            )
            payload = encode(frame, seq=i, t_pub_ns=t + 400_000, epoch=7)
            writer.write(
                "pose/sim",
                payload,
                type_name="TrackerFrame",
                seq=i,
                t_pub_ns=t + 400_000,
                t_recv_ns=t + 900_000,
            )
            writer.tick(t + 900_000)
    return path


def _traces(case: object) -> list[np.ndarray]:
    """The organ's anterior face traced as a raster (``tests/process/test_nav_surface``),
    resampled every 20 mm/s / 60 Hz = 0.33 mm: one continuous trace, image frame."""
    from tests.process.test_nav_surface import anterior_patch_image

    raster = anterior_patch_image(case, step_mm=1.0)  # type: ignore[arg-type]
    step = np.linalg.norm(np.diff(raster, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(step)])
    samples = np.arange(0.0, s[-1], 20.0 / RATE_HZ)
    return [np.stack([np.interp(samples, s, raster[:, k]) for k in range(3)], axis=1)]


def reference_from_image_truth() -> np.ndarray:
    return TRUTH.copy()


def image_from_tracker_truth() -> np.ndarray:
    return invert_rigid(T_TRACKER_FROM_REFERENCE @ TRUTH)

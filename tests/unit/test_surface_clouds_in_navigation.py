"""Camera surface clouds in navigation: the collector takes a patch whole, and a surface
collection fed only by a stereo camera's clouds registers the case to the truth."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from nav.case import load_case
from nav.collectors import SurfaceCollector
from nav.messages import ComputeRegistration, StartCollection, SurfaceCloud
from nav.nav_node import Config
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime import bus
from nav.session import NavigatorSession
from nav.transforms import apply
from tests.process.test_nav_surface import (
    FIDUCIAL_START,
    P_TIP,
    TRUTH,
    _accepted,
    anterior_patch_image,
)


def test_a_cloud_is_taken_whole_up_to_the_bound_and_breaks_the_path() -> None:
    collector = SurfaceCollector(spacing_mm=2.0, max_points=10)
    assert collector.feed([0.0, 0.0, 0.0]) and collector.feed([3.0, 0.0, 0.0])
    cloud = np.array([[100.0, 0, 0], [np.nan, 0, 0], [101.0, 0, 0], [102.0, 0, 0]])
    assert collector.add_cloud(cloud) == 3  # the NaN row left out
    assert collector.progress.path_length_mm == pytest.approx(3.0)  # a cloud adds no path
    assert collector.feed([110.0, 0.0, 0.0])  # recorded, but not joined to the cloud
    assert collector.progress.path_length_mm == pytest.approx(3.0)
    assert collector.add_cloud(np.zeros((50, 3))) == 4 and collector.progress.full
    assert collector.add_cloud(np.ones((5, 3))) == 0
    assert len(collector.points_reference) == 10


def _cloud(points: np.ndarray, frame: str = "reference") -> SurfaceCloud:
    return SurfaceCloud(
        "stereo",
        frame,
        time.monotonic_ns(),
        points.astype(np.float32),
        np.full(len(points), 0.7, np.float32),
    )


def test_a_surface_collection_fed_by_camera_clouds_registers_to_the_truth(
    tmp_path: Path,
) -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    counters = bus.Counters()
    published = []
    cfg = Config(
        truth_T_reference_from_image=tuple(TRUTH.ravel().tolist()),
        registration_file=str(tmp_path / "registration.json"),
    )
    session = NavigatorSession(
        cfg.session_settings(P_TIP), case, emit=published.append, counters=counters
    )
    patch = apply(TRUTH, anterior_patch_image(case, step_mm=1.0))
    rng = np.random.default_rng(0)
    assert session.on_surface_cloud(_cloud(patch)) == 0  # no collection yet
    assert counters["surface_clouds_idle"] == 1
    session.active = _accepted(session.geometry, FIDUCIAL_START)
    session.start(StartCollection(method="surface"))
    assert session.on_surface_cloud(_cloud(patch, frame="camera")) == 0
    assert counters["surface_clouds_unplaced"] == 1
    # two views of the patch, 0.5 mm noise (the Open-CAS stereo pair's error is 0.66 mm)
    halves = np.array_split(patch, 2)
    for half in halves:
        session.on_surface_cloud(_cloud(half + rng.normal(0, 0.5, half.shape)))
    assert counters["surface_clouds"] == 2
    assert counters["surface_points_collected"] == len(patch)
    session.compute(ComputeRegistration(), now_unix_ns=time.time_ns())
    assert session.job is not None and session.job.done.wait(60)
    session.finish_compute()
    proposed = [r for r in published if r.state == "proposed"]
    assert len(proposed) == 1 and proposed[0].method == "surface"
    assert proposed[0].true_tre_mm.max() < 0.5  # the fiducial start was ~1 mm / 1 deg off


def test_the_pointers_part_of_a_collection_goes_out_as_a_surface_cloud_when_computed(
    tmp_path: Path,
) -> None:
    """The pointer trace on the same message as the cameras': ``surface/pointer``."""
    case = load_case(SHIPPED_PHANTOM_DIR)
    traces: list[SurfaceCloud] = []
    cfg = Config(registration_file=str(tmp_path / "registration.json"))
    session = NavigatorSession(
        cfg.session_settings(P_TIP),
        case,
        emit=lambda _r: None,
        counters=bus.Counters(),
        emit_trace=traces.append,
    )
    patch = apply(TRUTH, anterior_patch_image(case, step_mm=1.0))
    session.active = _accepted(session.geometry, FIDUCIAL_START)
    session.start(StartCollection(method="surface"))
    collector = session.collector
    assert isinstance(collector, SurfaceCollector)
    traced = patch[::3]  # 3 mm apart: every one recorded at the 2 mm spacing
    for p in traced[: len(traced) // 2]:
        assert collector.feed(p)
    session.on_surface_cloud(_cloud(patch[1::3]))  # a camera's, between the pointer's
    for p in traced[len(traced) // 2 :]:
        assert collector.feed(p)
    assert traces == []  # nothing before the compute
    session.compute(ComputeRegistration(), now_unix_ns=time.time_ns())
    assert len(traces) == 1
    cloud = traces[0]
    assert (cloud.source, cloud.frame) == ("pointer", "reference")
    np.testing.assert_allclose(cloud.points_mm, traced, atol=1e-4)  # the pointer's only
    assert np.all(cloud.confidence_mm == np.float32(cfg.fle_mm))
    assert session.job is not None and session.job.done.wait(60)

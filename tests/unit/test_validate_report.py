"""ornav validate on recordings made here (known truth) and on real PLUS files: the
registration re-run, the report document, its figures and page, damaged inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.errors import UserError
from cli.validate.analysis import analyse
from cli.validate.command import expand
from cli.validate.figures import draw
from cli.validate.offline import rerun, setup_for
from cli.validate.sources import SourceError, read_session
from cli.validate.study import Options, report_folders, validate_one
from nav.case import load_case
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.sim_deformation import organ_deformation
from nav.transforms import apply
from nav.validation.verdict import Limit
from tests.conftest import shared_data
from tests.fake.recordings import TRUTH, write_touch_session

PLUS = "PlusLibData/TestImages"
PHANTOM_XML = "PlusLibData/ConfigFiles/PlusDeviceSet_fCal_Sim_RecordPhantomLandmarks.xml"


@pytest.fixture(scope="module")
def touches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_touch_session(tmp_path_factory.mktemp("rec") / "touches.mcap", n_fiducials=6)


def test_offline_points_registration_finds_every_touch_and_the_truth(touches: Path) -> None:
    session = read_session(touches)
    assert not session.partial and session.problems == []
    setup = setup_for(session)
    assert setup.truth is not None  # carried by the recorded launch file
    run = rerun(session, setup)
    assert run.matched == {f"F-{k}": k - 1 for k in range(1, 7)}
    points = run.methods[0]
    assert points.method == "points" and points.registration is not None
    # 60 samples of 0.1 mm noise per touch: the fit is within a few hundredths of the truth
    assert points.registration.true_tre_mm.max() < 0.1
    assert points.registration.fre_mm < 0.1
    for method in run.methods[1:]:  # surface and deformable: the touches are no trace
        assert method.registration is None and "traced no surface" in method.reason


def test_offline_surface_and_deformable_run_on_a_trace(tmp_path: Path) -> None:
    session = read_session(write_touch_session(tmp_path / "trace.mcap", trace=True))
    run = rerun(session, setup_for(session))
    methods = {m.method: m for m in run.methods}
    for name in ("surface", "deformable"):
        assert methods[name].registration is not None, methods[name].reason
        assert methods[name].n_points >= 100
    # a raster over the anterior face, tip exactly on the surface: the truth, nearly
    assert methods["surface"].registration.true_tre_mm.max() < 0.5  # measured 0.06 mm
    assert methods["deformable"].registration.true_tre_mm.max() < 1.0  # measured 0.29 mm


def test_report_holds_every_figure_and_judges_the_limits(touches: Path, tmp_path: Path) -> None:
    limits = (
        Limit("offline.points.true_tre_mm.max", max=2.0),
        Limit("recording.duration_s", min=3600.0),
        Limit("latency.sample_to_headset_ms.p99", max=5.0),  # no headset in this recording
    )
    row = validate_one(str(touches), str(tmp_path / "r"), Options(limits=limits))
    assert row.error == "" and row.verdict == "FAIL"
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [v["outcome"] for v in doc["verdicts"]] == ["PASS", "FAIL", "NO_DATA"]
    assert doc["metrics"]["latency.sample_to_tracker_ms.p50"] == pytest.approx(0.4)
    assert doc["metrics"]["latency.sample_to_recorder_ms.p99"] == pytest.approx(0.9)
    assert doc["tracking"]["pointer"]["rate_hz"] == pytest.approx(60.0)
    page = (tmp_path / "r" / "index.html").read_text()
    for key in draw(doc):
        assert f'data-figure="{key}"' in page
    assert "timeline" in draw(doc) and "registration" in draw(doc)
    assert "http://" not in page and "https://" not in page  # opens offline


def test_truncated_recording_is_reported_partial(touches: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mcap"
    data = touches.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    row = validate_one(str(cut), str(tmp_path / "r"), Options())
    assert row.error == "" and row.partial
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["recording"]["partial"] is True
    assert any("cut off" in p for p in doc["recording"]["problems"])
    assert 0 < doc["recording"]["duration_s"] < read_session(touches).duration_s
    assert "PARTIAL" in (tmp_path / "r" / "index.html").read_text()


@pytest.mark.parametrize("content", [b"", b"not an mcap file at all", b"\x89MCAP0\r\n" + b"\0" * 9])
def test_unreadable_recording_is_one_line_and_no_report(content: bytes, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mcap"
    bad.write_bytes(content)
    row = validate_one(str(bad), str(tmp_path / "r"), Options())
    assert row.error and "\n" not in row.error
    assert not (tmp_path / "r").exists()
    with pytest.raises(SourceError):
        read_session(tmp_path / "missing.mcap")


def test_inputs_expand_from_files_folders_and_patterns(touches: Path, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    first = tmp_path / "a" / "session.mcap"
    second = tmp_path / "a" / "b" / "session.mcap"
    for p in (first, second):
        p.write_bytes(touches.read_bytes())
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert expand([str(tmp_path / "a")]) == [second.resolve(), first.resolve()]
    assert expand([str(tmp_path / "**" / "*.mcap"), str(first)]) == [
        second.resolve(),
        first.resolve(),
    ]
    folders = report_folders([first, second], tmp_path / "out")
    assert [f.name for f in folders] == ["session.mcap", "b__session.mcap"]
    for missing in ([str(tmp_path / "nope.mcap")], [str(tmp_path / "*.zzz")]):
        with pytest.raises(UserError):
            expand(missing)


def test_real_plus_landmark_file_gives_the_phantom_registration() -> None:
    """PLUS's landmark recording: 8 landmarks touched with a tracked stylus. Every pose the
    file holds OK stays OK (nearly rigid matrices projected), every landmark is found and the
    phantom registration's FRE is that of a good stylus (PLUS's own test data)."""
    recording = shared_data(f"{PLUS}/EightLandmarkPointsTrackedForPhantomRegistration.igs.mha")
    xml = str(shared_data(PHANTOM_XML))
    session = read_session(recording)
    run = rerun(session, setup_for(session, tip_file=xml, phantom_file=xml))
    doc = analyse(session, offline=run, case=None)
    assert doc["plus"]["refused_not_rigid"] == 0
    assert doc["plus"]["projected_nearly_rigid"] == 2000
    assert {t: f["visible_fraction"] for t, f in doc["tracking"].items()} == {
        "reference": 1.0,
        "stylus": 1.0,
    }
    assert run.matched == {f"#{k}": k - 1 for k in range(1, 9)}
    points = run.methods[0].registration
    assert points is not None
    assert 0.05 < points.fre_mm < 0.5
    assert np.all(points.fiducial_errors_mm < 0.5)
    assert doc["metrics"]["offline.points.fre_mm"] == pytest.approx(points.fre_mm)


def test_real_plus_file_timestamp_statistics() -> None:
    recording = shared_data(f"{PLUS}/WaterTankBottomTranslationTrackerBuffer.igs.mha")
    doc = analyse(read_session(recording), offline=None, case=None)
    tf = doc["plus"]["timestamp_filter"]
    assert tf["frames"] == 5000
    # the tracker's arrival jitter that PLUS's filter removed: milliseconds, not seconds
    assert 0.5 < tf["jitter_removed_ms"]["p50"] < 10
    assert doc["tracking"]["probe"]["rate_hz"] > 10
    assert "plus_timestamps" in draw(doc)


def test_a_deformed_sim_organ_is_the_truth_every_method_is_measured_against(
    tmp_path: Path,
) -> None:
    """A recording of ``ornav demo --scenario deformable``: its launch names the sim organ's
    deformation, so the true TRE is against the deformed targets, not the rigid truth."""
    path = write_touch_session(
        tmp_path / "deformed.mcap", trace=True, nav_params="truth_deformation_seed = 10\n"
    )
    session = read_session(path)
    setup = setup_for(session)
    case = load_case(SHIPPED_PHANTOM_DIR)
    organ = next(s for s in case.structures if s.role == "organ")
    moved = organ_deformation(organ.mesh.vertices, seed=10).deformed(case.targets.points_lps)
    assert setup.truth_targets is not None
    np.testing.assert_allclose(setup.truth_targets, apply(TRUTH, moved), atol=1e-9)
    assert "deformed (seed 10)" in setup.source
    run = rerun(session, setup)
    points = next(m for m in run.methods if m.method == "points").registration
    assert points is not None
    # The touches are on the undeformed organ: against the deformed truth they are off.
    expected = np.linalg.norm(
        apply(points.T_reference_from_image, case.targets.points_lps) - apply(TRUTH, moved), axis=1
    )
    np.testing.assert_allclose(points.true_tre_mm, expected, atol=1e-9)
    assert points.true_tre_mm.min() > 1.0

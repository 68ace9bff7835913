"""``ornav case build`` as a user runs it: the shared CT to a bundle ``ornav case check``
accepts and ``ornav demo --case`` runs on; bad input is one line, exit 2, and no bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.conftest import REPO, shared_data


def _ornav(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("ornav: ")]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def cli_build(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``ornav case build`` on the shared DICOM CT, once for this module's tests."""
    data = shared_data("totalsegmentator")
    out = tmp_path_factory.mktemp("cases") / "ct_case"
    done = _ornav(
        "case", "build",
        "--image", str(data / "example_ct_dicom"),
        "--labels", str(data / "example_seg_dicom.nii.gz"),
        "--labels-names", str(data / "labels.json"),
        "--structures", "liver,portal_vein=64,inferior_vena_cava,aorta",
        "--lesion", "lesion=inside:liver:12",
        "--out", str(out),
    )  # fmt: skip
    return done, out


@pytest.mark.slow
@pytest.mark.timeout(600)  # a few seconds alone; minutes on a loaded 2-core machine
def test_case_build_on_the_shared_dicom_ct_passes_case_check(cli_build) -> None:
    done, out = cli_build
    assert done.returncode == 0, done.stderr
    # progress on stderr, one line per step; the checks' table on stdout
    assert "meshing liver (label 5, 1/4)" in done.stderr
    assert "SliceThickness 3 mm but slices are 2 mm apart" in done.stderr
    assert "a demonstration lesion" in done.stderr
    for name in ("liver", "portal_vein", "inferior_vena_cava", "aorta"):
        assert name in done.stdout
    assert "Hausdorff" in done.stdout
    check = _ornav("case", "check", str(out))
    assert check.returncode == 0, check.stderr
    assert "lesion" in check.stdout and "F-6" in check.stdout
    assert "volume: 256x256x20 brick, 1.95 x 1.95 x 2 mm voxels" in check.stdout


def test_case_check_refuses_a_tampered_volume_brick(tmp_path: Path) -> None:
    import gzip
    import hashlib

    from nav.phantom import write_phantom_case

    write_phantom_case(tmp_path)
    data = gzip.compress(b"\0" * 16)
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "v.u16.gz").write_bytes(gzip.compress(b"\1" * 16))
    table = (
        f'[volume]\nfile = "volume/v.u16.gz"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        'shape = [2, 2, 2]\ndtype = "uint16"\nhu_offset = -1024.0\n'
        "T_image_from_ijk = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0]\n\n"
    )
    toml = (tmp_path / "case.toml").read_text()
    head, sep, rest = toml.partition("[[structures]]")
    (tmp_path / "case.toml").write_text(head + table + sep + rest)
    _assert_one_line_error(_ornav("case", "check", str(tmp_path)), "v.u16.gz: sha256")


@pytest.mark.slow
@pytest.mark.timeout(900)  # a 12 s demo: about a minute alone, more when loaded
def test_demo_runs_on_the_case_built_from_the_shared_ct(cli_build, tmp_path: Path) -> None:
    """The whole stack on it: registration accepted, the lesion reached, a snapshot."""
    done, out = cli_build
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    demo = _ornav(
        "demo", "--case", str(out), "--duration", "12", "--no-progress",
        "--run-dir", str(run_dir), "--summary", str(run_dir / "summary.json"),
        timeout_s=480,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "demonstration lesion" in demo.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["registration"]["accepted"] is True
    assert summary["registration"]["tre_mm"]["targets"]["lesion"] < 1.0
    assert (run_dir / "snapshot.png").stat().st_size > 1000


def test_a_label_absent_from_the_segmentation_is_one_line_and_no_bundle(tmp_path: Path) -> None:
    data = shared_data("totalsegmentator")
    out = tmp_path / "case"
    done = _ornav(
        "case", "build",
        "--image", str(data / "example_ct_sm.nii.gz"),
        "--labels", str(data / "example_seg.nii.gz"),
        "--structures", "liver=5,heart=51",
        "--out", str(out),
    )  # fmt: skip
    _assert_one_line_error(done, "label 51 (heart) is not in the segmentation")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_non_ct_dicom_series_is_one_line_and_no_bundle(tmp_path: Path) -> None:
    series = tmp_path / "mr"
    series.mkdir()
    for path in sorted(shared_data("totalsegmentator/example_ct_dicom").iterdir())[:4]:
        copy = Path(shutil.copy(path, series / path.name))
        dataset = pydicom.dcmread(copy)
        dataset.Modality = "MR"
        dataset.save_as(copy)
    out = tmp_path / "case"
    done = _ornav(
        "case", "build",
        "--image", str(series),
        "--labels", str(shared_data("totalsegmentator/example_seg_dicom.nii.gz")),
        "--structures", "liver=5",
        "--out", str(out),
    )  # fmt: skip
    _assert_one_line_error(done, "modality 'MR', not CT")
    assert not out.exists()


def test_bad_command_words_are_one_line(tmp_path: Path) -> None:
    data = shared_data("totalsegmentator")
    common = [
        "--image",
        str(data / "example_ct_sm.nii.gz"),
        "--labels",
        str(data / "example_seg.nii.gz"),
    ]
    done = _ornav("case", "build", *common, "--structures", "spleen", "--out", str(tmp_path / "c"))
    _assert_one_line_error(done, "structure 'spleen' has no label number")
    done = _ornav(
        "case", "build", *common, "--structures", "liver=5", "--lesion", "x=1,2:3",
        "--out", str(tmp_path / "c"),
    )  # fmt: skip
    _assert_one_line_error(done, "expected NAME=L,P,S:RADIUS_MM")
    assert not (tmp_path / "c").exists()

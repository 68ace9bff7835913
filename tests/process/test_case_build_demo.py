"""The whole stack on a case built from the shared CT: ``ornav case build`` then ``ornav demo
--case``: registration accepted, the pointer reaches the demonstration lesion, snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data


def _ornav(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # a build and a 12 s demo: about a minute alone, more when loaded
def test_demo_runs_on_a_case_built_from_the_shared_ct(tmp_path: Path) -> None:
    data = shared_data("totalsegmentator")
    case = tmp_path / "ct_case"
    built = _ornav(
        "case", "build",
        "--image", str(data / "example_ct_dicom"),
        "--labels", str(data / "example_seg_dicom.nii.gz"),
        "--labels-names", str(data / "labels.json"),
        "--structures", "liver,portal_vein_and_splenic_vein,aorta",
        "--lesion", "lesion=inside:liver:12",
        "--out", str(case),
        timeout_s=400,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    run_dir = tmp_path / "run"
    demo = _ornav(
        "demo", "--case", str(case), "--duration", "12", "--no-progress",
        "--run-dir", str(run_dir), "--summary", str(run_dir / "summary.json"),
        timeout_s=480,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "demonstration lesion" in demo.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["registration"]["accepted"] is True
    assert (run_dir / "snapshot.png").stat().st_size > 1000

"""The bounded soak of bench/curve.py, short: a CURVE stack at 400 Hz with a keyed headset
session (issue 13). `make bench` runs it for 10 minutes, `--soak-s 3600` for the hour."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_secured_soak_loses_nothing_and_restarts_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "bench/curve.py", "--only", "soak", "--soak-s", "12", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    soak = json.loads(out.read_text())["soak"]
    assert soak["welcomed"], soak
    assert soak["scene_frames"] > 100, soak  # 400 Hz in, at least some of it rendered
    assert soak["lost_at_client"] == 0, soak
    assert soak["restarts"] == 0, soak
    assert set(soak["rss_mb_end"]) == {"tracker", "nav", "render"}

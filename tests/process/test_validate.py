"""``ornav validate`` as a user runs it: on a real demo recording (its figures match the
demo's own summary; the report opened in headless Chromium), and on a folder of sessions
fanned out on a real Dask cluster (local, and an existing one by address)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from tests.browser import ConsoleLog
from tests.conftest import REPO
from tests.fake.recordings import write_touch_session

LIMITS = """
[[limit]]
metric = "registration.true_tre_mm.max"
max = 2.0
label = "TRE <= 2 mm at every target"

[[limit]]
metric = "overlay.current_max_age_ms"
max = 100.0
label = "no CURRENT overlay older than 100 ms"
"""


def _ornav(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One real ``ornav demo`` (12 s, no random dropouts): its recording and summary."""
    tmp = tmp_path_factory.mktemp("demo")
    sim = (REPO / "launch" / "sim.toml").read_text()
    launch = tmp / "sim.toml"
    launch.write_text(sim.replace("dropout_rate_hz = 0.05", "dropout_rate_hz = 0.0"))
    summary_path = tmp / "summary.json"
    result = _ornav(
        "demo",
        "--duration",
        "12",
        "--run-dir",
        str(tmp / "run"),
        "--summary",
        str(summary_path),
        "--no-progress",
        "--launch",
        str(launch),
    )
    assert summary_path.exists(), result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["ok"], summary["problems"]
    return Path(summary["recording"]), summary


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_report_of_the_demo_recording_matches_the_demo_summary(
    demo: tuple[Path, dict[str, Any]], tmp_path: Path, chromium: Any
) -> None:
    recording, summary = demo
    limits = tmp_path / "limits.toml"
    limits.write_text(LIMITS)
    out = tmp_path / "report"
    result = _ornav("validate", str(recording), "--out", str(out), "--limits", str(limits))
    assert result.returncode in (0, 1), result.stderr
    doc = json.loads((out / "report.json").read_text())
    metrics = doc["metrics"]
    reg = summary["registration"]

    # the registration the session accepted, as the demo reported it (3 decimals)
    assert metrics["registration.fre_mm"] == pytest.approx(reg["fre_mm"], abs=1e-3)
    accepted = doc["registration"]["accepted"]
    for target, tre in reg["tre_mm"]["targets"].items():
        assert accepted["true_tre_mm"][target] == pytest.approx(tre, abs=1e-3)
    assert accepted["n_fiducials"] == reg["n_fiducials"]
    # re-run offline from the recorded poses alone: every collected fiducial found again,
    # and the same registration within the dwell's noise
    offline = doc["registration"]["offline"]
    assert len(offline["matched_fiducials"]) >= reg["n_fiducials"]
    assert metrics["offline.points.ran"] == 1.0
    assert metrics["offline.points.target_shift_mm.max"] < 0.2
    assert metrics["offline.points.true_tre_mm.max"] < 1.5
    # latency tracker sample -> headset client: the client's telemetry, as recorded (the
    # last batch can be missing: the recorder stops first)
    demo_latency = summary["latency_ms"]
    assert metrics["latency.sample_to_headset_ms.p50"] == pytest.approx(
        demo_latency["p50"], rel=0.2, abs=0.5
    )
    assert doc["latency"]["sample_to_headset"]["summary_ms"]["n"] >= 0.8 * demo_latency["n"]
    assert doc["overlay"]["nav_entries"] == summary["navigation_episodes"]
    assert metrics["navigation.reference_lost_episodes"] == summary["reference_lost_events"]
    assert doc["verdicts"][0]["outcome"] == "PASS"  # TRE <= 2 mm
    assert doc["verdicts"][1]["value"] is not None

    # the page, as a person opens it: every figure drawn, nothing failing, and it prints
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    log = ConsoleLog()
    log.attach(page)
    page.goto((out / "index.html").as_uri())
    figures = page.eval_on_selector_all(
        "figure[data-figure] img",
        "imgs => imgs.map(i => [i.closest('figure').dataset.figure, i.complete, i.naturalWidth,"
        " i.naturalHeight])",
    )
    names = {f[0] for f in figures}
    assert {"timeline", "latency", "ages", "registration", "error_map"} <= names
    for name, complete, width, height in figures:
        assert complete and width > 200 and height > 100, name
    assert page.inner_text("#verdict").startswith("Verdict:")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    pdf = page.pdf(format="A4")
    assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page") >= 3
    assert log.errors == []
    page.close()


def _limits_pass_on_synthetic(tmp_path: Path) -> Path:
    limits = tmp_path / "limits.toml"
    limits.write_text('[[limit]]\nmetric = "offline.points.true_tre_mm.max"\nmax = 1.0\n')
    return limits


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_folder_of_sessions_fans_out_on_a_local_dask_cluster(
    tmp_path: Path, chromium: Any
) -> None:
    recordings = tmp_path / "runs"
    recordings.mkdir()
    for k in range(4):
        run = recordings / f"run{k}"
        run.mkdir()
        write_touch_session(run / "session.mcap", n_fiducials=4 + k, seed=k)
    data = (recordings / "run0" / "session.mcap").read_bytes()
    (recordings / "cut").mkdir()
    (recordings / "cut" / "session.mcap").write_bytes(data[: len(data) // 2])
    (recordings / "junk.mcap").write_bytes(b"this is not a recording")
    out = tmp_path / "study"
    result = _ornav(
        "validate",
        str(recordings),
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
        "--limits",
        str(_limits_pass_on_synthetic(tmp_path)),
    )
    assert result.returncode == 1, result.stderr  # one recording could not be read
    assert "local Dask cluster of 2 worker(s)" in result.stderr
    study = json.loads((out / "study.json").read_text())
    assert len(study) == 6
    by_name = {row["name"]: row for row in study}
    junk = by_name["junk.mcap"]
    assert junk["error"] and "\n" not in junk["error"] and junk["verdict"] is None
    assert by_name["cut__session.mcap"]["partial"] is True
    for k in range(4):
        row = by_name[f"run{k}__session.mcap"]
        assert row["error"] is None and row["verdict"] == "PASS"
        assert (out / row["name"] / "index.html").exists()
        assert row["metrics"]["registration.accepted"] == 0.0  # no nav node in these
    # the study page: a row per session, links to the reports, sortable
    page = chromium.new_page()
    log = ConsoleLog()
    log.attach(page)
    page.goto((out / "index.html").as_uri())
    assert page.locator("#study tbody tr").count() == 6
    links = page.eval_on_selector_all("#study a", "as => as.map(a => a.getAttribute('href'))")
    assert sorted(links) == sorted(f"{r['name']}/index.html" for r in study if not r["error"])
    header = page.locator("th", has_text="duration (s)")
    header.click()
    durations = page.eval_on_selector_all(
        "#study tbody tr td:nth-child(3)", "tds => tds.map(t => t.dataset.value)"
    )
    numbers = [float(d) for d in durations if d]
    assert numbers == sorted(numbers) and len(numbers) == 5
    header.click()
    durations = page.eval_on_selector_all(
        "#study tbody tr td:nth-child(3)", "tds => tds.map(t => t.dataset.value)"
    )
    assert [float(d) for d in durations if d] == sorted(numbers, reverse=True)
    assert log.errors == []
    page.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_existing_dask_cluster_is_used_by_address(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    for k in range(2):
        write_touch_session(tmp_path / f"s{k}.mcap", n_fiducials=5, seed=10 + k)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        result = _ornav(
            "validate",
            str(tmp_path / "s0.mcap"),
            str(tmp_path / "s1.mcap"),
            "--out",
            str(tmp_path / "out"),
            "--scheduler",
            cluster.scheduler_address,
            "--no-progress",
        )
    assert result.returncode == 0, result.stderr
    assert cluster.scheduler_address in result.stderr
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert [row["error"] for row in study] == [None, None]


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    write_touch_session(tmp_path / "s.mcap")
    bad_limits = tmp_path / "limits.toml"
    bad_limits.write_text("[[limit]]\nmax = 1\n")
    out = str(tmp_path / "o")
    cases = [
        (["validate", str(tmp_path / "missing.mcap"), "--out", out], "no such"),
        (["validate", str(tmp_path / "empty"), "--out", out], "no .mcap or PLUS"),
        (
            ["validate", str(tmp_path / "s.mcap"), "--out", out, "--limits", str(bad_limits)],
            "needs metric",
        ),
        (
            ["validate", str(tmp_path / "s.mcap"), "--out", out, "--tip", str(tmp_path / "t.toml")],
            "--tip",
        ),
        (["validate", str(tmp_path / "s.mcap"), "--out", out, "--workers", "-1"], "--workers"),
        (
            [
                "validate",
                str(tmp_path / "s.mcap"),
                "--out",
                out,
                "--scheduler",
                "tcp://127.0.0.1:9",
            ],
            "--scheduler tcp://127.0.0.1:9: cannot use it",
        ),
    ]
    for argv, problem in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("ornav: ")]
        assert len(errors) == 1 and problem in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "o" / "index.html").exists()  # nothing reported

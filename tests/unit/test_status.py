"""The status table: what it shows for a stale tool, a dead node and the summary it writes."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from nav.runtime.status import NodeRow, StackStatus, ToolRow, render, summary


def _status(
    *, pose_age_ms: float, state: str = "running", exit_code: int | None = None
) -> StackStatus:
    node = NodeRow(
        name="tracker",
        state=state,
        pid=42,
        uptime_s=3.0,
        publish_hz=60.0,
        rejected=2,
        restarts=1,
        exit_code=exit_code,
        heartbeat_age_s=0.2,
        latency_ms={"p50": 0.8, "p99": 2.0, "p999": 3.0, "max": 4.0},
        counters={"published": 180, "rejected": 2},
    )
    tool = ToolRow(tool="pointer", source="sim", status="OK", rate_hz=60.0, pose_age_ms=pose_age_ms)
    return StackStatus("sim", "launch/sim.toml", "runs/x", 3.0, (node,), (tool,))


def _text(status: StackStatus) -> str:
    console = Console(record=True, width=120)
    console.print(render(status))
    return console.export_text()


def test_a_tool_older_than_100_ms_is_shown_stale_not_ok() -> None:
    fresh = _text(_status(pose_age_ms=5.0))
    stale = _text(_status(pose_age_ms=250.0))
    assert "STALE" not in fresh and " OK " in fresh
    assert "STALE (OK)" in stale


def test_a_dead_node_shows_its_exit_code() -> None:
    assert "dead (-9)" in _text(_status(pose_age_ms=5.0, state="dead", exit_code=-9))


def test_summary_carries_the_table_figures_and_totals() -> None:
    report = summary(_status(pose_age_ms=5.0))
    assert report["nodes"]["tracker"]["publish_hz"] == 60.0
    assert report["tools"]["pointer"]["pose_age_ms"] == 5.0
    assert report["restarts"] == 1 and report["rejected"] == 2
    assert report["latency_ms"]["measured_at"] == "tracker"


def test_navigation_status_is_shown_and_summarised() -> None:
    status = _status(pose_age_ms=5.0)
    lost = StackStatus(**{**status.__dict__, "navigation": "REFERENCE_LOST"})
    assert "navigation: REFERENCE_LOST" in _text(lost)
    assert summary(lost)["navigation"] == "REFERENCE_LOST"
    assert "navigation" not in _text(status)  # no nav node, no line


def test_fixed_rate_schedule_keeps_its_grid_and_skips_ahead_only_when_far_behind() -> None:
    from nav.runtime.stats import advance_schedule

    period = 1_000_000  # 1 kHz
    assert advance_schedule(0, period_ns=period, now_ns=3 * period) == (period, False)
    next_ns, overrun = advance_schedule(0, period_ns=period, now_ns=20 * period + 400)
    assert overrun and next_ns % period == 0 and 15 * period <= next_ns <= 20 * period


def test_a_bind_failure_is_one_red_line_and_in_the_summary() -> None:
    line = "tracker: cannot bind tcp://127.0.0.1:5555: Address already in use — another ..."
    status = _status(pose_age_ms=5.0, state="dead", exit_code=3)
    row = replace(status.nodes[0], bind_failure=line, reason=line)
    failed = replace(status, nodes=(row,))
    console = Console(record=True, width=200)
    console.print(render(failed))
    assert line in console.export_text()
    assert summary(failed)["bind_failures"] == [line]
    assert summary(failed)["nodes"]["tracker"]["bind_failure"] == line


def test_a_watchdog_restart_shows_its_reason_while_the_node_runs_again() -> None:
    status = _status(pose_age_ms=5.0)
    row = replace(
        status.nodes[0], reason="no heartbeat for 2.1 s (limit 2.0 s)", watchdog_restarts=1
    )
    restarted = replace(status, nodes=(row,))
    assert "tracker: no heartbeat for 2.1 s (limit 2.0 s) (restarted 1x)" in _text(restarted)
    assert summary(restarted)["watchdog_restarts"] == 1
    assert "no heartbeat" not in _text(status)

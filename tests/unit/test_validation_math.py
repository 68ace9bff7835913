"""nav.validation: episodes, percentiles, tool figures and fiducial matching against
closed forms and constructed truths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nav.collectors import DwellParams
from nav.transforms import apply, axis_angle_to_matrix, make_rigid
from nav.validation.episodes import count_entries, episodes, time_in_state_s
from nav.validation.motion import tool_figures
from nav.validation.stats import cdf, summary_ms
from nav.validation.touches import find_dwells, match_fiducials

states = st.lists(st.sampled_from(["OK", "STALE", "REFERENCE_LOST"]), min_size=1, max_size=60)


@given(states)
def test_episodes_partition_the_timeline_and_rebuild_the_states(seq: list[str]) -> None:
    t = np.arange(len(seq)) * 0.1
    runs = episodes(t, seq)
    rebuilt = [run.state for run in runs for _ in range(run.samples)]
    assert rebuilt == seq
    assert all(a.state != b.state for a, b in zip(runs, runs[1:], strict=False))
    assert sum(time_in_state_s(runs).values()) == pytest.approx(t[-1])
    assert runs[0].start_s == 0.0 and runs[-1].end_s == pytest.approx(t[-1])
    assert count_entries(runs, "STALE") == sum(r.state == "STALE" for r in runs)


def test_episode_end_is_where_the_next_state_starts() -> None:
    runs = episodes([0.0, 1.0, 2.0, 2.5], ["OK", "OK", "STALE", "OK"])
    assert [(r.state, r.start_s, r.end_s) for r in runs] == [
        ("OK", 0.0, 2.0),
        ("STALE", 2.0, 2.5),
        ("OK", 2.5, 2.5),
    ]
    with pytest.raises(ValueError, match="decrease"):
        episodes([1.0, 0.0], ["OK", "OK"])


@given(st.lists(st.floats(0, 1e3), min_size=1, max_size=200))
def test_summary_and_cdf_agree_with_numpy(values: list[float]) -> None:
    s = summary_ms([*values, math.nan])  # NaN: not a measurement
    assert s["n"] == len(values)
    assert s["p50"] == pytest.approx(np.percentile(values, 50))
    assert s["p99"] == pytest.approx(np.percentile(values, 99))
    assert s["max"] == max(values)
    x, y = cdf(values, max_points=50)
    assert x == sorted(x) and y[-1] == 1.0 and len(x) <= 50
    assert x[0] == min(values) and x[-1] == max(values)


def test_summary_of_nothing_is_none_not_zero() -> None:
    assert summary_ms([]) == {
        "n": 0,
        "mean": None,
        "max": None,
        "p50": None,
        "p90": None,
        "p99": None,
    }


@given(st.floats(0.05, 0.5), st.integers(0, 2**31))
def test_jitter_of_a_still_tool_is_its_noise(sigma_mm: float, seed: int) -> None:
    """Isotropic noise sigma per axis: RMS distance from the mean is sigma * sqrt(3)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, 10, 1 / 60)
    p = np.array([10.0, 20.0, 30.0]) + rng.normal(0, sigma_mm, (len(t), 3))
    figures = tool_figures(t, np.ones(len(t), bool), p, drift_mm=10 * sigma_mm)
    assert figures.jitter_rms_mm == pytest.approx(sigma_mm * math.sqrt(3), rel=0.15)
    assert figures.rate_hz == pytest.approx(60.0)
    assert figures.visible_fraction == 1.0 and figures.dropouts == 0


def test_a_moving_tool_has_no_static_window_and_gaps_are_counted() -> None:
    t = np.arange(0, 4, 0.01)
    p = np.stack([t * 20.0, np.zeros_like(t), np.zeros_like(t)], axis=1)  # 20 mm/s
    ok = np.ones(len(t), bool)
    ok[100:150] = False  # 0.5 s out of sight
    ok[300:310] = False
    figures = tool_figures(t, ok, p)
    assert figures.jitter_rms_mm is None and figures.static_windows == 0
    assert figures.dropouts == 2
    assert figures.longest_gap_s == pytest.approx(0.5)
    assert figures.visible_fraction == pytest.approx(340 / 400)


def _random_rigid(rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    return make_rigid(
        axis_angle_to_matrix(axis, rng.uniform(0, math.pi)), rng.uniform(-300, 300, 3)
    )


@given(st.integers(0, 2**31), st.integers(4, 10), st.integers(0, 6), st.integers(0, 2))
def test_match_recovers_which_touch_was_which_fiducial(
    seed: int, n_fiducials: int, n_extra: int, n_untouched: int
) -> None:
    """Touches in a shuffled order, some fiducials never touched, other dwells mixed in
    (a target, the tray): every touched fiducial is paired with its own touch."""
    rng = np.random.default_rng(seed)
    fids = rng.uniform(-80, 80, (n_fiducials, 3))
    truth = _random_rigid(rng)
    touched = rng.permutation(n_fiducials)[: max(4, n_fiducials - n_untouched)]
    noise = rng.normal(0, 0.2, (len(touched), 3))
    dwells = apply(truth, fids[touched]) + noise
    extra = apply(truth, rng.uniform(-200, 200, (n_extra, 3)))
    # a stray dwell sits at least 10 mm from every fiducial (else it is a touch)
    far = np.min(np.linalg.norm(extra[:, None] - apply(truth, fids)[None], axis=2), axis=1) > 10
    points = np.vstack([dwells, extra[far]])
    order = rng.permutation(len(points))
    match = match_fiducials(fids, points[order])
    assert match is not None
    touch_of = {int(f): int(np.flatnonzero(order == k)[0]) for k, f in enumerate(touched)}
    assert dict(zip(match.fiducial_indices, match.dwell_indices, strict=True)) == touch_of
    assert np.allclose(apply(match.T_reference_from_image, fids), apply(truth, fids), atol=1.0)
    assert match.residuals_mm.max() < 1.5


def test_match_needs_four_consistent_touches() -> None:
    fids = np.array([[0.0, 0, 0], [50, 0, 0], [0, 60, 0], [0, 0, 70]])
    assert match_fiducials(fids, fids[:3]) is None  # 3 touches may fit two ways: refused
    assert match_fiducials(fids, fids[[2, 0, 3, 1]]).dwell_indices == (1, 3, 0, 2)
    assert match_fiducials(fids, np.array([[0.0, 0, 0], [500, 0, 0], [0, 900, 0]])) is None


def test_find_dwells_finds_each_rest_once() -> None:
    """Three rests of 1 s joined by 1 s moves at 60 Hz: three dwells, at the rests."""
    rests = np.array([[0.0, 0, 0], [40, 0, 0], [40, 30, 0]])
    rng = np.random.default_rng(3)
    t_s, points = [], []
    t = 0.0
    for u in np.linspace(0, 1, 60):  # coming in from the tray: a rest at the start is no touch
        t_s.append(t)
        points.append(np.array([-30.0, -30, 0]) * (1 - u))
        t += 1 / 60
    for k, rest in enumerate(rests):
        for _ in range(60):
            t_s.append(t)
            points.append(rest + rng.normal(0, 0.1, 3))
            t += 1 / 60
        if k + 1 < len(rests):
            for u in np.linspace(0, 1, 60):
                t_s.append(t)
                points.append(rest + u * (rests[k + 1] - rest))
                t += 1 / 60
    p = np.array(points)
    p[5] = np.nan  # an occluded sample
    dwells = find_dwells((np.array(t_s) * 1e9).astype(np.int64), p, DwellParams())
    assert len(dwells.p_reference) == 3
    assert np.allclose(dwells.p_reference, rests, atol=0.2)
    assert np.all(np.diff(dwells.t_ns) > 0)

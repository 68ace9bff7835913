"""Limits files: parsed or refused in one line; verdicts PASS / FAIL / NO_DATA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nav.validation.verdict import Limit, LimitsError, Outcome, judge, overall, read_limits


def test_limits_file_round_trip_and_verdicts(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(
        '[[limit]]\nmetric = "registration.true_tre_mm.max"\nmax = 2.0\nlabel = "TRE <= 2 mm"\n'
        '[[limit]]\nmetric = "latency.sample_to_headset_ms.p99"\nmax = 5\n'
        '[[limit]]\nmetric = "tracking.reference.visible_fraction"\nmin = 0.9\n'
    )
    limits = read_limits(path)
    assert limits[0] == Limit("registration.true_tre_mm.max", 2.0, None, "TRE <= 2 mm")
    assert limits[1].text == "latency.sample_to_headset_ms.p99 <= 5"
    verdicts = judge(
        limits,
        {"registration.true_tre_mm.max": 2.0, "latency.sample_to_headset_ms.p99": 7.1},
    )
    assert [v.outcome for v in verdicts] == [Outcome.PASS, Outcome.FAIL, Outcome.NO_DATA]
    assert overall(verdicts) is Outcome.FAIL
    assert overall(verdicts[:1]) is Outcome.PASS
    assert overall([verdicts[0], verdicts[2]]) is Outcome.NO_DATA  # never a pass by omission
    assert overall([]) is None
    assert judge(limits[:1], {"registration.true_tre_mm.max": math.nan})[0].outcome is (
        Outcome.NO_DATA
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[limit]]\nmax = 1\n", "needs metric"),
        ('[[limit]]\nmetric = "a"\n', "needs max, min or both"),
        ('[[limit]]\nmetric = "a"\nmax = "1"\n', "max must be a finite number"),
        ('[[limit]]\nmetric = "a"\nmax = nan\n', "max must be a finite number"),
        ('[[limit]]\nmetric = "a"\nmin = 2\nmax = 1\n', "min 2 > max 1"),
        ('[[limit]]\nmetric = "a"\nmax = 1\nmaximum = 2\n', "unknown key"),
        ("[limits]\nx = 1\n", "unknown table"),
        ("limit = 3\n", "array of tables"),
        ("[[limit]\n", "not TOML"),
    ],
)
def test_bad_limits_are_one_line_errors(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    with pytest.raises(LimitsError, match=problem) as caught:
        read_limits(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_missing_limits_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LimitsError, match="No such file"):
        read_limits(tmp_path / "nope.toml")

"""Runs of one state on a timeline: the navigation status or the overlay, sample by sample.

A recording holds one state per sample; a person reads episodes ("REFERENCE_LOST from
12.40 s to 12.91 s"). An episode ends where the next state starts (the next sample's
time), the last one at the last sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Episode:
    """``state`` held from ``start_s`` to ``end_s`` (session seconds), over ``samples``."""

    state: str
    start_s: float
    end_s: float
    samples: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def episodes(t_s: npt.ArrayLike, states: Sequence[str]) -> list[Episode]:
    """The runs of equal consecutive ``states`` at times ``t_s`` (N,), non-decreasing s."""
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    if len(t) != len(states):
        raise ValueError(f"{len(t)} times for {len(states)} states")
    if len(t) and np.any(np.diff(t) < 0):
        raise ValueError("times must not decrease")
    runs: list[Episode] = []
    start = 0
    for i in range(1, len(t) + 1):
        if i == len(t) or states[i] != states[start]:
            end_s = float(t[i]) if i < len(t) else float(t[-1])
            runs.append(Episode(states[start], float(t[start]), end_s, i - start))
            start = i
    return runs


def time_in_state_s(runs: Sequence[Episode]) -> dict[str, float]:
    """Total seconds per state over ``runs``."""
    total: dict[str, float] = {}
    for run in runs:
        total[run.state] = total.get(run.state, 0.0) + run.duration_s
    return total


def count_entries(runs: Sequence[Episode], state: str) -> int:
    """How many times the timeline entered ``state`` (a first run in it counts)."""
    return sum(1 for run in runs if run.state == state)

"""The ``ornav demo`` scenario, as data: its timing plan and its summary. Pure.

Scenario (times from the moment the stack is up; ``duration_s`` in all):

1. registration (``cli.demo.sim_registration``): the simulated pointer touches the first
   ``n_fiducials`` of the case's fiducials (all 8 of the phantom when there is time),
   ``TOUCH.travel_s`` travelling and ``TOUCH.dwell_s`` held each; the nav node records
   each by dwell; a fiducial missed (the pointer or reference occluded during its hold) is
   touched again. ``registration_deadline_s`` leaves ``NAV_MIN_S`` for the rest; by then
   ``MIN_FIDUCIALS`` at least must be in, or the registration has failed. Then compute
   and, if its FRE is at most ``MAX_ACCEPT_FRE_MM``, accept.
2. navigation (``nav_plan``): the pointer comes down on a target (a touch: from the
   simulator's hover height, 50 mm above it along the reference's +z, out of the
   patient), so its distance falls to ~0, and holds it there to the end; on the way the
   reference is occluded once for ``OCCLUSION_S``
   (``tool.occlude``): a REFERENCE_LOST episode the headset must show, ending at least
   ``CALM_END_S`` before the end so the last frames (and the snapshot) are a valid
   overlay. The breathing and the launch file's random dropouts run throughout.

The plan: ``n_fiducials = min(available, floor((duration - NAV_MIN_S - one retry) /
per fiducial))``; a duration that leaves fewer than ``MIN_FIDUCIALS`` is refused. With the
defaults: 9 s minimum, 6 fiducials at 12 s, all 8 from 13.8 s; 20 s leaves ~10 s of
navigation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cli.demo.sim_registration import RegistrationFigures, TouchPlan

TOUCH = TouchPlan(travel_s=0.5, dwell_s=0.7, margin_s=0.3)
"""Per fiducial: 0.5 s travel, 0.7 s held (the nav node's dwell window is 0.4 s)."""
MIN_FIDUCIALS = 4
NAV_MIN_S = 3.0
MAX_ACCEPT_FRE_MM = 1.0
"""Four times the simulated tracker's noise: a larger FRE means a fiducial went wrong."""
OCCLUSION_S = 0.5
CALM_END_S = 1.0
DEFAULT_DURATION_S = 20.0
HOLD_TAIL_S = 60.0
"""The pointer holds the target this long past the scenario (the headset's last frames)."""


@dataclass(frozen=True, kw_only=True)
class ScenarioPlan:
    """When each phase happens, seconds from the start of the scenario."""

    duration_s: float
    n_fiducials: int
    touch: TouchPlan
    registration_deadline_s: float

    @property
    def registration_s(self) -> float:
        """How long the registration takes when no fiducial is missed."""
        return self.touch.duration_s(self.n_fiducials)


def min_duration_s(touch: TouchPlan = TOUCH) -> float:
    """The shortest scenario: ``MIN_FIDUCIALS`` touches, one retry, ``NAV_MIN_S``."""
    return (MIN_FIDUCIALS + 1) * touch.per_fiducial_s + NAV_MIN_S


def plan_scenario(
    duration_s: float, *, fiducials_available: int, touch: TouchPlan = TOUCH
) -> ScenarioPlan:
    """The plan for a scenario of ``duration_s``; ValueError (one line) if it cannot fit."""
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"--duration must be > 0 s, got {duration_s}")
    if fiducials_available < MIN_FIDUCIALS:
        raise ValueError(
            f"the case has {fiducials_available} fiducials; the demo needs {MIN_FIDUCIALS}"
        )
    shortest = min_duration_s(touch)
    if duration_s < shortest - 1e-9:
        raise ValueError(
            f"--duration {duration_s:g} s is too short for the demo: it needs {shortest:g} s at "
            f"least ({MIN_FIDUCIALS} fiducial touches of {touch.per_fiducial_s:g} s, one retry, "
            f"{NAV_MIN_S:g} s of navigation)"
        )
    deadline = duration_s - NAV_MIN_S
    n = int((deadline - touch.per_fiducial_s) / touch.per_fiducial_s + 1e-9)
    return ScenarioPlan(
        duration_s=duration_s,
        n_fiducials=min(fiducials_available, n),
        touch=touch,
        registration_deadline_s=deadline,
    )


@dataclass(frozen=True, kw_only=True)
class NavPlan:
    """The navigation phase, seconds from its start: approach, occlusion, hold."""

    approach_s: float
    hold_s: float
    occlusion_at_s: float | None  # None: no time left for one


def nav_plan(remaining_s: float) -> NavPlan:
    """The navigation phase for ``remaining_s`` seconds of scenario left.

    The approach takes 45 % of it (1 to 4 s), then the pointer holds the target until
    ``HOLD_TAIL_S`` past the end; the occlusion starts 60 % of the way down and must end
    ``CALM_END_S`` before the end, else there is none.
    """
    approach_s = min(4.0, max(1.0, 0.45 * remaining_s))
    occlusion_at_s: float | None = 0.6 * approach_s
    assert occlusion_at_s is not None
    if occlusion_at_s + OCCLUSION_S > remaining_s - CALM_END_S:
        occlusion_at_s = None
    return NavPlan(
        approach_s=approach_s,
        hold_s=max(remaining_s - approach_s, 0.0) + HOLD_TAIL_S,
        occlusion_at_s=occlusion_at_s,
    )


def count_episodes(statuses: Iterable[str]) -> dict[str, int]:
    """How many times each status was entered (a run of equal statuses is one episode)."""
    counts: dict[str, int] = {}
    last: str | None = None
    for status in statuses:
        if status != last:
            counts[status] = counts.get(status, 0) + 1
            last = status
    return counts


@dataclass(frozen=True, kw_only=True)
class RegistrationOutcome:
    """How the scenario's registration ended: figures when computed; ``failure`` if not ok."""

    planned: int
    collected: int
    retries: int
    figures: RegistrationFigures | None = None
    accepted: bool = False
    failure: str = ""
    method: str = "points"
    """The method of the registration navigation ends on: "points", or "deformable"."""
    deformable: Mapping[str, Any] | None = None
    """The deformable scenario's fit (``cli.demo.deformable``): its true TRE {mean, max}
    (``tre_mm``), per target, and how it was computed; None before or without one."""

    @property
    def ok(self) -> bool:
        return self.accepted and not self.failure


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def registration_summary(outcome: RegistrationOutcome) -> dict[str, Any]:
    """The summary's ``registration`` section."""
    out: dict[str, Any] = {
        "ok": outcome.ok,
        "accepted": outcome.accepted,
        "fiducials_planned": outcome.planned,
        "fiducials_collected": outcome.collected,
        "retries": outcome.retries,
    }
    if outcome.failure:
        out["failure"] = outcome.failure
    out["method"] = outcome.method
    figures = outcome.figures
    rigid = None if figures is None else figures.true_tre_mean_mm
    out["rigid_tre_mm"] = (
        None
        if figures is None or rigid is None
        else {"mean": _round(rigid), "max": _round(figures.true_tre_max_mm)}
    )
    deformable = outcome.deformable
    out["deformable_tre_mm"] = None if deformable is None else deformable.get("tre_mm")
    if deformable is not None:
        out["deformable"] = dict(deformable)
    if figures is not None:
        out.update(
            {
                "registration_id": figures.registration_id,
                "n_fiducials": figures.n_fiducials,
                "fre_mm": _round(figures.fre_mm),
                "tre_mm": {
                    "mean": _round(figures.true_tre_mean_mm),
                    "max": _round(figures.true_tre_max_mm),
                    "targets": {k: _round(v) for k, v in figures.true_tre_mm.items()},
                },
                "predicted_tre_mm": {
                    "max": _round(figures.predicted_tre_max_mm),
                    "targets": {k: _round(v) for k, v in figures.predicted_tre_mm.items()},
                },
            }
        )
    return out


def _percentiles(section: object) -> dict[str, Any] | None:
    if not isinstance(section, Mapping):
        return None
    return {k: section[k] for k in ("p50", "p99", "n") if k in section}


def build_summary(
    *,
    plan: ScenarioPlan,
    elapsed_s: float,
    registration: RegistrationOutcome,
    headset: Mapping[str, Any] | None,
    headset_exit_code: int | None,
    headset_problem: str,
    nodes: Mapping[str, Mapping[str, Any]],
    stack_healthy: bool,
    nav_episodes: Mapping[str, int],
    recording: str | None,
    recorded_topics: Mapping[str, int],
    snapshot: str | None,
    interrupted: str = "",
) -> dict[str, Any]:
    """The demo's JSON summary. ``ok`` only when every part worked; ``problems`` says why not.

    ``headset``: the client's own summary (``ornav headset --summary``), None when there is
    none; ``nodes``: per node ``final_state``, ``exit_code``, ``restarts``;
    ``nav_episodes``: entries into each navigation status, from the recording.
    """
    problems: list[str] = []
    if interrupted:
        problems.append(f"interrupted by {interrupted} after {elapsed_s:.1f} s")
    if not registration.ok:
        problems.append(
            f"registration failed: {registration.failure}"
            if registration.failure
            else "registration not completed"
        )
    if not stack_healthy:
        down = [n for n, node in nodes.items() if node.get("final_state") != "running"]
        problems.append(f"nodes not running at the end: {', '.join(down) or '?'}")
    restarted = [n for n, node in nodes.items() if node.get("restarts")]
    if restarted:
        problems.append(f"nodes restarted: {', '.join(restarted)}")
    if headset is None:
        problems.append(f"no headset summary: {headset_problem or 'the client wrote none'}")
    elif headset_exit_code not in (0, None):
        problems.append(f"the headset client exited with code {headset_exit_code}")
    if recording is None:
        problems.append("no recording")
    if snapshot is None:
        problems.append("no snapshot")
    headset = headset or {}
    shot = headset.get("snapshot")
    shot = shot if isinstance(shot, Mapping) else {}
    return {
        "ok": not problems,
        "problems": problems,
        "duration_s": round(elapsed_s, 3),
        "planned_duration_s": plan.duration_s,
        "latency_ms": _percentiles(headset.get("latency_ms")),
        "pose_age_ms": _percentiles(headset.get("pose_age_ms")),
        "registration": registration_summary(registration),
        "stale_events": headset.get("stale_events"),
        "hidden_events": headset.get("hidden_events"),
        "reference_lost_events": nav_episodes.get("REFERENCE_LOST", 0),
        "navigation_episodes": dict(nav_episodes),
        "recording": recording,
        "recorded_topics": dict(recorded_topics),
        "snapshot": snapshot,
        "nodes": {name: dict(node) for name, node in nodes.items()},
        "headset": {
            "exit_code": headset_exit_code,
            **{
                k: headset[k]
                for k in (
                    "frames",
                    "lost",
                    "reconnects",
                    "alerts",
                    "assets",
                    "overlay",
                    "clock_offset_ns",
                )
                if k in headset
            },
            **{f"snapshot_{k}": shot[k] for k in ("overlay", "banner", "renderer") if k in shot},
        },
    }

"""A ``Session`` (and its offline re-run) -> the report document, ``report.json``.

The document holds every figure's data (thinned series, CDFs, episodes), so the HTML page
is drawn from it alone and a study can be scripted on the JSON. ``metrics`` is a flat
table of named figures (dotted names, numbers or null) that limits files judge.

Hops (host monotonic clock, one host; ms): ``sample_to_tracker`` (the tracker node's
publish), ``sample_to_nav`` (nav/state published), ``sample_to_render`` (scene/update
published), ``sample_to_headset`` (the headset client received it, from its telemetry,
clock offset applied), ``sample_to_recorder`` (the recorder received the tracker frame).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from cli.validate.offline import OfflineRun, accepted_registration
from cli.validate.sources import Session
from nav.case import Case
from nav.registration.paired_point import predicted_tre_mm
from nav.validation.episodes import Episode, count_entries, episodes, time_in_state_s
from nav.validation.motion import tool_figures
from nav.validation.stats import cdf, summary_ms
from nav.validation.verdict import Limit, judge, overall
from tracking.plus_filters import filter_timestamps

REPORT_VERSION = 1
MAX_SERIES_POINTS = 2000  # a timeline thinned to this many samples
MAX_MAP_VERTICES = 4000  # the error map's vertices


def _thin(n: int, most: int = MAX_SERIES_POINTS) -> npt.NDArray[np.int64]:
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _episodes_json(runs: list[Episode]) -> list[dict[str, Any]]:
    return [
        {"state": r.state, "start_s": r.start_s, "end_s": r.end_s, "samples": r.samples}
        for r in runs
    ]


def _hops(session: Session) -> dict[str, npt.NDArray[np.float64]]:
    hops: dict[str, npt.NDArray[np.float64]] = {}
    if session.kind != "ornav":
        return hops
    f = session.frames
    if len(f["t_sensor_ns"]):
        hops["sample_to_tracker"] = (f["t_pub_ns"] - f["t_sensor_ns"]) / 1e6
        hops["sample_to_recorder"] = (f["t_recv_ns"] - f["t_sensor_ns"]) / 1e6
    if session.nav:
        hops["sample_to_nav"] = (session.nav["t_pub_ns"] - session.nav["t_sensor_ns"]) / 1e6
    if session.scene:
        hops["sample_to_render"] = (session.scene["t_pub_ns"] - session.scene["t_sensor_ns"]) / 1e6
    if session.telemetry:
        tel = session.telemetry
        hops["sample_to_headset"] = (tel["t_receive_ns"] - tel["t_sensor_ns"]) / 1e6
    return hops


def _registration_json(session: Session) -> dict[str, Any]:
    history = []
    last: tuple[int, str] | None = None
    for t_recv, r in session.registrations:
        if (r.registration_id, r.state) == last:
            continue  # republished (the nav node repeats its state for late joiners)
        last = (r.registration_id, r.state)
        history.append(
            {
                "t_s": float(session.seconds(t_recv)),
                "registration_id": r.registration_id,
                "state": r.state,
                "method": r.method,
                "needs_verification": r.needs_verification,
                "fre_mm": _num(r.fre_mm),
                "fle_mm": _num(r.fle_mm),
                "n_fiducials": len(r.fiducial_errors_mm),
                "fiducial_labels": list(r.fiducial_labels),
                "fiducial_errors_mm": [_num(v) for v in r.fiducial_errors_mm],
                "predicted_tre_mm": {
                    n: _num(v) for n, v in zip(r.target_names, r.predicted_tre_mm, strict=True)
                },
                "true_tre_mm": {
                    n: _num(v) for n, v in zip(r.target_names, r.true_tre_mm, strict=True)
                },
            }
        )
    accepted = accepted_registration(session)
    chosen = None
    if accepted is not None:
        chosen = next(
            h
            for h in reversed(history)
            if h["registration_id"] == accepted.registration_id and h["state"] == accepted.state
        )
    return {"history": history, "accepted": chosen}


def _error_map(session: Session, case: Case | None) -> dict[str, Any] | None:
    """Predicted TRE (eq. 46) over the organ's vertices for the accepted fiducials."""
    accepted = accepted_registration(session)
    if case is None or accepted is None or not accepted.fiducial_labels:
        return None
    index = {label: i for i, label in enumerate(case.fiducials.labels)}
    used = [index[label] for label in accepted.fiducial_labels if label in index]
    if len(used) < 3 or not math.isfinite(accepted.fle_mm):
        return None
    organ = next((s for s in case.structures if s.role == "organ"), case.structures[0])
    vertices = np.asarray(organ.mesh.vertices, dtype=np.float64)
    keep = _thin(len(vertices), MAX_MAP_VERTICES)
    p_fid = case.fiducials.points_lps[used]
    tre = predicted_tre_mm(vertices[keep], p_fid, fle_mm=accepted.fle_mm)
    return {
        "structure": organ.name,
        "vertices_mm": np.round(vertices[keep], 2).tolist(),
        "predicted_tre_mm": np.round(tre, 4).tolist(),
        "fiducials_mm": np.round(p_fid, 2).tolist(),
        "fiducial_labels": [case.fiducials.labels[i] for i in used],
        "targets_mm": np.round(case.targets.points_lps, 2).tolist(),
        "target_labels": list(case.targets.labels),
        "fle_mm": accepted.fle_mm,
    }


def _plus_json(session: Session) -> dict[str, Any]:
    plus = session.plus
    out: dict[str, Any] = {
        "projected_nearly_rigid": plus["projected"],
        "refused_not_rigid": plus["refused_not_rigid"],
        "max_projected_deviation": plus["max_projected_deviation"],
    }
    unfiltered, numbers, filtered = plus["unfiltered_s"], plus["frame_numbers"], plus["filtered_s"]
    if filtered is not None and len(unfiltered) >= 2:
        # The file's Timestamp may sit at a constant offset from UnfilteredTimestamp (PLUS's
        # local time offset): report it, and the jitter about it that the filter removed.
        residual_ms = (filtered - unfiltered) * 1e3
        offset_ms = float(np.median(residual_ms))
        ours, valid = filter_timestamps(numbers, unfiltered)
        ours_ms = (ours - filtered) * 1e3
        out["timestamp_filter"] = {
            "frames": len(unfiltered),
            "offset_ms": offset_ms,
            "jitter_removed_ms": summary_ms(np.abs(residual_ms - offset_ms)),
            "residual_cdf_ms": cdf(residual_ms - offset_ms),
            "ours_vs_file_ms": summary_ms(np.abs(ours_ms - np.median(ours_ms))),
            "probably_invalid": int(np.count_nonzero(~valid)),
        }
    return out


def analyse(
    session: Session,
    *,
    offline: OfflineRun | None,
    case: Case | None,
    limits: tuple[Limit, ...] = (),
    offline_problem: str = "",
) -> dict[str, Any]:
    """The report document of one session (see the module docstring)."""
    metrics: dict[str, float | None] = {}
    doc: dict[str, Any] = {"ornav_validate": REPORT_VERSION}
    digest = hashlib.sha256()
    with session.path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    doc["recording"] = {
        "path": str(session.path),
        "name": session.path.name,
        "sha256": digest.hexdigest(),
        "bytes": session.path.stat().st_size,
        "kind": session.kind,
        "start_wall": session.wall_start.isoformat() if session.wall_start else None,
        "duration_s": session.duration_s,
        "messages": session.messages,
        "partial": session.partial,
        "problems": session.problems,
        "launch_file": session.launch_path or None,
    }
    metrics["recording.partial"] = float(session.partial)
    metrics["recording.duration_s"] = session.duration_s

    # tracking: per tool
    tracking: dict[str, Any] = {}
    for name, track in session.tools.items():
        t = session.seconds(track.t_sensor_ns)
        figures = tool_figures(t, track.ok, track.T_tracker_from_tool[:, :3, 3])
        runs = episodes(t, ["tracked" if ok else "lost" for ok in track.ok])
        tracking[name] = {
            "samples": figures.samples,
            "visible_fraction": figures.visible_fraction,
            "dropouts": figures.dropouts,
            "longest_gap_s": figures.longest_gap_s,
            "rate_hz": figures.rate_hz,
            "jitter_rms_mm": figures.jitter_rms_mm,
            "static_windows": figures.static_windows,
            "episodes": _episodes_json(runs),
        }
        for key in ("visible_fraction", "rate_hz", "jitter_rms_mm", "longest_gap_s"):
            metrics[f"tracking.{name}.{key}"] = _num(tracking[name][key])
    doc["tracking"] = tracking

    # latency per hop
    hops = _hops(session)
    doc["latency"] = {
        name: {"summary_ms": summary_ms(v), "cdf_ms": cdf(v)} for name, v in hops.items()
    }
    for name, v in hops.items():
        s = summary_ms(v)
        for key in ("p50", "p90", "p99", "max"):
            metrics[f"latency.{name}_ms.{key}"] = _num(s[key])

    # navigation status and overlay timelines
    overlay: dict[str, Any] = {}
    if session.nav:
        t = session.seconds(session.nav["t_sensor_ns"])
        runs = episodes(t, session.nav["status"])
        overlay["nav_episodes"] = _episodes_json(runs)
        overlay["nav_entries"] = dict(Counter(r.state for r in runs))
        overlay["nav_time_s"] = time_in_state_s(runs)
        metrics["navigation.reference_lost_episodes"] = count_entries(runs, "REFERENCE_LOST")
        metrics["navigation.stale_episodes"] = count_entries(runs, "STALE")
        keep = _thin(len(t))
        distances = session.nav["target_distances_mm"]
        overlay["target_distance_series"] = {
            "t_s": t[keep].tolist(),
            "names": list(session.nav["target_names"]),
            "distance_mm": [
                [_num(v) for v in distances[keep, j]] for j in range(distances.shape[1])
            ],
        }
    if session.scene:
        t = session.seconds(session.scene["t_sensor_ns"])
        states = session.scene["overlay"]
        runs = episodes(t, states)
        age = session.scene["age_ms"]
        current = np.array([s == "CURRENT" for s in states])
        overlay["overlay_episodes"] = _episodes_json(runs)
        overlay["overlay_entries"] = dict(Counter(r.state for r in runs))
        keep = _thin(len(t))
        overlay["age_series"] = {"t_s": t[keep].tolist(), "age_ms": age[keep].tolist()}
        max_current_age = float(age[current].max()) if current.any() else None
        overlay["current_max_age_ms"] = max_current_age
        metrics["overlay.current_max_age_ms"] = max_current_age
        metrics["overlay.current_fraction"] = float(current.mean())
        metrics["overlay.stale_episodes"] = count_entries(runs, "STALE")
        metrics["overlay.hidden_episodes"] = count_entries(runs, "HIDDEN")
    doc["overlay"] = overlay
    doc["alerts"] = [
        {
            "t_s": float(session.seconds(t)),
            "severity": a.severity.value,
            "code": a.code,
            "text": a.text,
        }
        for t, a in session.alerts
    ]

    # registration: history, the accepted one, the offline re-run
    registration = _registration_json(session)
    acc = registration["accepted"]
    metrics["registration.accepted"] = 1.0 if acc else 0.0
    if acc:
        metrics["registration.fre_mm"] = acc["fre_mm"]
        metrics["registration.n_fiducials"] = acc["n_fiducials"]
        for key in ("predicted_tre_mm", "true_tre_mm"):
            values = [v for v in acc[key].values() if v is not None]
            metrics[f"registration.{key}.max"] = max(values) if values else None
            metrics[f"registration.{key}.mean"] = float(np.mean(values)) if values else None
    registration["offline"] = offline.to_json() if offline is not None else None
    registration["offline_problem"] = offline_problem
    if offline is not None:
        for method in offline.methods:
            m = method.to_json()
            prefix = f"offline.{method.method}"
            metrics[f"{prefix}.ran"] = 1.0 if m["ran"] else 0.0
            if not m["ran"]:
                continue
            metrics[f"{prefix}.fre_mm"] = _num(m["fre_mm"])
            true = [v for v in m["true_tre_mm"].values() if v is not None]
            metrics[f"{prefix}.true_tre_mm.max"] = max(true) if true else None
            shift = list(m["target_shift_mm"].values())
            metrics[f"{prefix}.target_shift_mm.max"] = max(shift) if shift else None
        touched = offline.target_touch_error_mm
        metrics["registration.target_touch_error_mm.max"] = (
            max(touched.values()) if touched else None
        )
    registration["error_map"] = _error_map(session, case)
    doc["registration"] = registration

    if session.kind == "plus":
        doc["plus"] = _plus_json(session)
        metrics["plus.projected_nearly_rigid"] = doc["plus"]["projected_nearly_rigid"]
        metrics["plus.refused_not_rigid"] = doc["plus"]["refused_not_rigid"]
        tf = doc["plus"].get("timestamp_filter")
        if tf:
            metrics["plus.timestamp_jitter_removed_ms.p99"] = tf["jitter_removed_ms"]["p99"]

    doc["metrics"] = {k: _num(v) for k, v in sorted(metrics.items())}
    verdicts = judge(limits, doc["metrics"])
    doc["verdicts"] = [v.to_json() for v in verdicts]
    outcome = overall(verdicts)
    doc["verdict"] = outcome.value if outcome else None
    return doc

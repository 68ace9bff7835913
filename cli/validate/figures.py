"""The report's figures: matplotlib, drawn from the report document alone, as SVG.

Static SVG rather than an interactive plotting library: it opens offline with nothing to
load, prints to PDF as vectors, and a report of hundreds of sessions stays small. Each
figure is a function of the document (``report.json``), so what the page shows is what the
JSON holds. Returns ``{figure id: (title, svg text)}``; a figure without data is left out.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

STATE_COLOURS = {
    "OK": "#2e9d4f",
    "CURRENT": "#2e9d4f",
    "tracked": "#2e9d4f",
    "STALE": "#e0a100",
    "UNREGISTERED": "#9aa0a6",
    "REFERENCE_LOST": "#d93025",
    "HIDDEN": "#d93025",
    "lost": "#d93025",
}
HOP_ORDER = (
    "sample_to_tracker",
    "sample_to_recorder",
    "sample_to_nav",
    "sample_to_render",
    "sample_to_headset",
)
plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "figure.dpi": 100})


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _bands(ax: Any, row: float, runs: list[dict[str, Any]]) -> None:
    for run in runs:
        width = max(run["end_s"] - run["start_s"], 0.02)
        ax.broken_barh(
            [(run["start_s"], width)],
            (row - 0.35, 0.7),
            color=STATE_COLOURS.get(run["state"], "#5f6368"),
            linewidth=0,
        )


def timeline(doc: dict[str, Any]) -> Figure | None:
    """Navigation status, overlay state and each tool's tracking on one time axis."""
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    overlay = doc.get("overlay", {})
    if overlay.get("nav_episodes"):
        rows.append(("navigation", overlay["nav_episodes"]))
    if overlay.get("overlay_episodes"):
        rows.append(("overlay", overlay["overlay_episodes"]))
    for tool, figures in doc.get("tracking", {}).items():
        rows.append((tool, figures["episodes"]))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.3))
    for i, (_name, runs) in enumerate(rows):
        _bands(ax, len(rows) - 1 - i, runs)
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
    for event in doc.get("registration", {}).get("history", []):
        if event["state"] in ("accepted", "restored"):
            ax.axvline(event["t_s"], color="#1a73e8", linewidth=1.2)
            ax.annotate(
                f"{event['state']} ({event['method']})",
                (event["t_s"], len(rows) - 0.5),
                fontsize=7,
                color="#1a73e8",
                xytext=(2, 0),
                textcoords="offset points",
            )
    for alert in doc.get("alerts", []):
        ax.plot(alert["t_s"], -0.6, marker="v", color="#d93025", markersize=5)
    used = {run["state"] for _, runs in rows for run in runs}
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=STATE_COLOURS.get(s, "#5f6368")) for s in sorted(used)
    ]
    ax.legend(
        handles,
        sorted(used),
        ncol=6,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.25),
        frameon=False,
    )
    ax.set_ylim(-1, len(rows))
    ax.set_xlabel("session time (s)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def latency_cdf(doc: dict[str, Any]) -> Figure | None:
    """Latency per hop from the tracker sample, as cumulative distributions."""
    latency = doc.get("latency", {})
    hops = [h for h in HOP_ORDER if h in latency and latency[h]["cdf_ms"][0]]
    if not hops:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for hop in hops:
        x, y = latency[hop]["cdf_ms"]
        s = latency[hop]["summary_ms"]
        ax.step(
            x,
            y,
            where="post",
            label=f"{hop.replace('_', ' ')} (p50 {s['p50']:.2f}, p99 {s['p99']:.2f} ms)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("latency from the tracker sample (ms, log scale)")
    ax.set_ylabel("fraction of samples")
    ax.axhline(0.99, color="#5f6368", linewidth=0.6, linestyle=":")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def ages_and_distances(doc: dict[str, Any]) -> Figure | None:
    """The overlay's pose age when sent, and the tip's distance to each target."""
    overlay = doc.get("overlay", {})
    age = overlay.get("age_series")
    dist = overlay.get("target_distance_series")
    if not age and not dist:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True)
    if age:
        axes[0].plot(age["t_s"], age["age_ms"], linewidth=0.8, color="#1a73e8")
        axes[0].axhline(100, color="#e0a100", linestyle="--", linewidth=0.8, label="STALE 100 ms")
        axes[0].axhline(300, color="#d93025", linestyle="--", linewidth=0.8, label="HIDDEN 300 ms")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("pose age at render (ms)")
    if dist:
        for name, values in zip(dist["names"], dist["distance_mm"], strict=True):
            v = np.array([np.nan if x is None else x for x in values], dtype=float)
            axes[1].plot(dist["t_s"], v, linewidth=0.9, label=name)
        axes[1].legend(fontsize=7, loc="upper right")
    axes[1].set_ylabel("tip to target (mm)")
    axes[1].set_xlabel("session time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig


def registration_errors(doc: dict[str, Any]) -> Figure | None:
    """Each method's error at each target (predicted and, where known, true), and the
    fiducial residuals of the accepted registration and the offline points re-run."""
    reg = doc.get("registration", {})
    rows: list[tuple[str, dict[str, Any]]] = []
    if reg.get("accepted"):
        rows.append((f"accepted ({reg['accepted']['method']})", reg["accepted"]))
    for method in (reg.get("offline") or {}).get("methods", []):
        if method["ran"]:
            rows.append((f"offline {method['method']}", method))
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    targets = sorted({t for _, r in rows for t in r.get("predicted_tre_mm", {})})
    width = 0.8 / max(len(rows), 1)
    for k, (label, r) in enumerate(rows):
        xs = np.arange(len(targets)) + k * width
        pred = [r["predicted_tre_mm"].get(t) or 0 for t in targets]
        true = [r["true_tre_mm"].get(t) for t in targets]
        bars = axes[0].bar(xs, pred, width, alpha=0.45, label=f"{label}: predicted")
        if any(v is not None for v in true):
            axes[0].scatter(
                xs,
                [np.nan if v is None else v for v in true],
                marker="D",
                s=18,
                color=bars.patches[0].get_facecolor()[:3],
                label=f"{label}: true",
            )
    axes[0].set_xticks(
        np.arange(len(targets)) + width * (len(rows) - 1) / 2, targets, rotation=20, fontsize=7
    )
    axes[0].set_ylabel("TRE at target (mm)")
    axes[0].legend(fontsize=6)
    # fiducial labels as categories of our own (matplotlib guesses at "1", "2": numbers)
    order: list[str] = []
    for _label, r in rows:
        order += [f for f in r.get("fiducial_labels") or [] if f not in order]
    for label, r in rows:
        errors = [e for e in r.get("fiducial_errors_mm", []) if e is not None]
        labels = r.get("fiducial_labels") or []
        if errors and len(labels) == len(errors):
            axes[1].plot(
                [order.index(f) for f in labels],
                errors,
                marker="o",
                linewidth=0.8,
                label=f"{label} (FRE {r['fre_mm']:.3f} mm)",
            )
    axes[1].set_xticks(range(len(order)), order)
    axes[1].set_ylabel("fiducial residual (mm)")
    axes[1].tick_params(axis="x", labelsize=7, rotation=20)
    axes[1].legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig


def error_map(doc: dict[str, Any]) -> Figure | None:
    """Predicted TRE over the organ (eq. 46, the accepted fiducials), two projections."""
    emap = doc.get("registration", {}).get("error_map")
    if not emap:
        return None
    v = np.array(emap["vertices_mm"])
    tre = np.array(emap["predicted_tre_mm"])
    fid = np.array(emap["fiducials_mm"]).reshape(-1, 3)
    tgt = np.array(emap["targets_mm"]).reshape(-1, 3)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, (i, j, name) in zip(
        axes, ((0, 1, "axial (L-P)"), (0, 2, "coronal (L-S)")), strict=True
    ):
        order = np.argsort(v[:, 3 - i - j])  # far side first
        sc = ax.scatter(
            v[order, i], v[order, j], c=tre[order], s=3, cmap="viridis", rasterized=True
        )
        ax.scatter(fid[:, i], fid[:, j], marker="^", color="#d93025", s=28, label="fiducials")
        if len(tgt):
            ax.scatter(tgt[:, i], tgt[:, j], marker="x", color="black", s=30, label="targets")
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("mm")
    axes[0].legend(fontsize=7, loc="best")
    fig.colorbar(sc, ax=axes, label=f"predicted TRE (mm), FLE {emap['fle_mm']:.2f} mm")
    return fig


def plus_timestamps(doc: dict[str, Any]) -> Figure | None:
    """PLUS's filtered minus unfiltered timestamps about their median: the jitter removed."""
    tf = (doc.get("plus") or {}).get("timestamp_filter")
    if not tf or not tf["residual_cdf_ms"][0]:
        return None
    fig, ax = plt.subplots(figsize=(9, 2.8))
    x, y = tf["residual_cdf_ms"]
    ax.step(x, y, where="post")
    ax.set_xlabel(f"filtered - unfiltered timestamp - {tf['offset_ms']:.1f} ms (ms)")
    ax.set_ylabel("fraction of frames")
    ax.grid(alpha=0.3)
    return fig


FIGURES: dict[str, tuple[str, Callable[[dict[str, Any]], Figure | None]]] = {
    "timeline": ("Timeline: navigation, overlay and tracking", timeline),
    "latency": ("Latency per hop", latency_cdf),
    "ages": ("Pose age and distance to target", ages_and_distances),
    "registration": ("Registration accuracy by method", registration_errors),
    "error_map": ("Predicted error over the organ", error_map),
    "plus_timestamps": ("PLUS timestamp filtering", plus_timestamps),
}


def draw(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Every figure the document has data for: ``{id: (title, svg)}``."""
    out = {}
    for key, (title, make) in FIGURES.items():
        fig = make(doc)
        if fig is not None:
            out[key] = (title, _svg(fig))
    return out

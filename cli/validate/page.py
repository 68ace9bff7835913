"""The report as one self-contained HTML file, and the study page over many reports.

Self-contained: styles inline, figures as SVG data URIs (each image keeps its own ids, so
several matplotlib SVGs never clash), no script, no network: it opens offline, from a USB
stick or an e-mail, and prints to PDF cleanly (figures never split across pages). The
study page's table sorts by a click on a column (a few lines of inline script; without
script it is still a table with links).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from nav.runtime.recording import ornav_version

STYLE = """
body { font-family: 'DejaVu Sans', Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1000px; color: #202124; font-size: 13px; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px;
     border-bottom: 1px solid #dadce0; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #dadce0;
        padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.banner { padding: 10px 14px; border-radius: 4px; font-weight: bold; margin: 10px 0; }
.PASS { background: #e6f4ea; color: #137333; } .FAIL { background: #fce8e6; color: #a50e0e; }
.NO_DATA, .partial { background: #fef7e0; color: #8d5b00; }
.none { background: #f1f3f4; color: #3c4043; }
figure { margin: 16px 0; break-inside: avoid; page-break-inside: avoid; }
figure img { width: 100%; } figcaption { font-weight: bold; margin-bottom: 4px; }
.muted { color: #5f6368; } code { font-size: 12px; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.{digits}f}"
    return _e(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], *, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, int | float) and not isinstance(cell, bool)
            cells.append(
                f'<td class="num">{_fmt(cell)}</td>' if numeric else f"<td>{_fmt(cell)}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><tr>{head}</tr>{"".join(body)}</table>'


def _figure(key: str, title: str, svg: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (
        f'<figure data-figure="{_e(key)}"><figcaption>{_e(title)}</figcaption>'
        f'<img alt="{_e(title)}" src="data:image/svg+xml;base64,{data}"></figure>'
    )


def _verdict_section(doc: Mapping[str, Any]) -> str:
    verdict = doc.get("verdict")
    if verdict is None:
        return '<div class="banner none">No limits given: figures only (--limits FILE)</div>'
    rows = [
        (v["outcome"], v["label"], v["value"], v["min"], v["max"], v["metric"])
        for v in doc["verdicts"]
    ]
    return f'<div class="banner {verdict}" id="verdict">Verdict: {verdict}</div>' + _table(
        ("outcome", "limit", "value", "min", "max", "metric"), rows
    )


def report_html(doc: Mapping[str, Any], figures: Mapping[str, tuple[str, str]]) -> str:
    """The whole report page of one session."""
    rec = doc["recording"]
    reg = doc.get("registration", {})
    parts = [f"<h1>ornav validation report: {_e(rec['name'])}</h1>"]
    parts.append(
        f'<p class="muted">{_e(rec["kind"])} recording, {_fmt(rec["duration_s"], 1)} s, '
        f"{rec['messages']} messages, started {_e(rec['start_wall'] or 'unknown')}</p>"
    )
    if rec["partial"] or rec["problems"]:
        cls = "partial" if rec["partial"] else "none"
        what = "PARTIAL: reported up to the damage" if rec["partial"] else "Notes"
        items = "".join(f"<li>{_e(p)}</li>" for p in rec["problems"])
        parts.append(f'<div class="banner {cls}" id="partial">{what}<ul>{items}</ul></div>')
    parts.append("<h2>Verdict</h2>" + _verdict_section(doc))

    parts.append("<h2>Registration</h2>")
    acc = reg.get("accepted")
    if acc:
        parts.append(
            _table(
                (
                    "method",
                    "fiducials",
                    "FRE (mm)",
                    "FLE (mm)",
                    "target",
                    "predicted TRE (mm)",
                    "true TRE (mm)",
                ),
                [
                    (
                        acc["method"],
                        acc["n_fiducials"],
                        acc["fre_mm"],
                        acc["fle_mm"],
                        t,
                        acc["predicted_tre_mm"][t],
                        acc["true_tre_mm"].get(t),
                    )
                    for t in acc["predicted_tre_mm"]
                ]
                or [
                    (
                        acc["method"],
                        acc["n_fiducials"],
                        acc["fre_mm"],
                        acc["fle_mm"],
                        "",
                        None,
                        None,
                    )
                ],
            )
        )
    else:
        parts.append("<p>No registration was accepted in this session.</p>")
    history = reg.get("history", [])
    if history:
        parts.append(
            "<p>History (every proposal and decision):</p>"
            + _table(
                ("t (s)", "state", "method", "fiducials", "FRE (mm)", "id"),
                [
                    (
                        h["t_s"],
                        h["state"],
                        h["method"],
                        h["n_fiducials"],
                        h["fre_mm"],
                        str(h["registration_id"]),
                    )
                    for h in history
                ],
            )
        )
    offline = reg.get("offline")
    if offline:
        parts.append(
            f"<p>Re-run offline from the recorded touches ({offline['dwells']} pointer rests; "
            f"{_e(offline['source'])}):</p>"
            + _table(
                (
                    "method",
                    "ran",
                    "points",
                    "FRE / residual (mm)",
                    "max true TRE (mm)",
                    "max shift vs accepted (mm)",
                    "why not",
                ),
                [
                    (
                        m["method"],
                        m["ran"],
                        m["n_points"],
                        m.get("fre_mm"),
                        max(
                            (v for v in m.get("true_tre_mm", {}).values() if v is not None),
                            default=None,
                        ),
                        max(m["target_shift_mm"].values(), default=None),
                        m["reason"],
                    )
                    for m in offline["methods"]
                ],
            )
        )
        touched = offline.get("target_touch_error_mm") or {}
        if touched:
            parts.append(
                "<p>Targets the pointer rested on (measured error: pointer on target vs the "
                "accepted registration):</p>"
                + _table(("target", "error (mm)"), sorted(touched.items()))
            )
    elif reg.get("offline_problem"):
        parts.append(f"<p>Not re-run offline: {_e(reg['offline_problem'])}</p>")

    latency = doc.get("latency", {})
    if latency:
        parts.append("<h2>Latency and pose age</h2>")
        parts.append(
            _table(
                (
                    "hop (from the tracker sample)",
                    "n",
                    "p50 (ms)",
                    "p90 (ms)",
                    "p99 (ms)",
                    "max (ms)",
                ),
                [
                    (hop.replace("_", " "), s["n"], s["p50"], s["p90"], s["p99"], s["max"])
                    for hop, s in ((h, v["summary_ms"]) for h, v in latency.items())
                ],
            )
        )
    overlay = doc.get("overlay", {})
    if overlay:
        parts.append("<h2>Overlay safety</h2>")
        rows = [
            ("navigation status entries", overlay.get("nav_entries")),
            ("overlay state entries", overlay.get("overlay_entries")),
            ("oldest CURRENT overlay sent (ms)", overlay.get("current_max_age_ms")),
        ]
        parts.append(
            _table(
                ("", "value"),
                [
                    (
                        k,
                        v
                        if not isinstance(v, dict)
                        else ", ".join(f"{a} {b}" for a, b in v.items()),
                    )
                    for k, v in rows
                ],
            )
        )
    tracking = doc.get("tracking", {})
    if tracking:
        parts.append("<h2>Tracking</h2>")
        parts.append(
            _table(
                (
                    "tool",
                    "samples",
                    "visible",
                    "dropouts",
                    "longest gap (s)",
                    "rate (Hz)",
                    "jitter RMS (mm, still)",
                    "still windows",
                ),
                [
                    (
                        t,
                        f["samples"],
                        f["visible_fraction"],
                        f["dropouts"],
                        f["longest_gap_s"],
                        f["rate_hz"],
                        f["jitter_rms_mm"],
                        f["static_windows"],
                    )
                    for t, f in tracking.items()
                ],
            )
        )
    plus = doc.get("plus")
    if plus:
        parts.append("<h2>PLUS file</h2>")
        rows2: list[tuple[str, Any]] = [
            ("nearly rigid matrices projected (kept OK)", plus["projected_nearly_rigid"]),
            ("matrices refused (not a pose)", plus["refused_not_rigid"]),
            ("largest projected deviation", plus["max_projected_deviation"]),
        ]
        tf = plus.get("timestamp_filter")
        if tf:
            rows2 += [
                ("Timestamp - UnfilteredTimestamp, median (ms)", tf["offset_ms"]),
                (
                    "jitter the filter removed, p50 / p99 (ms)",
                    f"{_fmt(tf['jitter_removed_ms']['p50'])} / "
                    f"{_fmt(tf['jitter_removed_ms']['p99'])}",
                ),
                (
                    "our filter vs the file's, p99 / max (ms)",
                    f"{_fmt(tf['ours_vs_file_ms']['p99'])} / {_fmt(tf['ours_vs_file_ms']['max'])}",
                ),
                ("frames our filter calls probably invalid", tf["probably_invalid"]),
            ]
        parts.append(_table(("", "value"), rows2))
    if doc.get("alerts"):
        parts.append(
            "<h2>Alerts</h2>"
            + _table(
                ("t (s)", "severity", "code", "text"),
                [(a["t_s"], a["severity"], a["code"], a["text"]) for a in doc["alerts"]],
            )
        )
    parts.append("<h2>Figures</h2>")
    parts += [_figure(key, title, svg) for key, (title, svg) in figures.items()]
    parts.append(
        "<h2>Provenance</h2>"
        + _table(
            ("", "value"),
            [
                ("recording", rec["path"]),
                ("sha256", rec["sha256"]),
                ("bytes", rec["bytes"]),
                ("launch file (as recorded)", rec["launch_file"]),
                (
                    "report",
                    f"ornav {ornav_version()} validate, report version {doc['ornav_validate']}",
                ),
                ("generated", datetime.now(UTC).isoformat(timespec="seconds")),
            ],
        )
    )
    title = f"ornav validation: {_e(rec['name'])}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


STUDY_SCRIPT = """
document.querySelectorAll('th[data-sort]').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const key = (r) => { const c = r.cells[col]; const v = c ? c.dataset.value : undefined;
    return v === undefined || v === '' ? null : (isNaN(+v) ? v : +v); };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); });
  rows.forEach((r) => body.appendChild(r));
}));
"""

STUDY_COLUMNS = (
    ("verdict", "verdict"),
    ("duration (s)", "recording.duration_s"),
    ("FRE (mm)", "registration.fre_mm"),
    ("max true TRE (mm)", "registration.true_tre_mm.max"),
    ("max predicted TRE (mm)", "registration.predicted_tre_mm.max"),
    ("headset p99 (ms)", "latency.sample_to_headset_ms.p99"),
    ("render p99 (ms)", "latency.sample_to_render_ms.p99"),
    ("oldest CURRENT (ms)", "overlay.current_max_age_ms"),
    ("reference lost", "navigation.reference_lost_episodes"),
)


def study_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per session: ``name``, ``href`` (its report, relative), ``doc`` (report
    document) or ``error`` (one line: the session that could not be read)."""
    head = '<th data-sort="1">session</th>' + "".join(
        f'<th data-sort="1">{_e(title)}</th>' for title, _ in STUDY_COLUMNS
    )
    body = []
    for row in rows:
        cells = [
            f'<td data-value="{_e(row["name"])}">'
            + (
                f'<a href="{_e(row["href"])}">{_e(row["name"])}</a>'
                if row.get("href")
                else _e(row["name"])
            )
            + "</td>"
        ]
        if row.get("error"):
            cells.append(
                f'<td class="FAIL" data-value="ERROR" colspan="{len(STUDY_COLUMNS)}">'
                f"not reported: {_e(row['error'])}</td>"
            )
        else:
            doc = row["doc"]
            for _title, key in STUDY_COLUMNS:
                if key == "verdict":
                    v = doc.get("verdict") or "—"
                    partial = " (partial)" if doc["recording"]["partial"] else ""
                    cells.append(f'<td class="{_e(v)}" data-value="{_e(v)}">{_e(v)}{partial}</td>')
                    continue
                value = doc["metrics"].get(key)
                data = "" if value is None else repr(float(value))
                cells.append(f'<td class="num" data-value="{data}">{_fmt(value)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    failed = sum(1 for r in rows if r.get("error"))
    verdicts = [r["doc"].get("verdict") for r in rows if not r.get("error")]
    counts = ", ".join(f"{v} {verdicts.count(v)}" for v in sorted({str(v) for v in verdicts}))
    summary = f"{len(rows)} session(s): {counts}" + (f"; {failed} not readable" if failed else "")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>ornav validation study</title><style>{STYLE} th[data-sort] "
        "{ cursor: pointer; }</style></head><body><h1>ornav validation study</h1>"
        f'<p id="study-summary">{_e(summary)}. Click a column to sort.</p>'
        f'<table id="study"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f"<script>{STUDY_SCRIPT}</script></body></html>\n"
    )

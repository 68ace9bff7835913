"""One recording into its report folder, and many on Dask into a study.

``validate_one`` is the unit of work: read, re-run, analyse, draw, write ``report.json``
and ``index.html`` into its folder, and return a small row for the study page (never
raises for a bad recording: its one-line error is the row). ``run_study`` fans the
recordings out on a Dask cluster: an embedded ``LocalCluster`` (one process per worker,
one thread each: the work is CPU-bound numpy and holds the GIL) by default, or an existing
scheduler by address, whose workers must see the same paths (a shared file system).
Results come back as they finish, each one reported to ``on_done`` (the progress bar).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.validate.analysis import analyse
from cli.validate.figures import draw
from cli.validate.offline import OfflineRun, SetupError, rerun, setup_for
from cli.validate.page import report_html, study_html
from cli.validate.sources import SourceError, read_session
from nav.runtime.private_files import make_private_dir, write_private_text
from nav.runtime.recording import RecordingError
from nav.validation.verdict import Limit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """What every recording of one run shares (see ``ornav validate --help``)."""

    limits: tuple[Limit, ...] = ()
    case_dir: str | None = None
    tip_file: str | None = None
    phantom_file: str | None = None
    pointer_tool: str | None = None
    reference_tool: str | None = None
    rerun: bool = True


@dataclass
class Row:
    """One recording's outcome for the study page and the exit code."""

    name: str
    path: str
    out_dir: str
    error: str = ""
    verdict: str | None = None
    partial: bool = False
    doc: dict[str, Any] = field(default_factory=dict)  # recording + metrics + verdict


def validate_one(path: str, out_dir: str, options: Options) -> Row:
    """Report one recording into ``out_dir`` (see the module docstring)."""
    row = Row(name=Path(out_dir).name, path=path, out_dir=out_dir)
    try:
        session = read_session(path)
    except (SourceError, RecordingError, OSError) as error:
        row.error = str(error).splitlines()[0] if str(error) else type(error).__name__
        return row
    if session.messages == 0:  # an empty or headless file: nothing to report on
        detail = f" ({session.problems[0]})" if session.problems else ""
        row.error = f"{path}: no readable message{detail}"
        return row
    offline: OfflineRun | None = None
    problem = ""
    case = None
    if options.rerun:
        try:
            setup = setup_for(
                session,
                case_dir=options.case_dir,
                tip_file=options.tip_file,
                phantom_file=options.phantom_file,
                pointer_tool=options.pointer_tool,
                reference_tool=options.reference_tool,
            )
            case = setup.case
            offline = rerun(session, setup)
        except SetupError as error:
            problem = str(error)
    doc = analyse(
        session, offline=offline, case=case, limits=options.limits, offline_problem=problem
    )
    folder = Path(out_dir)
    make_private_dir(folder)
    write_private_text(folder / "report.json", json.dumps(doc, indent=1) + "\n")
    write_private_text(folder / "index.html", report_html(doc, draw(doc)))
    row.verdict = doc["verdict"]
    row.partial = session.partial
    row.doc = {k: doc[k] for k in ("recording", "metrics", "verdict", "verdicts")}
    return row


def report_folders(paths: Sequence[Path], out: Path) -> list[Path]:
    """A distinct folder under ``out`` for each recording, named by its path relative to
    the recordings' common parent (two ``session.mcap`` of two runs do not collide)."""
    resolved = [p.resolve() for p in paths]
    parents = [p.parent for p in resolved]
    common = Path(*Path(parents[0]).parts)
    for parent in parents[1:]:
        while not parent.is_relative_to(common):
            common = common.parent
    names: list[Path] = []
    seen: set[str] = set()
    for p in resolved:
        rel = p.relative_to(common).as_posix()
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in rel.replace("/", "__"))
        base, k = name, 1
        while name in seen:
            k += 1
            name = f"{base}-{k}"
        seen.add(name)
        names.append(out / name)
    return names


def run_study(
    paths: Sequence[Path],
    out: Path,
    options: Options,
    *,
    workers: int,
    scheduler: str | None = None,
    on_done: Callable[[Row], None] = lambda _row: None,
) -> list[Row]:
    """Every recording on Dask, then the study page ``out/index.html`` and ``study.json``."""
    from distributed import Client, LocalCluster, as_completed

    folders = report_folders(paths, out)
    make_private_dir(out)
    if scheduler:
        client = Client(scheduler, timeout="5s")
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    rows: dict[str, Row] = {}
    try:
        futures = {
            client.submit(validate_one, str(p), str(f), options, pure=False): (p, f)
            for p, f in zip(paths, folders, strict=True)
        }
        for future in as_completed(futures):
            p, f = futures[future]
            try:
                row = future.result()
            except Exception as error:  # a worker died or the task raised: that row fails
                row = Row(name=f.name, path=str(p), out_dir=str(f), error=_one_line(error))
            rows[str(f)] = row
            on_done(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [rows[str(f)] for f in folders]
    write_study(ordered, out)
    return ordered


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def write_study(rows: Sequence[Row], out: Path) -> None:
    """``out/index.html`` (sortable, links to each report) and ``out/study.json``."""
    page_rows = [
        {
            "name": r.name,
            "href": None if r.error else f"{Path(r.out_dir).name}/index.html",
            "doc": r.doc,
            "error": r.error,
        }
        for r in rows
    ]
    write_private_text(out / "index.html", study_html(page_rows))
    study = [
        {
            "name": r.name,
            "recording": r.path,
            "report": r.out_dir,
            "error": r.error or None,
            "verdict": r.verdict,
            "partial": r.partial,
            "metrics": r.doc.get("metrics"),
        }
        for r in rows
    ]
    write_private_text(out / "study.json", json.dumps(study, indent=1) + "\n")

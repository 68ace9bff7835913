"""``ornav validate RECORDING... --out DIR``: reports a validation engineer signs.

RECORDING: ornav session files (``.mcap``), PLUS sequence files (``.mha``, ``.seq.nrrd``),
folders (searched recursively for both) or glob patterns (``'runs/**/*.mcap'``, quoted so
the shell leaves them to us). One recording: its report in DIR (``index.html``,
``report.json``). Several: one folder per recording in DIR, the study page
``DIR/index.html`` and ``DIR/study.json``; they fan out on Dask (``--workers N``, an
embedded local cluster; ``--scheduler tcp://HOST:8786`` for an existing one).

Exit code: 0 when every recording was reported and none failed its limits; 1 when a
recording could not be read or a verdict is FAIL or NO_DATA (never a pass by omission);
2 for bad input (one line: a missing recording, a bad limits, tip or phantom file).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.errors import UserError
from cli.validate.sources import is_plus_file
from nav.validation.verdict import LimitsError, read_limits

if TYPE_CHECKING:
    from cli.validate.study import Row

log = logging.getLogger(__name__)
MAX_RECORDINGS = 100_000
MAX_WORKERS = 256


def _is_recording(path: Path) -> bool:
    return path.suffix.lower() == ".mcap" or is_plus_file(path)


def expand(arguments: list[str]) -> list[Path]:
    """Files, folders (recursive) and glob patterns -> the recordings, in order, once each."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and _is_recording(p))
            if not matches:
                raise UserError(f"{argument}: no .mcap or PLUS sequence file in this folder")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(argument):
            matches = sorted(Path(p) for p in glob.glob(argument, recursive=True))
            matches = [p for p in matches if p.is_file() and _is_recording(p)]
            if not matches:
                raise UserError(f"{argument}: matches no recording")
        else:
            raise UserError(f"{argument}: no such file or folder")
        found += matches
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if len(unique) > MAX_RECORDINGS:
        raise UserError(f"{len(unique)} recordings: at most {MAX_RECORDINGS} in one study")
    return unique


def _row_line(row: Row) -> str:
    if row.error:
        return f"{row.name}: NOT REPORTED: {row.error}"
    partial = " (partial: reported up to the damage)" if row.partial else ""
    return f"{row.name}: {row.verdict or 'no limits'}{partial}"


def run(args: argparse.Namespace) -> int:
    # Imported here: matplotlib, open3d and Dask load only for this verb, not for every
    # `ornav` command (a start-up of seconds otherwise).
    from cli.validate.study import Options, run_study, validate_one

    try:
        limits = read_limits(args.limits) if args.limits else ()
    except LimitsError as error:
        raise UserError(str(error)) from None
    for option in ("tip", "phantom", "case"):
        value = getattr(args, option)
        if value and not Path(value).exists():
            raise UserError(f"--{option} {value}: no such file or folder")
    if not 0 <= args.workers <= MAX_WORKERS:
        raise UserError(f"--workers {args.workers}: expected 0 (one per core) to {MAX_WORKERS}")
    paths = expand(args.recordings)
    options = Options(
        limits=limits,
        case_dir=args.case,
        tip_file=args.tip,
        phantom_file=args.phantom,
        pointer_tool=args.pointer_tool,
        reference_tool=args.reference_tool,
        rerun=not args.no_rerun,
    )
    out = Path(args.out)
    console = Console(stderr=True)
    started = time.perf_counter()
    if len(paths) == 1 and not args.scheduler:
        console.print(f"validating {paths[0]} ...")
        rows = [validate_one(str(paths[0]), str(out), options)]
    else:
        workers = args.workers or min(len(paths), os.cpu_count() or 1)
        where = args.scheduler or f"a local Dask cluster of {workers} worker(s)"
        console.print(f"validating {len(paths)} recordings on {where} ...")
        show_bar = sys.stderr.isatty() and not args.no_progress
        with Progress(
            TextColumn("[bold]validate"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            disable=not show_bar,
        ) as progress:
            task = progress.add_task("", total=len(paths))

            def done(row: Row) -> None:
                progress.update(task, advance=1, description=row.name)
                if not show_bar:
                    log.info("%s", _row_line(row))

            try:
                rows = run_study(
                    paths, out, options, workers=workers, scheduler=args.scheduler, on_done=done
                )
            except (OSError, TimeoutError, ValueError) as error:
                if not args.scheduler:
                    raise
                raise UserError(f"--scheduler {args.scheduler}: cannot use it: {error}") from None
    for row in rows:
        console.print(_row_line(row), highlight=False)
    elapsed = time.perf_counter() - started
    index = out / "index.html"
    console.print(f"{len(rows)} report(s) in {elapsed:.1f} s: {index}", highlight=False)
    bad = [r for r in rows if r.error or r.verdict in ("FAIL", "NO_DATA")]
    return 1 if bad else 0


def add_validate_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "validate",
        help="recorded sessions into validation reports (one, or many on Dask)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recordings", nargs="+", metavar="RECORDING")
    parser.add_argument("--out", required=True, help="the report folder (created)")
    parser.add_argument("--limits", help="a limits TOML: verdict lines, PASS/FAIL each")
    parser.add_argument("--case", help="the case folder (default: the one the session ran)")
    parser.add_argument("--tip", help="tip calibration: ornav pivot TOML or PLUS device-set XML")
    parser.add_argument("--phantom", help="PLUS device-set XML with the phantom's landmarks")
    parser.add_argument("--pointer-tool", help="pointer tool name (default: the session's)")
    parser.add_argument("--reference-tool", help="reference tool name (default: reference)")
    parser.add_argument("--no-rerun", action="store_true", help="skip the offline re-run")
    parser.add_argument("--workers", type=int, default=0, help="local Dask workers")
    parser.add_argument("--scheduler", help="an existing Dask scheduler, tcp://HOST:8786")
    parser.add_argument("--no-progress", action="store_true", help="log lines, no bar")
    parser.set_defaults(func=run)

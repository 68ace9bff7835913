"""``ornav case``: write the phantom case, check a case bundle.

``ornav case phantom OUT_DIR`` writes the deterministic phantom (``nav.phantom``);
``ornav case check DIR`` loads a case (``nav.case``) and prints what is in it. A broken
case is one line ``ornav: <file>: <problem>`` and exit code 2 (``CaseError`` re-raised
as ``cli.errors.UserError``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.errors import UserError
from nav.case import CaseError, Markups, bounds_lps, load_case
from nav.phantom import SHIPPED_PHANTOM_DIR, write_phantom_case

log = logging.getLogger("ornav.case")


def cmd_phantom(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out}: not empty; --force overwrites the phantom's files in it")
    written = write_phantom_case(out)
    size = sum(path.stat().st_size for path in written)
    log.info("wrote the phantom case to %s: %d files, %.0f kB", out, len(written), size / 1e3)
    return 0


def _markups_table(title: str, markups: Markups) -> Table:
    table = Table(title=f"{title}: {len(markups)}", title_justify="left")
    for column in ("label", "L mm", "P mm", "S mm"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, point in zip(markups.labels, markups.points_lps, strict=True):
        table.add_row(label, *(f"{c:.2f}" for c in point))
    return table


def cmd_check(args: argparse.Namespace) -> int:
    try:
        case = load_case(args.case_dir)
    except CaseError as error:
        raise UserError(str(error)) from None
    lo, hi = bounds_lps(case)
    table = Table(title=f"case {case.name!r} ({case.root})", title_justify="left")
    for column in ("structure", "role", "critical", "triangles", "closed", "size mm (L P S)"):
        table.add_column(column, justify="right" if column == "triangles" else "left")
    for s in case.structures:
        extents = " x ".join(f"{e:.1f}" for e in s.mesh.extents)
        table.add_row(
            s.name,
            s.role,
            "yes" if s.critical else "",
            str(len(s.mesh.faces)),
            "yes" if s.mesh.is_watertight else "no",
            extents,
        )
    table.caption = (
        f"bounding box LPS mm: [{lo[0]:.1f}, {lo[1]:.1f}, {lo[2]:.1f}] .. "
        f"[{hi[0]:.1f}, {hi[1]:.1f}, {hi[2]:.1f}]"
    )
    console = Console(width=120)
    console.print(table)
    console.print(_markups_table("fiducials", case.fiducials))
    console.print(_markups_table("targets", case.targets))
    return 0


def add_case_parser(commands: Any) -> None:
    """Register ``ornav case phantom|check`` on ``commands`` (an argparse subparsers object)."""
    case = commands.add_parser(
        "case",
        help="write the phantom case, check a case bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = case.add_subparsers(dest="case_command", required=True, metavar="ACTION")

    phantom = actions.add_parser("phantom", help="write the deterministic phantom case")
    phantom.add_argument("out_dir", help=f"output folder (the shipped copy: {SHIPPED_PHANTOM_DIR})")
    phantom.add_argument(
        "--force", action="store_true", help="write into a non-empty folder, overwriting"
    )
    phantom.set_defaults(func=cmd_phantom)

    check = actions.add_parser("check", help="load a case, print its structures and markups")
    check.add_argument("case_dir", help="a case folder (holding case.toml)")
    check.set_defaults(func=cmd_check)

"""``ornav case``: write the phantom case, build a case from a CT, check a case bundle.

``ornav case phantom OUT_DIR`` writes the deterministic phantom (``nav.phantom``);
``ornav case build --image CT --labels SEG --structures liver=5,... --out CASE`` builds a
case from a CT (DICOM folder, NIfTI, NRRD) and its segmentation (``nav.case_build``) and
prints each mesh's checks (volume against voxels, Hausdorff distance to the label
boundary); ``ornav case view DIR`` serves the CT volume page (``render/web/volume``)
for it on localhost; ``ornav case check DIR`` loads a case (``nav.case``) and prints
what is in it.
A broken case or input is one line ``ornav: <file>: <problem>`` and exit code 2
(``CaseError``, ``BuildError`` re-raised as ``cli.errors.UserError``); a failed build
leaves no bundle.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from cli.errors import UserError
from nav.case import CaseError, Markups, bounds_lps, load_case
from nav.case_build.defaults import DEFAULT_SMOOTHING_ITERATIONS, DEFAULT_TRIANGLE_BUDGET
from nav.imaging.brick import BrickError
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
    if case.volume is not None:
        v = case.volume
        try:
            v.read()  # the brick's bytes: hash, gzip, size
        except BrickError as error:
            raise UserError(str(error)) from None
        spacing = " x ".join(f"{s:.3g}" for s in np.linalg.norm(v.T_image_from_ijk[:3, :3], axis=0))
        console.print(
            f"volume: {'x'.join(map(str, v.shape))} brick, {spacing} mm voxels, "
            f"{v.path.relative_to(case.root)} (sha256 {v.sha256[:12]}...)"
        )
    return 0


def _build_table(result: Any) -> Table:
    """The checks of a ``nav.case_build.build.BuildResult``."""
    table = Table(title=f"built {result.out}", title_justify="left")
    for column in (
        "structure", "triangles", "voxels", "mesh ml", "voxels ml", "volume", "smoothed",
        "Hausdorff mm", "p95 mm", "closed",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "structure" else "right")
    for name, r in result.reports.items():
        table.add_row(
            name,
            str(len(r.mesh.faces)),
            str(r.voxel_count),
            f"{r.mesh_volume_mm3 / 1e3:.2f}",
            f"{r.voxel_volume_mm3 / 1e3:.2f}",
            f"{100 * (r.volume_ratio - 1):+.1f} %",
            f"{100 * (r.smoothed_volume_mm3 / r.voxel_volume_mm3 - 1):+.1f} %",
            f"{r.hausdorff_mm:.2f}",
            f"{r.boundary_p95_mm:.2f}",
            "yes" if r.watertight else "no",
        )
    table.caption = f"segmentation {result.alignment}"
    return table


def cmd_build(args: argparse.Namespace) -> int:
    # Imported here: the meshing libraries (scikit-image, Open3D) are for this verb only.
    from nav.case_build.build import (
        BuildError,
        BuildSpec,
        build_case,
        parse_structures,
        read_label_names,
    )
    from nav.case_build.lesion import LesionSpec

    try:
        names = read_label_names(Path(args.labels_names)) if args.labels_names else {}
        if not names and args.labels.lower().endswith((".nrrd", ".nhdr")):
            from nav.imaging.nrrd import segment_names  # a .seg.nrrd names its segments

            names = {name: value for value, name in segment_names(args.labels).items()}
        lesions = tuple(LesionSpec.parse(text) for text in args.lesion)
        if args.triangle_budget < 100:
            raise BuildError(f"--triangle-budget {args.triangle_budget}: at least 100")
        if not 0 <= args.smoothing_iterations <= 200:
            raise BuildError(f"--smoothing-iterations {args.smoothing_iterations}: 0..200")
        spec = BuildSpec(
            image=Path(args.image),
            labels=Path(args.labels),
            structures=parse_structures(args.structures, names),
            out=Path(args.out),
            name=args.name or "",
            fiducials=Path(args.fiducials) if args.fiducials else None,
            lesions=lesions,
            triangle_budget=args.triangle_budget,
            smoothing_iterations=args.smoothing_iterations,
            keep_all_components=args.all_components,
            resample_labels=args.resample_labels,
            force=args.force,
        )
        result = build_case(spec, progress=log.info)
    except (BuildError, ValueError) as error:  # ImagingError is a ValueError
        raise UserError(str(error)) from None
    Console(width=120).print(_build_table(result))
    return 0


def view_handler(web_root: Path, case_dir: Path) -> type:
    """Static files from ``web_root``; ``/case/...`` from the case folder (nothing outside)."""
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(web_root), **kwargs)

        def translate_path(self, path: str) -> str:
            clean = path.split("?", 1)[0].split("#", 1)[0]
            if clean.startswith("/case/"):
                target = (case_dir / clean[len("/case/") :]).resolve()
                return str(target) if target.is_relative_to(case_dir) else "/nonexistent"
            return super().translate_path(path)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
            log.debug(format, *args)

    return Handler


def cmd_view(args: argparse.Namespace) -> int:
    import http.server

    case_dir = Path(args.case_dir).resolve()
    try:
        case = load_case(case_dir)
    except CaseError as error:
        raise UserError(str(error)) from None
    web_root = Path(__file__).resolve().parent.parent / "render" / "web"
    if not (web_root / "node_modules" / "three").is_dir():
        raise UserError(f"{web_root}/node_modules/three: missing; run make setup (npm ci)")
    try:
        server = http.server.ThreadingHTTPServer(
            (args.host, args.port), view_handler(web_root, case_dir)
        )
    except OSError as error:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    host, port = str(server.server_address[0]), int(server.server_address[1])
    # The URL is the one line a script or a user needs; it goes to stdout, flushed.
    print(f"http://{host}:{port}/volume/index.html?case=/case/", flush=True)
    log.info("serving case %r from %s; Ctrl-C stops", case.name, case_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_case_parser(commands: Any) -> None:
    """Register ``ornav case phantom|check`` on ``commands`` (an argparse subparsers object)."""
    case = commands.add_parser(
        "case",
        help="write the phantom case, build a case from a CT, check a case bundle",
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

    build = actions.add_parser(
        "build",
        help="a case bundle from a CT and its segmentation",
        description="Meshes each structure of the segmentation in the CT's frame (LPS mm), "
        "adds lesions and fiducials, stores the CT downsampled for rendering; atomic.",
    )
    build.add_argument("--image", required=True, help="the CT: a DICOM folder, .nii(.gz), .nrrd")
    build.add_argument(
        "--labels", required=True, help="its label map: .nii(.gz), .nrrd or .seg.nrrd"
    )
    build.add_argument(
        "--structures",
        required=True,
        help="NAME=LABEL[:ROLE],... e.g. liver=5,portal_vein=64 (a bare NAME is looked up in "
        "--labels-names; the role defaults from the name: vessel or organ)",
    )
    build.add_argument("--out", required=True, help="the case folder to write")
    build.add_argument(
        "--labels-names",
        help="labels.json naming the label numbers (a .seg.nrrd's own segment names otherwise)",
    )
    build.add_argument("--fiducials", help="fiducials (.mrk.json or .fcsv) in the CT's frame")
    build.add_argument(
        "--lesion",
        action="append",
        default=[],
        help="NAME=L,P,S:RADIUS_MM or NAME=inside:STRUCTURE:RADIUS_MM (repeatable)",
    )
    build.add_argument("--name", help="the case's name (default: the folder's)")
    build.add_argument(
        "--triangle-budget",
        type=int,
        default=DEFAULT_TRIANGLE_BUDGET,
        help="most triangles per structure (default %(default)d)",
    )
    build.add_argument(
        "--smoothing-iterations",
        type=int,
        default=DEFAULT_SMOOTHING_ITERATIONS,
        help="Taubin smoothing passes (default %(default)d)",
    )
    build.add_argument(
        "--all-components",
        action="store_true",
        help="keep every connected piece of organs too (default: the largest)",
    )
    build.add_argument(
        "--resample-labels",
        action="store_true",
        help="resample a segmentation on another grid onto the CT (nearest neighbour)",
    )
    build.add_argument("--force", action="store_true", help="replace a non-empty --out")
    build.set_defaults(func=cmd_build)

    view = actions.add_parser(
        "view", help="serve the CT volume page for a case on this machine (HTTP, localhost)"
    )
    view.add_argument("case_dir", help="a case folder (holding case.toml)")
    view.add_argument("--host", default="127.0.0.1", help="address (default %(default)s)")
    view.add_argument("--port", type=int, default=8000, help="0: any free port (default 8000)")
    view.set_defaults(func=cmd_view)

    check = actions.add_parser("check", help="load a case, print its structures and markups")
    check.add_argument("case_dir", help="a case folder (holding case.toml)")
    check.set_defaults(func=cmd_check)

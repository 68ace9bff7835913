"""``ornav calibrate``: pivot, spin, camera, hand-eye and temporal calibration from the CLI.

Each subcommand reads its input (files, or a running stack's tracker with ``--live``),
calls the pure algorithm in ``calibration/``, prints the result with its error figures,
and writes an ornav calibration file (``calibration.files``; default
``./<kind>-<YYYYmmdd-HHMMSS>.toml``), plus PLUS or OpenCV exports on request.

A refused calibration (too few poses, too little rotation, error above a limit), a bad
input file or an unreachable tracker is one line ``ornav: ...`` and exit code 2: the
errors are re-raised here as ``cli.errors.UserError``. Nothing is written for a refused
calibration.
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import inspect
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationError
from calibration.files import (
    PLUS_DATE_FORMAT,
    CalibrationFile,
    CalibrationFileError,
    OpenCVCamera,
    PlusTransform,
    matrix_dir_names,
    natural_key,
    plus_tip_transform,
    read_calibration,
    read_matrix_dir,
    read_tip_offset,
    write_calibration,
    write_opencv_camera,
    write_plus_transform,
)
from calibration.live import (
    LiveCollectionError,
    check_ipc_endpoint,
    collect_poses,
    live_pivot_estimate,
)
from calibration.pivot import (
    PivotResult,
    SpinResult,
    pivot_calibration,
    pivot_calibration_ransac,
    spin_calibration,
)
from calibration.temporal import temporal_calibration
from cli.errors import UserError
from nav.arrays import FloatArray
from nav.frames import is_valid_tool_name
from nav.runtime.launchfile import check_endpoint
from tracking.plus_sequence import PlusSequenceError, is_plus_path, open_plus_sequence

log = logging.getLogger("ornav.calibrate")

Command: TypeAlias = Callable[[argparse.Namespace], int]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_LIVE_SECONDS = 20.0


def _default(function: Callable[..., Any], name: str) -> Any:
    """An algorithm's own default for ``name``, so help text never drifts from the code."""
    return inspect.signature(function).parameters[name].default


def _gates(function: Callable[..., Any], **given: Any) -> dict[str, Any]:
    """Keyword arguments for ``function``: the given ones, else its defaults (None: none).

    The effective values go into the file's ``[input]`` table, so it records the limits
    the result passed, whether or not they were typed.
    """
    effective = {k: _default(function, k) if v is None else v for k, v in given.items()}
    return {k: v for k, v in effective.items() if v is not None}


def _user_errors(command: Command) -> Command:
    """Run ``command``, turning every expected failure into one ``UserError`` line."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CalibrationError as error:
            raise UserError(f"{args.kind} calibration refused ({error.kind}): {error}") from None
        except (CalibrationFileError, LiveCollectionError) as error:
            raise UserError(str(error)) from None
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            raise UserError(f"{where}{error.strerror or error}") from None

    return wrapper


# --- progress and summary -------------------------------------------------------------


class _Progress:
    """Progress on stderr: a rich bar on a terminal, a log line every 2 s otherwise."""

    def __init__(self, description: str, total: float) -> None:
        self._bar: Any = None
        self._t0 = time.monotonic()
        self._next_log_s = 0.0
        self._description = description
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(description, total=total, info="")
            self._bar.start()

    def update(self, completed: float, info: str) -> None:
        elapsed_s = time.monotonic() - self._t0
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, info=info)
        elif elapsed_s >= self._next_log_s:
            self._next_log_s = elapsed_s + 2.0
            log.info("%s: %s", self._description, info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _fmt_vec(v: npt.ArrayLike, digits: int = 3) -> str:
    return "[" + ", ".join(f"{x:.{digits}f}" for x in np.asarray(v, dtype=float)) + "]"


def _print_summary(title: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """``name  value  meaning`` rows, aligned, on stdout."""
    print(title)
    name_w = max(len(r[0]) for r in rows)
    value_w = max(len(r[1]) for r in rows)
    for name, value, meaning in rows:
        print(f"  {name:<{name_w}}  {value:<{value_w}}  {meaning}".rstrip())


def _default_out(kind: str) -> Path:
    return Path(f"{kind}-{datetime.now():%Y%m%d-%H%M%S}.toml")


def _write(args: argparse.Namespace, **content: Any) -> CalibrationFile:
    out = Path(args.out) if args.out else _default_out(args.kind)
    calibration = write_calibration(out, kind=args.kind, **content)
    print(f"wrote {out}")
    return calibration


# --- pose input: files or live --------------------------------------------------------


def _plus_poses(path: str, transform: str | None) -> FloatArray:
    """The OK samples of one transform of a PLUS sequence file, (N, 4, 4)."""
    names: set[str] = set()
    Ts = []
    try:
        for frame in open_plus_sequence(path):
            names.update(frame.transforms)
            T = frame.transforms.get(transform) if transform is not None else None
            if T is not None and frame.statuses.get(transform or "") == "OK":
                Ts.append(T)
    except PlusSequenceError as error:
        raise UserError(str(error)) from None
    if transform is None or transform not in names:
        given = "give" if transform is None else f"no transform {transform!r}: give"
        raise UserError(f"{path}: {given} --transform, one of {', '.join(sorted(names))}")
    if not Ts:
        raise UserError(f"{path}: {transform} is never OK in this file")
    return np.stack(Ts)


def _poses(
    args: argparse.Namespace,
    estimator: Callable[[FloatArray], Any],
    describe: Callable[[Any], str],
) -> tuple[FloatArray, dict[str, Any]]:
    """Poses (N, 4, 4) from ``--input`` or ``--live``, and the ``[input]`` table for them."""
    if args.input is not None:
        if args.connect is not None:
            raise UserError("--connect goes with --live, not --input")
        if is_plus_path(args.input):
            Ts = _plus_poses(args.input, args.transform)
            source = {"source": "plus", "transform": args.transform}
        else:
            Ts = read_matrix_dir(args.input)
            source = {"source": "files"}
        log.info("read %d poses from %s", len(Ts), args.input)
        return Ts, {**source, "path": str(Path(args.input).resolve()), "n_poses": len(Ts)}
    tool, endpoint = args.live, args.connect
    if endpoint is None:
        raise UserError("--live needs --connect ENDPOINT (the tracker's pub socket)")
    if not is_valid_tool_name(tool):
        raise UserError(f"--live {tool!r}: not a tool name (lowercase letters, digits, _)")
    problem = check_endpoint(endpoint)
    if problem:
        raise UserError(f"--connect {endpoint}: {problem}")
    check_ipc_endpoint(endpoint)
    if not args.seconds > 0 or not math.isfinite(args.seconds):
        raise UserError(f"--seconds must be > 0, got {args.seconds}")
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)  # Ctrl-C ends the window early, keeping poses
    print(f"collecting {tool} from {endpoint} for {args.seconds:g} s (Ctrl-C to stop early)")
    progress = _Progress(f"{args.kind} {tool}", total=args.seconds)

    def on_progress(n: int, elapsed_s: float, estimate: Any) -> None:
        info = f"{n} poses" + (f", {describe(estimate)}" if estimate is not None else "")
        progress.update(min(elapsed_s, args.seconds), info)

    try:
        Ts, t_ns = collect_poses(
            [endpoint], tool, args.seconds, on_progress=on_progress, estimator=estimator, stop=stop
        )
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    duration_s = float(t_ns[-1] - t_ns[0]) / 1e9 if len(t_ns) > 1 else 0.0
    return Ts, {
        "source": "live",
        "tool": tool,
        "endpoint": endpoint,
        "seconds": float(args.seconds),
        "span_s": round(duration_s, 3),
        "n_poses": len(Ts),
    }


def _describe_pivot(min_rotation_deg: float) -> Callable[[PivotResult], str]:
    def describe(estimate: PivotResult) -> str:
        spread = estimate.rotation_spread_deg
        return (
            f"RMS {estimate.rms_error_mm:.2f} mm, "
            f"rotation spread {spread:.0f} deg (need {min_rotation_deg:g})"
        )

    return describe


# --- pivot ----------------------------------------------------------------------------


@_user_errors
def cmd_pivot(args: argparse.Namespace) -> int:
    gates = _gates(
        pivot_calibration,
        min_poses=args.min_poses,
        min_rotation_deg=args.min_rotation_deg,
        min_weakest_rotation_deg=args.min_weakest_rotation_deg,
        max_rms_mm=args.max_rms_mm,
    )
    Ts, source = _poses(args, live_pivot_estimate, _describe_pivot(gates["min_rotation_deg"]))
    result: PivotResult
    if args.ransac:
        ransac = {"inlier_threshold_mm": args.inlier_threshold_mm, "seed": args.seed}
        result = pivot_calibration_ransac(Ts, **ransac, **gates)
        gates.update(ransac)
    else:
        result = pivot_calibration(Ts, **gates)
    _print_summary(
        f"pivot calibration ({result.method}): {result.n_inliers} of {result.n_poses} poses used",
        [
            ("p_tip_in_pointer", _fmt_vec(result.p_tip_in_pointer), "mm, tip in the marker frame"),
            ("p_pivot_in_tracker", _fmt_vec(result.p_pivot_in_tracker), "mm, tracker frame"),
            (
                "rms_error_mm",
                f"{result.rms_error_mm:.3f}",
                "RMS over the stacked x, y, z residual components (scikit-surgery's figure)",
            ),
            (
                "mean_residual_norm_mm",
                f"{result.mean_residual_norm_mm:.3f}",
                "mean per-pose distance of the tip from the pivot (PLUS's Error)",
            ),
            ("max_residual_norm_mm", f"{result.max_residual_norm_mm:.3f}", "worst pose"),
            (
                "rotation_spread_deg",
                f"{result.rotation_spread_deg:.1f}",
                "largest angle of a pose from the mean orientation",
            ),
        ],
    )
    _write(
        args,
        method=result.method,
        input={**source, **gates},
        result={
            "p_tip_in_pointer": result.p_tip_in_pointer,
            "p_pivot_in_tracker": result.p_pivot_in_tracker,
            "n_inliers": result.n_inliers,
            "rotation_spread_deg": result.rotation_spread_deg,
            "weakest_rotation_deg": result.weakest_rotation_deg,
        },
        errors={
            "rms_error_mm": result.rms_error_mm,
            "mean_residual_norm_mm": result.mean_residual_norm_mm,
            "max_residual_norm_mm": result.max_residual_norm_mm,
        },
    )
    if args.plus_out:
        transform = PlusTransform(
            args.plus_from,
            args.plus_to,
            plus_tip_transform(result.p_tip_in_pointer),
            error=result.mean_residual_norm_mm,
            date=datetime.now().strftime(PLUS_DATE_FORMAT),
        )
        write_plus_transform(args.plus_out, transform)
        print(f"wrote {transform.name} to {args.plus_out}")
    return 0


# --- spin -----------------------------------------------------------------------------


def _live_spin_estimate(Ts: FloatArray) -> SpinResult | None:
    if len(Ts) < 2:
        return None
    try:
        return spin_calibration(Ts, min_poses=2, min_spin_deg=0.0)
    except CalibrationError:
        return None


def _describe_spin(min_spin_deg: float) -> Callable[[SpinResult], str]:
    def describe(estimate: SpinResult) -> str:
        return (
            f"spun {estimate.spin_range_deg:.0f} deg (need {min_spin_deg:g}), "
            f"wobble {estimate.axis_spread_deg:.1f} deg"
        )

    return describe


@_user_errors
def cmd_spin(args: argparse.Namespace) -> int:
    tip = None
    if args.tip_from is not None and Path(args.tip_from).suffix.lower() == ".xml":
        tip = read_tip_offset(args.tip_from)  # a PLUS device set's StylusTipToStylus
    elif args.tip_from is not None:
        tip_file = read_calibration(args.tip_from)
        if tip_file.kind != "pivot":
            raise UserError(f"--tip-from {args.tip_from}: a {tip_file.kind} file, not a pivot one")
        tip = tip_file.array("p_tip_in_pointer")
    gates = _gates(
        spin_calibration,
        min_poses=args.min_poses,
        min_spin_deg=args.min_spin_deg,
        max_axis_spread_deg=args.max_axis_spread_deg,
    )
    Ts, source = _poses(args, _live_spin_estimate, _describe_spin(gates["min_spin_deg"]))
    result = spin_calibration(Ts, p_tip_in_pointer=tip, **gates)
    oriented = "towards the tip" if tip is not None else "largest component positive"
    _print_summary(
        f"spin calibration: {result.n_poses} poses",
        [
            (
                "shaft_direction_in_pointer",
                _fmt_vec(result.shaft_direction_in_pointer, 5),
                f"unit, marker frame ({oriented})",
            ),
            ("spin_range_deg", f"{result.spin_range_deg:.1f}", "arc of spin covered"),
            (
                "axis_spread_deg",
                f"{result.axis_spread_deg:.2f}",
                "RMS angle of each pose's shaft from the mean shaft (wobble)",
            ),
        ],
    )
    if args.tip_from is not None:
        gates["tip_from"] = str(Path(args.tip_from).resolve())
    _write(
        args,
        method="svd",
        input={**source, **gates},
        result={
            "shaft_direction_in_pointer": result.shaft_direction_in_pointer,
            "shaft_direction_in_tracker": result.shaft_direction_in_tracker,
            "spin_range_deg": result.spin_range_deg,
        },
        errors={"axis_spread_deg": result.axis_spread_deg},
    )
    return 0


# --- camera ---------------------------------------------------------------------------


def _image_paths(spec: str) -> list[Path]:
    """A directory's images (by suffix, sorted by name), or a glob's matches (sorted)."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(
            (p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: natural_key(p.name),
        )
        if not found:
            raise UserError(f"{spec}: no images in it ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if glob.has_magic(spec):
        found = sorted(
            (Path(p) for p in glob.glob(spec) if Path(p).is_file()),
            key=lambda p: natural_key(str(p)),
        )
        if not found:
            raise UserError(f"{spec}: matches no files")
        return found
    raise UserError(f"--input {spec}: no such directory (give a directory of images or a glob)")


def _load_images(paths: Sequence[Path]) -> list[tuple[str, npt.NDArray[Any]]]:
    import cv2

    images: list[tuple[str, npt.NDArray[Any]]] = []
    progress = _Progress("loading images", total=len(paths))
    try:
        for i, path in enumerate(paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise UserError(f"{path}: not an image OpenCV can read")
            images.append((path.name, image))
            progress.update(i + 1, f"{i + 1}/{len(paths)} {path.name}")
    finally:
        progress.close()
    return images


def _pair(text: str, what: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 1 for p in parts):
        raise UserError(f"{what} {text!r}: expected COLSxROWS, e.g. 14x10")
    return int(parts[0]), int(parts[1])


@_user_errors
def cmd_camera(args: argparse.Namespace) -> int:
    from calibration import camera  # here: it imports cv2, which only this command needs

    if not args.square_mm > 0:
        raise UserError(f"--square-mm must be > 0, got {args.square_mm}")
    paths = _image_paths(args.input)
    images = _load_images(paths)
    settings: dict[str, Any] = {"square_mm": args.square_mm}
    if args.max_view_rms_px is not None:
        settings["max_view_rms_px"] = args.max_view_rms_px
    if args.charuco is not None:
        if args.marker_mm is None:
            raise UserError("--charuco needs --marker-mm (the ArUco marker's side)")
        squares_x, squares_y = _pair(args.charuco, "--charuco")
        log.info("detecting the ChArUco board and calibrating")
        result = camera.calibrate_charuco(
            images,
            squares_x=squares_x,
            squares_y=squares_y,
            square_mm=args.square_mm,
            marker_mm=args.marker_mm,
            dictionary=args.dictionary,
            max_view_rms_px=args.max_view_rms_px,
        )
        settings.update(charuco=args.charuco, marker_mm=args.marker_mm, dictionary=args.dictionary)
        method = "charuco"
    else:
        pattern = _pair(args.pattern, "--pattern")
        log.info("detecting the chessboard and calibrating")
        result = camera.calibrate_chessboard(
            images,
            pattern_size=pattern,
            square_size_mm=args.square_mm,
            max_view_rms_px=args.max_view_rms_px,
        )
        settings["pattern"] = args.pattern
        method = "chessboard"
    K = np.asarray(result.camera_matrix)
    used = list(result.view_names)
    rows = [
        ("fx, fy", f"{K[0, 0]:.2f}, {K[1, 1]:.2f}", "px, focal lengths"),
        ("cx, cy", f"{K[0, 2]:.2f}, {K[1, 2]:.2f}", "px, principal point"),
        ("dist_coeffs", _fmt_vec(result.dist_coeffs, 5), "k1, k2, p1, p2, k3"),
        ("image_size", "x".join(str(int(v)) for v in result.image_size), "px, width x height"),
        (
            "rms_reprojection_px",
            f"{result.rms_reprojection_px:.3f}",
            "RMS reprojection error over every corner of every used view",
        ),
        (
            "worst view",
            f"{float(np.max(result.per_view_rms_px)):.3f}",
            f"px RMS, {used[int(np.argmax(result.per_view_rms_px))]}",
        ),
    ]
    _print_summary(f"camera calibration ({method}): {len(used)} of {len(images)} views", rows)
    for name, reason in result.rejected_views:
        print(f"  rejected {name}: {reason}")
    _write(
        args,
        method=method,
        input={
            "source": "files",
            "path": str(Path(args.input).resolve()) if Path(args.input).is_dir() else args.input,
            "n_views": len(images),
            "target": result.pattern,
            "view_names": used,
            "rejected_views": [name for name, _reason in result.rejected_views],
            **settings,
        },
        result={
            "camera_matrix": K,
            "dist_coeffs": np.asarray(result.dist_coeffs).reshape(-1),
            "image_size": [int(v) for v in result.image_size],
        },
        errors={
            "rms_reprojection_px": result.rms_reprojection_px,
            "per_view_rms_px": np.asarray(result.per_view_rms_px, dtype=float),
            "intrinsics_std_px": np.asarray(result.intrinsics_std_px, dtype=float),
        },
    )
    if args.opencv_out:
        write_opencv_camera(
            args.opencv_out,
            OpenCVCamera(
                K,
                np.asarray(result.dist_coeffs).reshape(-1),
                (int(result.image_size[0]), int(result.image_size[1])),
                float(result.rms_reprojection_px),
            ),
        )
        print(f"wrote {args.opencv_out}")
    return 0


# --- hand-eye -------------------------------------------------------------------------


@_user_errors
def cmd_handeye(args: argparse.Namespace) -> int:
    from calibration import handeye  # here: it imports scipy

    T_tracker_from_marker = read_matrix_dir(args.marker_poses)
    T_camera_from_target = read_matrix_dir(args.target_poses)
    if len(T_tracker_from_marker) != len(T_camera_from_target):
        raise UserError(
            f"{len(T_tracker_from_marker)} marker poses but {len(T_camera_from_target)} "
            "target poses: each marker pose needs the target pose taken with it"
        )
    if matrix_dir_names(args.marker_poses) != matrix_dir_names(args.target_poses):
        log.info("the two directories' file names differ: pairing them in sorted order")
    gates: dict[str, Any] = {
        "min_rotation_deg": args.min_rotation_deg,
        "min_axis_spread_deg": args.min_axis_spread_deg,
    }
    gates = {k: v for k, v in gates.items() if v is not None}
    if args.method == "all":
        results = handeye.compare_hand_eye_methods(
            T_tracker_from_marker, T_camera_from_target, **gates
        )
        _print_summary(
            "hand-eye methods, best first (by translation residual)",
            [
                (
                    r.method,
                    f"{r.translation_residual_mm:.3f} mm",
                    f"{r.rotation_residual_deg:.3f} deg",
                )
                for r in results
            ],
        )
        result = results[0]
    else:
        method = args.method or "park"
        result = handeye.hand_eye(
            T_tracker_from_marker, T_camera_from_target, method=method, **gates
        )
    T = np.asarray(result.T_marker_from_camera)
    _print_summary(
        f"hand-eye calibration ({result.method}): {result.n_poses} pose pairs",
        [
            ("T_marker_from_camera t", _fmt_vec(T[:3, 3]), "mm, camera origin in the marker frame"),
            (
                "rotation_residual_deg",
                f"{result.rotation_residual_deg:.3f}",
                "RMS over pose pairs of the rotation between the two sides of AX = XB",
            ),
            (
                "translation_residual_mm",
                f"{result.translation_residual_mm:.3f}",
                "RMS over pose pairs of the translation between the two sides of AX = XB",
            ),
        ],
    )
    _write(
        args,
        method=str(result.method),
        input={
            "source": "files",
            "marker_poses": str(Path(args.marker_poses).resolve()),
            "target_poses": str(Path(args.target_poses).resolve()),
            "n_poses": result.n_poses,
            **gates,
        },
        result={"T_marker_from_camera": T},
        errors={
            "rotation_residual_deg": result.rotation_residual_deg,
            "translation_residual_mm": result.translation_residual_mm,
        },
    )
    return 0


# --- temporal -------------------------------------------------------------------------


def read_signal_csv(path: str | Path) -> tuple[FloatArray, FloatArray]:
    """``t_s, x[, y, z]`` rows (an optional header row) -> t_s (N,), signal (N,) or (N, k).

    Raises CalibrationFileError naming the file and line for a ragged, non-numeric or
    non-finite row, fewer than 2 columns, or fewer than 2 rows.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [
                (i + 1, row) for i, row in enumerate(csv.reader(f)) if any(c.strip() for c in row)
            ]
    except FileNotFoundError:
        raise CalibrationFileError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise CalibrationFileError(f"{path}: not a CSV text file: {error}") from None
    if rows and not _numeric(rows[0][1]):
        rows = rows[1:]  # a header
    if len(rows) < 2:
        raise CalibrationFileError(f"{path}: needs at least 2 rows of t_s, x[, y, z]")
    width = len(rows[0][1])
    if width < 2:
        raise CalibrationFileError(f"{path}: line {rows[0][0]}: expected t_s and a value")
    data = np.empty((len(rows), width))
    for j, (line, row) in enumerate(rows):
        if len(row) != width or not _numeric(row):
            raise CalibrationFileError(
                f"{path}: line {line}: expected {width} numbers, got {','.join(row)[:60]!r}"
            )
        data[j] = [float(c) for c in row]
    if not np.all(np.isfinite(data)):
        bad = int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
        raise CalibrationFileError(f"{path}: line {rows[bad][0]}: a non-finite number")
    signal_ = data[:, 1] if width == 2 else data[:, 1:]
    return data[:, 0], signal_


def _numeric(row: Sequence[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


@_user_errors
def cmd_temporal(args: argparse.Namespace) -> int:
    path_a, path_b = args.input
    t_a, signal_a = read_signal_csv(path_a)
    t_b, signal_b = read_signal_csv(path_b)
    options: dict[str, Any] = {"max_lag_s": args.max_lag_s}
    if args.resample_hz is not None:
        options["resample_hz"] = args.resample_hz
    if args.min_correlation is not None:
        options["min_correlation"] = args.min_correlation
    result = temporal_calibration(t_a, signal_a, t_b, signal_b, **options)
    min_correlation = options.get(
        "min_correlation", _default(temporal_calibration, "min_correlation")
    )
    name_a, name_b = Path(path_a).name, Path(path_b).name
    _print_summary(
        f"temporal calibration: {len(t_a)} samples of {name_a}, {len(t_b)} of {name_b}",
        [
            (
                "dt_a_from_b_s",
                f"{result.dt_a_from_b_s:+.4f}",
                f"s: add to {name_b}'s times to put them on {name_a}'s clock",
            ),
            (
                "sign",
                f"{result.sign:+d}",
                "-1: one signal is the other mirrored (its axis points the other way)",
            ),
            (
                "confidence",
                f"{result.confidence:.3f}",
                f"0..1, correlation at the peak (refused below {min_correlation:g})",
            ),
            ("peak_width_s", f"{result.peak_width_s:.4f}", "s, smaller is sharper"),
            (
                "residual_rms",
                f"{result.residual_rms:.3f}",
                "RMS difference of the standardised aligned signals",
            ),
        ],
    )
    _write(
        args,
        method="cross-correlation",
        input={
            "source": "files",
            "a": str(Path(path_a).resolve()),
            "b": str(Path(path_b).resolve()),
            "n_samples_a": len(t_a),
            "n_samples_b": len(t_b),
            **options,
        },
        result={
            "dt_a_from_b_s": result.dt_a_from_b_s,
            "sign": result.sign,
            "confidence": result.confidence,
            "resample_hz": result.resample_hz,
            "n_samples": result.n_samples,
        },
        errors={"peak_width_s": result.peak_width_s, "residual_rms": result.residual_rms},
    )
    return 0


# --- parser ---------------------------------------------------------------------------


def _add_pose_source(parser: argparse.ArgumentParser, what: str) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        metavar="DIR",
        help=f"a directory of 4x4 pose text files (scikit-surgery's layout), or a PLUS "
        f"sequence file (.mha, .nrrd) with --transform, recorded while {what}",
    )
    parser.add_argument(
        "--transform",
        metavar="NAME",
        help="with a PLUS file: which transform to use, e.g. StylusToReference",
    )
    source.add_argument("--live", metavar="TOOL", help="collect TOOL's poses from a running stack")
    parser.add_argument(
        "--connect",
        metavar="ENDPOINT",
        help="with --live: the tracker's pub socket, e.g. ipc:///tmp/ornav-xyz/tracker.pub",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_LIVE_SECONDS,
        help=f"with --live: seconds to collect (default {DEFAULT_LIVE_SECONDS:g}; Ctrl-C: stop)",
    )


def _add_out(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument(
        "--out",
        metavar="FILE.toml",
        help=f"the calibration file to write (default ./{kind}-<YYYYmmdd-HHMMSS>.toml)",
    )


def add_calibrate_parser(commands: Any) -> None:
    """Register ``ornav calibrate pivot|spin|camera|handeye|temporal`` on ``commands``."""
    calibrate = commands.add_parser(
        "calibrate",
        help="pivot, spin, camera, hand-eye or temporal calibration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = calibrate.add_subparsers(dest="kind", required=True, metavar="KIND")

    pivot = kinds.add_parser("pivot", help="pointer tip offset from poses pivoting about the tip")
    _add_pose_source(pivot, "pivoting the pointer about its tip")
    pivot.add_argument(
        "--ransac", action="store_true", help="ignore poses where the tip slipped (RANSAC)"
    )
    pivot.add_argument(
        "--inlier-threshold-mm",
        type=float,
        default=_default(pivot_calibration_ransac, "inlier_threshold_mm"),
        help="with --ransac: a pose within this of the fit is an inlier (default %(default)s)",
    )
    pivot.add_argument("--seed", type=int, default=0, help="with --ransac: random seed")
    pivot.add_argument(
        "--min-poses",
        type=int,
        help=f"refuse fewer poses (default {_default(pivot_calibration, 'min_poses')})",
    )
    pivot.add_argument(
        "--min-rotation-deg",
        type=float,
        help="refuse a pivot that turned less than this from the mean orientation "
        f"(default {_default(pivot_calibration, 'min_rotation_deg')})",
    )
    pivot.add_argument(
        "--min-weakest-rotation-deg",
        type=float,
        help="refuse a pivot about one axis only: the least-turned direction must turn this "
        f"much (default {_default(pivot_calibration, 'min_weakest_rotation_deg')})",
    )
    pivot.add_argument("--max-rms-mm", type=float, help="refuse a larger RMS error (default: none)")
    pivot.add_argument(
        "--plus-out",
        metavar="FILE.xml",
        help="also write the tip as a PLUS <Transform> (added to an existing device-set config)",
    )
    pivot.add_argument("--plus-from", default="StylusTip", help="PLUS From= (default %(default)s)")
    pivot.add_argument("--plus-to", default="Stylus", help="PLUS To= (default %(default)s)")
    _add_out(pivot, "pivot")
    pivot.set_defaults(func=cmd_pivot)

    spin = kinds.add_parser("spin", help="pointer shaft direction from poses spun about the shaft")
    _add_pose_source(spin, "spinning the pointer about its shaft")
    spin.add_argument(
        "--tip-from",
        metavar="PIVOT.toml|PLUS.xml",
        help="a pivot calibration, or a PLUS device set with a StylusTipToStylus: "
        "orient the shaft to the tip",
    )
    spin.add_argument(
        "--min-poses",
        type=int,
        help=f"refuse fewer poses (default {_default(spin_calibration, 'min_poses')})",
    )
    spin.add_argument(
        "--min-spin-deg",
        type=float,
        help=f"refuse a smaller spin (default {_default(spin_calibration, 'min_spin_deg')})",
    )
    spin.add_argument(
        "--max-axis-spread-deg", type=float, help="refuse more shaft wobble (default: none)"
    )
    _add_out(spin, "spin")
    spin.set_defaults(func=cmd_spin)

    camera = kinds.add_parser("camera", help="camera intrinsics from chessboard/ChArUco images")
    camera.add_argument(
        "--input", required=True, metavar="DIR|GLOB", help="a directory of images, or a glob"
    )
    camera.add_argument(
        "--pattern", default="14x10", help="chessboard inner corners, COLSxROWS (default 14x10)"
    )
    camera.add_argument(
        "--square-mm", type=float, required=True, help="chessboard/ChArUco square side, mm"
    )
    camera.add_argument(
        "--charuco", metavar="COLSxROWS", help="a ChArUco board of this many squares instead"
    )
    camera.add_argument("--marker-mm", type=float, help="with --charuco: ArUco marker side, mm")
    camera.add_argument(
        "--dictionary", default="DICT_4X4_50", help="with --charuco: ArUco dictionary"
    )
    camera.add_argument(
        "--max-view-rms-px", type=float, help="drop views whose RMS reprojection error is larger"
    )
    camera.add_argument("--opencv-out", metavar="FILE.yml", help="also write an OpenCV camera file")
    _add_out(camera, "camera")
    camera.set_defaults(func=cmd_camera)

    handeye = kinds.add_parser("handeye", help="camera-to-marker transform (AX = XB)")
    handeye.add_argument(
        "--marker-poses", required=True, metavar="DIR", help="T_tracker_from_marker 4x4 files"
    )
    handeye.add_argument(
        "--target-poses",
        required=True,
        metavar="DIR",
        help="T_camera_from_target 4x4 files, one per marker pose (paired in file-name order)",
    )
    handeye.add_argument(
        "--method",
        help="tsai, park, horaud, andreff, daniilidis, or all (compare; keep the best). "
        "Default park",
    )
    handeye.add_argument(
        "--min-rotation-deg", type=float, help="refuse if no motion turns this much (default 5)"
    )
    handeye.add_argument(
        "--min-axis-spread-deg",
        type=float,
        help="refuse if the motions turn about one axis within this (default 10)",
    )
    _add_out(handeye, "handeye")
    handeye.set_defaults(func=cmd_handeye)

    temporal = kinds.add_parser("temporal", help="time offset between two streams")
    temporal.add_argument(
        "--input",
        nargs=2,
        required=True,
        metavar=("A.csv", "B.csv"),
        help="two CSV files of t_s,x[,y,z] (a header row is allowed)",
    )
    temporal.add_argument(
        "--max-lag-s",
        type=float,
        default=1.0,
        help="search offsets up to this, either way (default %(default)s)",
    )
    temporal.add_argument(
        "--resample-hz", type=float, help="common grid rate (default: the faster stream's)"
    )
    temporal.add_argument(
        "--min-correlation",
        type=float,
        help=f"refuse a weaker peak (default {_default(temporal_calibration, 'min_correlation')})",
    )
    _add_out(temporal, "temporal")
    temporal.set_defaults(func=cmd_temporal)

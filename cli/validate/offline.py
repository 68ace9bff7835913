"""The registration re-run offline from a recording, with each method, and compared.

From the recorded poses alone (``sources.Session``): the pointer tip in the reference frame
at every sample (tip offset from the nav node's launch params, our pivot TOML or a PLUS
device-set XML), the places it rested (``nav.validation.touches``), and which fiducial
each rest touched (matched without a prior). Then, with the same code the nav node runs:

- ``points``: paired-point registration on the matched touches (FRE, predicted TRE at the
  targets, true TRE where the recording carries a ground truth);
- ``surface``: rigid surface ICP of the tip samples that ran along the organ (runs within
  ``SURFACE_NEAR_MM`` of it under the points result, each at least ``MIN_TRACE_RUN_MM``
  long and ``MIN_TRACE_WIDTH_MM`` wide, every ``surface_spacing_mm``), from the points
  result; only with at least ``MIN_SURFACE_POINTS`` of them;
- ``deformable``: the deformable fit of the same points from the surface result (only
  where that converged: points that rigid ICP cannot fit are no trace to deform onto).

Each result is compared with the registration the session accepted: how far each target
lands from where the accepted one put it. A method that cannot run says why, in one line.
A target the pointer rested on (within ``TARGET_TOUCH_MM`` under the accepted registration)
gives a measured error at that target, tip calibration and tracking included.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import open3d as o3d

from cli.validate.sources import Session
from nav.arrays import FloatArray
from nav.case import Case
from nav.collectors import DwellParams, SurfaceCollector
from nav.messages import RegistrationResult
from nav.navigation import (
    MIN_SURFACE_POINTS,
    CaseGeometry,
    Registration,
    register_fiducials,
    register_organ_deformable,
    register_organ_surface,
    surface_structure,
    target_errors_mm,
)
from nav.registration.errors import RegistrationError
from nav.session import truth_targets_reference
from nav.transforms import Mat4, apply, invert_rigid
from nav.validation.touches import Dwells, find_dwells, match_fiducials

SURFACE_NEAR_MM = 2.0  # a tip sample this close to the organ counts as tracing it
MIN_TRACE_RUN_MM = 20.0  # path along the surface that makes a trace, not a crossing
MIN_TRACE_WIDTH_MM = 10.0  # its spread across its main direction: an area, not a line
TARGET_TOUCH_MM = 5.0  # a rest this close to a target (accepted registration) touched it
DEFAULT_SURFACE_SPACING_MM = 2.0


@dataclass(frozen=True)
class Setup:
    """What a re-run needs besides the poses; lengths mm, frames as named.

    ``p_image_fiducials`` (M, 3) with ``fiducial_labels`` (M,): a case's fiducials, or a
    PLUS phantom's landmarks (``image`` is then the phantom frame). ``case``: for the
    targets and the organ (None for a bare phantom: points only). ``truth``: the true
    ``T_reference_from_image`` of a simulation, else None.
    """

    fiducial_labels: tuple[str, ...]
    p_image_fiducials: FloatArray
    p_tip_in_pointer: FloatArray
    pointer_tool: str
    reference_tool: str
    case: Case | None = None
    dwell: DwellParams = field(default_factory=DwellParams)
    fle_mm: float = 0.25
    truth: Mat4 | None = None
    truth_targets: FloatArray | None = None
    """The targets' true positions (T, 3), reference frame, with ``truth`` and a case: the
    sim organ's deformation included when the launch had one (``truth_deformation_seed``);
    every method's true TRE is measured against them."""
    surface_spacing_mm: float = DEFAULT_SURFACE_SPACING_MM
    source: str = ""  # where the fiducials and tip came from, for the report


@dataclass
class MethodResult:
    """One method's re-run: its registration, or why it did not run."""

    method: str
    registration: Registration | None = None
    reason: str = ""
    n_points: int = 0
    target_shift_mm: dict[str, float] = field(default_factory=dict)  # vs the accepted one
    time_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        reg = self.registration
        out: dict[str, Any] = {
            "method": self.method,
            "ran": reg is not None,
            "reason": self.reason,
            "n_points": self.n_points,
            "target_shift_mm": self.target_shift_mm,
            "time_s": self.time_s,
        }
        if reg is not None:
            out |= {
                "fre_mm": reg.fre_mm,
                "fiducial_labels": list(reg.fiducial_labels),
                "fiducial_errors_mm": reg.fiducial_errors_mm.tolist(),
                "predicted_tre_mm": dict(
                    zip(reg.target_names, reg.predicted_tre_mm.tolist(), strict=True)
                ),
                "true_tre_mm": {
                    n: (v if math.isfinite(v) else None)
                    for n, v in zip(reg.target_names, reg.true_tre_mm.tolist(), strict=True)
                },
                "T_reference_from_image": reg.T_reference_from_image.tolist(),
            }
        return out


def tip_in_reference(session: Session, setup: Setup) -> tuple[np.ndarray, FloatArray]:
    """(t_ns (F,), p_tip_reference (F, 3) NaN where pointer or reference is not tracked)."""
    t = session.frames["t_sensor_ns"]
    p = np.full((len(t), 3), np.nan)
    pointer = session.tools.get(setup.pointer_tool)
    reference = session.tools.get(setup.reference_tool)
    if pointer is None or reference is None:
        return t, p
    T_ptr = np.full((len(t), 4, 4), np.nan)
    T_ref = np.full((len(t), 4, 4), np.nan)
    T_ptr[pointer.frame_index] = pointer.T_tracker_from_tool
    T_ref[reference.frame_index] = reference.T_tracker_from_tool
    both = np.all(np.isfinite(T_ptr), axis=(1, 2)) & np.all(np.isfinite(T_ref), axis=(1, 2))
    tip = np.append(setup.p_tip_in_pointer, 1.0)
    tip_tracker = T_ptr[both] @ tip  # (K, 4)
    R = T_ref[both, :3, :3]
    d = T_ref[both, :3, 3]
    # reference <- tracker: R^T (x - d); rigid by construction (nearest_rigid on entry)
    p[both] = np.einsum("kji,kj->ki", R, tip_tracker[:, :3] - d)
    return t, p


def _geometry(setup: Setup) -> CaseGeometry:
    if setup.case is not None:
        return CaseGeometry.from_case(setup.case)
    return CaseGeometry(
        case_name="phantom",
        case_id="",
        target_names=(),
        p_image_targets=np.zeros((0, 3)),
        critical_names=(),
        _scenes=(),
    )


def accepted_registration(session: Session) -> RegistrationResult | None:
    """The last registration the session accepted (or restored), else None."""
    for _t, result in reversed(session.registrations):
        if result.state in ("accepted", "restored"):
            return result
    return None


def _target_shift(
    registration: Registration, accepted: RegistrationResult | None, setup: Setup
) -> dict[str, float]:
    if accepted is None or setup.case is None or not len(setup.case.targets):
        return {}
    p = setup.case.targets.points_lps
    d = np.linalg.norm(
        apply(registration.T_reference_from_image, p) - apply(accepted.T_reference_from_image, p),
        axis=1,
    )
    return dict(zip(setup.case.targets.labels, d.tolist(), strict=True))


def _surface_points(p_tip: FloatArray, setup: Setup, T_reference_from_image: Mat4) -> FloatArray:
    """The traced organ surface: runs of consecutive tip samples within ``SURFACE_NEAR_MM``
    of the organ that cover ``MIN_TRACE_RUN_MM`` of path or more, thinned by the spacing.

    A run that short is a crossing (the tip going in to a target) or a touch, not a trace;
    a run narrower than ``MIN_TRACE_WIDTH_MM`` across its main direction is the pointer
    moving between fiducials along the organ, a line: fed to ICP either lets the model
    slide or roll.
    """
    assert setup.case is not None
    organ = surface_structure(setup.case).mesh
    tracked = np.all(np.isfinite(p_tip), axis=1)
    near = np.zeros(len(p_tip), dtype=bool)
    if tracked.any():
        p_image = apply(invert_rigid(T_reference_from_image), p_tip[tracked])
        scene = o3d.t.geometry.RaycastingScene()  # a BVH, as navigation's distances use
        scene.add_triangles(
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(organ.vertices, dtype=np.float32)),
            o3d.core.Tensor.from_numpy(np.ascontiguousarray(organ.faces, dtype=np.uint32)),
        )
        query = o3d.core.Tensor.from_numpy(np.ascontiguousarray(p_image, dtype=np.float32))
        near[tracked] = scene.compute_distance(query).numpy() <= SURFACE_NEAR_MM
    collector = SurfaceCollector(spacing_mm=setup.surface_spacing_mm, max_points=20000)
    padded = np.concatenate([[False], near, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        run = p_tip[start:end]
        if np.sum(np.linalg.norm(np.diff(run, axis=0), axis=1)) < MIN_TRACE_RUN_MM:
            continue
        if _width_mm(run) < MIN_TRACE_WIDTH_MM:
            continue  # a line along the organ: the model could roll about it
        collector.feed(None)  # a new run: no path across the gap
        for point in run:
            collector.feed(point)
    return collector.points_reference


@dataclass
class OfflineRun:
    """Every method's re-run, the touches they came from, and touched targets."""

    dwells: Dwells
    matched: dict[str, int]  # fiducial label -> dwell index
    methods: list[MethodResult]
    target_touch_error_mm: dict[str, float]
    setup_source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.setup_source,
            "dwells": len(self.dwells.p_reference),
            "matched_fiducials": self.matched,
            "methods": [m.to_json() for m in self.methods],
            "target_touch_error_mm": self.target_touch_error_mm,
        }


def rerun(session: Session, setup: Setup) -> OfflineRun:
    """Re-run each method on the session's touches; see the module docstring."""
    t_ns, p_tip = tip_in_reference(session, setup)
    dwells = find_dwells(t_ns, p_tip, setup.dwell)
    accepted = accepted_registration(session)
    geometry = _geometry(setup)
    methods: list[MethodResult] = []
    match = match_fiducials(setup.p_image_fiducials, dwells.p_reference)
    points = MethodResult("points")
    matched: dict[str, int] = {}
    if match is None:
        points.reason = (
            f"{len(dwells.p_reference)} pointer rests found; fewer than 4 of them match the "
            f"{len(setup.fiducial_labels)} fiducials' geometry"
        )
    else:
        labels = tuple(setup.fiducial_labels[i] for i in match.fiducial_indices)
        matched = dict(zip(labels, match.dwell_indices, strict=True))
        started = time.perf_counter()
        try:
            points.registration = register_fiducials(
                p_image_fiducials=setup.p_image_fiducials[list(match.fiducial_indices)],
                p_reference_fiducials=dwells.p_reference[list(match.dwell_indices)],
                fiducial_labels=labels,
                geometry=geometry,
                fle_mm=setup.fle_mm,
                registration_id=1,
                truth_T_reference_from_image=setup.truth,
            )
        except (RegistrationError, ValueError) as error:
            points.reason = str(error)
        points.time_s = time.perf_counter() - started
        points.n_points = len(labels)
    methods.append(points)

    # The surface fit starts from the points re-run, else from what the session accepted.
    start = points.registration.T_reference_from_image if points.registration else None
    if start is None and accepted is not None:
        start = accepted.T_reference_from_image
    surface = MethodResult("surface")
    deformable = MethodResult("deformable")
    surface_points = np.zeros((0, 3))
    if setup.case is None:
        surface.reason = deformable.reason = "no case model (a phantom's landmarks only)"
    elif start is None:
        surface.reason = deformable.reason = "no rigid registration to start from"
    else:
        surface_points = _surface_points(p_tip, setup, start)
        surface.n_points = deformable.n_points = len(surface_points)
        if len(surface_points) < MIN_SURFACE_POINTS:
            surface.reason = deformable.reason = (
                f"{len(surface_points)} tip samples along the organ surface, need "
                f"{MIN_SURFACE_POINTS}: the session traced no surface"
            )
    if setup.case is not None and start is not None and len(surface_points) >= MIN_SURFACE_POINTS:
        organ = surface_structure(setup.case).mesh
        started = time.perf_counter()
        try:
            surface.registration = register_organ_surface(
                model_vertices=organ.vertices,
                model_triangles=organ.faces,
                p_reference_surface=surface_points,
                geometry=geometry,
                registration_id=2,
                T_init=start,
                truth_T_reference_from_image=setup.truth,
            ).registration
        except (RegistrationError, ValueError) as error:
            surface.reason = str(error)
        surface.time_s = time.perf_counter() - started
        if surface.registration is None:
            deformable.reason = f"no rigid surface fit to start from: {surface.reason}"
        else:
            deformable = _deformable(geometry, organ, surface_points, surface.registration)
    methods += [surface, deformable]
    for method in methods:
        if method.registration is not None:
            if setup.truth_targets is not None:  # against the targets' true positions
                method.registration = replace(
                    method.registration,
                    true_tre_mm=target_errors_mm(
                        method.registration, geometry.p_image_targets, setup.truth_targets
                    ),
                )
            method.target_shift_mm = _target_shift(method.registration, accepted, setup)
    return OfflineRun(
        dwells=dwells,
        matched=matched,
        methods=methods,
        target_touch_error_mm=_touched_targets(dwells, accepted, setup),
        setup_source=setup.source,
    )


def _deformable(
    geometry: CaseGeometry, organ: Any, surface_points: FloatArray, rigid: Registration
) -> MethodResult:
    """The deformable fit from the rigid surface result, as the nav node runs it
    (``register_organ_deformable``: its refusals, its predicted error at the targets)."""
    result = MethodResult("deformable", n_points=len(surface_points))
    started = time.perf_counter()
    try:
        result.registration = register_organ_deformable(
            model_vertices=organ.vertices,
            model_triangles=organ.faces,
            p_reference_surface=surface_points,
            geometry=geometry,
            registration_id=3,
            T_init=rigid.T_reference_from_image,
        ).registration
    except (RegistrationError, ValueError) as error:
        result.reason = str(error)
    result.time_s = time.perf_counter() - started
    return result


def _touched_targets(
    dwells: Dwells, accepted: RegistrationResult | None, setup: Setup
) -> dict[str, float]:
    """Targets the pointer rested on: the rest's distance to the target (accepted reg.)."""
    if accepted is None or setup.case is None or not len(dwells.p_reference):
        return {}
    out = {}
    p_targets = apply(accepted.T_reference_from_image, setup.case.targets.points_lps)
    for label, p in zip(setup.case.targets.labels, p_targets, strict=True):
        d = np.linalg.norm(dwells.p_reference - p, axis=1)
        if d.min() <= TARGET_TOUCH_MM:
            out[label] = float(d.min())
    return out


def _width_mm(points: FloatArray) -> float:
    """Extent (mm) of ``points`` along their second principal axis."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    if len(vt) < 2:
        return 0.0
    along = centred @ vt[1]
    return float(along.max() - along.min())


# --- what a session needs, from its launch file and the user's options -------------------


class SetupError(ValueError):
    """A re-run that cannot be set up (bad tip file, phantom file, case); one line."""


def setup_for(
    session: Session,
    *,
    case_dir: str | None = None,
    tip_file: str | None = None,
    phantom_file: str | None = None,
    pointer_tool: str | None = None,
    reference_tool: str | None = None,
) -> Setup:
    """The re-run's inputs: the user's options first, then the nav node's launch params
    carried in the recording, then the defaults (see ``Setup``)."""
    from calibration.files import (
        CalibrationFileError,
        read_plus_phantom_landmarks,
        read_tip_offset,
    )
    from nav.case import CaseError, load_case
    from nav.phantom import SHIPPED_PHANTOM_DIR

    params = session.launch_params("nav.nav_node")
    notes: list[str] = []
    if tip_file:
        try:
            tip = read_tip_offset(tip_file)
        except (CalibrationFileError, OSError, ValueError) as error:
            raise SetupError(f"--tip: {error}") from None
        notes.append(f"tip from {tip_file}")
    elif isinstance(params.get("p_tip_in_pointer"), list):
        tip = np.asarray(params["p_tip_in_pointer"], dtype=np.float64)
        notes.append("tip from the recorded launch file")
    else:
        tip = np.array([0.0, 0.0, -160.0])  # nav.nav_node.Config's default: the simulator's
        notes.append(
            "tip: the nav node's default (the simulator's pointer; the recorded launch file "
            "sets none)"
            if session.launch_toml
            else "tip: the simulator's default (no --tip, no launch file in the recording)"
        )
    case: Case | None = None
    if phantom_file:
        try:
            landmarks = read_plus_phantom_landmarks(phantom_file)
        except (CalibrationFileError, OSError, ValueError) as error:
            raise SetupError(f"--phantom: {error}") from None
        labels = tuple(lm.name for lm in landmarks)
        p_fiducials = np.array([lm.p_phantom for lm in landmarks], dtype=np.float64)
        notes.append(f"fiducials: {len(labels)} landmarks of {phantom_file}")
    else:
        where = (
            case_dir
            or params.get("case")
            or (str(SHIPPED_PHANTOM_DIR) if session.kind == "ornav" else "")
        )
        if not where:
            raise SetupError(
                f"{session.path.name}: no fiducials: give --case CASE/ or --phantom PLUS.xml"
            )
        try:
            case = load_case(where)
        except CaseError as error:
            raise SetupError(str(error)) from None
        labels = case.fiducials.labels
        p_fiducials = np.asarray(case.fiducials.points_lps, dtype=np.float64)
        notes.append(f"fiducials and targets: case {case.name}")
    default_pointer = "pointer" if session.kind == "ornav" else "stylus"
    raw_truth = params.get("truth_T_reference_from_image")
    truth = (
        np.reshape(np.asarray(raw_truth, dtype=np.float64), (4, 4))
        if isinstance(raw_truth, list) and len(raw_truth) == 16
        else None
    )
    seed = params.get("truth_deformation_seed", -1)
    peak = params.get("truth_deformation_peak_mm", 8.0)
    truth_targets = None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SetupError(f"the recorded truth_deformation_seed {seed!r} is not an integer")
    if truth is not None and case is not None:
        try:
            truth_targets = truth_targets_reference(
                case,
                np.asarray(case.targets.points_lps, dtype=np.float64),
                truth_T_reference_from_image=truth,
                deformation_seed=seed,
                deformation_peak_mm=float(peak),
            )
        except (TypeError, ValueError) as error:
            raise SetupError(f"the recorded truth deformation: {error}") from None
        if seed >= 0:
            notes.append(f"truth: the sim organ deformed (seed {seed})")
    dwell = DwellParams(
        window_s=float(params.get("dwell_s", DwellParams.window_s)),
        radius_mm=float(params.get("dwell_radius_mm", DwellParams.radius_mm)),
    )
    return Setup(
        fiducial_labels=labels,
        p_image_fiducials=p_fiducials,
        p_tip_in_pointer=np.asarray(tip, dtype=np.float64).reshape(3),
        pointer_tool=pointer_tool or str(params.get("pointer_tool", default_pointer)),
        reference_tool=reference_tool or str(params.get("reference_tool", "reference")),
        case=case,
        dwell=dwell,
        fle_mm=float(params.get("fle_mm", 0.25)),
        truth=truth,
        truth_targets=truth_targets,
        surface_spacing_mm=float(params.get("surface_spacing_mm", DEFAULT_SURFACE_SPACING_MM)),
        source="; ".join(notes),
    )

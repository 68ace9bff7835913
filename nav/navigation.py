"""Navigation state from a tracker sample: the model pinned to the patient, the tip, distances.

Pure: no sockets, no files, no clock reads (``now_ns`` is an argument), no logging set-up.
``nav/nav_node.py`` runs it once per tracker sample, up to 1 kHz, so the per-sample work is
a few small matrix products and one Open3D distance query per critical structure (~10 us
each, mostly the Python binding). Measured on the phantom (3 critical structures, 3
targets), best of 7 x 2000 calls on a shared 2-core machine: :func:`nav_state` ~50 us
registered with both tools OK, ~3 us unregistered.

Frames (``nav.frames``) and the chain, read right to left::

    T_tracker_from_image = T_tracker_from_reference @ T_reference_from_image
    p_tip_image = T_image_from_reference @ T_reference_from_tracker
                  @ T_tracker_from_pointer @ p_tip_in_pointer

``T_reference_from_image`` is the registration. Because it is stored relative to the
patient reference marker, the model follows the patient (breathing, the table moving)
with no re-registration: only ``T_tracker_from_reference`` changes from sample to sample.

Status, worst first (the first that applies wins; ``NavStatus``):

1. ``UNREGISTERED``: no registration in state "accepted" or "restored" (a "proposed" one
   is not shown until accepted);
2. ``STALE`` if there has been no tracker sample at all (``frame`` is None);
3. ``REFERENCE_LOST``: the reference tool is not OK (or absent) in the newest sample;
4. ``STALE``: ``now_ns - frame.t_sensor_ns > stale_after_ns``;
5. ``OK``.

Unless the status is OK, ``T_tracker_from_image`` is the identity and the tip and every
distance are NaN: nothing that cannot be vouched for is handed on as if it were current.
With status OK the tip (and its distances) is NaN only while the pointer is not OK.

Fiducial registration (:func:`register_fiducials`) registers the points collected by
``nav.collectors.FiducialCollector``; surface registration (:func:`register_organ_surface`)
registers pointer-traced points (``nav.collectors.SurfaceCollector``) to the case's organ
surface (:func:`surface_structure`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import open3d as o3d

from nav.arrays import FloatArray
from nav.case import Case, Structure
from nav.frames import REFERENCE
from nav.messages import NavState, NavStatus, RegistrationResult, ToolStatus, TrackerFrame
from nav.registration.errors import RegistrationError
from nav.registration.paired_point import register_paired_points
from nav.registration.surface import SurfaceConfig, SurfaceResult, register_surface
from nav.transforms import Mat4, Points, apply, invert_rigid, is_rigid

POINTER: Final = "pointer"

REGISTRATION_STATES: Final = RegistrationResult.STATES
ACTIVE_STATES: Final = frozenset({"accepted", "restored"})
"""Registration states that navigation shows; "proposed" waits for accept."""

_RIGID_TOLERANCE = 1e-6
_IDENTITY = np.eye(4)
_IDENTITY.setflags(write=False)
_NAN3 = np.full(3, np.nan)
_NAN3.setflags(write=False)
_CASE_ID = re.compile(r"[0-9a-f]{64}")


def _frozen(a: npt.ArrayLike, shape: tuple[int | None, ...], name: str) -> FloatArray:
    """``a`` as a read-only float64 copy of ``shape`` (None = any); ValueError otherwise."""
    out = np.array(a, dtype=np.float64)
    if out.ndim != len(shape) or any(
        want is not None and n != want for n, want in zip(out.shape, shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    out.setflags(write=False)
    return out


# --- the case's geometry, prepared once -------------------------------------------------


def case_id(case: Case) -> str:
    """The content id of ``case`` (64 hex): SHA-256 of what registration and navigation use.

    It covers the case name, each structure's name, role, critical flag, vertices and
    triangles (``image`` frame, as loaded), and the fiducials and targets (labels and LPS
    points), each length-prefixed. So two loads of the same files give the same id
    wherever they are read (the nav and render nodes each load their ``case`` folder), and
    any change to a mesh or a markup gives another: a registration carries it
    (``RegistrationResult.case_id``) and the render node draws no other case's models
    under it. Colours and opacity are left out: they change how a model looks, not where.
    Reading the same files with another trimesh version could merge vertices differently
    and so change the id: a mismatch is then refused, never drawn.
    """
    digest = hashlib.sha256()

    def add(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    add(case.name.encode())
    for structure in case.structures:
        add(f"{structure.name}\0{structure.role}\0{int(structure.critical)}".encode())
        add(np.ascontiguousarray(structure.mesh.vertices, dtype="<f8").tobytes())
        add(np.ascontiguousarray(structure.mesh.faces, dtype="<i8").tobytes())
    for markups in (case.fiducials, case.targets):
        add("\0".join(markups.labels).encode())
        add(np.ascontiguousarray(markups.points_lps, dtype="<f8").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class CaseGeometry:
    """What navigation measures against, in the ``image`` frame (LPS, mm), built once per case.

    ``case_id``: :func:`case_id` of the case.
    ``p_image_targets`` (T, 3) aligns with ``target_names``; ``critical_names`` (C) are the
    case's critical structures, each with an Open3D ``RaycastingScene`` (a BVH over its
    triangles) for the tip-to-surface distance. Open3D works in float32: coordinates of a
    few hundred mm keep ~0.1 um, far below any tracker's noise. One query buffer is reused
    for every call (it saves a tensor per structure per sample), so an instance serves one
    thread.
    """

    case_name: str
    case_id: str
    target_names: tuple[str, ...]
    p_image_targets: Points
    critical_names: tuple[str, ...]
    _scenes: tuple[o3d.t.geometry.RaycastingScene, ...] = field(repr=False)
    _query_buffer: npt.NDArray[np.float32] = field(
        default_factory=lambda: np.zeros((1, 3), dtype=np.float32), repr=False
    )
    _query: o3d.core.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # from_numpy shares the buffer's memory: writing the buffer moves the query point.
        object.__setattr__(self, "_query", o3d.core.Tensor.from_numpy(self._query_buffer))

    @classmethod
    def from_case(cls, case: Case) -> CaseGeometry:
        scenes = []
        for structure in case.critical_structures:
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(
                o3d.core.Tensor.from_numpy(
                    np.ascontiguousarray(structure.mesh.vertices, dtype=np.float32)
                ),
                o3d.core.Tensor.from_numpy(
                    np.ascontiguousarray(structure.mesh.faces, dtype=np.uint32)
                ),
            )
            scenes.append(scene)
        return cls(
            case_name=case.name,
            case_id=case_id(case),
            target_names=case.targets.labels,
            p_image_targets=_frozen(case.targets.points_lps, (None, 3), "targets"),
            critical_names=tuple(s.name for s in case.critical_structures),
            _scenes=tuple(scenes),
        )

    @functools.cached_property
    def nan_target_distances(self) -> FloatArray:
        """(T,) NaN, read-only: the target distances when the tip is unknown."""
        return _frozen(np.full(len(self.target_names), np.nan), (None,), "nan")

    @functools.cached_property
    def nan_critical_distances(self) -> FloatArray:
        """(C,) NaN, read-only: the critical distances when the tip is unknown."""
        return _frozen(np.full(len(self.critical_names), np.nan), (None,), "nan")

    def target_distances_mm(self, p_image: npt.ArrayLike) -> FloatArray:
        """Distances (T,) mm from ``p_image`` (3,) to each target."""
        d: FloatArray = np.linalg.norm(self.p_image_targets - np.asarray(p_image), axis=1)
        return d

    def critical_distances_mm(self, p_image: npt.ArrayLike) -> FloatArray:
        """Distances (C,) mm from ``p_image`` (3,) to the nearest surface of each critical one.

        Unsigned: a tip inside a vessel reports its distance to the wall.
        """
        self._query_buffer[0] = p_image
        # nthreads=1: one query point; a thread pool's start-up costs more than the query.
        return np.array(
            [
                float(scene.compute_distance(self._query, nthreads=1).numpy()[0])
                for scene in self._scenes
            ],
            dtype=np.float64,
        )


# --- the registration navigation uses ---------------------------------------------------


@dataclass(frozen=True, eq=False, kw_only=True)
class Registration:
    """One registration of the case to the patient reference, with its quality.

    ``T_reference_from_image`` (4, 4): maps the case model into the reference marker's
    frame, mm. ``state``: one of ``REGISTRATION_STATES``; navigation shows only the
    ``ACTIVE_STATES``. ``fiducial_errors_mm`` (N,) and their RMS ``fre_mm``; ``fle_mm`` the
    fiducial localisation error the TRE was predicted with. ``predicted_tre_mm`` (T,) and
    ``true_tre_mm`` (T,, NaN when no ground truth) align with ``target_names``.
    ``needs_verification``: restored from disk and not yet confirmed by the user.
    ``registration_id``: unique per registration (the node uses wall-clock ns).
    ``method``: "points" (fiducials) or "surface"; for "surface" the "fiducial" fields are
    the traced points' residuals and their RMS (see :func:`register_organ_surface`).
    ``fiducial_labels`` (N,): the case fiducials used, aligned with ``fiducial_errors_mm``;
    empty for "surface", or unknown (a file written before they were stored).
    ``case_id``: :func:`case_id` of the case registered, "" unknown.
    """

    registration_id: int
    state: str
    method: str
    T_reference_from_image: Mat4
    fre_mm: float
    fiducial_errors_mm: FloatArray
    fle_mm: float
    target_names: tuple[str, ...]
    predicted_tre_mm: FloatArray
    true_tre_mm: FloatArray
    needs_verification: bool = False
    fiducial_labels: tuple[str, ...] = ()
    case_id: str = ""

    def __post_init__(self) -> None:
        if self.state not in REGISTRATION_STATES:
            raise ValueError(f"unknown registration state {self.state!r}")
        if not 0 <= self.registration_id < 1 << 63:
            raise ValueError(f"registration_id {self.registration_id} out of range")
        T = _frozen(self.T_reference_from_image, (4, 4), "T_reference_from_image")
        if not is_rigid(T, tol=_RIGID_TOLERANCE):
            raise ValueError("T_reference_from_image is not a rigid transform")
        n_targets = len(self.target_names)
        object.__setattr__(self, "T_reference_from_image", T)
        object.__setattr__(self, "target_names", tuple(self.target_names))
        for name, shape in (
            ("fiducial_errors_mm", (None,)),
            ("predicted_tre_mm", (n_targets,)),
            ("true_tre_mm", (n_targets,)),
        ):
            object.__setattr__(self, name, _frozen(getattr(self, name), shape, name))
        for name in ("fre_mm", "fle_mm"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
            object.__setattr__(self, name, value)
        if not np.all(np.isfinite(self.fiducial_errors_mm)) or not np.all(
            np.isfinite(self.predicted_tre_mm)
        ):
            raise ValueError("fiducial errors and predicted TRE must be finite")
        labels = tuple(self.fiducial_labels)
        if labels and len(labels) != len(self.fiducial_errors_mm):
            raise ValueError(
                f"{len(labels)} fiducial labels for {len(self.fiducial_errors_mm)} fiducial errors"
            )
        object.__setattr__(self, "fiducial_labels", labels)
        if self.case_id and not _CASE_ID.fullmatch(self.case_id):
            raise ValueError(f"case_id {self.case_id[:80]!r} is not 64 hex digits")

    @property
    def active(self) -> bool:
        """Shown by navigation: accepted, or restored from disk."""
        return self.state in ACTIVE_STATES

    @functools.cached_property
    def T_image_from_reference(self) -> Mat4:
        T = invert_rigid(self.T_reference_from_image)
        T.setflags(write=False)
        return T

    @functools.cached_property
    def max_predicted_tre_mm(self) -> float:
        """The largest predicted TRE over the targets; NaN for a case without targets."""
        return float(self.predicted_tre_mm.max()) if self.predicted_tre_mm.size else math.nan

    def replace(self, *, state: str, needs_verification: bool | None = None) -> Registration:
        """A copy in another state (``needs_verification`` kept unless given)."""
        keep = self.needs_verification if needs_verification is None else needs_verification
        return dataclasses.replace(self, state=state, needs_verification=keep)

    def to_message(self) -> RegistrationResult:
        return RegistrationResult(
            registration_id=self.registration_id,
            state=self.state,
            method=self.method,
            needs_verification=self.needs_verification,
            T_reference_from_image=self.T_reference_from_image,
            fre_mm=self.fre_mm,
            fiducial_errors_mm=self.fiducial_errors_mm,
            target_names=self.target_names,
            predicted_tre_mm=self.predicted_tre_mm,
            true_tre_mm=self.true_tre_mm,
            fle_mm=self.fle_mm,
            fiducial_labels=self.fiducial_labels,
            case_id=self.case_id,
        )


def true_tre_mm(
    T_reference_from_image: Mat4,
    truth_T_reference_from_image: Mat4 | None,
    p_image_targets: Points,
) -> FloatArray:
    """Distances (T,) mm between the estimated and the true target positions; NaN: no truth."""
    p = np.asarray(p_image_targets, dtype=np.float64).reshape(-1, 3)
    if truth_T_reference_from_image is None:
        return np.full(len(p), np.nan)
    d: FloatArray = np.linalg.norm(
        apply(T_reference_from_image, p) - apply(truth_T_reference_from_image, p), axis=1
    )
    return d


def register_fiducials(
    *,
    p_image_fiducials: npt.ArrayLike,
    p_reference_fiducials: npt.ArrayLike,
    fiducial_labels: Sequence[str],
    geometry: CaseGeometry,
    fle_mm: float,
    registration_id: int,
    truth_T_reference_from_image: Mat4 | None = None,
) -> Registration:
    """Paired-point registration of the case fiducials to their measured positions: "proposed".

    ``p_image_fiducials`` (N, 3) from the case, ``p_reference_fiducials`` (N, 3) the same
    fiducials touched with the pointer, in the reference frame (mm); ``fiducial_labels``
    (N,) their case labels, carried with the result so a consumer finds their positions.
    Predicted TRE at the case targets with ``fle_mm`` (FW&M 1998 eq. 46), which the result
    carries too; true TRE when a ground truth is given. Raises ``RegistrationError`` (a
    ValueError) for too few, collinear or mismatched points, ValueError for a label count
    that is not N.
    """
    labels = tuple(fiducial_labels)
    if len(labels) != len(np.asarray(p_reference_fiducials).reshape(-1, 3)):
        raise ValueError(f"{len(labels)} fiducial labels for the fiducials given")
    result = register_paired_points(p_image_fiducials, p_reference_fiducials, fle_mm=fle_mm)
    targets = geometry.p_image_targets
    predicted = result.predicted_tre_mm(targets) if len(targets) else np.zeros(0, dtype=np.float64)
    return Registration(
        registration_id=registration_id,
        state="proposed",
        method="points",
        T_reference_from_image=result.T_patient_from_model,
        fre_mm=result.fre_mm,
        fiducial_errors_mm=result.fiducial_errors_mm,
        fle_mm=result.fle_mm,
        target_names=geometry.target_names,
        predicted_tre_mm=np.asarray(predicted, dtype=np.float64),
        true_tre_mm=true_tre_mm(result.T_patient_from_model, truth_T_reference_from_image, targets),
        fiducial_labels=labels,
        case_id=geometry.case_id,
    )


MIN_SURFACE_POINTS: Final = 20
"""Fewest traced points :func:`register_organ_surface` accepts: 4 cm of trace at 2 mm.

Three points fix a rigid transform in principle; a handful on a smooth organ do not (they
slide along it). The real floor is coverage and curvature, which the predicted error at
the targets reports; this only refuses a compute pressed before any tracing was done."""


def require_surface_points(n_points: int) -> None:
    """Raise RegistrationError ``too_few_points`` unless ``n_points >= MIN_SURFACE_POINTS``."""
    if n_points < MIN_SURFACE_POINTS:
        raise RegistrationError(
            "too_few_points",
            f"only {n_points} surface points traced, need at least {MIN_SURFACE_POINTS}: "
            "trace more of the organ",
        )


def surface_structure(case: Case) -> Structure:
    """The structure surface registration fits: the case's first with role "organ".

    The organ is the surface the surgeon can reach and trace (the phantom's liver);
    tumours, vessels and ducts lie inside it. Case order decides between several organs,
    so a case names its main organ first. ValueError when the case has none.
    """
    for structure in case.structures:
        if structure.role == "organ":
            return structure
    raise ValueError(
        f"case {case.name!r} has no structure with role 'organ' to register a surface to"
    )


@dataclass(frozen=True, eq=False, kw_only=True)
class SurfaceRegistration:
    """A proposed surface :class:`Registration` and the fit it came from (``surface``)."""

    registration: Registration
    surface: SurfaceResult


def register_organ_surface(
    *,
    model_vertices: npt.ArrayLike,
    model_triangles: npt.ArrayLike,
    p_reference_surface: npt.ArrayLike,
    geometry: CaseGeometry,
    registration_id: int,
    T_init: Mat4 | None = None,
    global_init: bool = False,
    truth_T_reference_from_image: Mat4 | None = None,
    config: SurfaceConfig | None = None,
) -> SurfaceRegistration:
    """Rigid surface registration of traced points to the organ surface: "proposed".

    ``model_vertices`` (V, 3) image frame mm and ``model_triangles`` (F, 3): the organ
    (:func:`surface_structure`); ``p_reference_surface`` (N, 3): the traced points,
    reference frame mm, N >= ``MIN_SURFACE_POINTS``. ``T_init``: a ``T_reference_from_image``
    to start from (the active registration, usually by fiducials); ``global_init``: search
    globally too (``nav.registration.surface.register_surface``).

    The registration's fields mean, for method "surface": ``fiducial_errors_mm`` (N,)
    every point's distance to the registered surface, outliers included, in collection
    order; ``fre_mm`` the RMS of the inliers' (within the correspondence gate), i.e. the
    RMS point-to-surface residual; ``fle_mm`` the same figure, the point noise the
    predicted error is scaled by; ``predicted_tre_mm`` ``SurfaceResult.predicted_error_mm``
    at the targets (the scatter of the points about the surface, through the patch's
    geometry); ``true_tre_mm`` against a known truth, NaN without.

    Raises RegistrationError (a ValueError) with its one line: fewer than
    ``MIN_SURFACE_POINTS`` (``too_few_points``), too little overlap, no convergence, a bad
    mesh (see ``register_surface``); ValueError when the traced patch leaves the targets
    unconstrained (a flat or cylindrical patch lets the model slide: predicted error inf).
    """
    points = np.asarray(p_reference_surface, dtype=np.float64).reshape(-1, 3)
    require_surface_points(len(points))
    result = register_surface(
        model_vertices,
        model_triangles,
        points,
        T_init=T_init,
        global_init=global_init,
        config=config,
    )
    targets = geometry.p_image_targets
    predicted = result.predicted_error_mm(targets) if len(targets) else np.zeros(0)
    if not np.all(np.isfinite(predicted)):
        raise ValueError(
            "the traced surface leaves the registration unconstrained (the model can slide "
            "along it): trace more of the organ, over its curved parts"
        )
    registration = Registration(
        registration_id=registration_id,
        state="proposed",
        method="surface",
        T_reference_from_image=result.T_patient_from_model,
        fre_mm=result.rms_residual_mm,
        fiducial_errors_mm=result.residuals_mm,
        fle_mm=result.rms_residual_mm,
        target_names=geometry.target_names,
        predicted_tre_mm=np.asarray(predicted, dtype=np.float64),
        true_tre_mm=true_tre_mm(result.T_patient_from_model, truth_T_reference_from_image, targets),
        case_id=geometry.case_id,
    )
    return SurfaceRegistration(registration=registration, surface=result)


# --- per tracker sample -----------------------------------------------------------------


def _tool(frame: TrackerFrame, tool: str) -> tuple[ToolStatus, Mat4 | None]:
    """(status, T_tracker_from_tool) of ``tool``; MISSING and None when the frame lacks it."""
    try:
        i = frame.tools.index(tool)
    except ValueError:
        return ToolStatus.MISSING, None
    status = frame.statuses[i]
    return status, (frame.T_tracker_from_tools[i] if status is ToolStatus.OK else None)


def _tip_in_reference(T_ref: Mat4, T_ptr: Mat4, p_tip_in_pointer: FloatArray) -> FloatArray:
    # R_ref^-1 (R_ptr p + t_ptr - t_ref), solved rather than transposed: R^T is the inverse
    # only of an exact rotation; a reference off rigid by 1e-4 (the bus's tolerance) put a
    # tip 1 m away 0.1 mm off, and PLUS's own matrices are off by up to 5e-4.
    p_tracker = T_ptr[:3, :3] @ p_tip_in_pointer + T_ptr[:3, 3]
    p: FloatArray = np.linalg.solve(T_ref[:3, :3], p_tracker - T_ref[:3, 3]).astype(np.float64)
    return p


def tip_in_reference(
    frame: TrackerFrame,
    *,
    pointer_tool: str = POINTER,
    reference_tool: str = REFERENCE,
    p_tip_in_pointer: npt.ArrayLike,
) -> FloatArray | None:
    """The pointer tip (3,) mm in the reference frame, or None unless both tools are OK.

    ``T_reference_from_tracker @ T_tracker_from_pointer @ p_tip_in_pointer``: what the
    fiducial collector is fed (it rides on the breathing patient, so a held tip is still).
    """
    _, T_ref = _tool(frame, reference_tool)
    _, T_ptr = _tool(frame, pointer_tool)
    if T_ref is None or T_ptr is None:
        return None
    return _tip_in_reference(T_ref, T_ptr, np.asarray(p_tip_in_pointer, dtype=np.float64))


def nav_state(
    frame: TrackerFrame | None,
    *,
    now_ns: int,
    registration: Registration | None,
    geometry: CaseGeometry,
    pointer_tool: str = POINTER,
    reference_tool: str = REFERENCE,
    p_tip_in_pointer: npt.ArrayLike,
    stale_after_ns: int,
) -> NavState:
    """The navigation state for the newest tracker sample ``frame`` as seen at ``now_ns``.

    ``frame`` None: no sample yet. ``now_ns`` and ``frame.t_sensor_ns`` are on the same
    monotonic clock. ``p_tip_in_pointer`` (3,) mm. Status precedence and what a non-OK
    state carries: see the module docstring.
    """
    active = registration is not None and registration.active
    if frame is None:
        t_sensor_ns, frame_number = 0, 0
        pointer_status, T_ref, T_ptr = ToolStatus.MISSING, None, None
        status = NavStatus.UNREGISTERED if not active else NavStatus.STALE
    else:
        t_sensor_ns, frame_number = frame.t_sensor_ns, frame.frame_number
        _, T_ref = _tool(frame, reference_tool)
        pointer_status, T_ptr = _tool(frame, pointer_tool)
        if not active:
            status = NavStatus.UNREGISTERED
        elif T_ref is None:
            status = NavStatus.REFERENCE_LOST
        elif now_ns - t_sensor_ns > stale_after_ns:
            status = NavStatus.STALE
        else:
            status = NavStatus.OK

    T_tracker_from_image: Mat4 = _IDENTITY
    p_tip_image: FloatArray = _NAN3
    target_d = geometry.nan_target_distances
    critical_d = geometry.nan_critical_distances
    if status is NavStatus.OK:
        assert registration is not None and T_ref is not None  # OK implies both
        T_tracker_from_image = T_ref @ registration.T_reference_from_image
        if T_ptr is not None:
            p_ref = _tip_in_reference(T_ref, T_ptr, np.asarray(p_tip_in_pointer, np.float64))
            T_img = registration.T_image_from_reference
            p_tip_image = T_img[:3, :3] @ p_ref + T_img[:3, 3]
            target_d = geometry.target_distances_mm(p_tip_image)
            critical_d = geometry.critical_distances_mm(p_tip_image)

    return NavState(
        t_sensor_ns=t_sensor_ns,
        frame_number=frame_number,
        status=status,
        needs_verification=bool(active and registration and registration.needs_verification),
        registration_id=registration.registration_id if active and registration else 0,
        T_tracker_from_image=T_tracker_from_image,
        pointer_status=pointer_status,
        p_tip_image=p_tip_image,
        target_names=geometry.target_names,
        target_distances_mm=target_d,
        critical_names=geometry.critical_names,
        critical_distances_mm=critical_d,
        predicted_tre_mm=(
            registration.max_predicted_tre_mm if active and registration else math.nan
        ),
        case_id=geometry.case_id,
    )

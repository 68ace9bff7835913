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
surface (:func:`surface_structure`); deformable registration
(:func:`register_organ_deformable`) deforms the organ, from an accepted registration,
onto such points.

Under a deformable registration (``Registration.deformation``) the tip is still given in
the rigid part's image frame (``T_image_from_reference``, where a renderer drawing under
``T_tracker_from_image`` puts it), and distances are measured in the deformed organ:
to each target moved by the field (``DeformationField.moved_image_mm``), and to each
critical structure from the tip pulled back through the field into the preop model
(:meth:`Registration.undeformed_image_mm`, a few fixed-point steps). The pull-back keeps
the critical structures' BVHs as they are (no rebuild per registration); it is exact at
the structure's surface and off by the field's strain times the distance elsewhere
(under 0.1 x the distance for the sim's 8 mm deformations over a liver), so a distance
reads right where it matters, near the wall.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import open3d as o3d
from scipy.spatial import cKDTree

from nav.arrays import FloatArray
from nav.case import Case, Structure
from nav.frames import REFERENCE
from nav.messages import (
    DeformationField,
    NavState,
    NavStatus,
    RegistrationResult,
    ToolStatus,
    TrackerFrame,
)
from nav.registration.errors import RegistrationError
from nav.registration.paired_point import register_paired_points
from nav.registration.surface import SurfaceConfig, SurfaceResult, register_surface
from nav.transforms import Mat4, Points, apply, invert_rigid, is_rigid

if TYPE_CHECKING:  # torch takes seconds to import: only a deformable fit loads it
    from nav.registration.deformable import DeformableConfig, DeformableResult

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

    def target_distances_mm(
        self, p_image: npt.ArrayLike, p_image_targets: Points | None = None
    ) -> FloatArray:
        """Distances (T,) mm from ``p_image`` (3,) to each target (``p_image_targets``
        (T, 3) where they were moved, by a deformation say; else the case's)."""
        targets = self.p_image_targets if p_image_targets is None else p_image_targets
        d: FloatArray = np.linalg.norm(targets - np.asarray(p_image), axis=1)
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
    ``method``: "points" (fiducials), "surface" or "deformable"; for the last two the
    "fiducial" fields are the traced points' residuals and their RMS (see
    :func:`register_organ_surface`, :func:`register_organ_deformable`).
    ``fiducial_labels`` (N,): the case fiducials used, aligned with ``fiducial_errors_mm``;
    empty for "surface", or unknown (a file written before they were stored).
    ``case_id``: :func:`case_id` of the case registered, "" unknown.
    ``organ_confidence_mm`` (V,): the method's estimated overlay error at each vertex of
    the organ (:func:`surface_structure`), mm, or empty (none: "points").
    ``deformation``: the displacement field of a "deformable" registration (and only
    of one): a model point ``p`` is at ``T_reference_from_image @ p + u(p)``.
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
    organ_confidence_mm: FloatArray = field(default_factory=lambda: np.zeros(0))
    deformation: DeformationField | None = None

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
        confidence = _frozen(self.organ_confidence_mm, (None,), "organ_confidence_mm")
        if not (np.all(np.isfinite(confidence)) and np.all(confidence >= 0.0)):
            raise ValueError("organ_confidence_mm must be finite and >= 0")
        object.__setattr__(self, "organ_confidence_mm", confidence)
        if (self.method == "deformable") != (self.deformation is not None):
            raise ValueError("a deformation comes with method 'deformable', and only with it")

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

    def p_reference_targets(self, p_image_targets: Points) -> Points:
        """Where this registration puts model points ``p_image_targets`` (T, 3): reference
        frame, mm (``T p``, plus ``u(p)`` under a deformation)."""
        p = np.asarray(p_image_targets, dtype=np.float64).reshape(-1, 3)
        out: Points = apply(self.T_reference_from_image, p)
        if self.deformation is not None:
            out = out + self.deformation.displacement_mm(p)
        return out

    def targets_image(self, geometry: CaseGeometry) -> Points:
        """The case targets (T, 3) where navigation measures to them, in the rigid part's
        image frame: moved by the deformation (``moved_image_mm``), or as in the case.
        Computed once per registration and geometry."""
        if self.deformation is None:
            return geometry.p_image_targets
        cached = self.__dict__.get("_targets_image")
        if cached is None or cached[0] is not geometry:
            moved = self.deformation.moved_image_mm(
                geometry.p_image_targets, self.T_reference_from_image
            )
            moved.setflags(write=False)
            cached = (geometry, moved)
            object.__setattr__(self, "_targets_image", cached)
        targets: Points = cached[1]
        return targets

    def undeformed_image_mm(self, p_image: npt.ArrayLike) -> FloatArray:
        """The preop model point (3,) that the deformation moves to ``p_image`` (3,).

        Solves ``q + R^T u(q) = p`` by fixed-point steps ``q <- p - R^T u(q)``, which
        contract while the field's gradient is below 1 (a smooth field of millimetres over
        kernels tens of mm wide: ~0.1, so each step gains a digit): at most 8 steps, until
        ``q`` moves less than 1 um. ``p_image`` itself without a deformation.
        """
        p = np.asarray(p_image, dtype=np.float64).reshape(3)
        if self.deformation is None:
            return p
        R = self.T_reference_from_image[:3, :3]
        q = p
        for _ in range(8):
            q_next = p - (self.deformation.displacement_mm(q) @ R)[0]
            done = float(np.abs(q_next - q).max()) < 1e-3
            q = q_next
            if done:
                break
        return q

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
            organ_confidence_mm=self.organ_confidence_mm.astype(np.float32),
            deformation=self.deformation,
        )


def target_errors_mm(
    registration: Registration, p_image_targets: Points, truth_p_reference_targets: Points | None
) -> FloatArray:
    """Distances (T,) mm between where ``registration`` puts the targets
    (:meth:`Registration.p_reference_targets`) and their true positions
    ``truth_p_reference_targets`` (T, 3), reference frame; NaN when there is no truth."""
    if truth_p_reference_targets is None:
        return np.full(len(p_image_targets), np.nan)
    d: FloatArray = np.linalg.norm(
        registration.p_reference_targets(p_image_targets) - truth_p_reference_targets, axis=1
    )
    return d


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
    geometry), and ``organ_confidence_mm`` the same at every organ vertex;
    ``true_tre_mm`` against a known truth, NaN without.

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
    organ_confidence = result.predicted_error_mm(model_vertices)
    if not (np.all(np.isfinite(predicted)) and np.all(np.isfinite(organ_confidence))):
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
        organ_confidence_mm=organ_confidence,
    )
    return SurfaceRegistration(registration=registration, surface=result)


MAX_RIGID_CHANGE_MM: Final = 10.0
"""A deformable fit whose rigid part moves the organ's centre farther than this from its
start is refused (see :func:`register_organ_deformable`)."""
MAX_RIGID_CHANGE_DEG: Final = 10.0
"""... or turns it by more than this."""
MAX_SEEN_DISPLACEMENT_SD: Final = 3.0
"""... or moves a seen vertex by more than this many of the prior's 3D spread."""
LANDMARK_MARGIN_MM: Final = 0.25
"""... or leaves the touched landmarks farther (RMS) than the start did, by more than this."""


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Landmarks the pointer touched: case fiducials ``labels`` (N,), their model positions
    ``p_image`` (N, 3) and where they were touched, ``p_reference`` (N, 3), mm."""

    labels: tuple[str, ...]
    p_image: FloatArray
    p_reference: FloatArray


@dataclass(frozen=True)
class LandmarkCheck:
    """RMS distance (mm) of the touched landmarks from where the start (``rigid_rms_mm``)
    and the deformable fit (``deformable_rms_mm``) put them; ``n`` landmarks."""

    n: int
    rigid_rms_mm: float
    deformable_rms_mm: float


def check_landmarks(landmarks: Landmarks, T_start: Mat4, result: DeformableResult) -> LandmarkCheck:
    """Where the start and the fit put the touched landmarks (held out of the fit).

    Raises RegistrationError ``contradicts_landmarks`` when the fit leaves them farther
    than the start did by more than ``LANDMARK_MARGIN_MM`` RMS.
    """

    def rms(p_reference: FloatArray) -> float:
        return float(np.sqrt(np.mean(np.sum((p_reference - landmarks.p_reference) ** 2, axis=1))))

    check = LandmarkCheck(
        n=len(landmarks.labels),
        rigid_rms_mm=rms(apply(T_start, landmarks.p_image)),
        deformable_rms_mm=rms(result.warp(landmarks.p_image)),
    )
    if check.deformable_rms_mm > check.rigid_rms_mm + LANDMARK_MARGIN_MM:
        raise RegistrationError(
            "contradicts_landmarks",
            f"the deformable fit puts the {check.n} touched fiducials {check.deformable_rms_mm:.2f}"
            f" mm RMS from where the pointer touched them, the accepted registration "
            f"{check.rigid_rms_mm:.2f} mm: it contradicts them (trace more of the organ, or "
            "keep the accepted registration)",
        )
    return check


@dataclass(frozen=True, kw_only=True)
class DeformableRegistration:
    """A proposed deformable :class:`Registration` and the fit it came from."""

    registration: Registration
    deformable: DeformableResult
    fitness: float
    """The share of the points that end within the fit's gate of the deformed surface."""
    landmarks: LandmarkCheck | None = None
    """The held-out check against the touched fiducials, None without them."""


def _rigid_change(T_from: Mat4, T_to: Mat4, p_centre: FloatArray) -> tuple[float, float]:
    """How far (mm) ``T_to`` moves ``p_centre`` (3,) from where ``T_from`` puts it, and by
    what angle (degrees) it turns against ``T_from``."""
    delta = T_to[:3, :3] @ T_from[:3, :3].T
    cos = min(1.0, max(-1.0, (float(np.trace(delta)) - 1.0) / 2.0))
    moved = float(np.linalg.norm(apply(T_to, p_centre) - apply(T_from, p_centre)))
    return moved, math.degrees(math.acos(cos))


def register_organ_deformable(
    *,
    model_vertices: npt.ArrayLike,
    model_triangles: npt.ArrayLike,
    p_reference_surface: npt.ArrayLike,
    geometry: CaseGeometry,
    registration_id: int,
    T_init: Mat4,
    config: DeformableConfig | None = None,
    landmarks: Landmarks | None = None,
) -> DeformableRegistration:
    """Deformable registration of traced points to the organ, from ``T_init``: "proposed".

    ``model_vertices`` (V, 3) image frame mm and ``model_triangles`` (F, 3): the organ
    (:func:`surface_structure`); ``p_reference_surface`` (N, 3): the traced points,
    reference frame mm, N >= ``MIN_SURFACE_POINTS``; ``T_init``: the accepted registration's
    ``T_reference_from_image`` (``nav.registration.deformable.register_deformable`` wants
    a start good to ~10 mm / 10 degrees). ``config``: the fit's settings (its ``device``
    the torch device).

    The registration's fields for method "deformable": ``T_reference_from_image`` the
    fit's rigid part; ``deformation`` its field (control points in the image frame);
    ``fiducial_errors_mm`` (N,) each point's distance to the deformed surface, outliers
    included; ``fre_mm`` and ``fle_mm`` the inliers' RMS; ``predicted_tre_mm`` the
    posterior error estimate at each target (``DeformableResult.confidence_at_mm``);
    ``organ_confidence_mm`` the same at every organ vertex. ``true_tre_mm`` is NaN: the
    truth of a simulation is the caller's (:func:`target_errors_mm`).

    Refused, RegistrationError (a ValueError) with its one line: fewer than
    ``MIN_SURFACE_POINTS`` points (``too_few_points``), the fit's own refusals
    (``insufficient_overlap``: points in the air or on another organ, well off the
    surface), and a fit that moves the organ implausibly far (``implausible``): its rigid
    part moves the organ's centre more than ``MAX_RIGID_CHANGE_MM`` or turns it more than
    ``MAX_RIGID_CHANGE_DEG`` from ``T_init`` (the start is an accepted registration, good
    to a few mm: a fit that leaves it that far has slid off), or it displaces a vertex
    within 5 mm of the data by more than ``MAX_SEEN_DISPLACEMENT_SD`` times the prior's
    3D spread (23 mm with the default prior: there the data pin the surface, and a
    displacement the prior finds that unlikely means the data are not this organ).
    Measured on the phantom with ``nav.sim_deformation`` (8 mm peak, seeds 0-11, the
    anterior patch of ``tests/process/test_nav_surface.py`` from a fiducial start): 11 fits
    stay within 7.2 mm / 6.7 degrees and 5.8 mm at the seen vertices; seed 8 turns 13
    degrees and is refused (its targets would land 8-15 mm off, where the fiducials had
    them within 2.6 mm). A sphere cap 20-60 mm off the liver (another organ) turns it
    76-79 degrees or displaces the seen vertices 33-35 mm; points 60 mm clear of it are
    ``insufficient_overlap``. A patch moved rigidly by 8 mm passes (it is what a moved
    organ looks like); by 15 mm it is refused.

    ``landmarks``: the fiducials the start was registered with, where they were touched.
    They are held out of the fit, so they test it: a fit that leaves them farther (RMS)
    than the start did, by more than ``LANDMARK_MARGIN_MM``, is refused
    (``contradicts_landmarks``; :func:`check_landmarks`). Measured on the phantom
    (``nav.sim_deformation`` seeds 0-11, fiducials touched on the deformed surface, the
    demo's raster trace): the fit made the mean target error worse on 9 seeds and the check
    refuses 8 of them; of the 3 where it helped it refuses 1 (seed 5, whose tumour error
    fell but whose fiducials moved away), and it lets seed 0 through (targets 1.69 -> 1.79
    mm, fiducials 2.19 -> 1.94). The method's own predicted TRE does not separate these
    cases; the landmarks do. ValueError for a torch device that is not here.
    """
    from nav.registration.deformable import DeformableConfig, register_deformable

    points = np.asarray(p_reference_surface, dtype=np.float64).reshape(-1, 3)
    require_surface_points(len(points))
    cfg = config if config is not None else DeformableConfig()
    vertices = np.asarray(model_vertices, dtype=np.float64).reshape(-1, 3)
    result = register_deformable(vertices, model_triangles, points, T_init, config=cfg)
    T = result.T_patient_from_model
    moved_mm, turned_deg = _rigid_change(T_init, T, vertices.mean(axis=0))
    if moved_mm > MAX_RIGID_CHANGE_MM or turned_deg > MAX_RIGID_CHANGE_DEG:
        raise RegistrationError(
            "implausible",
            f"the deformable fit moves the organ {moved_mm:.1f} mm and {turned_deg:.1f} "
            f"degrees from its start (at most {MAX_RIGID_CHANGE_MM:g} mm and "
            f"{MAX_RIGID_CHANGE_DEG:g} degrees): the points do not fit this organ near "
            "the accepted registration",
        )
    warped = result.warp(vertices)
    seen_d, _ = cKDTree(points).query(warped, distance_upper_bound=5.0)
    seen = np.isfinite(seen_d)
    prior_sd_mm = math.sqrt(3.0 * sum(sd**2 for sd in cfg.deformation_sd_mm))
    limit_mm = MAX_SEEN_DISPLACEMENT_SD * prior_sd_mm
    largest_mm = float(np.linalg.norm(result.displacements_mm[seen], axis=1).max(initial=0.0))
    if largest_mm > limit_mm:
        raise RegistrationError(
            "implausible",
            f"the deformable fit displaces the organ by {largest_mm:.1f} mm where the points "
            f"lie (at most {limit_mm:.0f} mm, {MAX_SEEN_DISPLACEMENT_SD:g} times the prior's "
            "spread): the points do not lie on this organ",
        )
    check = None if landmarks is None else check_landmarks(landmarks, T_init, result)
    targets = geometry.p_image_targets
    predicted = result.confidence_at_mm(targets) if len(targets) else np.zeros(0)
    deformation = DeformationField(
        centres_image_mm=result.field.centres_mm,
        coefficients_mm=result.field.coefficients_mm,
        widths_mm=result.field.widths_mm,
        kernel_weights=result.field.kernel_weights,
    )
    registration = Registration(
        registration_id=registration_id,
        state="proposed",
        method="deformable",
        T_reference_from_image=T,
        fre_mm=result.rms_residual_mm,
        fiducial_errors_mm=result.residuals_mm,
        fle_mm=result.rms_residual_mm,
        target_names=geometry.target_names,
        predicted_tre_mm=np.asarray(predicted, dtype=np.float64),
        true_tre_mm=np.full(len(targets), np.nan),
        case_id=geometry.case_id,
        organ_confidence_mm=result.confidence_mm,
        deformation=deformation,
    )
    fitness = float(np.mean(result.residuals_mm < cfg.gate_mm))
    return DeformableRegistration(
        registration=registration, deformable=result, fitness=fitness, landmarks=check
    )


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
            # Under a deformation: to the moved targets, and to the critical structures
            # from the tip pulled back into the preop model (see the module).
            target_d = geometry.target_distances_mm(
                p_tip_image, registration.targets_image(geometry)
            )
            critical_d = geometry.critical_distances_mm(
                registration.undeformed_image_mm(p_tip_image)
            )

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

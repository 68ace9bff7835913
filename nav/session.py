"""The navigator session: one case, its registrations, point collection, the surface compute.

The nav node's state machine (``nav/nav_node.py`` runs it): no sockets and no clock reads
(every time is an argument); it reads and writes the registration file
(``nav.registration_store``) and runs a surface compute on a worker thread of its own.
Requests and replies are the typed control messages (``nav.messages.control``, where each
command's meaning is documented); a refused request raises ValueError with one line (the
node's reply error) and changes nothing.

States: a collection (fiducials or surface points, ``nav.collectors``) runs or not; a
``proposal`` (state "proposed") waits for accept or reject; the ``active`` registration
("accepted", or "restored" from the file and needing verification) is what navigation
shows (``nav.navigation.nav_state``). Every registration event (proposed, accepted,
rejected, restored, verified) goes to ``emit``, which the node publishes on
``nav/registration``.

Surface and deformable compute: :meth:`NavigatorSession.compute` starts a worker thread
(one ``SurfaceJob`` for either) and returns at once; the caller's loop calls
:meth:`NavigatorSession.finish_compute` to take its result (a proposal or a refusal) on its
own thread. A deformable collection ("deformable") starts only from an active
registration the user vouches for: accepted, or restored and verified (a restored one
still needing verification may be off by whatever moved while the node was down, and a
deformation fitted on top of it would bend the organ to make up for it).

Simulation truth: with ``truth_T_reference_from_image``, the true target positions are
``truth_T @ p`` (reference frame), or, with ``truth_deformation_seed`` >= 0, ``truth_T @
organ_deformation(organ vertices, seed, peak).deformed(p)`` (``nav.sim_deformation``); the
true TRE of every registration, whatever its method, is measured against those
(``nav.navigation.target_errors_mm``: a deformable one's estimate is ``T p + u(p)``).

Starting a new collection, accepting or loading a case makes a running compute moot (its
collection's *generation* changed): its result is discarded when it ends. While it runs
it shares the GIL with the loop: Python releases it every 5 ms at most, so a state may be
that much late.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nav.arrays import FloatArray, IntArray
from nav.case import Case, load_case
from nav.collectors import (
    CollectionProgress,
    DwellParams,
    FiducialCollector,
    SurfaceCollector,
    SurfaceProgress,
)
from nav.messages import (
    AcceptRegistration,
    CaseLoaded,
    CollectFiducial,
    ComputeRegistration,
    FiducialCollected,
    FiducialProgress,
    FiducialsProposed,
    GetRegistrationStatus,
    LoadCase,
    NavState,
    RegistrationAccepted,
    RegistrationRef,
    RegistrationStatus,
    RegistrationSummary,
    RejectRegistration,
    Residuals,
    StartCollection,
    SurfaceCloud,
    SurfaceCompute,
    SurfaceComputeStarted,
    TraceProgress,
    TrackerFrame,
    VerifyRegistration,
)
from nav.messages.surface import MAX_SURFACE_POINTS
from nav.navigation import (
    CaseGeometry,
    DeformableRegistration,
    Landmarks,
    Registration,
    SurfaceRegistration,
    nav_state,
    register_fiducials,
    register_organ_deformable,
    register_organ_surface,
    require_surface_points,
    surface_structure,
    target_errors_mm,
    tip_in_reference,
)
from nav.registration_store import RegistrationFileError, load_registration, save_registration
from nav.sim_deformation import organ_deformation
from nav.transforms import Mat4, Points, apply

log = logging.getLogger(__name__)

MAX_TOUCHED_KEPT = 16
"""Points registrations whose touched fiducials are kept (the newest): a deformable fit
starts from the accepted one, which is among the last computed."""


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """What the session takes from the node's config (``nav_node.Config`` documents each).

    ``p_tip_in_pointer`` (3,) mm, pointer marker frame. ``truth_T_reference_from_image``
    (4, 4) or None (the real world: true TRE unknown); ``truth_deformation_seed`` (< 0:
    none) and ``truth_deformation_peak_mm``: the sim organ's deformation (see the module).
    ``registration_file``: "" = not persisted. ``deformable_device``: the torch device of
    a deformable fit ("cpu", "cuda", "cuda:1", or "auto": cuda where there is one).
    ``deformable_threads``: torch's intra-op threads during a deformable fit (0: torch's
    default), see ``nav_node.Config``.
    """

    pointer_tool: str
    reference_tool: str
    p_tip_in_pointer: FloatArray
    stale_after_ns: int
    fle_mm: float
    dwell: DwellParams
    surface_spacing_mm: float
    surface_max_points: int
    registration_file: str = ""
    truth_T_reference_from_image: Mat4 | None = None
    truth_deformation_seed: int = -1
    truth_deformation_peak_mm: float = 8.0
    deformable_device: str = "cpu"
    deformable_threads: int = 1


def resolve_torch_device(name: str) -> str:
    """The torch device ``name`` means here ("auto": "cuda" if torch sees one, else "cpu").

    ValueError with one line when it is not a device name or not on this machine.
    """
    import torch  # seconds to import: called on the deformable worker, never the loop

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.empty(0, device=torch.device(name))
    except (RuntimeError, AssertionError) as error:
        reason = (str(error).strip().splitlines() or ["unknown"])[0]
        raise ValueError(f"torch device {name!r} is not available here: {reason}") from None
    return name


_torch_import: threading.Thread | None = None


def _preload_torch() -> None:
    """Import torch on a thread of its own, once per process, from the first deformable
    collection: the trace that follows takes longer than the import, so the fit finds it
    loaded. Never at start: loading its libraries holds the GIL for up to a second at a
    time (measured here: the loop thread stalled 0.24-0.98 s during a 1.7-3.0 s import), so
    a nav node that imported it at start sent STALE states in its first seconds."""
    global _torch_import
    if _torch_import is None:
        _torch_import = threading.Thread(target=_import_torch, name="import-torch", daemon=True)
        _torch_import.start()


def _import_torch() -> None:
    import torch  # noqa: F401  (see _preload_torch)


def truth_targets_reference(
    case: Case,
    p_image_targets: Points,
    *,
    truth_T_reference_from_image: Mat4 | None,
    deformation_seed: int = -1,
    deformation_peak_mm: float = 8.0,
) -> Points | None:
    """The case targets' true positions (T, 3) in the reference frame, None without a
    truth (see the module): where the simulation put the case, after its organ's
    deformation (``nav.sim_deformation``) when ``deformation_seed`` >= 0. A seed with a
    case that has no organ: the truth is rigid (logged). ``ornav validate`` uses it too."""
    truth = truth_T_reference_from_image
    if truth is None:
        return None
    p = p_image_targets
    if deformation_seed >= 0:
        try:
            organ = surface_structure(case)
        except ValueError as error:
            log.warning("no truth deformation: %s", error)
        else:
            deformation = organ_deformation(
                np.asarray(organ.mesh.vertices),
                seed=deformation_seed,
                peak_mm=deformation_peak_mm,
            )
            p = deformation.deformed(p)
    out: Points = apply(truth, p)
    out.setflags(write=False)
    return out


def _by_name(names: tuple[str, ...], values: FloatArray) -> dict[str, float | None]:
    # A reply carries no NaN: an unknown value is None.
    return {n: (float(v) if math.isfinite(v) else None) for n, v in zip(names, values, strict=True)}


def summary_of(registration: Registration) -> RegistrationSummary:
    """A registration as a reply shows it: per-fiducial errors for points, their
    distribution for a surface (one residual per traced point: thousands)."""
    errors = registration.fiducial_errors_mm
    residuals = None
    if registration.method != "points":
        residuals = Residuals(
            count=len(errors),
            median=float(np.median(errors)) if len(errors) else None,
            p95=float(np.percentile(errors, 95)) if len(errors) else None,
            max=float(errors.max()) if len(errors) else None,
        )
    return RegistrationSummary(
        registration_id=registration.registration_id,
        state=registration.state,
        method=registration.method,
        needs_verification=registration.needs_verification,
        fre_mm=registration.fre_mm,
        fle_mm=registration.fle_mm,
        predicted_tre_mm=_by_name(registration.target_names, registration.predicted_tre_mm),
        true_tre_mm=_by_name(registration.target_names, registration.true_tre_mm),
        fiducial_errors_mm=tuple(float(e) for e in errors) if residuals is None else (),
        fiducial_labels=registration.fiducial_labels if residuals is None else (),
        residuals_mm=residuals,
    )


def progress_of(progress: CollectionProgress | SurfaceProgress) -> FiducialProgress | TraceProgress:
    """A collector's progress as a reply shows it."""
    if isinstance(progress, SurfaceProgress):
        return TraceProgress(
            collected=progress.collected,
            max_points=progress.max_points,
            path_length_mm=progress.path_length_mm,
            full=progress.full,
        )
    return FiducialProgress(
        collected=progress.collected,
        total=progress.total,
        labels=progress.labels,
        next_label=progress.next_label,
    )


@dataclass(eq=False)
class SurfaceJob:
    """One surface or deformable compute on its worker thread.

    The worker writes ``result`` or ``error`` and then sets ``done``; the loop thread reads
    them only after ``done`` is set, so they need no lock. ``generation``: the session's
    when the job started; a different one when it ends means its collection is gone.
    """

    registration_id: int
    generation: int
    n_points: int
    method: str = "surface"
    done: threading.Event = field(default_factory=threading.Event)
    result: SurfaceRegistration | DeformableRegistration | None = None
    error: Exception | None = None

    def run(self, work: Callable[[], SurfaceRegistration | DeformableRegistration]) -> None:
        """Run ``work`` on a daemon thread: its result or its exception, then ``done``.

        A daemon: a stop request does not wait for a compute (its result would be lost
        with the process anyway).
        """

        def target() -> None:
            try:
                self.result = work()
            except Exception as error:  # handed to the loop thread, which decides
                self.error = error
            finally:
                self.done.set()

        threading.Thread(target=target, name=f"{self.method}-registration", daemon=True).start()


class NavigatorSession:
    """The nav node's state between frames (see the module): case, registrations, collection.

    ``emit`` receives every registration event; ``counters`` (a ``Counter``, the node's
    heartbeat counters) counts ``fiducials_collected``, ``surface_points_collected``,
    ``registrations_proposed``, ``registrations_accepted``, ``registrations_refused`` and
    ``registration_file_refused``. Call :meth:`restore` once after construction. Not
    thread-safe: one thread calls it (the surface worker touches only its ``SurfaceJob``).
    """

    def __init__(
        self,
        settings: SessionSettings,
        case: Case,
        *,
        emit: Callable[[Registration], object],
        counters: Counter[str],
        emit_trace: Callable[[SurfaceCloud], object] | None = None,
    ) -> None:
        self.settings = settings
        self.emit = emit
        self.emit_trace = emit_trace
        self.counters = counters
        self.last_frame: TrackerFrame | None = None
        self._last_id = 0
        self._generation = 0  # bumped whenever a running surface compute becomes moot
        self.job: SurfaceJob | None = None  # the surface compute running, if any
        self.last_compute: SurfaceCompute | None = None  # for registration.status
        self.collector: FiducialCollector | SurfaceCollector | None = None
        self.collect_method: str | None = None  # "points", "surface" or "deformable"
        # Where the pointer touched the fiducials of each points registration computed in
        # this run, by id: a deformable fit from one is checked against them.
        self._touched: dict[int, Landmarks] = {}
        self._set_case(case)

    def _set_case(self, case: Case) -> None:
        self.case = case
        self.geometry = CaseGeometry.from_case(case)
        self.truth_targets = truth_targets_reference(
            case,
            self.geometry.p_image_targets,
            truth_T_reference_from_image=self.settings.truth_T_reference_from_image,
            deformation_seed=self.settings.truth_deformation_seed,
            deformation_peak_mm=self.settings.truth_deformation_peak_mm,
        )
        self.active: Registration | None = None
        self.proposal: Registration | None = None
        self._set_collector(None)

    def _set_collector(
        self, collector: FiducialCollector | SurfaceCollector | None, method: str | None = None
    ) -> None:
        self.collector = collector
        self.collect_method = method if collector is not None else None
        self._generation += 1

    def _with_truth(self, registration: Registration) -> Registration:
        """``registration`` with its true TRE against the simulation's truth (NaN: none)."""
        true = target_errors_mm(registration, self.geometry.p_image_targets, self.truth_targets)
        return replace(registration, true_tre_mm=true)

    # --- per frame ---------------------------------------------------------------

    def on_frame(self, frame: TrackerFrame) -> None:
        """Take one tracker sample (newer than the last): collection, then :meth:`state`."""
        self.last_frame = frame
        collector = self.collector
        if collector is None:
            return
        p_ref = tip_in_reference(
            frame,
            pointer_tool=self.settings.pointer_tool,
            reference_tool=self.settings.reference_tool,
            p_tip_in_pointer=self.settings.p_tip_in_pointer,
        )
        if isinstance(collector, SurfaceCollector):
            if collector.feed(p_ref):
                self.counters["surface_points_collected"] += 1
                if collector.progress.full:
                    log.warning(
                        "surface collection full (%d points): compute, or start over",
                        collector.max_points,
                    )
            return
        recorded = collector.feed(frame.t_sensor_ns, p_ref)
        if recorded is not None:
            self._collected(recorded, "dwell")

    def on_surface_cloud(self, cloud: SurfaceCloud) -> int:
        """Take a camera's surface patch (``surface/<source>``) into a surface collection;
        returns the points taken. Only a cloud in the ``reference`` frame can join the
        pointer's points (a camera-frame cloud is not placed on the patient): counted
        ``surface_clouds_unplaced``; one outside a surface collection ``surface_clouds_idle``.
        """
        collector = self.collector
        if cloud.frame != "reference":
            self.counters["surface_clouds_unplaced"] += 1
            return 0
        if not isinstance(collector, SurfaceCollector):
            self.counters["surface_clouds_idle"] += 1
            return 0
        taken = collector.add_cloud(cloud.points_mm)
        self.counters["surface_clouds"] += 1
        self.counters["surface_points_collected"] += taken
        if collector.progress.full:
            log.warning(
                "surface collection full (%d points): compute, or start over",
                collector.max_points,
            )
        return taken

    def state(self, now_ns: int) -> NavState:
        """The navigation state at ``now_ns`` (host monotonic clock)."""
        return nav_state(
            self.last_frame,
            now_ns=now_ns,
            registration=self.active,
            geometry=self.geometry,
            pointer_tool=self.settings.pointer_tool,
            reference_tool=self.settings.reference_tool,
            p_tip_in_pointer=self.settings.p_tip_in_pointer,
            stale_after_ns=self.settings.stale_after_ns,
        )

    def registrations(self) -> Iterator[Registration]:
        """The active registration, then the pending proposal, where there are: what the
        node re-publishes so that a late joiner has both."""
        for registration in (self.active, self.proposal):
            if registration is not None:
                yield registration

    # --- registration ------------------------------------------------------------

    def _collected(self, index: int, how: str) -> None:
        assert isinstance(self.collector, FiducialCollector)
        self.counters["fiducials_collected"] += 1
        p = self.collector.points_reference[index]
        log.info(
            "fiducial %s (%d of %d) collected by %s at (%.2f, %.2f, %.2f) mm in reference",
            self.collector.labels[index],
            index + 1,
            len(self.collector.labels),
            how,
            *p,
        )

    def _new_id(self, now_unix_ns: int) -> int:
        # Wall-clock ns: unique across restarts of the node, so a consumer never confuses
        # a registration with an older one.
        self._last_id = max(now_unix_ns, self._last_id + 1)
        return self._last_id

    def start(self, request: StartCollection) -> FiducialProgress | TraceProgress:
        if request.method == "surface":
            return self._start_surface("surface")
        if request.method == "deformable":
            active = self.active
            if active is None:
                raise ValueError(
                    "a deformable registration starts from an accepted one: register by "
                    "fiducials or surface and accept it first"
                )
            if active.needs_verification:
                raise ValueError(
                    f"registration {active.registration_id} was restored and needs "
                    "verification (registration.verify) before a deformable registration "
                    "starts from it"
                )
            _preload_torch()
            return self._start_surface("deformable")
        if len(self.case.fiducials) < 3:
            raise ValueError(f"case {self.case.name!r} has {len(self.case.fiducials)} fiducials")
        collector = FiducialCollector(
            self.case.fiducials.labels, params=self.settings.dwell, auto=request.dwell
        )
        self._set_collector(collector, "points")
        self.proposal = None  # a new collection makes any pending proposal moot
        log.info(
            "registration: collecting %d fiducials (%s)",
            len(self.case.fiducials),
            "dwell or pedal" if request.dwell else "pedal",
        )
        return progress_of(collector.progress)

    def _start_surface(self, method: str) -> TraceProgress:
        organ = surface_structure(self.case)  # ValueError: a case without an organ
        collector = SurfaceCollector(
            spacing_mm=self.settings.surface_spacing_mm,
            max_points=self.settings.surface_max_points,
        )
        self._set_collector(collector, method)
        self.proposal = None
        log.info(
            "registration: collecting surface points on %r every %.1f mm (at most %d) for "
            "a %s registration",
            organ.name,
            self.settings.surface_spacing_mm,
            self.settings.surface_max_points,
            method,
        )
        return self._trace_progress(collector)

    def _trace_progress(self, collector: SurfaceCollector) -> TraceProgress:
        progress = collector.progress
        return TraceProgress(
            collected=progress.collected,
            max_points=progress.max_points,
            path_length_mm=progress.path_length_mm,
            full=progress.full,
            method=self.collect_method or "surface",
        )

    def collect(self, _request: CollectFiducial, *, now_ns: int) -> FiducialCollected:
        """Record the next fiducial from the samples before ``now_ns`` (monotonic)."""
        if self.collector is None:
            raise ValueError("no collection running: send registration.start first")
        if isinstance(self.collector, SurfaceCollector):
            raise ValueError("a surface collection records the tip as it moves: trace the organ")
        index = self.collector.collect_now(now_ns)
        self._collected(index, "pedal")
        progress = progress_of(self.collector.progress)
        assert isinstance(progress, FiducialProgress)
        return FiducialCollected(progress=progress, label=self.collector.labels[index])

    def compute(
        self, _request: ComputeRegistration, *, now_unix_ns: int
    ) -> FiducialsProposed | SurfaceComputeStarted:
        """Propose a registration (points), or start a surface compute; ``now_unix_ns``
        (wall clock) makes the registration id."""
        if self.collector is None:
            raise ValueError("no collection running: send registration.start first")
        if isinstance(self.collector, SurfaceCollector):
            if self.collect_method == "deformable":
                return self._compute_deformable(self.collector, now_unix_ns)
            return self._compute_surface(self.collector, now_unix_ns)
        p_reference = self.collector.points_reference
        k = len(p_reference)
        proposal = register_fiducials(
            p_image_fiducials=self.case.fiducials.points_lps[:k],
            p_reference_fiducials=p_reference,
            fiducial_labels=self.case.fiducials.labels[:k],
            geometry=self.geometry,
            fle_mm=self.settings.fle_mm,
            registration_id=self._new_id(now_unix_ns),
        )  # RegistrationError (a ValueError) for too few or collinear points: a reply error
        proposal = self._with_truth(proposal)
        self._touched[proposal.registration_id] = Landmarks(
            labels=self.case.fiducials.labels[:k],
            p_image=self.case.fiducials.points_lps[:k].copy(),
            p_reference=p_reference,
        )
        while len(self._touched) > MAX_TOUCHED_KEPT:
            self._touched.pop(next(iter(self._touched)))
        self.proposal = proposal
        self.counters["registrations_proposed"] += 1
        self.emit(proposal)
        log.info(
            "registration %d proposed from %d fiducials: FRE %.3f mm, predicted TRE max %.3f mm",
            proposal.registration_id,
            k,
            proposal.fre_mm,
            proposal.max_predicted_tre_mm,
        )
        return FiducialsProposed(summary=summary_of(proposal), n_fiducials=k)

    def _surface_inputs(self, collector: SurfaceCollector) -> tuple[str, Points, Points, IntArray]:
        """What a surface or deformable compute needs: the organ's name, the points, and
        copies of the organ's vertices and triangles for the worker (it reads only those).
        ValueError (one line) while another compute runs, for a case without an organ, or
        too few points."""
        self._refuse_second_job()
        organ = surface_structure(self.case)
        points = collector.points_reference
        require_surface_points(len(points))  # RegistrationError: the reply's one line
        vertices = np.array(organ.mesh.vertices, dtype=np.float64)
        triangles = np.array(organ.mesh.faces, dtype=np.int64)
        return organ.name, points, vertices, triangles

    def _compute_surface(
        self, collector: SurfaceCollector, now_unix_ns: int
    ) -> SurfaceComputeStarted:
        organ_name, points, vertices, triangles = self._surface_inputs(collector)
        active = self.active
        T_init = active.T_reference_from_image if active is not None else None
        # A restored registration may be off (the patient or the marker moved while the node
        # was down): let a global search compete with it. None at all: search globally.
        global_init = active is None or active.needs_verification
        if active is None:
            start = "global"
        else:
            start = f"registration {active.registration_id}" + (
                " and global" if global_init else ""
            )
        job = SurfaceJob(self._new_id(now_unix_ns), self._generation, len(points))
        geometry = self.geometry

        def work() -> SurfaceRegistration:
            # Reads only its own copies and immutable data (the geometry's targets; never
            # its query buffer, which the loop thread uses).
            return register_organ_surface(
                model_vertices=vertices,
                model_triangles=triangles,
                p_reference_surface=points,
                geometry=geometry,
                registration_id=job.registration_id,
                T_init=T_init,
                global_init=global_init,
            )

        return self._launch(job, work, collector, organ_name, start)

    def _compute_deformable(
        self, collector: SurfaceCollector, now_unix_ns: int
    ) -> SurfaceComputeStarted:
        organ_name, points, vertices, triangles = self._surface_inputs(collector)
        active = self.active
        if active is None or active.needs_verification:  # start() checked; accept/load since
            raise ValueError("a deformable registration starts from an accepted one")
        device_name = self.settings.deformable_device
        job = SurfaceJob(self._new_id(now_unix_ns), self._generation, len(points), "deformable")
        geometry, T_init = self.geometry, active.T_reference_from_image
        threads = self.settings.deformable_threads
        landmarks = self._touched.get(active.registration_id)
        if landmarks is None:
            log.warning(
                "registration %d: no touched fiducials to check the deformable fit against "
                "(a %s registration, or one from before a restart)",
                active.registration_id,
                active.method,
            )

        def work() -> DeformableRegistration:
            import torch

            from nav.registration.deformable import DeformableConfig

            # On the worker: resolving the device imports torch, which the loop must never
            # wait for. A device that is not here refuses the compute (ValueError).
            device = resolve_torch_device(device_name)
            if threads > 0:
                # Process-wide, but torch runs nowhere else in the node: this keeps the
                # fit from taking every core from the loop (see nav_node.Config).
                torch.set_num_threads(threads)
            return register_organ_deformable(
                model_vertices=vertices,
                model_triangles=triangles,
                p_reference_surface=points,
                geometry=geometry,
                registration_id=job.registration_id,
                T_init=T_init,
                config=DeformableConfig(device=device),
                landmarks=landmarks,
            )

        start = f"registration {active.registration_id} on {device_name}"
        return self._launch(job, work, collector, organ_name, start)

    def _refuse_second_job(self) -> None:
        if self.job is not None:
            raise ValueError(
                f"{self.job.method} registration {self.job.registration_id} is still being computed"
            )

    def _launch(
        self,
        job: SurfaceJob,
        work: Callable[[], SurfaceRegistration | DeformableRegistration],
        collector: SurfaceCollector,
        organ_name: str,
        start: str,
    ) -> SurfaceComputeStarted:
        """Start ``job`` running ``work``; the status record, the log line and the reply.

        The pointer's part of the collection goes out as a ``SurfaceCloud`` (source
        "pointer", reference frame) through ``emit_trace``, so a recording holds every
        surface source the fit used in one form, whichever node produced it.
        """
        job.run(work)
        self._emit_trace(collector)
        self.job = job
        progress = collector.progress
        self.last_compute = SurfaceCompute(
            registration_id=job.registration_id,
            state="running",
            n_points=job.n_points,
            start=start,
            method=job.method,
        )
        log.info(
            "registration %d: %s registration of %d points (%.0f mm traced) to %r started from %s",
            job.registration_id,
            job.method,
            job.n_points,
            progress.path_length_mm,
            organ_name,
            start,
        )
        return SurfaceComputeStarted(
            registration_id=job.registration_id,
            n_points=job.n_points,
            path_length_mm=progress.path_length_mm,
            start=start,
            method=job.method,
        )

    def _emit_trace(self, collector: SurfaceCollector) -> None:
        traced = collector.pointer_points_reference[:MAX_SURFACE_POINTS]
        if self.emit_trace is None or not len(traced):
            return
        frame = self.last_frame
        self.emit_trace(
            SurfaceCloud(
                source="pointer",
                frame="reference",
                t_sensor_ns=frame.t_sensor_ns if frame is not None else 0,
                points_mm=traced.astype(np.float32),
                # The tip's localisation error, as the fiducials use (> 0 on the wire).
                confidence_mm=np.full(len(traced), max(self.settings.fle_mm, 1e-3), np.float32),
            )
        )

    def finish_compute(self) -> None:
        """Take a finished surface compute's result: a proposal, a refusal, or nothing.

        Called by the loop thread; a no-op while none has finished. An exception other than
        a refusal (ValueError) is a bug: it is re-raised, so the node exits non-zero.
        """
        job = self.job
        if job is None or not job.done.is_set():
            return
        self.job = None
        if job.error is not None and not isinstance(job.error, ValueError):
            raise job.error
        record = self.last_compute
        assert record is not None and record.registration_id == job.registration_id
        if job.generation != self._generation:
            self.last_compute = replace(record, state="discarded")
            log.info(
                "%s registration %d discarded: its collection ended before it finished",
                job.method,
                job.registration_id,
            )
            return
        if job.error is not None:
            self.counters["registrations_refused"] += 1
            self.last_compute = replace(record, state="refused", error=str(job.error))
            log.warning(
                "%s registration %d refused: %s", job.method, job.registration_id, job.error
            )
            return
        assert job.result is not None
        proposal = self._with_truth(job.result.registration)
        self.proposal = proposal
        self.counters["registrations_proposed"] += 1
        self.emit(proposal)
        if isinstance(job.result, DeformableRegistration):
            deformable = job.result.deformable
            self.last_compute = replace(
                record,
                state="proposed",
                time_s=deformable.time_s,
                fitness=job.result.fitness,
                iterations=deformable.iterations,
                initialisation="given",
                converged=deformable.converged,
            )
            check = job.result.landmarks
            log.info(
                "registration %d proposed from %d surface points (deformable, %d iterations, "
                "%s): RMS residual %.3f mm, predicted TRE max %.3f mm, %.3f s%s",
                proposal.registration_id,
                job.n_points,
                deformable.iterations,
                "converged" if deformable.converged else "at its iteration limit",
                proposal.fre_mm,
                proposal.max_predicted_tre_mm,
                deformable.time_s,
                ""
                if check is None
                else f"; touched fiducials {check.deformable_rms_mm:.2f} mm RMS from the fit, "
                f"{check.rigid_rms_mm:.2f} from the start",
            )
            return
        fit = job.result.surface
        self.last_compute = replace(
            record,
            state="proposed",
            time_s=fit.time_s,
            fitness=fit.fitness,
            iterations=fit.iterations,
            initialisation=fit.initialisation,
        )
        log.info(
            "registration %d proposed from %d surface points (%s start): RMS residual "
            "%.3f mm, fitness %.2f, predicted TRE max %.3f mm, %.3f s",
            proposal.registration_id,
            job.n_points,
            fit.initialisation,
            proposal.fre_mm,
            fit.fitness,
            proposal.max_predicted_tre_mm,
            fit.time_s,
        )

    def accept(self, _request: AcceptRegistration, *, now_unix_s: float) -> RegistrationAccepted:
        """Accept the proposal; ``now_unix_s`` (wall clock) dates the registration file."""
        if self.proposal is None:
            raise ValueError("no proposed registration: send registration.compute first")
        accepted = self.proposal.replace(state="accepted", needs_verification=False)
        self.active, self.proposal = accepted, None
        self._set_collector(None)  # collection ends; a surface compute still running is moot
        self.counters["registrations_accepted"] += 1
        saved: str | None = None
        if self.settings.registration_file:
            try:
                save_registration(
                    self.settings.registration_file,
                    accepted,
                    case_name=self.case.name,
                    created_unix_s=now_unix_s,
                )
                saved = self.settings.registration_file
            except OSError as error:
                # Navigation goes on with it; only a restart would lose it. Say so loudly.
                log.warning("registration %d not saved: %s", accepted.registration_id, error)
        self.emit(accepted)
        log.info(
            "registration %d (%s) accepted: %s %.3f mm, predicted TRE max %.3f mm%s",
            accepted.registration_id,
            accepted.method,
            "FRE" if accepted.method == "points" else "RMS residual",
            accepted.fre_mm,
            accepted.max_predicted_tre_mm,
            f", saved to {saved}" if saved else "",
        )
        return RegistrationAccepted(registration_id=accepted.registration_id, saved_to=saved)

    def reject(self, _request: RejectRegistration) -> RegistrationRef:
        if self.proposal is None:
            raise ValueError("no proposed registration to reject")
        rejected = self.proposal.replace(state="rejected")
        self.proposal = None
        self.emit(rejected)
        log.info("registration %d rejected", rejected.registration_id)
        return RegistrationRef(registration_id=rejected.registration_id)

    def verify(self, _request: VerifyRegistration) -> RegistrationRef:
        if self.active is None:
            raise ValueError("no registration to verify")
        if self.active.needs_verification:
            self.active = self.active.replace(state=self.active.state, needs_verification=False)
            self.emit(self.active)
            log.info("registration %d verified by the user", self.active.registration_id)
        return RegistrationRef(registration_id=self.active.registration_id)

    def status(self, _request: GetRegistrationStatus) -> RegistrationStatus:
        collector = self.collector
        return RegistrationStatus(
            case=self.case.name,
            case_id=self.geometry.case_id,
            collecting=collector is not None,
            method=self.collect_method if collector is not None else None,
            dwell=collector.auto if isinstance(collector, FiducialCollector) else False,
            progress=(
                None
                if collector is None
                else self._trace_progress(collector)
                if isinstance(collector, SurfaceCollector)
                else progress_of(collector.progress)
            ),
            active=summary_of(self.active) if self.active is not None else None,
            proposal=summary_of(self.proposal) if self.proposal is not None else None,
            compute=self.last_compute,
        )

    def load(self, request: LoadCase) -> CaseLoaded:
        """Load the case folder (its meshes are read here), drop every registration, then
        :meth:`restore`."""
        case = load_case(request.path)  # CaseError (a ValueError): a reply error, no change
        self._set_case(case)
        log.info(
            "case %r (id %s) loaded from %s; registration cleared",
            case.name,
            self.geometry.case_id[:12],
            request.path,
        )
        self.restore()
        return CaseLoaded(
            case=case.name,
            case_id=self.geometry.case_id,
            fiducials=case.fiducials.labels,
            targets=case.targets.labels,
            critical=self.geometry.critical_names,
            restored=self.active is not None,
        )

    def restore(self) -> None:
        """Restore ``registration_file`` if it holds a registration of this case.

        It becomes the active registration, "restored" and needing verification (the
        patient or the reference may have moved while the node was down). A missing file
        is logged; a corrupt or foreign one (another case's name or targets, a changed
        case's id, a fiducial this case lacks) is logged, counted
        (``registration_file_refused``) and ignored: the session stays unregistered.
        """
        if not self.settings.registration_file:
            return
        path = Path(self.settings.registration_file)
        if not path.exists():
            log.info("no registration at %s: starting unregistered", path)
            return
        try:
            stored = load_registration(path)
            if stored.case_name != self.case.name:
                raise RegistrationFileError(
                    path, f"it registers case {stored.case_name!r}, not {self.case.name!r}"
                )
            if stored.registration.target_names != self.geometry.target_names:
                raise RegistrationFileError(path, "its targets are not this case's targets")
            stored_id = stored.registration.case_id
            if stored_id and stored_id != self.geometry.case_id:
                raise RegistrationFileError(
                    path,
                    f"case {stored.case_name!r} has changed since it was registered "
                    f"(case id {stored_id[:12]}..., now {self.geometry.case_id[:12]}...)",
                )
            n_confidence = len(stored.registration.organ_confidence_mm)
            if n_confidence:
                try:
                    n_vertices = len(surface_structure(self.case).mesh.vertices)
                except ValueError:
                    n_vertices = 0
                if n_confidence != n_vertices:
                    raise RegistrationFileError(
                        path,
                        f"its organ confidence has {n_confidence} values for this case's "
                        f"{n_vertices} organ vertices",
                    )
            unknown = set(stored.registration.fiducial_labels) - set(self.case.fiducials.labels)
            if unknown:
                raise RegistrationFileError(
                    path, f"fiducial {sorted(unknown)[0]!r} is not one of this case's"
                )
        except RegistrationFileError as error:
            self.counters["registration_file_refused"] += 1
            log.warning("registration file ignored, starting unregistered: %s", error)
            return
        restored = stored.registration
        # A file from before case ids was checked by name and targets: from here on it
        # travels as a registration of this case.
        self.active = self._with_truth(replace(restored, case_id=self.geometry.case_id))
        self._last_id = max(self._last_id, restored.registration_id)
        self.emit(self.active)
        log.info(
            "registration %d (%s) restored from %s (%s %.3f mm): needs verification",
            restored.registration_id,
            restored.method,
            path,
            "FRE" if restored.method == "points" else "RMS residual",
            restored.fre_mm,
        )

"""Navigation node: registers the case to the patient and publishes the navigation state.

Subscribes: ``TrackerFrame`` on ``tracker_topic`` (default ``pose/``, latest-wins) from the
nodes in its ``subscribe`` list.
Publishes:
- ``nav/state`` (``NavState``): one per new tracker frame, and, when frames stop
  arriving, again every ``state_period_ms`` and at the instant the newest frame turns
  stale, so a consumer sees STALE (or REFERENCE_LOST / UNREGISTERED, whichever applies
  first, see ``nav/navigation.py``) within ``stale_after_ms`` + ~1 ms of the last frame;
- ``nav/registration`` (``RegistrationResult``): on every registration event (proposed,
  accepted, rejected, restored, verified), with the facts a consumer must not re-derive:
  the FLE its predicted TRE used, the labels of the fiducials used, and the case id
  (``navigation.case_id``). The bus being PUB/SUB, "reliable" here
  means re-published: every ``REGISTRATION_REPUBLISH_S`` the node publishes the active
  registration again, then the pending proposal if any, so a late joiner has both within
  a second. Consumers key on ``registration_id`` and ``state``;
- ``heartbeat/<name>``: counters ``status_<STATUS>`` (states published by status),
  ``fiducials_collected``, ``surface_points_collected``, ``registrations_proposed``,
  ``registrations_accepted``, ``registrations_refused`` (surface computes refused after
  they started), ``registration_file_refused``; latency = tracker ``t_sensor_ns`` ->
  receive here.

Control (each reply is ``ok`` with a result, or a one-line error):
- ``registration.start`` {method: "points", dwell: true}: start collecting the case's
  fiducials in case order; with ``dwell`` a held tip records the next one (see
  ``navigation.DwellParams``), without it only ``registration.collect`` does. A running
  collection starts over; a pending proposal is discarded. Replies with the progress
  (``method``, ``collected``, ``total``, ``labels``, ``next_label``).
- ``registration.start`` {method: "surface"}: start collecting organ-surface points: while
  pointer and reference are both OK, the tip (reference frame) is recorded every
  ``surface_spacing_mm`` of motion, up to ``surface_max_points`` (``nav.collectors``);
  the surgeon traces the organ. Progress: ``method``, ``collected``, ``max_points``,
  ``path_length_mm``, ``full``. Otherwise as for points.
- ``registration.collect`` {}: record the current tip as the next fiducial now (a foot
  pedal); the tip must be still. Replies with the progress and the point's label.
  Fiducials only: a surface collection records as the tip moves.
- ``registration.compute`` {}: for points, paired-point registration from the fiducials
  collected so far (3 at least) -> state "proposed". Replies with FRE, per-fiducial
  errors, predicted TRE per target and, when ``truth_T_reference_from_image`` is set, true
  TRE per target.
  For surface, rigid surface registration of the points traced so far (20 at least) to
  the case's organ (its first structure with role "organ", ``navigation.surface_structure``),
  started from the active registration (the clinical flow: fiducials first, the surface
  refines them), or from a global search when there is none (less reliable: on a 35 %
  patch of the phantom's anterior face it often lands in a wrong minimum or is refused,
  so register by fiducials first), or both competing when the active one is restored and
  unverified. It runs on a worker thread (measured on the phantom from a fiducial start,
  best of 3 on a shared 2-core machine: 14 ms for 500 points, 29 ms for 2000, 50 ms for
  5000; with a global search ~0.5-1 s, during which the loop would publish no
  ``nav/state`` and miss the stale instant), so the reply comes at once: ``{method,
  computing: true, registration_id, n_points, path_length_mm, start}``. When it is done,
  the proposal (that ``registration_id``, method "surface") is published on
  ``nav/registration`` and shown by ``registration.status``; a refusal
  (too little overlap, no convergence, an unconstrained patch) leaves every state as it
  was, is logged as a warning and shown by ``registration.status`` as ``compute.error``
  (one line). Refusals known before the start (too few points, no organ, a compute
  already running) are the reply's error. A ``registration.start``, ``accept`` or
  ``case.load`` before it finishes discards its result. For surface, ``fre_mm`` is the
  RMS point-to-surface residual of the inliers and the per-point errors are the
  residuals of every point (summarised in replies: ``residuals_mm``; in full, one per
  point, on the wire and on disk), see ``navigation.register_organ_surface``.
- ``registration.accept`` {}: the proposal becomes the active registration ("accepted"),
  is written to ``registration_file`` and navigation shows it; collection ends.
- ``registration.reject`` {}: drop the proposal ("rejected"); the active one stays.
- ``registration.verify`` {}: the user confirmed a restored registration (touched a
  landmark and saw the tip where it belongs): clears ``needs_verification``.
- ``registration.status`` {}: collection progress, active registration, proposal, and
  ``compute``: the last surface compute (``registration_id``, ``state`` running /
  proposed / refused / discarded, ``n_points``, ``error``, and when done ``time_s``,
  ``fitness``, ``iterations``, ``initialisation``), or null.
- ``case.load`` {path}: load another case (blocks the loop while its meshes are read);
  drops every registration, then restores ``registration_file`` if it is for that case.

Start-up: when ``registration_file`` exists and holds a registration of this case (its
name and targets, and its case id and fiducial labels where the file records them), it is
restored as "restored" with ``needs_verification`` (the patient or the reference may
have moved while the node was down) until ``registration.verify``. A corrupt or foreign
file is logged and ignored: the node starts unregistered.

Per-frame cost: ``navigation.nav_state`` ~50 us on the phantom (see its module), plus a
decode and an encode (~10 us each): ~70 us of the 1000 us between samples at 1 kHz; a
surface collection adds ~1 us. While a surface compute runs, its thread shares the GIL
with the loop: Python releases it every 5 ms at most, so a state may be that much late.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import numpy as np

from calibration.files import CalibrationFileError, read_tip_offset
from nav.case import Case, CaseError, load_case
from nav.collectors import (
    DEFAULT_MAX_POINTS,
    DEFAULT_SPACING_MM,
    CollectionProgress,
    DwellParams,
    FiducialCollector,
    SurfaceCollector,
    SurfaceProgress,
)
from nav.frames import REFERENCE, is_valid_tool_name
from nav.messages import (
    Command,
    JsonValue,
    Message,
    NavState,
    NavStatus,
    Reply,
    TrackerFrame,
)
from nav.navigation import (
    POINTER,
    CaseGeometry,
    Registration,
    SurfaceRegistration,
    nav_state,
    register_fiducials,
    register_organ_surface,
    require_surface_points,
    surface_structure,
    tip_in_reference,
    true_tre_mm,
)
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration_store import RegistrationFileError, load_registration, save_registration
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.transforms import Mat4, is_rigid

log = logging.getLogger(__name__)

STATE_TOPIC: Final = "nav/state"
REGISTRATION_TOPIC: Final = "nav/registration"
REGISTRATION_REPUBLISH_S: Final = 1.0
MAX_SURFACE_POINTS: Final = 20_000
"""Upper bound of ``surface_max_points``: 160 kB of residuals in a ``RegistrationResult``
(limit 1 MiB) and ~0.5 MB in the registration file (limit 1 MiB)."""


@dataclass(frozen=True)
class Config:
    """The nav node's launch-file params.

    - ``case``: the case folder; empty = the shipped phantom (``nav/cases/phantom``).
    - ``tracker_topic``: a topic prefix selecting one tracker's ``TrackerFrame``s (the
      default takes every tracker subscribed to; with several, name one: ``pose/sim``).
    - ``p_tip_in_pointer`` (mm, pointer marker frame): the simulator's default unless
      ``tip_calibration`` names a pivot calibration file, which then wins.
    - ``stale_after_ms``: a frame older than this is STALE; ``state_period_ms``: how often
      ``nav/state`` is re-published while no frames arrive.
    - ``registration_file``: where an accepted registration is written and restored from
      (a launch file gives ``{run_dir}/registration.json``); empty = not persisted.
    - ``fle_mm``: RMS fiducial localisation error (3D) for the predicted TRE: the error
      of one touched fiducial, both spaces together. 0.25 mm is a Polaris-class tracker's
      per-sample figure; the dwell average of ~40 samples is below it (~0.06 mm in the
      simulator), but a real pointer in a real divot and a fiducial picked on a CT are
      not, so it is a floor; raise it for skin markers or coarse images.
    - ``dwell_s``, ``dwell_radius_mm``: the dwell that records a fiducial
      (``navigation.DwellParams.window_s`` and ``radius_mm``).
    - ``truth_T_reference_from_image``: 16 numbers, row-major, the true registration in a
      simulation, so true TRE is reported; empty = unknown (the real world).
    - ``surface_spacing_mm``, ``surface_max_points``: a surface collection records the tip
      every ``surface_spacing_mm`` of motion, at most ``surface_max_points`` points
      (``nav.collectors``; at most ``MAX_SURFACE_POINTS``).
    """

    case: str = ""
    tracker_topic: str = "pose/"
    pointer_tool: str = POINTER
    reference_tool: str = REFERENCE
    p_tip_in_pointer: tuple[float, float, float] = (0.0, 0.0, -160.0)
    tip_calibration: str = ""
    stale_after_ms: float = 100.0
    state_period_ms: float = 50.0
    registration_file: str = ""
    fle_mm: float = 0.25
    dwell_s: float = 0.4
    dwell_radius_mm: float = 0.5
    truth_T_reference_from_image: tuple[float, ...] = ()
    surface_spacing_mm: float = DEFAULT_SPACING_MM
    surface_max_points: int = DEFAULT_MAX_POINTS

    def __post_init__(self) -> None:
        for key in ("pointer_tool", "reference_tool"):
            if not is_valid_tool_name(getattr(self, key)):
                raise ValueError(f"key {key!r}: {getattr(self, key)!r} is not a tool name")
        if not self.tracker_topic:
            raise ValueError("key 'tracker_topic': must not be empty")
        tip = self.p_tip_in_pointer
        if len(tip) != 3 or not all(math.isfinite(v) for v in tip) or not any(tip):
            raise ValueError(f"key 'p_tip_in_pointer': expected 3 finite numbers, got {tip}")
        for key in ("stale_after_ms", "state_period_ms", "fle_mm", "surface_spacing_mm"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"key {key!r}: must be finite and > 0, got {value}")
        n = self.surface_max_points
        if isinstance(n, bool) or not isinstance(n, int) or not 3 <= n <= MAX_SURFACE_POINTS:
            raise ValueError(
                f"key 'surface_max_points': expected an integer in [3, {MAX_SURFACE_POINTS}], "
                f"got {n!r}"
            )
        try:
            self.dwell_params()
        except ValueError as error:
            raise ValueError(f"key 'dwell_s' or 'dwell_radius_mm': {error}") from None
        truth = self.truth_T_reference_from_image
        if truth and (len(truth) != 16 or not is_rigid(np.reshape(truth, (4, 4)), tol=1e-6)):
            raise ValueError(
                "key 'truth_T_reference_from_image': expected 16 numbers (row-major) of a "
                "rigid transform, or none"
            )

    def dwell_params(self) -> DwellParams:
        return DwellParams(window_s=self.dwell_s, radius_mm=self.dwell_radius_mm)

    def truth(self) -> Mat4 | None:
        if not self.truth_T_reference_from_image:
            return None
        return np.reshape(np.array(self.truth_T_reference_from_image, dtype=np.float64), (4, 4))


def _floats_by_name(names: tuple[str, ...], values: np.ndarray) -> dict[str, JsonValue]:
    # JSON has no NaN: an unknown value is null.
    return {n: (float(v) if math.isfinite(v) else None) for n, v in zip(names, values, strict=True)}


def _summary(registration: Registration | None) -> JsonValue:
    if registration is None:
        return None
    summary: dict[str, JsonValue] = {
        "registration_id": registration.registration_id,
        "state": registration.state,
        "method": registration.method,
        "needs_verification": registration.needs_verification,
        "fre_mm": registration.fre_mm,
        "fle_mm": registration.fle_mm,
        "predicted_tre_mm": _floats_by_name(
            registration.target_names, registration.predicted_tre_mm
        ),
        "true_tre_mm": _floats_by_name(registration.target_names, registration.true_tre_mm),
    }
    errors = registration.fiducial_errors_mm
    if registration.method == "points":
        summary["fiducial_errors_mm"] = [float(e) for e in errors]
        summary["fiducial_labels"] = list(registration.fiducial_labels)
    else:
        # One residual per traced point (thousands): the message and the file carry them
        # all; a reply (and a status poll) carries their distribution.
        summary["residuals_mm"] = {
            "count": len(errors),
            "median": float(np.median(errors)) if len(errors) else None,
            "p95": float(np.percentile(errors, 95)) if len(errors) else None,
            "max": float(errors.max()) if len(errors) else None,
        }
    return summary


def _progress(progress: CollectionProgress | SurfaceProgress) -> dict[str, JsonValue]:
    if isinstance(progress, SurfaceProgress):
        return {
            "method": "surface",
            "collected": progress.collected,
            "max_points": progress.max_points,
            "path_length_mm": progress.path_length_mm,
            "full": progress.full,
        }
    return {
        "method": "points",
        "collected": progress.collected,
        "total": progress.total,
        "labels": list(progress.labels),
        "next_label": progress.next_label,
    }


@dataclass(eq=False)
class _SurfaceJob:
    """One surface compute on its worker thread.

    The worker writes ``result`` or ``error`` and then sets ``done``; the loop thread reads
    them only after ``done`` is set, so they need no lock. ``generation``: the navigator's
    when the job started; a different one when it ends means its collection is gone.
    """

    registration_id: int
    generation: int
    n_points: int
    done: threading.Event = field(default_factory=threading.Event)
    result: SurfaceRegistration | None = None
    error: Exception | None = None


class _Navigator:
    """The node's state between frames: case, registrations, fiducial collection."""

    def __init__(
        self,
        cfg: Config,
        case: Case,
        p_tip_in_pointer: np.ndarray,
        publish: Callable[[str, Message], object],
        counters: bus.Counters,
    ) -> None:
        self.cfg = cfg
        self.p_tip_in_pointer = p_tip_in_pointer
        self.publish = publish
        self.counters = counters
        self.truth = cfg.truth()
        self.stale_after_ns = int(cfg.stale_after_ms * 1e6)
        self.last_frame: TrackerFrame | None = None
        self._last_id = 0
        self._generation = 0  # bumped whenever a running surface compute becomes moot
        self.job: _SurfaceJob | None = None  # the surface compute running, if any
        self.last_compute: dict[str, JsonValue] | None = None  # for registration.status
        self.collector: FiducialCollector | SurfaceCollector | None = None
        self._set_case(case)

    def _set_case(self, case: Case) -> None:
        self.case = case
        self.geometry = CaseGeometry.from_case(case)
        self.active: Registration | None = None
        self.proposal: Registration | None = None
        self._set_collector(None)

    def _set_collector(self, collector: FiducialCollector | SurfaceCollector | None) -> None:
        self.collector = collector
        self._generation += 1

    # --- per frame ---------------------------------------------------------------

    def on_frame(self, frame: TrackerFrame) -> None:
        self.last_frame = frame
        collector = self.collector
        if collector is None:
            return
        p_ref = tip_in_reference(
            frame,
            pointer_tool=self.cfg.pointer_tool,
            reference_tool=self.cfg.reference_tool,
            p_tip_in_pointer=self.p_tip_in_pointer,
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

    def state(self, now_ns: int) -> NavState:
        return nav_state(
            self.last_frame,
            now_ns=now_ns,
            registration=self.active,
            geometry=self.geometry,
            pointer_tool=self.cfg.pointer_tool,
            reference_tool=self.cfg.reference_tool,
            p_tip_in_pointer=self.p_tip_in_pointer,
            stale_after_ns=self.stale_after_ns,
        )

    def republish_registrations(self) -> None:
        for registration in (self.active, self.proposal):
            if registration is not None:
                self.publish(REGISTRATION_TOPIC, registration.to_message())

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

    def _new_id(self) -> int:
        # Wall-clock ns: unique across restarts of the node, so a consumer never confuses
        # a registration with an older one.
        self._last_id = max(time.time_ns(), self._last_id + 1)
        return self._last_id

    def _emit(self, registration: Registration) -> None:
        self.publish(REGISTRATION_TOPIC, registration.to_message())

    def start(self, command: Command) -> Reply:
        method = command.args.get("method", "points")
        if method == "surface":
            return self._start_surface()
        if method != "points":
            raise ValueError(
                f"unknown method {method!r}: 'points' (fiducials) or 'surface' (traced)"
            )
        dwell = command.args.get("dwell", True)
        if not isinstance(dwell, bool):
            raise ValueError("'dwell' must be true or false")
        if len(self.case.fiducials) < 3:
            raise ValueError(f"case {self.case.name!r} has {len(self.case.fiducials)} fiducials")
        collector = FiducialCollector(
            self.case.fiducials.labels, params=self.cfg.dwell_params(), auto=dwell
        )
        self._set_collector(collector)
        self.proposal = None  # a new collection makes any pending proposal moot
        log.info(
            "registration: collecting %d fiducials (%s)",
            len(self.case.fiducials),
            "dwell or pedal" if dwell else "pedal",
        )
        return Reply(ok=True, result=_progress(collector.progress))

    def _start_surface(self) -> Reply:
        organ = surface_structure(self.case)  # ValueError: a case without an organ
        collector = SurfaceCollector(
            spacing_mm=self.cfg.surface_spacing_mm, max_points=self.cfg.surface_max_points
        )
        self._set_collector(collector)
        self.proposal = None
        log.info(
            "registration: collecting surface points on %r every %.1f mm (at most %d)",
            organ.name,
            self.cfg.surface_spacing_mm,
            self.cfg.surface_max_points,
        )
        return Reply(ok=True, result=_progress(collector.progress))

    def collect(self, _command: Command) -> Reply:
        if self.collector is None:
            raise ValueError("no collection running: send registration.start first")
        if isinstance(self.collector, SurfaceCollector):
            raise ValueError("a surface collection records the tip as it moves: trace the organ")
        index = self.collector.collect_now(time.monotonic_ns())
        self._collected(index, "pedal")
        result = _progress(self.collector.progress)
        result["label"] = self.collector.labels[index]
        return Reply(ok=True, result=result)

    def compute(self, _command: Command) -> Reply:
        if self.collector is None:
            raise ValueError("no collection running: send registration.start first")
        if isinstance(self.collector, SurfaceCollector):
            return self._compute_surface(self.collector)
        p_reference = self.collector.points_reference
        k = len(p_reference)
        proposal = register_fiducials(
            p_image_fiducials=self.case.fiducials.points_lps[:k],
            p_reference_fiducials=p_reference,
            fiducial_labels=self.case.fiducials.labels[:k],
            geometry=self.geometry,
            fle_mm=self.cfg.fle_mm,
            registration_id=self._new_id(),
            truth_T_reference_from_image=self.truth,
        )  # RegistrationError (a ValueError) for too few or collinear points: a reply error
        self.proposal = proposal
        self.counters["registrations_proposed"] += 1
        self._emit(proposal)
        log.info(
            "registration %d proposed from %d fiducials: FRE %.3f mm, predicted TRE max %.3f mm",
            proposal.registration_id,
            k,
            proposal.fre_mm,
            proposal.max_predicted_tre_mm,
        )
        summary = _summary(proposal)
        assert isinstance(summary, dict)
        summary["n_fiducials"] = k
        return Reply(ok=True, result=summary)

    def _compute_surface(self, collector: SurfaceCollector) -> Reply:
        if self.job is not None:
            raise ValueError(
                f"surface registration {self.job.registration_id} is still being computed"
            )
        organ = surface_structure(self.case)
        points = collector.points_reference
        require_surface_points(len(points))  # RegistrationError: the reply's one line
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
        job = _SurfaceJob(self._new_id(), self._generation, len(points))
        geometry, truth = self.geometry, self.truth
        vertices = np.array(organ.mesh.vertices, dtype=np.float64)
        triangles = np.array(organ.mesh.faces, dtype=np.int64)

        def work() -> None:
            # Reads only its own copies and immutable data (the geometry's targets; never
            # its query buffer, which the loop thread uses).
            try:
                job.result = register_organ_surface(
                    model_vertices=vertices,
                    model_triangles=triangles,
                    p_reference_surface=points,
                    geometry=geometry,
                    registration_id=job.registration_id,
                    T_init=T_init,
                    global_init=global_init,
                    truth_T_reference_from_image=truth,
                )
            except Exception as error:  # handed to the loop thread, which decides
                job.error = error
            finally:
                job.done.set()

        # A daemon: a stop request does not wait for a compute (its result would be lost
        # with the process anyway).
        threading.Thread(target=work, name="surface-registration", daemon=True).start()
        self.job = job
        progress = collector.progress
        self.last_compute = {
            "registration_id": job.registration_id,
            "method": "surface",
            "state": "running",
            "n_points": job.n_points,
            "start": start,
            "error": None,
        }
        log.info(
            "registration %d: surface registration of %d points (%.0f mm traced) to %r "
            "started from %s",
            job.registration_id,
            job.n_points,
            progress.path_length_mm,
            organ.name,
            start,
        )
        return Reply(
            ok=True,
            result={
                "method": "surface",
                "computing": True,
                "registration_id": job.registration_id,
                "n_points": job.n_points,
                "path_length_mm": progress.path_length_mm,
                "start": start,
            },
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
        record = self.last_compute if self.last_compute is not None else {}
        if job.generation != self._generation:
            record["state"] = "discarded"
            log.info(
                "surface registration %d discarded: its collection ended before it finished",
                job.registration_id,
            )
            return
        if job.error is not None:
            self.counters["registrations_refused"] += 1
            record.update(state="refused", error=str(job.error))
            log.warning("surface registration %d refused: %s", job.registration_id, job.error)
            return
        assert job.result is not None
        proposal, fit = job.result.registration, job.result.surface
        self.proposal = proposal
        self.counters["registrations_proposed"] += 1
        self._emit(proposal)
        record.update(
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

    def accept(self, _command: Command) -> Reply:
        if self.proposal is None:
            raise ValueError("no proposed registration: send registration.compute first")
        accepted = self.proposal.replace(state="accepted", needs_verification=False)
        self.active, self.proposal = accepted, None
        self._set_collector(None)  # collection ends; a surface compute still running is moot
        self.counters["registrations_accepted"] += 1
        saved: JsonValue = None
        if self.cfg.registration_file:
            try:
                save_registration(
                    self.cfg.registration_file,
                    accepted,
                    case_name=self.case.name,
                    created_unix_s=time.time(),
                )
                saved = self.cfg.registration_file
            except OSError as error:
                # Navigation goes on with it; only a restart would lose it. Say so loudly.
                log.warning("registration %d not saved: %s", accepted.registration_id, error)
        self._emit(accepted)
        log.info(
            "registration %d (%s) accepted: %s %.3f mm, predicted TRE max %.3f mm%s",
            accepted.registration_id,
            accepted.method,
            "FRE" if accepted.method == "points" else "RMS residual",
            accepted.fre_mm,
            accepted.max_predicted_tre_mm,
            f", saved to {saved}" if saved else "",
        )
        return Reply(
            ok=True, result={"registration_id": accepted.registration_id, "saved_to": saved}
        )

    def reject(self, _command: Command) -> Reply:
        if self.proposal is None:
            raise ValueError("no proposed registration to reject")
        rejected = self.proposal.replace(state="rejected")
        self.proposal = None
        self._emit(rejected)
        log.info("registration %d rejected", rejected.registration_id)
        return Reply(ok=True, result={"registration_id": rejected.registration_id})

    def verify(self, _command: Command) -> Reply:
        if self.active is None:
            raise ValueError("no registration to verify")
        if self.active.needs_verification:
            self.active = self.active.replace(state=self.active.state, needs_verification=False)
            self._emit(self.active)
            log.info("registration %d verified by the user", self.active.registration_id)
        return Reply(ok=True, result={"registration_id": self.active.registration_id})

    def status(self, _command: Command) -> Reply:
        collector = self.collector
        return Reply(
            ok=True,
            result={
                "case": self.case.name,
                "case_id": self.geometry.case_id,
                "collecting": collector is not None,
                "method": (
                    None
                    if collector is None
                    else "surface"
                    if isinstance(collector, SurfaceCollector)
                    else "points"
                ),
                "dwell": collector.auto if isinstance(collector, FiducialCollector) else False,
                "progress": _progress(collector.progress) if collector is not None else None,
                "active": _summary(self.active),
                "proposal": _summary(self.proposal),
                "compute": dict(self.last_compute) if self.last_compute is not None else None,
            },
        )

    def load(self, command: Command) -> Reply:
        path = command.args.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError("'path' must name a case folder")
        case = load_case(path)  # CaseError (a ValueError): a reply error, nothing changes
        self._set_case(case)
        log.info(
            "case %r (id %s) loaded from %s; registration cleared",
            case.name,
            self.geometry.case_id[:12],
            path,
        )
        self.restore()
        return Reply(
            ok=True,
            result={
                "case": case.name,
                "case_id": self.geometry.case_id,
                "fiducials": list(case.fiducials.labels),
                "targets": list(case.targets.labels),
                "critical": list(self.geometry.critical_names),
                "restored": self.active is not None,
            },
        )

    def restore(self) -> None:
        """Restore ``registration_file`` if it holds a registration of this case."""
        if not self.cfg.registration_file:
            return
        path = Path(self.cfg.registration_file)
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
        truth = true_tre_mm(
            restored.T_reference_from_image, self.truth, self.geometry.p_image_targets
        )
        # A file from before case ids was checked by name and targets: from here on it
        # travels as a registration of this case.
        self.active = replace(restored, true_tre_mm=truth, case_id=self.geometry.case_id)
        self._last_id = max(self._last_id, restored.registration_id)
        self._emit(self.active)
        log.info(
            "registration %d restored from %s (FRE %.3f mm): needs verification",
            restored.registration_id,
            path,
            restored.fre_mm,
        )


def _tip(cfg: Config) -> np.ndarray:
    if cfg.tip_calibration:
        return np.asarray(read_tip_offset(cfg.tip_calibration), dtype=np.float64)
    return np.array(cfg.p_tip_in_pointer, dtype=np.float64)


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    try:
        case = load_case(cfg.case or SHIPPED_PHANTOM_DIR)
        p_tip = _tip(cfg)
    except (CaseError, CalibrationFileError) as error:
        log.error("%s: %s", spec.name, error)
        return 2
    state_period_ns = int(cfg.state_period_ms * 1e6)
    republish_ns = int(REGISTRATION_REPUBLISH_S * 1e9)
    with NodeRuntime(spec, stop) as runtime:
        pub = runtime.pub
        if pub is None:
            raise ValueError(f"node {spec.name!r}: the nav node needs a pub endpoint")
        navigator = _Navigator(cfg, case, p_tip, pub.publish, runtime.counters)
        for name, handler in (
            ("registration.start", navigator.start),
            ("registration.collect", navigator.collect),
            ("registration.compute", navigator.compute),
            ("registration.accept", navigator.accept),
            ("registration.reject", navigator.reject),
            ("registration.verify", navigator.verify),
            ("registration.status", navigator.status),
            ("case.load", navigator.load),
        ):
            runtime.on(name, handler)
        navigator.restore()
        sub = bus.LatestSubscriber(spec.subscribe_endpoints, (cfg.tracker_topic,))
        runtime.watch(sub.counters)
        runtime.ready()
        last_status: NavStatus | None = None
        last_state_ns = 0
        next_registration_ns = 0

        def publish_state(now_ns: int) -> None:
            nonlocal last_status, last_state_ns
            state = navigator.state(now_ns)
            pub.publish(STATE_TOPIC, state)
            runtime.counters[f"status_{state.status.value}"] += 1
            last_state_ns = now_ns
            if state.status is not last_status:
                level = logging.WARNING if state.status is NavStatus.STALE else logging.INFO
                log.log(
                    level,
                    "navigation %s -> %s",
                    last_status and last_status.value,
                    state.status.value,
                )
                last_status = state.status

        last_epoch = -1  # the tracker epoch of navigator.last_frame
        try:
            while not stop.is_set():
                # Wake for the next timed state: the period, or the instant an OK frame
                # goes stale, whichever is first.
                due_ns = last_state_ns + state_period_ns
                if last_status is NavStatus.OK and navigator.last_frame is not None:
                    due_ns = min(
                        due_ns, navigator.last_frame.t_sensor_ns + navigator.stale_after_ns + 1
                    )
                wait_s = min(POLL_TIMEOUT_S, max(0.0, (due_ns - time.monotonic_ns()) / 1e9))
                frames = sorted(
                    (r for r in sub.poll(wait_s) if isinstance(r.message, TrackerFrame)),
                    key=lambda r: r.message.t_sensor_ns,  # type: ignore[union-attr]
                )
                for received in frames:
                    frame = received.message
                    assert isinstance(frame, TrackerFrame)
                    last = navigator.last_frame
                    # Order holds within one tracker process; a restarted tracker (new
                    # epoch) may map its clock anew, so its first sample is taken as is.
                    if (
                        last is not None
                        and received.envelope.epoch == last_epoch
                        and frame.t_sensor_ns <= last.t_sensor_ns
                    ):
                        runtime.counters["frames_out_of_order"] += 1
                        continue
                    last_epoch = received.envelope.epoch
                    runtime.latency.add(received.t_recv_ns - frame.t_sensor_ns)
                    navigator.on_frame(frame)
                    publish_state(time.monotonic_ns())
                now_ns = time.monotonic_ns()
                if not frames and now_ns >= due_ns:
                    publish_state(now_ns)
                navigator.finish_compute()
                if now_ns >= next_registration_ns:
                    next_registration_ns = now_ns + republish_ns
                    navigator.republish_registrations()
                runtime.service()
        finally:
            sub.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())

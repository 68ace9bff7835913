"""``ornav demo --scenario deformable``: the organ is deformed, the rigid fit is not enough.

The simulated patient's organ differs from its preop model by the seeded bulges, bend and
wave of ``nav.sim_deformation`` (``DEMO_SEED``, 8 mm peak; the nav node is told the same
seed, ``truth_deformation_seed``, so it measures every registration's true TRE against
the deformed organ). The scripted operator then

1. registers by fiducials as the default scenario does, touching them where they are:
   on the deformed surface (so the rigid fit absorbs what it can of the deformation).
   The deformation shows in the FRE (about 3 mm on ``DEMO_SEED`` where tracker noise
   alone gives 0.3), so this scenario accepts a rigid fit up to
   ``RIGID_MAX_FRE_DEFORMED_MM``: the deformable fit that follows is what it is for;
2. starts a deformable collection (``registration.start method=deformable``) and traces
   the organ's exposed anterior face with the pointer (``pointer.trace``): rows 10 mm
   apart across the middle 84 % of the organ's left-right extent and 80 % of its
   cranio-caudal extent, every point on the deformed surface (ray cast from anterior);
3. computes the deformable fit (``registration.compute``; it runs on the nav node's
   worker while ``nav/state`` flows), waits for the proposal, accepts it;
4. comes down on the tumour where it really is (deformed), as the default scenario does.

:class:`DeformableStep` is the operator of steps 2-3, driven by the demo's scenario; it
talks to the nodes only through typed control messages, with an injectable clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import open3d as o3d

from cli.demo.sim_registration import (
    Commands,
    ok_result,
    read_reply,
    send,
)
from cli.errors import UserError
from nav.arrays import FloatArray
from nav.case import Case
from nav.messages import (
    AcceptRegistration,
    ComputeRegistration,
    GetRegistrationStatus,
    PointerTrace,
    RegistrationStatus,
    RegistrationSummary,
    ScriptStarted,
    StartCollection,
)
from nav.navigation import surface_structure
from nav.runtime.launchfile import LaunchSpec
from nav.sim_deformation import DEMO_SEED, OrganDeformation, organ_deformation
from nav.transforms import Mat4, apply

log = logging.getLogger("ornav.demo")

SCENARIOS: Final = ("default", "deformable")
RIGID_MAX_FRE_DEFORMED_MM: Final = 5.0
"""The rigid fit the deformable scenario accepts: the 8 mm deformation's FRE, with margin."""
DEFORMABLE_DURATION_S: Final = 60.0
"""The deformable scenario's default length: fiducials, the trace, the fit, navigation."""
TRACE_SPEED_MM_S: Final = 120.0
TRACE_TRAVEL_S: Final = 1.5
TRACE_ROW_MM: Final = 10.0
TRACE_STEP_MM: Final = 2.0
TRACE_MARGIN_S: Final = 1.0
"""After the trace's planned end, so its last samples reach the nav node."""
COMPUTE_TIMEOUT_S: Final = 30.0
"""A deformable fit of the trace's ~600 points takes under a second on two cores."""
DEFORMABLE_PHASE_S: Final = 25.0
"""Budget of the scenario for steps 2-3 (trace ~13 s, fit, accept): fiducials end before."""


def with_deformation(
    launch: LaunchSpec, *, seed: int = DEMO_SEED, peak_mm: float = 8.0
) -> LaunchSpec:
    """``launch`` with the nav node told the simulation's organ deformation (its truth)."""
    nav = next((s for s in launch.nodes if s.module == "nav.nav_node"), None)
    if nav is None:
        raise UserError(f"{launch.path}: the demo needs a nav.nav_node node; none found")
    params = dict(nav.params)
    params["truth_deformation_seed"] = seed
    params["truth_deformation_peak_mm"] = peak_mm
    nodes = tuple(replace(s, params=params) if s is nav else s for s in launch.nodes)
    return replace(launch, nodes=nodes)


def stack_deformation(case: Case, nav_params: dict[str, object]) -> OrganDeformation | None:
    """The deformation the nav node was told (``truth_deformation_seed`` >= 0), else None."""
    seed = nav_params.get("truth_deformation_seed", -1)
    if not isinstance(seed, int) or seed < 0:
        return None
    peak = nav_params.get("truth_deformation_peak_mm", 8.0)
    if not isinstance(peak, (int, float)):
        raise UserError(f"truth_deformation_peak_mm must be a number, got {peak!r}")
    organ = surface_structure(case)
    try:
        return organ_deformation(np.asarray(organ.mesh.vertices), seed=seed, peak_mm=float(peak))
    except ValueError as error:
        raise UserError(f"truth deformation: {error}") from None


def anterior_raster_image(
    vertices_mm: npt.ArrayLike,
    triangles: npt.ArrayLike,
    *,
    row_mm: float = TRACE_ROW_MM,
    step_mm: float = TRACE_STEP_MM,
) -> FloatArray:
    """A pointer path (M, 3) over the anterior face of a mesh, image frame (LPS), mm.

    Rows along x (left-right) every ``row_mm`` of z (inferior-superior), joined at
    alternate ends (boustrophedon), sampled every ``step_mm``, over the middle 84 % of the
    x extent and 80 % of the z extent; each sample is where a ray from anterior (-y) first
    meets the mesh, and samples whose ray misses it are left out. Raises ValueError for a
    mesh too small for two rows.
    """
    v = np.ascontiguousarray(vertices_mm, dtype=np.float32).reshape(-1, 3)
    f = np.ascontiguousarray(triangles, dtype=np.uint32).reshape(-1, 3)
    lo, hi = v.min(axis=0).astype(np.float64), v.max(axis=0).astype(np.float64)
    x0, x1 = lo[0] + 0.08 * (hi[0] - lo[0]), hi[0] - 0.08 * (hi[0] - lo[0])
    z0, z1 = lo[2] + 0.10 * (hi[2] - lo[2]), hi[2] - 0.10 * (hi[2] - lo[2])
    zs = np.arange(z0, z1 + 1e-9, row_mm)
    if len(zs) < 2 or x1 - x0 < 2 * step_mm:
        raise ValueError(f"the organ is too small for a raster of {row_mm:g} mm rows")
    xz: list[FloatArray] = []
    for i, z in enumerate(zs):
        xs = np.arange(x0, x1 + 1e-9, step_mm)
        xs = xs[::-1] if i % 2 else xs
        xz.append(np.c_[xs, np.full_like(xs, z)])
        if i + 1 < len(zs):  # along the row's end to the next row
            dz = np.arange(z, zs[i + 1], step_mm)[1:]
            xz.append(np.c_[np.full_like(dz, xs[-1]), dz])
    path = np.vstack(xz)
    start_y = lo[1] - 100.0
    rays = np.zeros((len(path), 6), dtype=np.float32)
    rays[:, 0], rays[:, 1], rays[:, 2], rays[:, 4] = path[:, 0], start_y, path[:, 1], 1.0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor.from_numpy(v), o3d.core.Tensor.from_numpy(f))
    t_hit = scene.cast_rays(o3d.core.Tensor.from_numpy(rays))["t_hit"].numpy().astype(np.float64)
    hit = np.isfinite(t_hit)
    points: FloatArray = np.c_[path[hit, 0], start_y + t_hit[hit], path[hit, 1]]
    return points


def trace_in_reference(
    case: Case, deformation: OrganDeformation, truth_T_reference_from_image: Mat4
) -> FloatArray:
    """The pointer's path over the deformed organ (:func:`anterior_raster_image`), in the
    patient reference frame where the simulation put the organ, mm."""
    organ = surface_structure(case)
    deformed = deformation.deformed(np.asarray(organ.mesh.vertices))
    path = anterior_raster_image(deformed, np.asarray(organ.mesh.faces))
    return apply(truth_T_reference_from_image, path)


def _path_length_mm(path: FloatArray) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


@dataclass(frozen=True, kw_only=True)
class DeformableOutcome:
    """What the deformable step did: ``state`` "tracing", "computing", "accepted" or
    "failed" (``failure`` says why); the proposal it accepted (``summary``); the number of
    traced points and the fit's time; ``t_compute_ns`` (monotonic) when compute was sent."""

    state: str
    n_points: int = 0
    path_length_mm: float = 0.0
    fit_time_s: float | None = None
    summary: RegistrationSummary | None = None
    t_compute_ns: int | None = None
    failure: str = ""


class DeformableStep:
    """The operator of the module's steps 2-3; :meth:`step` until ``outcome.state`` is
    "accepted" or "failed"."""

    def __init__(
        self,
        *,
        nav: Commands,
        tracker: Commands,
        path_reference: FloatArray,
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.nav, self.tracker = nav, tracker
        self.path = np.asarray(path_reference, dtype=np.float64)
        self.clock, self.clock_ns = clock, clock_ns
        self.trace_s = TRACE_TRAVEL_S + _path_length_mm(self.path) / TRACE_SPEED_MM_S
        self.outcome = DeformableOutcome(state="tracing", path_length_mm=_path_length_mm(self.path))
        self._t_trace_end = math.inf
        self._t_compute_deadline = math.inf

    def start(self) -> None:
        """Start the collection and the trace; ScriptedRegistrationError if refused."""
        start = StartCollection(method="deformable", dwell=False)
        ok_result(send(self.nav, start), start.NAME)
        trace = PointerTrace(
            polyline=self.path.tolist(), speed_mm_s=TRACE_SPEED_MM_S, travel_s=TRACE_TRAVEL_S
        )
        read_reply(send(self.tracker, trace), trace.NAME, ScriptStarted.from_result)
        self._t_trace_end = self.clock() + self.trace_s + TRACE_MARGIN_S
        log.info(
            "tracing the organ's anterior face: %d mm in %.1f s",
            round(self.outcome.path_length_mm),
            self.trace_s,
        )

    def step(self) -> DeformableOutcome:
        """Compute once the trace is done, then poll for the proposal and accept it."""
        if self.outcome.state == "tracing" and self.clock() >= self._t_trace_end:
            t_ns = self.clock_ns()
            reply = ok_result(send(self.nav, ComputeRegistration()), ComputeRegistration.NAME)
            n_points = reply.get("n_points")
            self.outcome = replace(
                self.outcome,
                state="computing",
                t_compute_ns=t_ns,
                n_points=n_points if isinstance(n_points, int) else 0,
            )
            self._t_compute_deadline = self.clock() + COMPUTE_TIMEOUT_S
            log.info("deformable fit of %s traced points started", n_points)
        elif self.outcome.state == "computing":
            self._poll()
        return self.outcome

    def _poll(self) -> None:
        request = GetRegistrationStatus()
        status = read_reply(send(self.nav, request), request.NAME, RegistrationStatus.from_result)
        compute = status.compute
        if compute is None or compute.state == "running":
            if self.clock() > self._t_compute_deadline:
                self._fail(f"no deformable proposal within {COMPUTE_TIMEOUT_S:g} s")
            return
        if compute.state != "proposed" or status.proposal is None:
            self._fail(f"deformable fit {compute.state}: {compute.error or 'no proposal'}")
            return
        proposal = status.proposal
        ok_result(send(self.nav, AcceptRegistration()), AcceptRegistration.NAME)
        self.outcome = replace(
            self.outcome, state="accepted", summary=proposal, fit_time_s=compute.time_s
        )
        log.info(
            "deformable registration %d accepted: residual %.2f mm, true TRE %s",
            proposal.registration_id,
            proposal.fre_mm,
            ", ".join(f"{k} {v:.2f} mm" for k, v in proposal.true_tre_mm.items() if v is not None),
        )

    def _fail(self, why: str) -> None:
        self.outcome = replace(self.outcome, state="failed", failure=why)


def tre_figures(summary: RegistrationSummary | None) -> dict[str, float | None] | None:
    """{mean, max} of a registration's known true TREs (mm), None without any."""
    if summary is None:
        return None
    known = [v for v in summary.true_tre_mm.values() if v is not None]
    if not known:
        return None
    return {"mean": round(float(np.mean(known)), 3), "max": round(max(known), 3)}


def models_at_headset_ms(headset: Mapping[str, Any] | None, t_compute_ns: object) -> float | None:
    """Milliseconds from ``registration.compute`` (``t_compute_ns``, monotonic) to the first
    scene whose assets the headset client then had all in hand (its ``scene_loads``,
    same host, same monotonic clock): the deformed organ ready to draw. None if unknown."""
    if headset is None or not isinstance(t_compute_ns, int):
        return None
    loads = headset.get("scene_loads")
    if not isinstance(loads, list):
        return None
    after = [
        load["t_monotonic_ns"]
        for load in loads
        if isinstance(load, Mapping)
        and isinstance(load.get("t_monotonic_ns"), int)
        and load["t_monotonic_ns"] >= t_compute_ns
    ]
    return round((min(after) - t_compute_ns) / 1e6, 1) if after else None

"""The deformable demo's operator (cli.demo.deformable): the raster it traces, the launch
it changes, and its steps against fake nodes on a fake clock."""

from __future__ import annotations

from typing import Any

import numpy as np
import open3d as o3d
import pytest
import trimesh

from cli.demo.deformable import (
    COMPUTE_TIMEOUT_S,
    DeformableStep,
    anterior_raster_image,
    models_at_headset_ms,
    stack_deformation,
    trace_in_reference,
    with_deformation,
)
from cli.main import main
from nav.case import load_case
from nav.messages import (
    RegistrationStatus,
    RegistrationSummary,
    Reply,
    Residuals,
    ScriptStarted,
    SurfaceCompute,
    SurfaceComputeStarted,
    TraceProgress,
)
from nav.navigation import CaseGeometry, Landmarks, register_organ_deformable
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration.deformable import register_deformable
from nav.registration.errors import RegistrationError
from nav.registration.paired_point import register_paired_points
from nav.runtime.launchfile import load
from nav.sim_deformation import DEMO_SEED, organ_deformation
from nav.transforms import apply, make_rigid

REPO_LAUNCH = SHIPPED_PHANTOM_DIR.parents[2] / "launch" / "sim.toml"


def test_the_raster_lies_on_the_anterior_face_in_rows_every_10_mm() -> None:
    box = trimesh.creation.box(extents=(100.0, 60.0, 50.0))  # centred on the origin
    path = anterior_raster_image(box.vertices, box.faces)
    # Every point on the anterior face (y = -30), inside the middle of x and z.
    np.testing.assert_allclose(path[:, 1], -30.0, atol=1e-4)
    assert path[:, 0].min() >= -42.0 - 1e-6 and path[:, 0].max() <= 42.0 + 1e-6
    assert path[:, 2].min() >= -20.0 - 1e-6 and path[:, 2].max() <= 20.0 + 1e-6
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.max() <= 2.0 + 1e-6  # continuous: rows joined along their ends
    rows = np.unique(np.round(path[:, 2], 6))
    full_rows = [z for z in rows if np.count_nonzero(np.isclose(path[:, 2], z)) > 10]
    np.testing.assert_allclose(np.diff(full_rows), 10.0)
    # Boustrophedon: consecutive rows run in opposite directions.
    first = path[np.isclose(path[:, 2], full_rows[0]), 0]
    second = path[np.isclose(path[:, 2], full_rows[1]), 0]
    assert (first[-1] - first[0]) * (second[-1] - second[0]) < 0


def test_a_mesh_too_small_for_two_rows_is_refused() -> None:
    flat = trimesh.creation.box(extents=(100.0, 60.0, 5.0))
    with pytest.raises(ValueError, match="too small"):
        anterior_raster_image(flat.vertices, flat.faces)


def test_the_trace_follows_the_deformed_organ_where_the_simulation_put_it() -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    launch = with_deformation(load(REPO_LAUNCH, run_dir="/tmp/x", ipc_dir="/tmp/y"))
    nav = next(s for s in launch.nodes if s.module == "nav.nav_node")
    assert nav.params["truth_deformation_seed"] == DEMO_SEED
    deformation = stack_deformation(case, dict(nav.params))
    assert deformation is not None
    truth = make_rigid(np.eye(3), [10.0, -20.0, 30.0])
    path = trace_in_reference(case, deformation, truth)
    organ = next(s for s in case.structures if s.role == "organ")
    back = apply(np.asarray(np.linalg.inv(truth), dtype=np.float64), path)
    to_deformed = _distances(deformation.deformed(organ.mesh.vertices), organ.mesh.faces, back)
    assert to_deformed.max() < 1e-3  # on the deformed surface, not the model's
    assert _distances(organ.mesh.vertices, organ.mesh.faces, back).max() > 1.0
    assert 300 < len(path) < 2000


def _distances(vertices: Any, faces: Any, points: Any) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(vertices, dtype=np.float32)),
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(faces, dtype=np.uint32)),
    )
    query = o3d.core.Tensor.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    return np.asarray(scene.compute_distance(query).numpy(), dtype=np.float64)


def test_no_seed_means_no_deformation() -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    assert stack_deformation(case, {}) is None
    assert stack_deformation(case, {"truth_deformation_seed": -1}) is None


# --- the operator against fake nodes ----------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def ns(self) -> int:
        return int(self.t * 1e9)


def _summary(state: str) -> RegistrationSummary:
    return RegistrationSummary(
        registration_id=7,
        state=state,
        method="deformable",
        needs_verification=False,
        fre_mm=0.3,
        fle_mm=0.3,
        predicted_tre_mm={"tumor_centre": 1.5},
        true_tre_mm={"tumor_centre": 0.9},
        residuals_mm=Residuals(count=10, median=0.3, p95=0.3, max=0.3),
    )


class FakeNodes:
    """A nav node and a tracker: the compute is proposed (or refused) after ``fit_s``."""

    def __init__(self, clock: FakeClock, *, refuse: str = "", fit_s: float = 1.0) -> None:
        self.clock, self.refuse, self.fit_s = clock, refuse, fit_s
        self.calls: list[str] = []
        self.t_compute: float | None = None
        self.traced: list[list[float]] = []

    def call(self, name: str, *, timeout_s: float = 2.0, **args: Any) -> Reply:
        self.calls.append(name)
        if name == "registration.start":
            assert args["method"] == "deformable"
            progress = TraceProgress(
                collected=0, max_points=5000, path_length_mm=0.0, full=False, method="deformable"
            )
            return Reply(ok=True, result=progress.to_result())
        if name == "pointer.trace":
            self.traced = args["polyline"]
            return Reply(ok=True, result=ScriptStarted(start_s=0.0, duration_s=5.0).to_result())
        if name == "registration.compute":
            self.t_compute = self.clock()
            started = SurfaceComputeStarted(
                registration_id=7, n_points=600, path_length_mm=1500.0, start="registration 1"
            )
            return Reply(ok=True, result=started.to_result())
        if name == "registration.status":
            assert self.t_compute is not None
            done = self.clock() >= self.t_compute + self.fit_s
            state = "running" if not done else ("refused" if self.refuse else "proposed")
            compute = SurfaceCompute(
                registration_id=7,
                state=state,
                n_points=600,
                start="registration 1",
                error=self.refuse or None,
                method="deformable",
            )
            status = RegistrationStatus(
                case="phantom",
                case_id="0" * 64,
                collecting=not done,
                method="deformable",
                dwell=False,
                progress=None,
                active=None,
                proposal=_summary("proposed") if state == "proposed" else None,
                compute=compute,
            )
            return Reply(ok=True, result=status.to_result())
        if name == "registration.accept":
            return Reply(ok=True, result={"registration_id": 7, "saved_to": None})
        return Reply(ok=False, error=f"unexpected {name}")


def _run(nodes: FakeNodes, clock: FakeClock, *, seconds: float) -> DeformableStep:
    path = np.c_[np.arange(0.0, 240.0, 2.0), np.zeros(120), np.zeros(120)]
    step = DeformableStep(
        nav=nodes, tracker=nodes, path_reference=path, clock=clock, clock_ns=clock.ns
    )
    step.start()
    end = clock.t + seconds
    while clock.t < end and step.step().state not in ("accepted", "failed"):
        clock.t += 0.1
    return step


def test_the_operator_traces_computes_after_the_trace_and_accepts_the_proposal() -> None:
    clock = FakeClock()
    nodes = FakeNodes(clock)
    step = _run(nodes, clock, seconds=60.0)
    assert step.outcome.state == "accepted"
    assert nodes.calls[:2] == ["registration.start", "pointer.trace"]
    assert nodes.calls[-1] == "registration.accept"
    assert nodes.t_compute is not None and nodes.t_compute >= 100.0 + step.trace_s
    assert (
        step.outcome.summary is not None and step.outcome.summary.true_tre_mm["tumor_centre"] == 0.9
    )
    assert step.outcome.n_points == 600
    assert len(nodes.traced) == 120


def test_a_refused_fit_fails_the_step_with_the_nav_nodes_reason() -> None:
    clock = FakeClock()
    nodes = FakeNodes(clock, refuse="too few points on the organ")
    step = _run(nodes, clock, seconds=60.0)
    assert step.outcome.state == "failed"
    assert "too few points on the organ" in step.outcome.failure
    assert "registration.accept" not in nodes.calls


def test_a_fit_that_never_ends_fails_the_step_after_the_timeout() -> None:
    clock = FakeClock()
    nodes = FakeNodes(clock, fit_s=1e9)
    step = _run(nodes, clock, seconds=COMPUTE_TIMEOUT_S + 30.0)
    assert step.outcome.state == "failed"
    assert "no deformable proposal" in step.outcome.failure


def test_the_demo_seed_leaves_rigid_error_that_the_deformable_fit_to_the_trace_reduces() -> None:
    """nav.sim_deformation's figure for DEMO_SEED: the fiducial fit on the deformed phantom
    leaves 2.6 mm mean true error at the targets; the deformable fit to the demo's trace
    (with the tracker's 0.25 mm noise) takes it under half of that."""
    case = load_case(SHIPPED_PHANTOM_DIR)
    organ = next(s for s in case.structures if s.role == "organ")
    v, f = np.asarray(organ.mesh.vertices), np.asarray(organ.mesh.faces)
    field = organ_deformation(v, seed=DEMO_SEED)
    fiducials, targets = case.fiducials.points_lps, case.targets.points_lps
    rigid = register_paired_points(fiducials, field.deformed(fiducials)).T_patient_from_model
    rigid_error = np.linalg.norm(apply(rigid, targets) - field.deformed(targets), axis=1)
    trace = trace_in_reference(case, field, np.eye(4))
    noise = np.random.default_rng(0).normal(0.0, 0.25, trace.shape)
    fit = register_deformable(v, f, trace + noise, rigid)
    deformable_error = np.linalg.norm(fit.warp(targets) - field.deformed(targets), axis=1)
    assert 2.0 < rigid_error.mean() < 3.5
    assert deformable_error.mean() < 0.5 * rigid_error.mean()
    assert deformable_error.max() < rigid_error.max()


def test_the_models_reach_the_headset_at_its_first_scene_load_after_the_compute() -> None:
    loads = {
        "scene_loads": [
            {"scene_version": 1, "t_monotonic_ns": 1_000_000_000},  # the plain case, at start
            {"scene_version": 2, "t_monotonic_ns": 5_000_000_000},  # the fiducial colours
            {"scene_version": 3, "t_monotonic_ns": 9_250_000_000},  # the deformed case
        ]
    }
    assert models_at_headset_ms(loads, 8_000_000_000) == 1250.0
    assert models_at_headset_ms(loads, 10_000_000_000) is None  # never reached it
    assert models_at_headset_ms(None, 8_000_000_000) is None
    assert models_at_headset_ms({"scene_loads": "junk"}, 8_000_000_000) is None
    assert models_at_headset_ms(loads, None) is None


def test_the_touched_fiducials_refuse_most_fits_that_would_hurt_and_pass_the_demo_seed() -> None:
    """nav.navigation.register_organ_deformable's figures for the landmark check, on the
    demo's trace over seeds 0-11: the fiducials (held out of the fit) catch the fits that
    move the targets away, which the method's own predicted TRE does not."""
    case = load_case(SHIPPED_PHANTOM_DIR)
    organ = next(s for s in case.structures if s.role == "organ")
    v, f = np.asarray(organ.mesh.vertices), np.asarray(organ.mesh.faces)
    geometry = CaseGeometry.from_case(case)
    fiducials, targets = case.fiducials.points_lps, case.targets.points_lps
    rng = np.random.default_rng(0)
    outcomes: dict[int, tuple[bool, bool]] = {}  # seed -> (the fit hurts, it is refused)
    for seed in range(12):
        field = organ_deformation(v, seed=seed)
        touched = field.deformed(fiducials) + rng.normal(0.0, 0.05, fiducials.shape)
        rigid = register_paired_points(fiducials, touched).T_patient_from_model
        trace = trace_in_reference(case, field, np.eye(4))
        points = trace + rng.normal(0.0, 0.25, trace.shape)
        fit = register_deformable(v, f, points, rigid)
        rigid_error = np.linalg.norm(apply(rigid, targets) - field.deformed(targets), axis=1)
        fit_error = np.linalg.norm(fit.warp(targets) - field.deformed(targets), axis=1)
        landmarks = Landmarks(case.fiducials.labels, fiducials, touched)
        try:
            register_organ_deformable(
                model_vertices=v,
                model_triangles=f,
                p_reference_surface=points,
                geometry=geometry,
                registration_id=1,
                T_init=rigid,
                landmarks=landmarks,
            )
            refused = False
        except RegistrationError as error:
            refused = error.kind in ("contradicts_landmarks", "implausible")
        outcomes[seed] = (bool(fit_error.mean() > rigid_error.mean()), refused)
    hurts = [s for s, (hurt, _) in outcomes.items() if hurt]
    caught = [s for s in hurts if outcomes[s][1]]
    print(outcomes)
    assert len(hurts) >= 6 and len(caught) >= len(hurts) - 2
    assert outcomes[DEMO_SEED] == (False, False)


def test_a_deformable_scenario_too_short_for_the_trace_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["demo", "--scenario", "deformable", "--duration", "20", "--launch", str(REPO_LAUNCH)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("ornav: --duration 20 s is too short for --scenario deformable")
    assert "25 s more for the surface trace" in err[0]

"""Live deformable registration in the navigator session, without sockets or clocks.

The sim patient's liver is deformed against the preop model (``nav.sim_deformation``,
``DEMO_SEED``, 8 mm peak) and placed by ``TRUTH``: the fiducials are touched where the
deformed organ has them, the anterior patch (``tests/process/test_nav_surface.py``) is
traced on the deformed surface. The rigid fit by fiducials then leaves ~3 mm at the
tumour; the deformable fit from it, on the same data, comes closer.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trimesh

from nav.case import Case, load_case
from nav.messages import (
    AcceptRegistration,
    CollectFiducial,
    ComputeRegistration,
    GetRegistrationStatus,
    StartCollection,
    SurfaceComputeStarted,
    ToolStatus,
    TrackerFrame,
    VerifyRegistration,
)
from nav.nav_node import Config
from nav.navigation import Registration, surface_structure
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration.errors import RegistrationError
from nav.registration_store import load_registration
from nav.runtime import bus
from nav.session import NavigatorSession
from nav.sim_deformation import DEMO_SEED, organ_deformation
from nav.transforms import apply
from tests.conftest import REPO
from tests.process.test_nav_surface import TRUTH, anterior_patch_image

FloatArray = npt.NDArray[np.float64]
P_TIP = np.array([0.0, 0.0, -160.0])


@pytest.fixture(scope="module")
def phantom() -> Case:
    return load_case(SHIPPED_PHANTOM_DIR)


def _deformed(case: Case, p_image: npt.ArrayLike, seed: int = DEMO_SEED) -> FloatArray:
    """Image points moved by the sim's deformation, then placed by TRUTH: reference frame."""
    organ = np.asarray(surface_structure(case).mesh.vertices)
    return apply(TRUTH, organ_deformation(organ, seed=seed).deformed(p_image))


class _Run:
    """A session fed frames by hand (reference at the tracker origin); what it emits."""

    def __init__(self, case: Case, tmp_path: Path, **params: Any) -> None:
        self.seed = params.pop("seed", DEMO_SEED)
        cfg = Config(
            truth_T_reference_from_image=tuple(TRUTH.ravel().tolist()),
            truth_deformation_seed=self.seed,
            registration_file=params.pop("registration_file", str(tmp_path / "registration.json")),
            **params,
        )
        self.emitted: list[Registration] = []
        self.counters = bus.Counters()
        self.session = NavigatorSession(
            cfg.session_settings(P_TIP), case, emit=self.emitted.append, counters=self.counters
        )
        self.t_ns = 1_000_000_000

    def tip(self, p_reference: FloatArray, repeat: int = 1) -> None:
        for _ in range(repeat):
            self.t_ns += 10_000_000
            T_pointer = np.eye(4)
            T_pointer[:3, 3] = np.asarray(p_reference) - P_TIP
            self.session.on_frame(
                TrackerFrame(
                    "sim",
                    self.t_ns,
                    1,
                    ("pointer", "reference"),
                    np.stack([T_pointer, np.eye(4)]),
                    (ToolStatus.OK, ToolStatus.OK),
                    np.zeros(2),
                )
            )

    def trace(self, p_reference: FloatArray) -> None:
        for p in p_reference:
            self.tip(p)

    def register_fiducials(self, case: Case) -> Registration:
        self.session.start(StartCollection(dwell=False))
        for p in _deformed(case, case.fiducials.points_lps, seed=self.seed):
            self.tip(p, repeat=60)
            self.session.collect(CollectFiducial(), now_ns=self.t_ns)
        self.session.compute(ComputeRegistration(), now_unix_ns=time.time_ns())
        self.session.accept(AcceptRegistration(), now_unix_s=time.time())
        assert self.session.active is not None
        return self.session.active

    def compute_deformable(self, p_reference: FloatArray) -> SurfaceComputeStarted:
        self.session.start(StartCollection(method="deformable"))
        self.trace(p_reference)
        started = self.session.compute(ComputeRegistration(), now_unix_ns=time.time_ns())
        assert isinstance(started, SurfaceComputeStarted)
        job = self.session.job
        assert job is not None and job.done.wait(120.0)
        self.session.finish_compute()
        return started


def test_a_deformable_fit_from_the_accepted_fiducials_brings_the_tumour_closer_to_the_truth(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    rigid = run.register_fiducials(phantom)
    names = list(rigid.target_names)
    tumour = names.index("tumor_centre")
    assert rigid.true_tre_mm[tumour] > 2.5  # the deformation the fiducials cannot see

    started = run.compute_deformable(_deformed(phantom, anterior_patch_image(phantom)))
    assert started.method == "deformable" and started.start.endswith("on cpu")
    proposal = run.session.proposal
    assert proposal is not None and run.emitted[-1] is proposal
    assert proposal.method == "deformable" and proposal.deformation is not None
    assert proposal.registration_id == started.registration_id
    n_vertices = len(surface_structure(phantom).mesh.vertices)
    assert proposal.organ_confidence_mm.shape == (n_vertices,)
    assert np.all(proposal.predicted_tre_mm > 0.0)
    assert len(proposal.fiducial_errors_mm) == started.n_points
    print(
        f"\ntrue TRE, rigid {np.round(rigid.true_tre_mm, 2)} -> deformable "
        f"{np.round(proposal.true_tre_mm, 2)} mm; "
        f"predicted {np.round(proposal.predicted_tre_mm, 2)}"
    )
    assert proposal.true_tre_mm[tumour] < rigid.true_tre_mm[tumour]

    status = run.session.status(GetRegistrationStatus())
    assert status.compute is not None and status.compute.state == "proposed"
    assert status.compute.method == "deformable"
    assert status.compute.iterations is not None and status.compute.iterations > 0
    assert isinstance(status.compute.converged, bool) and status.compute.time_s is not None
    assert status.proposal is not None and status.proposal.residuals_mm is not None
    assert status.active is not None and status.active.registration_id == rigid.registration_id

    # The wire message carries what the render node draws.
    message = proposal.to_message()
    assert message.deformation is proposal.deformation
    assert message.organ_confidence_mm.dtype == np.float32

    run.session.accept(AcceptRegistration(), now_unix_s=1.0)
    # A tip held where the deformable registration puts the tumour reads 0 mm to it...
    p_tumour = proposal.p_reference_targets(phantom.targets.points_lps[tumour : tumour + 1])[0]
    run.tip(p_tumour)
    state = run.session.state(run.t_ns)
    assert state.registration_id == proposal.registration_id
    assert state.target_distances_mm[tumour] < 1e-6
    # ... and a tip on a deformed vessel's wall 0 mm to the vessel (the pull-back).
    vessel = next(s for s in phantom.structures if s.critical)
    v = np.asarray(vessel.mesh.vertices)[:1]
    run.tip(proposal.p_reference_targets(v)[0])
    state = run.session.state(run.t_ns)
    assert state.critical_distances_mm[state.critical_names.index(vessel.name)] < 0.01


def test_a_deformable_collection_needs_an_accepted_or_verified_registration(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    with pytest.raises(ValueError, match="accept it first"):
        run.session.start(StartCollection(method="deformable"))
    run.register_fiducials(phantom)
    again = _Run(phantom, tmp_path)
    again.session.restore()
    with pytest.raises(ValueError, match="needs verification"):
        again.session.start(StartCollection(method="deformable"))
    assert again.session.collector is None
    again.session.verify(VerifyRegistration())
    progress = again.session.start(StartCollection(method="deformable"))
    assert progress.to_result()["method"] == "deformable"
    assert again.session.status(GetRegistrationStatus()).method == "deformable"


def _refused(run: _Run) -> str:
    status = run.session.status(GetRegistrationStatus())
    assert status.compute is not None and status.compute.state == "refused"
    assert status.proposal is None and run.session.proposal is None
    error = status.compute.error
    assert error and "\n" not in error
    return error


def test_bad_surface_data_are_refused_with_the_reason_and_never_proposed(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    active = run.register_fiducials(phantom)
    proposed = run.counters["registrations_proposed"]

    # Too few points: the reply's error, at once.
    run.session.start(StartCollection(method="deformable"))
    run.trace(_deformed(phantom, anterior_patch_image(phantom))[:5])
    with pytest.raises(RegistrationError, match="surface points traced, need at least 20"):
        run.session.compute(ComputeRegistration(), now_unix_ns=1)
    # NaN tips never reach the solver (the collector does not record them).
    collected = run.counters["surface_points_collected"]
    run.tip(np.full(3, np.nan))
    assert run.counters["surface_points_collected"] == collected

    # Points in the air, 60 mm clear of the organ.
    grid = np.stack(np.meshgrid(np.arange(0, 60, 3.0), np.arange(0, 60, 3.0)), -1).reshape(-1, 2)
    run.compute_deformable(np.c_[grid, np.full(len(grid), 60.0)])
    assert "do not lie on this model" in _refused(run)

    # A patch on another organ: a sphere cap beside the liver.
    cap = trimesh.creation.icosphere(subdivisions=4, radius=40.0).vertices
    cap = cap[cap[:, 1] < -10.0]
    centre = np.asarray(surface_structure(phantom).mesh.vertices).mean(axis=0)
    run.compute_deformable(apply(TRUTH, cap + centre + [0.0, 0.0, -30.0]))
    error = _refused(run)  # moved too far, or deformed too much where the points are
    assert "the points do not" in error and "this organ" in error

    assert run.counters["registrations_refused"] == 2
    assert run.counters["registrations_proposed"] == proposed
    assert run.session.active is active


def test_a_device_that_is_not_here_refuses_the_compute_and_changes_nothing(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path, deformable_device="cuda:7")
    run.register_fiducials(phantom)
    run.session.start(StartCollection(method="deformable"))
    run.trace(_deformed(phantom, anterior_patch_image(phantom)))
    active = run.session.active
    # The device is resolved on the worker (it imports torch, which the loop never waits
    # for): the compute starts, then is refused with the one line.
    run.session.compute(ComputeRegistration(), now_unix_ns=1)
    job = run.session.job
    assert job is not None and job.done.wait(60.0)
    run.session.finish_compute()
    status = run.session.last_compute
    assert status is not None and status.state == "refused"
    assert "torch device 'cuda:7' is not available here" in (status.error or "")
    assert "\n" not in (status.error or "")
    assert run.session.proposal is None and run.session.active is active


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"deformable_device": "gpu"}, "deformable_device"),
        ({"deformable_threads": -1}, "deformable_threads"),
        ({"truth_deformation_seed": 1.5}, "truth_deformation_seed"),
        ({"truth_deformation_peak_mm": 20.0}, r"truth_deformation_peak_mm.*\[6, 10\]"),
        ({"truth_deformation_peak_mm": math.nan}, "truth_deformation_peak_mm"),
    ],
)
def test_bad_deformable_keys_stop_the_node_with_one_line(
    params: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Config(truth_T_reference_from_image=tuple(TRUTH.ravel().tolist()), **params)
    with pytest.raises(ValueError, match="needs 'truth_T_reference_from_image'"):
        Config(truth_deformation_seed=3)


def test_a_deformable_registration_is_persisted_and_restored_for_verification(
    phantom: Case, tmp_path: Path
) -> None:
    run = _Run(phantom, tmp_path)
    run.register_fiducials(phantom)
    run.compute_deformable(_deformed(phantom, anterior_patch_image(phantom)))
    accepted = run.session.accept(AcceptRegistration(), now_unix_s=2.0)
    active = run.session.active
    assert active is not None and active.deformation is not None
    stored = load_registration(accepted.saved_to or "").registration
    assert stored.method == "deformable" and stored.deformation is not None
    for name in ("centres_image_mm", "coefficients_mm", "widths_mm", "kernel_weights"):
        np.testing.assert_array_equal(
            getattr(stored.deformation, name), getattr(active.deformation, name)
        )
    np.testing.assert_array_equal(stored.organ_confidence_mm, active.organ_confidence_mm)

    again = _Run(phantom, tmp_path)
    again.session.restore()
    restored = again.session.active
    assert restored is not None and restored.state == "restored" and restored.needs_verification
    assert restored.deformation is not None
    np.testing.assert_allclose(restored.true_tre_mm, active.true_tre_mm, atol=1e-9)
    p = phantom.targets.points_lps
    np.testing.assert_array_equal(restored.p_reference_targets(p), active.p_reference_targets(p))

    # A corrupt deformation refuses the file (counted); one without the new keys reads as
    # before (a rigid registration).
    document = json.loads((tmp_path / "registration.json").read_text())
    for corrupt in (
        {"widths_mm": [150.0, -1.0]},
        {"centres_image_mm": [[0.0, 0.0]]},
        {"kernel_weights": "many"},
    ):
        bad = {**document, "deformation": {**document["deformation"], **corrupt}}
        (tmp_path / "registration.json").write_text(json.dumps(bad))
        refused = _Run(phantom, tmp_path)
        refused.session.restore()
        assert refused.session.active is None
        assert refused.counters["registration_file_refused"] == 1
    short = {**document, "organ_confidence_mm": document["organ_confidence_mm"][:10]}
    (tmp_path / "registration.json").write_text(json.dumps(short))
    refused = _Run(phantom, tmp_path)
    refused.session.restore()
    assert refused.session.active is None and refused.counters["registration_file_refused"] == 1


@pytest.mark.slow
def test_the_predicted_error_and_the_landmark_check_over_the_sim_seeds() -> None:
    """What the operator sees before accepting, against what happened, seeds 0-11.

    Each seed's fit is run twice from the same accepted fiducial registration: without
    the touched fiducials (``_touched`` cleared, as after a restart) for what the fit
    does, and with them (the live path) for whether the landmark check lets it through.
    Measured (the 468-point anterior patch, fiducials touched on each deformed organ): at
    the tumour centre the fit made it worse in 8 seeds and better in 3 (seed 8 is refused
    as implausible); the predicted TRE there was about 4 mm in every seed, so it does not
    tell the two apart. The landmark check refuses every fit that made the tumour worse,
    and all but one that made it better (seed 10 passes): on this small patch it is
    conservative. Asserted: no fit that made the tumour worse gets through."""
    case = load_case(SHIPPED_PHANTOM_DIR)
    rows = []
    for seed in range(12):
        outcome = []
        for keep_landmarks in (False, True):
            run = _Run(case, Path("/nonexistent"), seed=seed, registration_file="")
            rigid = run.register_fiducials(case)
            if not keep_landmarks:
                run.session._touched.clear()  # noqa: SLF001 (as after a restart)
            tumour = rigid.target_names.index("tumor_centre")
            run.compute_deformable(_deformed(case, anterior_patch_image(case), seed=seed))
            proposal = run.session.proposal
            outcome.append(proposal)
        bare, checked = outcome
        if bare is None:  # refused without the landmarks: implausible
            rows.append((seed, rigid.true_tre_mm[tumour], math.nan, math.nan, True))
            continue
        assert bare.predicted_tre_mm[tumour] > rigid.predicted_tre_mm[tumour]
        rows.append(
            (
                seed,
                rigid.true_tre_mm[tumour],
                bare.true_tre_mm[tumour],
                bare.predicted_tre_mm[tumour],
                checked is None,
            )
        )
    print("\nseed  rigid true  deformable true  predicted  refused by the check (tumour, mm)")
    for row in rows:
        print("{:4d}  {:10.2f}  {:15.2f}  {:9.2f}  {}".format(*row))
    worse = [r for r in rows if r[2] > r[1]]
    assert worse, "the phantom seeds should hold fits that hurt: the test would mean nothing"
    assert all(r[4] for r in worse), [r for r in worse if not r[4]]


def test_the_posterior_at_any_model_point_is_the_vertex_confidence_at_the_vertices() -> None:
    from nav.registration.deformable import register_deformable

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    rng = np.random.default_rng(1)
    seen = v[v[:, 2] > 0.0] + [0.0, 0.0, 3.0] + rng.normal(0.0, 0.5, (int((v[:, 2] > 0).sum()), 3))
    result = register_deformable(v, f, seen, np.eye(4))
    np.testing.assert_allclose(result.confidence_at_mm(v), result.confidence_mm, rtol=1e-9)
    inside = result.confidence_at_mm([[0.0, 0.0, 40.0], [0.0, 0.0, -40.0]])
    assert inside[0] < inside[1]  # under the seen cap, against the unseen side


def test_auto_is_cuda_where_torch_sees_one_and_cpu_here() -> None:
    import torch

    from nav.session import resolve_torch_device

    assert resolve_torch_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_torch_device("cpu") == "cpu"


def test_a_nav_session_does_not_load_torch_until_a_deformable_collection_starts() -> None:
    """Loading torch stalls the loop thread for up to a second (its libraries hold the
    GIL): a node that loaded it at start sent STALE states in its first seconds."""
    script = (
        "import sys, time\n"
        "from collections import Counter\n"
        "from nav.case import load_case\n"
        "from nav.nav_node import Config\n"
        "from nav.phantom import SHIPPED_PHANTOM_DIR\n"
        "from nav.session import NavigatorSession\n"
        "import numpy as np\n"
        "s = NavigatorSession(Config().session_settings(np.zeros(3)),"
        " load_case(SHIPPED_PHANTOM_DIR), emit=print, counters=Counter())\n"
        "time.sleep(1.0)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"

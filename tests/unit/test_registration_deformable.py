"""Tests for nav.registration.deformable and nav.registration.confidence.

Scenes are built on the phantom liver that ships with the repository
(``nav/cases/phantom/models/liver.ply``, 190 x 150 x 100 mm): a known smooth deformation
(a sum of Gaussian bumps), a random patient pose, the front of the deformed organ seen
from a random direction (30-45 % of its area) sampled with noise, and internal targets
moved by the same deformation. The properties compare the method with the truth and
with Open3D's rigid point-to-plane ICP from the same start. Hypothesis runs
derandomised with few examples (each registration takes a few tenths of a second); numpy
draws from seeded Generators.
"""

from __future__ import annotations

import doctest
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import open3d as o3d
import pytest
import torch
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

import nav.registration.deformable as deformable
from nav.case import Markups
from nav.registration.confidence import (
    combined_confidence_mm,
    deformable_confidence_mm,
    rigid_confidence_mm,
)
from nav.registration.deformable import (
    DeformableConfig,
    DeformableResult,
    register_deformable,
)
from nav.registration.errors import RegistrationError
from nav.registration.paired_point import register_paired_points, tre_field_mm
from nav.transforms import apply, axis_angle_to_matrix, invert_rigid, is_rigid, make_rigid

FloatArray = npt.NDArray[np.float64]

LIVER = (
    Path(deformable.__file__).resolve().parents[1] / "cases" / "phantom" / "models" / "liver.ply"
)

few = settings(derandomize=True, max_examples=6, deadline=None)
seeds = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Scene:
    """A deformed organ seen in part; everything in mm."""

    vertices: FloatArray  # (V, 3) model frame
    triangles: npt.NDArray[np.int64]
    points: FloatArray  # (N, 3) patient frame
    T_true: FloatArray  # patient from model, before deformation
    T_init: FloatArray  # the rigid start
    targets_model: FloatArray  # (K, 3) inside the organ
    targets_true: FloatArray  # (K, 3) patient frame, deformed
    vertices_true: FloatArray  # (V, 3) patient frame, deformed


def liver() -> tuple[FloatArray, npt.NDArray[np.int64]]:
    mesh = trimesh.load(LIVER, force="mesh")
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def unit(rng: np.random.Generator) -> FloatArray:
    u = rng.normal(size=3)
    return u / np.linalg.norm(u)


def bumps(rng: np.random.Generator, v: FloatArray, peak_mm: float, n: int = 3):  # noqa: ANN201
    """A sum of ``n`` Gaussian displacement bumps with a ``peak_mm`` peak over ``v``."""
    centres = v[rng.integers(len(v), size=n)]
    widths = rng.uniform(45.0, 75.0, size=n)
    directions = np.array([unit(rng) for _ in range(n)])

    def raw(p: FloatArray) -> FloatArray:
        d2 = np.sum((p[:, None, :] - centres[None]) ** 2, axis=-1)
        out: FloatArray = np.exp(-d2 / (2.0 * widths**2)) @ directions
        return out

    scale = 0.0 if peak_mm == 0.0 else peak_mm / float(np.linalg.norm(raw(v), axis=1).max())
    return lambda p: scale * raw(p)


def seen_patch(
    rng: np.random.Generator, v: FloatArray, f: npt.NDArray[np.int64], fraction: float
) -> npt.NDArray[np.int64]:
    """Triangles facing a random view direction, grown from its nearest point to ``fraction``."""
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(n, axis=1)
    n /= 2.0 * area[:, None]
    view = unit(rng)
    front = n @ view > 0.2
    start = v[np.argmax(v @ view)]
    order = np.argsort(np.where(front, np.linalg.norm(tri.mean(1) - start, axis=1), np.inf))
    cum = np.cumsum(area[order]) / area.sum()
    count = int(min(np.searchsorted(cum, fraction) + 1, np.count_nonzero(front)))
    return order[:count]


def sample(
    rng: np.random.Generator,
    v: FloatArray,
    f: npt.NDArray[np.int64],
    faces: npt.NDArray[np.int64],
    n: int,
) -> FloatArray:
    tri = v[f[faces]]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    pick = rng.choice(len(faces), size=n, p=area / area.sum())
    s, r = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1.0 - s, s * (1.0 - r), s * r], axis=1)
    out: FloatArray = np.einsum("nk,nkd->nd", bary, tri[pick])
    return out


def scene(
    seed: int,
    *,
    peak_mm: float = 7.0,
    noise_mm: float = 0.5,
    n_points: int = 4000,
    init_error: tuple[float, float] = (2.0, 2.0),
    traces: int = 0,
) -> Scene:
    """The scene of the module docstring. ``init_error``: (degrees, mm) of ``T_init``.

    ``traces`` > 0 replaces the dense cloud by that many pointer traces: straight strokes
    across the seen patch, projected onto the surface, a point every 1.5 mm.
    """
    rng = np.random.default_rng(seed)
    v, f = liver()
    deform = bumps(rng, v, peak_mm)
    v_def = v + deform(v)
    patch = seen_patch(rng, v_def, f, rng.uniform(0.30, 0.45))
    if traces:
        p = sample(rng, v_def, f, patch, 4000)
        strokes = []
        for _ in range(traces):
            a, b = p[rng.integers(len(p), size=2)]
            t = np.linspace(0.0, 1.0, max(2, int(np.linalg.norm(b - a) / 1.5)))
            strokes.append(a + t[:, None] * (b - a))
        line = np.concatenate(strokes)
        # Project each stroke point onto the seen surface (its nearest sample there).
        _, nearest = cKDTree(p).query(line)
        points = p[nearest]
    else:
        points = sample(rng, v_def, f, patch, n_points)
    points = points + rng.normal(scale=noise_mm, size=points.shape)
    centre = v.mean(axis=0)
    targets = centre + rng.uniform(0.1, 0.6, size=(30, 1)) * (
        v[rng.integers(len(v), size=30)] - centre
    )
    T_true = make_rigid(
        axis_angle_to_matrix(unit(rng), rng.uniform(0, math.pi)), rng.uniform(-200, 200, 3)
    )
    degrees, mm = init_error
    R_err = axis_angle_to_matrix(unit(rng), math.radians(degrees))
    T_err = make_rigid(R_err, centre - R_err @ centre + mm * unit(rng))
    return Scene(
        vertices=v,
        triangles=f,
        points=apply(T_true, points),
        T_true=T_true,
        T_init=T_true @ T_err,
        targets_model=targets,
        targets_true=apply(T_true, targets + deform(targets)),
        vertices_true=apply(T_true, v_def),
    )


def rigid_icp(s: Scene) -> FloatArray:
    """Open3D point-to-plane ICP from ``s.T_init``: the rigid-only answer."""
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(s.vertices),
        o3d.utility.Vector3iVector(s.triangles.astype(np.int32)),
    )
    mesh.compute_triangle_normals()
    o3d.utility.random.seed(0)
    model = mesh.sample_points_uniformly(20000, use_triangle_normal=True)
    data = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(s.points))
    reg = o3d.pipelines.registration.registration_icp(
        data,
        model,
        10.0,
        invert_rigid(s.T_init),
        o3d.pipelines.registration.TransformationEstimationPointToPlane(),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=50),
    )
    return invert_rigid(np.asarray(reg.transformation))


def tre_mm(p: FloatArray, truth: FloatArray) -> float:
    return float(np.linalg.norm(p - truth, axis=1).mean())


# -- accuracy properties ------------------------------------------------------------------
#
# The phantom liver is smooth and nearly ellipsoidal, so sliding along it is only weakly
# fixed by the data: it is a harder case than the benchmark's SOFA livers (where the mean
# target error is about 1.0-1.3 mm). The bounds below were set from 16 seeds with margin.


@few
@given(seed=seeds)
def test_recovers_a_smooth_deformation_from_a_partial_noisy_view(seed: int) -> None:
    s = scene(seed)
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    ours = tre_mm(result.warp(s.targets_model), s.targets_true)
    start = tre_mm(apply(s.T_init, s.targets_model), s.targets_true)
    rigid = tre_mm(apply(rigid_icp(s), s.targets_model), s.targets_true)
    # 7 mm peak, 30-45 % seen, 0.5 mm noise: within 3 mm on average (measured 0.6-2.8),
    # never much worse than rigid ICP (measured: better in 15 of 16 seeds, worse by
    # 0.2 mm in one), and the fit follows the data to the noise.
    assert ours < 3.0, (ours, rigid, start)
    assert ours < rigid + 0.3, (ours, rigid, start)
    assert result.rms_residual_mm < 0.6


def test_beats_rigid_icp_on_average_over_seeds() -> None:
    ours, rigid = [], []
    for seed in range(8):
        s = scene(seed)
        result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
        ours.append(tre_mm(result.warp(s.targets_model), s.targets_true))
        rigid.append(tre_mm(apply(rigid_icp(s), s.targets_model), s.targets_true))
    # Measured: 1.7 mm against 3.2 mm.
    assert np.mean(ours) < 2.0, (ours, rigid)
    assert np.mean(ours) < 0.7 * np.mean(rigid), (ours, rigid)


@few
@given(seed=seeds)
def test_leaves_exact_undeformed_data_untouched(seed: int) -> None:
    s = scene(seed, peak_mm=0.0, noise_mm=0.0, init_error=(0.0, 0.0))
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    assert np.abs(result.displacements_mm).max() < 0.1
    assert result.rms_residual_mm < 0.05
    assert tre_mm(result.warp(s.targets_model), s.targets_true) < 0.1
    assert result.converged


@few
@given(seed=seeds)
def test_undeformed_noisy_data_keep_the_residual_at_the_noise(seed: int) -> None:
    noise_mm = 0.5
    s = scene(seed, peak_mm=0.0, noise_mm=noise_mm, init_error=(0.0, 0.0))
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    # The residual is the noise along the normal: about noise_mm (per-axis sd).
    assert 0.8 * noise_mm < result.rms_residual_mm < 1.2 * noise_mm
    # The noise does move the weakly seen part: the field slides along the smooth
    # surface by a few tenths of a mm (measured: mean 0.3-0.8, largest 1.4 mm).
    moved = np.linalg.norm(result.displacements_mm, axis=1)
    assert moved.mean() < 1.0 and moved.max() < 2.0
    assert tre_mm(result.warp(s.targets_model), s.targets_true) < 1.2


@few
@given(seed=seeds)
def test_keeps_the_rigid_answer_when_the_data_moved_rigidly(seed: int) -> None:
    s = scene(seed, peak_mm=0.0, noise_mm=0.0, init_error=(4.0, 5.0))
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    assert np.abs(result.displacements_mm).max() < 0.1
    assert tre_mm(apply(result.T_patient_from_model, s.targets_model), s.targets_true) < 0.1
    assert is_rigid(result.T_patient_from_model)
    assert result.converged


@few
@given(seed=seeds)
def test_sparse_pointer_traces_are_enough(seed: int) -> None:
    s = scene(seed, traces=5)
    assert 100 < len(s.points) < 1000  # a few hundred points on five strokes
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    assert result.rms_residual_mm < 0.8
    assert tre_mm(result.warp(s.targets_model), s.targets_true) < 8.0


def test_sparse_pointer_traces_improve_on_the_start_on_average() -> None:
    ours, start, rigid = [], [], []
    for seed in range(8):
        s = scene(seed, traces=5)
        result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
        ours.append(tre_mm(result.warp(s.targets_model), s.targets_true))
        start.append(tre_mm(apply(s.T_init, s.targets_model), s.targets_true))
        rigid.append(tre_mm(apply(rigid_icp(s), s.targets_model), s.targets_true))
    # Five strokes say little about a 7 mm deformation: the answer is about as good as
    # a rigid ICP's (measured 3.0 mm against 3.2 mm, from 4.9 mm at the start).
    assert np.mean(ours) < 0.8 * np.mean(start), (ours, start)
    assert np.mean(ours) < 1.1 * np.mean(rigid), (ours, rigid)


def test_unseen_regions_are_not_pulled_onto_the_seen_patch() -> None:
    # Plain coherent point drift draws the whole model onto a partial view; here the side
    # of the organ opposite the data stays where the rigid part puts it, to a few mm.
    s = scene(7)
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    far = cKDTree(s.points).query(s.vertices_true)[0] > 60.0
    assert far.sum() > 100
    error = np.linalg.norm(result.warp(s.vertices) - s.vertices_true, axis=1)
    assert float(np.median(error[far])) < 4.0


def test_moves_internal_points_with_the_vertex_field() -> None:
    s = scene(3)
    result = register_deformable(s.vertices, s.triangles, s.points, s.T_init)
    at_vertices = apply(result.T_patient_from_model, s.vertices) + result.displacements_mm
    np.testing.assert_allclose(result.warp(s.vertices), at_vertices, atol=1e-6)
    one = result.warp(s.targets_model[0])
    assert one.shape == (1, 3)
    np.testing.assert_allclose(one[0], result.warp(s.targets_model)[0])


# -- result, config and progress -----------------------------------------------------------


def test_result_fields_have_the_documented_shapes_and_are_frozen() -> None:
    s = scene(11)
    calls: list[tuple[int, int]] = []
    result = register_deformable(
        s.vertices, s.triangles, s.points, s.T_init, progress=lambda i, n: calls.append((i, n))
    )
    assert isinstance(result, DeformableResult)
    V, N = len(s.vertices), len(s.points)
    assert result.T_patient_from_model.shape == (4, 4)
    assert result.displacements_mm.shape == (V, 3)
    assert result.confidence_mm.shape == (V,)
    assert result.residuals_mm.shape == (N,)
    assert result.iterations == len(calls) > 0
    assert [i for i, _ in calls] == list(range(1, len(calls) + 1))
    assert all(n == sum(DeformableConfig().iterations) for _, n in calls)
    assert 0.0 < result.time_s < 60.0
    for a in (
        result.T_patient_from_model,
        result.displacements_mm,
        result.confidence_mm,
        result.residuals_mm,
    ):
        assert not a.flags.writeable
    with pytest.raises(AttributeError):
        result.iterations = 0  # type: ignore[misc]


def _inputs(s: Scene) -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray, FloatArray]:
    return s.vertices, s.triangles, s.points, s.T_init


def test_same_inputs_give_the_same_answer() -> None:
    s = scene(2)
    a = register_deformable(*_inputs(s))
    b = register_deformable(*_inputs(s))
    np.testing.assert_array_equal(a.displacements_mm, b.displacements_mm)
    np.testing.assert_array_equal(a.T_patient_from_model, b.T_patient_from_model)


def test_absolute_kernel_widths_override_the_relative_ones() -> None:
    s = scene(4)
    cfg = DeformableConfig(kernel_widths_mm=(150.0, 90.0))
    result = register_deformable(*_inputs(s), config=cfg)
    np.testing.assert_allclose(result.field.widths_mm, [150.0, 90.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_widths": ()},
        {"kernel_widths": (1.0, -1.0), "deformation_sd_mm": (1.0, 1.0), "iterations": (1, 1)},
        {"deformation_sd_mm": (4.0,)},
        {"iterations": (0, 5)},
        {"noise_mm": 0.0},
        {"gate_mm": math.nan},
        {"min_inlier_fraction": 1.5},
    ],
)
def test_config_refuses_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DeformableConfig(**kwargs)  # type: ignore[arg-type]


# -- refusals --------------------------------------------------------------------------------


def _refusal(kind: str, *args: object) -> None:
    with pytest.raises(RegistrationError) as caught:
        register_deformable(*args)  # type: ignore[arg-type]
    assert caught.value.kind == kind
    assert "\n" not in str(caught.value)


def test_refuses_degenerate_inputs() -> None:
    v, f, y, T = _inputs(scene(1))
    _refusal("too_few_points", v, f, y[:5], T)
    bad = y.copy()
    bad[3, 1] = np.nan
    _refusal("non_finite", v, f, bad, T)
    bad_v = v.copy()
    bad_v[0, 0] = np.inf
    _refusal("non_finite", bad_v, f, y, T)
    _refusal("out_of_range", v, f, y * 1e300, T)
    _refusal("out_of_range", v * 1e300, f, y, T)
    far = T.copy()
    far[0, 3] = 1e300
    _refusal("out_of_range", v, f, y, far)
    _refusal("mismatched", v, f, y[:, :2], T)
    _refusal("mismatched", v[:, :2], f, y, T)
    _refusal("mismatched", v, f[:, :2], y, T)
    _refusal("mismatched", v, f, y, T[:3])
    _refusal("mismatched", v, f, y, 2.0 * T)  # a scaling is not rigid
    _refusal("bad_mesh", v, np.zeros((0, 3), dtype=np.int64), y, T)
    _refusal("bad_mesh", np.zeros((0, 3)), f, y, T)
    _refusal("bad_mesh", v, f + len(v), y, T)
    _refusal("bad_mesh", v, f.astype(np.float64), y, T)
    _refusal("bad_mesh", np.zeros_like(v), f, y, T)  # zero area


def test_refuses_data_that_do_not_lie_on_the_model() -> None:
    v, f, y, T = _inputs(scene(1))
    _refusal("insufficient_overlap", v, f, y + [0.0, 0.0, 400.0], T)


def test_refuses_a_device_that_is_not_there() -> None:
    v, f, y, T = _inputs(scene(1))
    with pytest.raises(ValueError, match="device"):
        register_deformable(v, f, y, T, config=DeformableConfig(device="no-such-device"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_gpu_gives_the_cpu_answer() -> None:
    s = scene(6)
    cpu = register_deformable(*_inputs(s))
    gpu = register_deformable(*_inputs(s), config=DeformableConfig(device="cuda"))
    np.testing.assert_allclose(gpu.warp(s.targets_model), cpu.warp(s.targets_model), atol=1e-3)
    np.testing.assert_allclose(gpu.confidence_mm, cpu.confidence_mm, rtol=1e-3, atol=1e-3)


def test_module_docstring_example() -> None:
    failures, tried = doctest.testmod(deformable, verbose=False)
    assert tried > 0 and failures == 0


# -- confidence ------------------------------------------------------------------------------


def test_rigid_confidence_takes_the_fiducials_used_by_label_and_refuses_missing_facts() -> None:
    # A registration of fiducials 4, 0 and 2 of six: the field is eq. 46 over those three
    # case positions with the registration's FLE, whatever their order.
    rng = np.random.default_rng(0)
    case = Markups(tuple(f"F-{i}" for i in range(6)), rng.normal(scale=50.0, size=(6, 3)))
    used = case.points_lps[[4, 0, 2]]
    T = make_rigid(axis_angle_to_matrix([0.0, 0.0, 1.0], 0.3), [10.0, 0.0, 5.0])
    result = register_paired_points(used, apply(T, used), fle_mm=1.5)
    v, _ = liver()
    field = rigid_confidence_mm(
        v, fiducial_labels=("F-4", "F-0", "F-2"), fle_mm=1.5, case_fiducials=case
    )
    np.testing.assert_allclose(field, tre_field_mm(v, result), rtol=1e-12)
    for labels, fle_mm, problem in (
        (("F-4", "F-0", "F-2"), math.nan, "no FLE"),
        ((), 1.5, "names no fiducials"),
        (("F-4", "F-9", "F-2"), 1.5, "lacks fiducial 'F-9'"),
        (("F-4", "F-0"), 1.5, "only 2 fiducials"),
    ):
        with pytest.raises(ValueError, match=problem):
            rigid_confidence_mm(v, fiducial_labels=labels, fle_mm=fle_mm, case_fiducials=case)
    twice = Markups(("F-0", "F-0", "F-1"), case.points_lps[:3])
    with pytest.raises(ValueError, match="holds 2 times"):
        rigid_confidence_mm(v, fiducial_labels=("F-0", "F-1"), fle_mm=1.0, case_fiducials=twice)


def test_deformable_confidence_ranks_the_true_error() -> None:
    rhos = []
    for seed in (0, 1, 2):
        s = scene(seed, peak_mm=8.0)
        result = register_deformable(*_inputs(s))
        error = np.linalg.norm(result.warp(s.vertices) - s.vertices_true, axis=1)
        conf = result.confidence_mm
        rhos.append(spearmanr(conf, error).statistic)
        distance = cKDTree(s.points).query(apply(s.T_true, s.vertices))[0]
        near, far = distance < 5.0, distance > 50.0
        # Far from the data the true error is larger, and the estimate says so.
        assert error[far].mean() > error[near].mean()
        assert conf[far].mean() > conf[near].mean()
    assert min(rhos) > 0.3, rhos


def test_deformable_confidence_widens_for_noisier_data_and_combines_in_quadrature() -> None:
    sd = [1.0, 0.5]
    np.testing.assert_allclose(
        deformable_confidence_mm(sd, residual_rms_mm=2.0, assumed_noise_mm=1.0), [2.0, 1.0]
    )
    np.testing.assert_allclose(  # never narrower than the posterior
        deformable_confidence_mm(sd, residual_rms_mm=0.2, assumed_noise_mm=1.0), sd
    )
    np.testing.assert_allclose(combined_confidence_mm([3.0, 1.0], [4.0, 0.0]), [5.0, 1.0])
    with pytest.raises(ValueError):
        deformable_confidence_mm([-1.0], residual_rms_mm=1.0, assumed_noise_mm=1.0)
    with pytest.raises(ValueError):
        deformable_confidence_mm([1.0], residual_rms_mm=math.nan, assumed_noise_mm=1.0)
    with pytest.raises(ValueError):
        deformable_confidence_mm([1.0], residual_rms_mm=1.0, assumed_noise_mm=0.0)
    with pytest.raises(ValueError):
        combined_confidence_mm([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        combined_confidence_mm()

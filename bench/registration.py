"""Deformable registration accuracy and speed, side by side with rigid ICP and CPD, in one run.

    .venv/bin/python bench/registration.py [--seeds N] [--points N] [--cpd-points N]
        [--device cpu|cuda] [--live-sizes 2000,5000,10000] [--live-only] [--profile]
        [--torch-threads N (default 1)]

Cases. Real organ meshes from ``../shared/data/meshes/`` (SOFA, LGPL; the run is skipped
with a message when the folder is absent): two different livers,
``sofa_liver-smooth.obj`` (2194 vertices) and ``sofa_liver2.obj`` (1170 vertices), each
scaled so that its longest side is 190 mm. For each mesh and seed (0, 1, ...):

- a smooth deformation of the model with an 8 mm peak over the surface: three Gaussian
  bumps (widths 0.3-0.5 of the organ length, random centres on the surface and random
  directions), a bend about a random axis (displacement growing with the square of the
  position along it) and a long-wavelength sine mode (wavelength 1-2 organ lengths),
  mixed with random weights. It is not the solver's prior (no single kernel, no
  control points), and part of it can lie where no data are;
- a random pose ``T_true`` (the patient frame) and a rigid initial guess ``T_init``:
  ``T_true`` turned 4 degrees about a random axis through the organ centre and moved
  4 mm (a landmark-level initial alignment);
- the visible surface: the front-facing part of the deformed organ seen from a random
  direction, grown from its nearest point until it covers 20-45 % of the surface area;
  ``--points`` (10000) points sampled uniformly on it, Gaussian noise of 0.5-1.0 mm per
  axis (drawn per case), and 2 % outliers pushed 5-20 mm off the surface along its normal;
- 25 internal targets, uniform in the organ's volume and at least 5 mm deep, moved by the
  same deformation: the truth is ``T_true (p + d(p))``.

Methods (times are wall time of the call in this process, after one warm-up call):

- rigid ICP: Open3D point-to-plane ICP from ``T_init``, data onto 30000 points sampled
  on the model (normals from the triangles), 10 mm correspondence gate, 50 iterations;
- rigid optimum: the least-squares rigid fit of the model targets onto their true
  positions: no rigid method can do better in RMS (a bound, not a method);
- CPD (A. Myronenko, X. Song, "Point set registration: coherent point drift", IEEE TPAMI
  32(12):2262-2275, 2010), non-rigid, from pycpd and from probreg, after the rigid ICP
  (from its result). Both hold a dense M x N matrix, so as peers do the data are
  subsampled to ``--cpd-points`` (1000) and the model to the same at most; coordinates
  are scaled to unit RMS radius. Two settings: the libraries' defaults on the whole
  model (beta = 2, lambda = 2, w = 0.2), which show CPD's known failure on partial data
  (the whole model is drawn onto the seen patch), and a setting chosen on other seeds
  (100-103) from a grid of beta 0.15-2, lambda 2-20000, model cropped to none/5/10 mm
  from the data. On that grid nothing beat the rigid ICP it starts from: the best was to
  barely deform (lambda = 20000, within 0.05 mm of the ICP). The row shows the best
  setting that still deforms: the model vertices within 5 mm of the data, beta = 0.3,
  lambda = 2000, w = 0.2 (probreg's kernel is exp(-d^2/beta^2), so it gets
  beta = 0.3 sqrt 2 for the same width). Targets move with the fitted kernel field
  ``G(targets, model) W``;
- ornav: ``nav.registration.deformable.register_deformable`` with its defaults, from
  ``T_init``, and from the rigid ICP's result (the ``ornav register`` pipeline).

TRE is the distance from each method's target position to the truth. Each case gives
the mean and the max over its 25 targets; the table shows, over all cases, the mean
+- sd and the min-max of the per-case means, the mean of the per-case maxima, and the
median and min-max of the times. The confidence check compares ornav's per-vertex
``confidence_mm`` with the true vertex error: Spearman rank correlation per case, and
the mean of each over the seen and the unseen vertices. Nothing here asserts.

Live deformable (issue 14), the second table: the nav node's live fit at 2k / 5k / 10k
points (``--live-sizes``) side by side with the rigid ICP, on the same cases (the same
meshes and seeds, ``--points`` replaced by each size). Per case, the rigid ICP is
``nav.registration.surface.register_surface`` from ``T_init`` (the nav node's surface
method), and the deformable fit is ``register_deformable`` with the default config on
``--device`` from that ICP's result (the live configuration: it starts from a rigid fit).
Times are wall time of each call after one warm-up of each, median and max over the
cases, and the ratio of the medians; the aim (issue 14): 10k points in 150 ms on 2 CPU
cores, under 20 ms on a GPU. ``--profile`` adds cProfile's top functions for one 10k
deformable fit. ``--torch-threads`` (default 1, as the nav node's ``deformable_threads``;
0: torch's own, one per core) matters on a busy machine: the fit's matrices are
small (about 3.7k data cells by 8-24 control points at 10k points), and with two
intra-op threads on two cores that other processes share, each of its ~150 matrix
products waits for a descheduled thread (measured here, 2 cores shared with other test
runs: 15 ms for an 8 x 3744 x 8 product; one fit 0.8-10 s with 2 threads, 0.18-0.55 s
with 1). Measured here, 2 cores shared (load average 4-5), 8 cases per size, median /
max ms, 1 thread: 2k rigid 52 / 146, deformable 85 / 175; 5k 102 / 355, 135 / 213; 10k
183 / 384, 161 / 188 (aim missed by 11 ms; 2 threads: 179 / 233). At 10k with 1 thread,
Open3D's closest-point queries (a BVH built on the deformed mesh each iteration) take
40 % of the fit, about 85 of 210 ms.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import open3d as o3d  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from nav.registration.deformable import DeformableConfig, register_deformable  # noqa: E402
from nav.registration.errors import RegistrationError  # noqa: E402
from nav.registration.paired_point import register_paired_points  # noqa: E402
from nav.registration.surface import register_surface  # noqa: E402
from nav.sim_deformation import deformation_from  # noqa: E402
from nav.transforms import apply, axis_angle_to_matrix, invert_rigid, make_rigid  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
MESH_DIR = SHARED / "meshes"
MESHES = ("sofa_liver-smooth.obj", "sofa_liver2.obj")
ORGAN_LENGTH_MM = 190.0
PEAK_MM = 8.0
N_TARGETS = 25
LIVE_SIZES = (2000, 5000, 10000)
LIVE_AIM_MS = {"cpu": 150.0, "cuda": 20.0}  # 10k points (issue 14)


@dataclass(frozen=True, eq=False)
class Case:
    """One synthetic intraoperative scene; positions in mm."""

    name: str
    vertices_model: np.ndarray  # (V, 3)
    triangles: np.ndarray  # (F, 3)
    points_patient: np.ndarray  # (N, 3) noisy partial surface with outliers
    T_true: np.ndarray  # (4, 4) patient from model, before the deformation
    T_init: np.ndarray  # (4, 4) the rigid initial guess
    targets_model: np.ndarray  # (K, 3)
    targets_true: np.ndarray  # (K, 3) patient frame, deformed
    vertices_true: np.ndarray  # (V, 3) patient frame, deformed
    visible_vertices: np.ndarray  # (V,) bool: vertex of a seen triangle
    visible_fraction: float
    noise_mm: float


def require_shared_data() -> bool:
    """True if the meshes are there; otherwise say why the benchmark is skipped."""
    missing = [name for name in MESHES if not (MESH_DIR / name).is_file()]
    if missing:
        print(f"skipped: {MESH_DIR} lacks {', '.join(missing)} (a fresh clone has no ../shared)")
        return False
    return True


def load_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (centred, longest side ORGAN_LENGTH_MM) and triangles of a mesh file."""
    import trimesh

    mesh = trimesh.load(path, force="mesh")
    assert isinstance(mesh, trimesh.Trimesh)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    v = (v - v.mean(axis=0)) * (ORGAN_LENGTH_MM / float(np.ptp(v, axis=0).max()))
    return v, np.asarray(mesh.faces, dtype=np.int64)


def random_unit(rng: np.random.Generator) -> np.ndarray:
    u = rng.normal(size=3)
    return u / np.linalg.norm(u)


def make_case(
    name: str,
    v: np.ndarray,
    f: np.ndarray,
    seed: int,
    n_points: int,
    *,
    noise_scale: float = 1.0,
    outlier_fraction: float = 0.02,
) -> Case:
    """The scene of the module docstring for mesh (v, f) and ``seed``."""
    rng = np.random.default_rng(seed)
    # nav.sim_deformation's field (the demo's too), drawn from this scene's generator.
    deform = deformation_from(rng, v, peak_mm=PEAK_MM).displacement_mm
    v_def = v + deform(v)

    # The visible patch: front-facing triangles grown from the point nearest the camera.
    tri = v_def[f]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(normal, axis=1)
    normal /= np.maximum(2.0 * area, 1e-12)[:, None]
    centroid = tri.mean(axis=1)
    view = random_unit(rng)
    front = normal @ view > 0.2
    seed_point = v_def[np.argmax(v_def @ view)]
    dist = np.linalg.norm(centroid - seed_point, axis=1)
    fraction = rng.uniform(0.20, 0.45)
    order = np.argsort(np.where(front, dist, np.inf))
    cum = np.cumsum(area[order]) / area.sum()
    n_vis = int(min(np.searchsorted(cum, fraction) + 1, np.count_nonzero(front)))
    visible = order[:n_vis]

    # Uniform samples on the patch, noise, outliers along the normal.
    pick = visible[rng.choice(n_vis, size=n_points, p=area[visible] / area[visible].sum())]
    r1, r2 = rng.random(n_points), rng.random(n_points)
    s1 = np.sqrt(r1)
    bary = np.stack([1.0 - s1, s1 * (1.0 - r2), s1 * r2], axis=1)
    pts = np.einsum("nk,nkd->nd", bary, tri[pick])
    noise_mm = float(rng.uniform(0.5, 1.0))
    pts += noise_scale * rng.normal(scale=noise_mm, size=pts.shape)
    n_out = int(outlier_fraction * n_points)
    out = rng.choice(n_points, size=n_out, replace=False)
    offset = rng.choice([-1.0, 1.0], n_out) * rng.uniform(5.0, 20.0, n_out)
    pts[out] += normal[pick[out]] * offset[:, None]

    # Internal targets at least 5 mm deep (signed distance < -5 mm).
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor.from_numpy(v.astype(np.float32)),
        o3d.core.Tensor.from_numpy(f.astype(np.uint32)),
    )
    lo, hi = v.min(axis=0), v.max(axis=0)
    targets = np.empty((0, 3))
    while len(targets) < N_TARGETS:
        cand = rng.uniform(lo, hi, size=(2000, 3))
        depth = scene.compute_signed_distance(o3d.core.Tensor.from_numpy(cand.astype(np.float32)))
        targets = np.concatenate([targets, cand[depth.numpy() < -5.0]])[:N_TARGETS]

    R_true = axis_angle_to_matrix(random_unit(rng), rng.uniform(0.0, math.pi))
    T_true = make_rigid(R_true, rng.uniform(-300.0, 300.0, size=3))
    R_err = axis_angle_to_matrix(random_unit(rng), math.radians(4.0))
    c = v.mean(axis=0)
    T_err = make_rigid(R_err, c - R_err @ c + 4.0 * random_unit(rng))  # about the centre
    return Case(
        name=name,
        vertices_model=v,
        triangles=f,
        points_patient=apply(T_true, pts),
        T_true=T_true,
        T_init=T_true @ T_err,
        targets_model=targets,
        targets_true=apply(T_true, targets + deform(targets)),
        vertices_true=apply(T_true, v_def),
        visible_vertices=np.isin(np.arange(len(v)), f[visible]),
        visible_fraction=float(area[visible].sum() / area.sum()),
        noise_mm=noise_mm,
    )


# -- methods: each returns (targets in the patient frame, seconds) -------------------------


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Case, dict[str, object]], tuple[np.ndarray, float]]
    note: str


def rigid_icp(case: Case, memo: dict[str, object]) -> tuple[np.ndarray, float]:
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(case.vertices_model),
        o3d.utility.Vector3iVector(case.triangles.astype(np.int32)),
    )
    mesh.compute_triangle_normals()
    o3d.utility.random.seed(0)
    model = mesh.sample_points_uniformly(30000, use_triangle_normal=True)
    data = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(case.points_patient))
    t0 = time.perf_counter()
    reg = o3d.pipelines.registration.registration_icp(
        data,
        model,
        10.0,
        invert_rigid(case.T_init),
        o3d.pipelines.registration.TransformationEstimationPointToPlane(),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=50),
    )
    dt = time.perf_counter() - t0
    T = invert_rigid(np.asarray(reg.transformation))
    memo["T_icp"] = T
    return apply(T, case.targets_model), dt


def rigid_optimum(case: Case, memo: dict[str, object]) -> tuple[np.ndarray, float]:
    T = register_paired_points(case.targets_model, case.targets_true).T_patient_from_model
    return apply(T, case.targets_model), 0.0


def _gauss(a: np.ndarray, b: np.ndarray, beta: float, two: float) -> np.ndarray:
    d2 = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    return np.exp(-d2 / (two * beta * beta))


def cpd(
    library: str, *, crop_mm: float | None, beta: float, lam: float, n: int
) -> Callable[[Case, dict[str, object]], tuple[np.ndarray, float]]:
    """Non-rigid CPD from the rigid ICP's pose (``memo["T_icp"]``), as in the docstring."""

    def run(case: Case, memo: dict[str, object]) -> tuple[np.ndarray, float]:
        T = memo["T_icp"]
        assert isinstance(T, np.ndarray)
        rng = np.random.default_rng(0)
        model = apply(T, case.vertices_model)
        if crop_mm is not None:
            model = model[cKDTree(case.points_patient).query(model)[0] < crop_mm]
        if len(model) > n:
            model = model[rng.choice(len(model), n, replace=False)]
        data = case.points_patient[rng.choice(len(case.points_patient), n, replace=False)]
        centre = model.mean(axis=0)
        scale = math.sqrt(float(np.mean(np.sum((apply(T, case.vertices_model) - centre) ** 2, 1))))
        Y, X = (model - centre) / scale, (data - centre) / scale
        targets = (apply(T, case.targets_model) - centre) / scale
        t0 = time.perf_counter()
        if library == "pycpd":
            import pycpd

            reg = pycpd.DeformableRegistration(X=X, Y=Y, alpha=lam, beta=beta, w=0.2)
            reg.register()
            moved = targets + _gauss(targets, Y, beta, 2.0) @ reg.W
        else:
            from probreg import cpd as probreg_cpd

            b = beta * math.sqrt(2.0)  # probreg's kernel is exp(-d^2 / beta^2)
            result = probreg_cpd.registration_cpd(
                Y, X, tf_type_name="nonrigid", w=0.2, maxiter=100, beta=b, lmd=lam
            )
            moved = targets + _gauss(targets, Y, b, 1.0) @ result.transformation.w
        dt = time.perf_counter() - t0
        return moved * scale + centre, dt

    return run


def ornav(
    from_icp: bool, device: str
) -> Callable[[Case, dict[str, object]], tuple[np.ndarray, float]]:
    config = DeformableConfig(device=device)

    def run(case: Case, memo: dict[str, object]) -> tuple[np.ndarray, float]:
        T0 = memo["T_icp"] if from_icp else case.T_init
        assert isinstance(T0, np.ndarray)
        t0 = time.perf_counter()
        result = register_deformable(
            case.vertices_model, case.triangles, case.points_patient, T0, config=config
        )
        dt = time.perf_counter() - t0
        if not from_icp:
            memo["ornav"] = result
        return result.warp(case.targets_model), dt

    return run


def methods(cpd_points: int, device: str) -> list[Method]:
    found = []
    for library in ("pycpd", "probreg"):
        try:
            __import__(library)
            found.append(library)
        except ImportError:
            print(
                f"note: {library} is not installed (pip install '.[bench]'): its rows are left out"
            )
    rows = [
        Method("rigid ICP (Open3D point-to-plane)", rigid_icp, "all points"),
        Method("rigid optimum (bound for rigid)", rigid_optimum, "truth"),
    ]
    for library in found:
        rows.append(
            Method(
                f"{library} CPD, defaults, whole model",
                cpd(library, crop_mm=None, beta=2.0, lam=2.0, n=cpd_points),
                f"{cpd_points} pts, after ICP",
            )
        )
        rows.append(
            Method(
                f"{library} CPD, tuned, seen part",
                cpd(library, crop_mm=5.0, beta=0.3, lam=2000.0, n=cpd_points),
                f"<= {cpd_points} pts, after ICP",
            )
        )
    rows.append(Method("ornav deformable (from T_init)", ornav(False, device), "all points"))
    rows.append(
        Method("ornav deformable (from ICP)", ornav(True, device), "all points, ICP not timed")
    )
    return rows


# -- report ---------------------------------------------------------------------------------


def spread(values: Sequence[float] | np.ndarray, fmt: str = "{:.2f}") -> str:
    a = np.asarray(values)
    sd = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return (
        f"{fmt.format(a.mean())} +- {fmt.format(sd)} [{fmt.format(a.min())}-{fmt.format(a.max())}]"
    )


def time_text(values: Sequence[float]) -> str:
    if max(values) == 0.0:
        return "-"
    ms = [1e3 * v for v in values]
    if statistics.median(ms) >= 1000.0:
        return f"{statistics.median(ms) / 1e3:.2f} s [{min(ms) / 1e3:.2f}-{max(ms) / 1e3:.2f}]"
    return f"{statistics.median(ms):.0f} ms [{min(ms):.0f}-{max(ms):.0f}]"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text if rich is missing
        print(title)
        for row in (header, *rows):
            print("  " + " | ".join(row))
        return
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds per mesh (default 8)")
    parser.add_argument("--points", type=int, default=10000, help="data points per case")
    parser.add_argument("--cpd-points", type=int, default=1000, help="CPD subsample size")
    parser.add_argument(
        "--device", default=None, help="torch device of the deformable fit (default: cuda if any)"
    )
    parser.add_argument(
        "--live-sizes",
        default=",".join(str(n) for n in LIVE_SIZES),
        help="data sizes of the live table, comma-separated (default 2000,5000,10000)",
    )
    parser.add_argument("--live-only", action="store_true", help="only the live table")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch's intra-op threads (default 1, the nav node's deformable_threads; "
        "0: torch's own choice, one per core)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one deformable fit at the largest size"
    )
    args = parser.parse_args(argv)
    try:
        sizes = [int(n) for n in args.live_sizes.split(",")]
    except ValueError:
        parser.error(f"--live-sizes: {args.live_sizes!r} is not a list of integers")
    if not sizes or min(sizes) < 100:
        parser.error("--live-sizes: each size must be at least 100")
    if not require_shared_data():
        return 0
    import torch

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        parser.error(f"--device {device}: {error}")
    gpu = f", {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"open3d {o3d.__version__}; deformable on {device}{gpu}; {len(MESHES)} meshes x "
        f"{args.seeds} seeds, {PEAK_MM:g} mm peak deformation"
    )
    if not args.live_only:
        accuracy(args.seeds, args.points, args.cpd_points, device)
    live(args.seeds, sizes, device)
    if args.profile:
        profile(max(sizes), device)
    return 0


def accuracy(seeds: int, n_points: int, cpd_points: int, device: str) -> None:
    """The first table: every method's TRE and time at ``n_points`` (module docstring)."""
    print(f"-- accuracy: {n_points} points per case")
    rows = methods(cpd_points, device)
    tre: dict[str, list[tuple[float, float, float]]] = {m.name: [] for m in rows}
    conf_rho: list[float] = []
    conf_seen: list[tuple[float, float]] = []
    conf_unseen: list[tuple[float, float]] = []
    warm = True
    t_start = time.perf_counter()
    for mesh_name in MESHES:
        v, f = load_mesh(MESH_DIR / mesh_name)
        for seed in range(seeds):
            case = make_case(mesh_name, v, f, seed, n_points)
            if warm:  # first-call costs (torch, Open3D) are not the method's
                config = DeformableConfig(device=device)
                register_deformable(v, f, case.points_patient, case.T_init, config=config)
                warm = False
            memo: dict[str, object] = {}
            line = f"{mesh_name} seed {seed}: seen {case.visible_fraction:.0%}"
            line += f", noise {case.noise_mm:.2f} mm"
            for m in rows:
                p, dt = m.run(case, memo)
                e = np.linalg.norm(p - case.targets_true, axis=1)
                tre[m.name].append((float(e.mean()), float(e.max()), dt))
            line += ", TRE " + " / ".join(f"{tre[m.name][-1][0]:.2f}" for m in rows)
            print(line, flush=True)
            result = memo["ornav"]
            vertices = result.warp(case.vertices_model)  # type: ignore[attr-defined]
            err = np.linalg.norm(vertices - case.vertices_true, axis=1)
            conf = np.asarray(result.confidence_mm)  # type: ignore[attr-defined]
            conf_rho.append(float(spearmanr(conf, err).statistic))
            seen = case.visible_vertices
            conf_seen.append((float(err[seen].mean()), float(conf[seen].mean())))
            conf_unseen.append((float(err[~seen].mean()), float(conf[~seen].mean())))
    elapsed_s = time.perf_counter() - t_start
    print(f"(per case: mean TRE of each table row, in order; {elapsed_s:.0f} s in all)")
    table_rows = []
    for m in rows:
        a = np.asarray(tre[m.name])
        table_rows.append(
            [
                m.name,
                spread(a[:, 0]),
                f"{a[:, 1].mean():.2f} [{a[:, 1].min():.2f}-{a[:, 1].max():.2f}]",
                time_text(list(a[:, 2])),
                m.note,
            ]
        )
    n_cases = len(next(iter(tre.values())))
    print_table(
        f"Target registration error, {n_cases} cases ({len(MESHES)} livers x {seeds} seeds), "
        "mm: mean +- sd (min-max) over cases",
        ["method", "mean TRE", "max TRE", "time", "data used"],
        table_rows,
    )
    s, u = np.asarray(conf_seen), np.asarray(conf_unseen)
    print(
        f"ornav confidence_mm vs true vertex error: Spearman {spread(conf_rho)}; "
        f"seen vertices: error {s[:, 0].mean():.2f}, confidence {s[:, 1].mean():.2f} mm; "
        f"unseen: error {u[:, 0].mean():.2f}, confidence {u[:, 1].mean():.2f} mm"
    )


def _sync(device: str) -> None:
    """Wait for the GPU, so a time is the work's and not the queueing's."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class LiveRun:
    """One case at one size: both fits' wall times (s) and mean target errors (mm)."""

    rigid_s: float
    deformable_s: float
    rigid_tre_mm: float
    deformable_tre_mm: float


def live_case(case: Case, config: DeformableConfig) -> LiveRun | str:
    """The nav node's two surface fits on ``case``: rigid ICP from ``T_init``, then the
    deformable fit from the ICP's result (module docstring); or the refusal's kind."""
    t0 = time.perf_counter()
    try:
        rigid = register_surface(
            case.vertices_model, case.triangles, case.points_patient, T_init=case.T_init
        )
    except RegistrationError as error:  # the nav node would refuse it too: no deformable
        return f"rigid {error.kind}"
    t1 = time.perf_counter()
    _sync(config.device)
    t2 = time.perf_counter()
    try:
        deformable = register_deformable(
            case.vertices_model,
            case.triangles,
            case.points_patient,
            rigid.T_patient_from_model,
            config=config,
        )
    except RegistrationError as error:
        return f"deformable {error.kind}"
    _sync(config.device)
    t3 = time.perf_counter()
    rigid_e = np.linalg.norm(
        apply(rigid.T_patient_from_model, case.targets_model) - case.targets_true, axis=1
    )
    deformable_e = np.linalg.norm(deformable.warp(case.targets_model) - case.targets_true, axis=1)
    return LiveRun(t1 - t0, t3 - t2, float(rigid_e.mean()), float(deformable_e.mean()))


def live(seeds: int, sizes: Sequence[int], device: str) -> None:
    """The live table: deformable next to rigid ICP at each size (module docstring)."""
    print(f"-- live: rigid ICP, then deformable from it, at {', '.join(map(str, sizes))} points")
    config = DeformableConfig(device=device)
    meshes = [(name, *load_mesh(MESH_DIR / name)) for name in MESHES]
    warm_case = make_case(MESHES[0], meshes[0][1], meshes[0][2], 0, max(sizes))
    live_case(warm_case, config)  # first-call costs (torch, Open3D) are not the method's
    table_rows = []
    medians: dict[int, float] = {}
    for n in sizes:
        runs: list[LiveRun] = []
        refused: list[str] = []
        for mesh_name, v, f in meshes:
            for seed in range(seeds):
                run = live_case(make_case(mesh_name, v, f, seed, n), config)
                if isinstance(run, str):
                    refused.append(f"{mesh_name} seed {seed}: {run}")
                else:
                    runs.append(run)
        if refused:
            print(f"{n} points: refused, left out of the table: {'; '.join(refused)}")
        if not runs:
            continue
        rigid_ms = [1e3 * r.rigid_s for r in runs]
        deformable_ms = [1e3 * r.deformable_s for r in runs]
        medians[n] = statistics.median(deformable_ms)
        ratio = statistics.median(deformable_ms) / statistics.median(rigid_ms)
        table_rows.append(
            [
                f"{n}",
                f"{statistics.median(rigid_ms):.0f} / {max(rigid_ms):.0f}",
                f"{statistics.median(deformable_ms):.0f} / {max(deformable_ms):.0f}",
                f"{ratio:.1f}",
                f"{np.mean([r.rigid_tre_mm for r in runs]):.2f}",
                f"{np.mean([r.deformable_tre_mm for r in runs]):.2f}",
                f"{len(runs)}",
            ]
        )
        print(f"{n} points: {len(runs)} cases done", flush=True)
    print_table(
        f"Live deformable vs rigid ICP, {len(MESHES)} livers x {seeds} seeds per size, "
        f"deformable on {device}",
        [
            "points",
            "rigid ICP ms (median / max)",
            "deformable ms (median / max)",
            "ratio of medians",
            "rigid mean TRE mm",
            "deformable mean TRE mm",
            "cases",
        ],
        table_rows,
    )
    kind = "cuda" if device.startswith("cuda") else "cpu"
    aim_n = 10000
    if aim_n in medians:
        verdict = "met" if medians[aim_n] <= LIVE_AIM_MS[kind] else "missed"
        print(
            f"aim ({kind}): 10k points in {LIVE_AIM_MS[kind]:g} ms: median "
            f"{medians[aim_n]:.0f} ms, {verdict}"
        )


def profile(n_points: int, device: str, top: int = 20) -> None:
    """cProfile's top functions (by own time) for one deformable fit from the ICP."""
    import cProfile
    import pstats

    v, f = load_mesh(MESH_DIR / MESHES[0])
    case = make_case(MESHES[0], v, f, 0, n_points)
    config = DeformableConfig(device=device)
    live_case(case, config)  # warm
    rigid = register_surface(v, f, case.points_patient, T_init=case.T_init)  # seed 0 fits
    profiler = cProfile.Profile()
    profiler.enable()
    register_deformable(v, f, case.points_patient, rigid.T_patient_from_model, config=config)
    _sync(device)
    profiler.disable()
    print(f"-- profile: one deformable fit, {MESHES[0]} seed 0, {n_points} points, {device}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    sys.exit(main())

"""Rigid surface registration: intraoperative points onto the model surface (ICP).

The model is the preop surface in the ``model`` frame (the case's ``image``
frame, LPS mm): a triangle mesh, or a point cloud when no triangles are given.
The intraoperative points are measured in the ``patient`` frame (``tracker`` or
``reference``): pointer traces (sparse, 20-45 % of the organ surface, noise
about 0.5-1 mm) or a dense depth or stereo cloud. Every point should lie on
the model surface, but the points cover only part of it, and some may lie on
something else (outliers). The registration finds the rigid
``T_patient_from_model``.

Method.

1. Initialisation: the caller's ``T_init`` (typically a fiducial registration,
   :mod:`nav.registration.paired_point`), or a global search when there is
   none: FPFH features (R. B. Rusu, N. Blodow, M. Beetz, "Fast point feature
   histograms (FPFH) for 3D registration", ICRA 2009) on voxel-downsampled
   points and model, matched by RANSAC (M. A. Fischler, R. C. Bolles, CACM
   24(6):381-395, 1981) and by fast global registration (Q.-Y. Zhou, J. Park,
   V. Koltun, "Fast global registration", ECCV 2016), both from Open3D. RANSAC
   scores each hypothesis by the fraction of *points* it brings near the model,
   so a partial view is not penalised for the model surface it does not cover.
   Four more candidates align the centroids and principal axes of points and
   model: wrong for a partial view, right when the points cover the whole model
   (then even where FPFH has nothing to describe). Each candidate is refined by
   a short ICP on a subsample of the points and the one with the highest
   fitness (then the lowest RMS) wins; with a ``T_init`` too, it competes.
2. Refinement: point-to-plane ICP (Y. Chen, G. Medioni, "Object modelling by
   registration of multiple range images", Image Vis. Comput. 10(3):145-155,
   1992; P. J. Besl, N. D. McKay, IEEE TPAMI 14(2):239-256, 1992, for ICP) with
   the small-angle linearisation of K.-L. Low ("Linear least-squares
   optimization for point-to-plane ICP surface registration", UNC TR04-004,
   2004). Each data point ``x_i = T p_i`` (model frame) is paired with the
   closest point ``q_i`` *on the model triangles* (not the nearest vertex), with
   the normal ``n_i`` interpolated there from the vertex normals (continuous
   across edges, so the iteration does not chatter as points cross them), and
   the update minimises
   ``sum_i w_i (n_i . (x_i + w x (x_i - c) + v - q_i))^2`` over the small
   rotation ``w`` and translation ``v``. Because the points are matched to the
   model (and never the other way), the model surface the points do not cover
   costs nothing: partial overlap is the normal case, not a special one.
   Robustness: pairs farther than the correspondence gate get no weight, and
   the rest get Tukey's biweight ``w_i = (1 - (r_i / k)^2)^2`` of their
   point-to-plane residual ``r_i`` (iteratively reweighted least squares; P.
   Babin, P. Giguere, F. Pomerleau, "Analysis of robust functions for
   registration algorithms", ICRA 2019). The gate and ``k`` shrink coarse to
   fine (S. Rusinkiewicz, M. Levoy, "Efficient variants of the ICP algorithm",
   3DIM 2001, for the trade-offs): a wide gate first so that a start 20-40 mm
   off still finds its pairs, then ``max_correspondence_mm`` and
   ``robust_kernel_mm`` so that outliers and a deformed region lose their pull.
   A stage converges when its last update moved every point by less than
   ``tolerance_mm``.

A point cloud model (no triangles) pairs each point with the nearest model
point and the normal estimated from its 20 nearest neighbours.

Quality. ``residuals_mm`` is each point's distance to the registered model
surface (exact point-to-triangle distance, Open3D's RaycastingScene; nearest
model point for a point cloud model); points within ``max_correspondence_mm``
are inliers; ``fitness`` is their fraction and ``rms_residual_mm`` their RMS.
A low residual says the points fit *a* surface, not that the target is right:
a surface registration of a smooth, near-symmetric patch can slide along it.
:meth:`SurfaceResult.predicted_error_mm` says how far, at any model point: the
error the residual scatter implies through the patch's geometry (the surface
analogue of the fiducials' eq. 46 field).
Refusals (:class:`~nav.registration.errors.RegistrationError`):
``insufficient_overlap`` below ``min_fitness``, ``not_converged`` when the
final stage hit ``max_iterations``.

Worked example (asserted by ``tests/unit/test_registration_surface.py`` as a
doctest). The model is an ellipsoid with semi-axes 60, 40 and 30 mm. The
patient's points are the model's upper half (z > 0), shifted by (3, -2, 1) mm:
a partial view with exact correspondences, so ICP from the identity finds the
shift exactly and every point is an inlier:

>>> import trimesh
>>> mesh = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
>>> vertices = mesh.vertices * [60.0, 40.0, 30.0]
>>> p_patient = vertices[vertices[:, 2] > 0.0] + [3.0, -2.0, 1.0]
>>> result = register_surface(vertices, mesh.faces, p_patient)
>>> result.T_patient_from_model[:3, 3].round(3).tolist()
[3.0, -2.0, 1.0]
>>> result.initialisation, result.converged, result.fitness
('identity', True, 1.0)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import open3d as o3d

from nav.arrays import FloatArray, IntArray
from nav.registration.errors import RegistrationError, check_coordinates
from nav.transforms import Mat4, Points, axis_angle_to_matrix, invert_rigid, rigidity_error

log = logging.getLogger(__name__)


Initialisation: TypeAlias = Literal["given", "global", "identity"]
"""Where the ICP started: the caller's ``T_init``, the global search, or the identity."""

MIN_POINTS: Final = 3
"""Fewest points that can fix a rigid transform (and that RANSAC draws per hypothesis)."""

GLOBAL_VOXEL_FRACTION: Final = 1.0 / 50.0
"""Default global-search voxel as a fraction of the model's bounding-box diagonal.

About 5 mm for a liver (diagonal ~260 mm): fine enough that FPFH describes the
organ's curvature, coarse enough that the features of a 0.5-1 mm noisy trace are
stable and RANSAC takes about a second or less. On scikit-surgery's rabbit, 1/35
of the diagonal fails and 1/46 to 1/70 succeed.
"""

_FPFH_NORMAL_RADIUS: Final = 2.0
_FPFH_FEATURE_RADIUS: Final = 5.0
"""Normal and FPFH radii in voxels: the values of Open3D's global registration tutorial."""

COARSE_POINTS: Final = 2000
"""Points used by the coarse ICP stages: enough to pull a start 40 mm off into place."""

RANK_POINTS: Final = 500
"""Points used to refine and rank the global candidates: enough to tell the right pose from a
wrong one by tens of per cent of fitness, cheap enough to refine six candidates."""

_RIGID_TOLERANCE: Final = 1e-6


@dataclass(frozen=True, kw_only=True)
class SurfaceConfig:
    """Settings of :func:`register_surface`; lengths in mm (in the data's units for non-mm data)."""

    max_correspondence_mm: float = 10.0
    """Final correspondence gate: a point farther from the model surface is an outlier
    (off the organ, or in a region that deformed)."""
    robust_kernel_mm: float = 5.0
    """Tukey's ``k`` at the final stage: point-to-plane residuals above it get no weight.
    Tukey's 95 %-efficiency constant is 4.685 sigma: 5 mm suits noise up to ~1 mm. A
    ``k`` near the noise makes IRLS converge slowly (hundreds of iterations)."""
    coarse_to_fine: tuple[float, ...] = (4.0, 2.0, 1.0)
    """ICP stages: gate and Tukey ``k`` as multiples of the final ones, coarse first.
    The first gate must cover the initial error (40 mm by default)."""
    max_iterations: int = 100
    """Iteration limit of each ICP stage; the last stage hitting it is ``not_converged``."""
    tolerance_mm: float = 1e-4
    """A stage has converged when its last update moved every point by less than this."""
    max_icp_points: int = 10_000
    """Points used per ICP iteration; a larger cloud is subsampled (seeded). Residuals,
    fitness and RMS are always for every point."""
    global_voxel_mm: float | None = None
    """Voxel of the global search; None: :data:`GLOBAL_VOXEL_FRACTION` of the model's
    bounding-box diagonal."""
    ransac_max_iterations: int = 100_000
    ransac_confidence: float = 0.999
    min_fitness: float = 0.3
    """Smallest inlier fraction accepted; below it: ``insufficient_overlap``."""
    seed: int = 0
    """Seeds Open3D's RANSAC (``o3d.utility.random.seed``), the model sampling and the
    subsampling, so a result is reproducible."""

    def __post_init__(self) -> None:
        positive = {
            "max_correspondence_mm": self.max_correspondence_mm,
            "robust_kernel_mm": self.robust_kernel_mm,
            "tolerance_mm": self.tolerance_mm,
            "global_voxel_mm": self.global_voxel_mm if self.global_voxel_mm is not None else 1,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"SurfaceConfig.{name} must be finite and > 0, got {value}")
        if not self.coarse_to_fine or not all(
            math.isfinite(f) and f >= 1.0 for f in self.coarse_to_fine
        ):
            raise ValueError(
                f"SurfaceConfig.coarse_to_fine must be factors >= 1, got {self.coarse_to_fine}"
            )
        for name, count in (
            ("max_iterations", self.max_iterations),
            ("max_icp_points", self.max_icp_points),
            ("ransac_max_iterations", self.ransac_max_iterations),
        ):
            if count < 1:
                raise ValueError(f"SurfaceConfig.{name} must be >= 1, got {count}")
        if self.max_icp_points < MIN_POINTS:
            raise ValueError(f"SurfaceConfig.max_icp_points must be >= {MIN_POINTS}")
        if not 0.0 < self.ransac_confidence < 1.0:
            raise ValueError(
                f"SurfaceConfig.ransac_confidence must be in (0, 1), got {self.ransac_confidence}"
            )
        if not 0.0 <= self.min_fitness <= 1.0:
            raise ValueError(f"SurfaceConfig.min_fitness must be in [0, 1], got {self.min_fitness}")


@dataclass(frozen=True, eq=False, kw_only=True)
class SurfaceResult:
    """A rigid surface registration and its quality.

    - ``T_patient_from_model`` (4, 4): maps model (case / image) coordinates into
      the frame of the points (tracker or reference), mm.
    - ``residuals_mm`` (N,): each input point's distance to the registered model
      surface, outliers included.
    - ``inlier_mask`` (N,): ``residuals_mm <= max_correspondence_mm``.
    - ``rms_residual_mm``: RMS of the inliers' residuals.
    - ``fitness``: the inlier fraction, 0..1.
    - ``iterations``: ICP iterations of the final refinement, all stages.
    - ``converged``: the final stage stopped below ``tolerance_mm`` (always True
      for a returned result; False is refused as ``not_converged``).
    - ``initialisation``: where the winning ICP started (see :data:`Initialisation`).
    - ``time_s``: wall time of the whole registration, global search included.
    - ``pose_covariance`` (6, 6): covariance of the registration's error as a small
      rotation (rad, 3) about ``covariance_centre_model`` and a translation (mm, 3),
      model frame; see :meth:`predicted_error_mm`.
    - ``covariance_centre_model`` (3,): the inliers' centroid in the model frame, mm.
    """

    T_patient_from_model: Mat4
    residuals_mm: FloatArray
    inlier_mask: npt.NDArray[np.bool_]
    rms_residual_mm: float
    fitness: float
    iterations: int
    converged: bool
    initialisation: Initialisation
    time_s: float
    pose_covariance: FloatArray
    covariance_centre_model: Points

    def predicted_error_mm(self, p_model: npt.ArrayLike) -> FloatArray:
        """Return the predicted RMS error (M,) in mm of the registered points ``p_model`` (M, 3).

        The surface analogue of the fiducials' eq. 46 field: least squares on the
        inliers' point-to-plane residuals ``r_i``, with the noise estimated from them
        (``s^2 = sum r_i^2 / (m - 6)``), gives the pose covariance
        ``C = s^2 (J^T J)^-1``, ``J_i = [(x_i - c) x n_i, n_i]`` (``pose_covariance``);
        a model point ``y`` moves by ``B (w, v)``, ``B = [-[y - c]x, I]``, so its
        expected squared error is ``trace(B C B^T)``. It grows away from the data,
        fastest along the directions the patch leaves weakly constrained (a flat or
        cylindrical patch lets the model slide: inf). It counts only the scatter of
        the points about the fitted surface; an error the data cannot show (a
        deformation that looks rigid, a biased tracker) comes on top.
        """
        p = np.asarray(p_model, dtype=np.float64).reshape(-1, 3)
        y = p - self.covariance_centre_model
        if not np.all(np.isfinite(self.pose_covariance)):
            return np.full(len(p), math.inf)
        B = np.zeros((len(y), 3, 6))
        B[:, :, :3] = -np.cross(y[:, :, None], np.eye(3)[None], axis=1)  # -[y]x
        B[:, :, 3:] = np.eye(3)
        error: FloatArray = np.sqrt(np.einsum("mij,jk,mik->m", B, self.pose_covariance, B))
        return error


def register_surface(
    model_vertices: npt.ArrayLike,
    model_triangles: npt.ArrayLike | None,
    points_patient: npt.ArrayLike,
    *,
    T_init: Mat4 | None = None,
    global_init: bool = False,
    config: SurfaceConfig | None = None,
) -> SurfaceResult:
    """Return the rigid ``T_patient_from_model`` that puts ``points_patient`` on the model surface.

    ``model_vertices`` (V, 3): model frame, mm. ``model_triangles`` (F, 3):
    vertex indices; None or (0, 3) for a point cloud model, whose normals are
    then estimated from its neighbours (and whose residuals are nearest-point
    distances). ``points_patient`` (N, 3): patient frame, mm, N >= 3.
    ``T_init``: a rigid ``T_patient_from_model`` guess (e.g. from fiducials).
    ``global_init``: search globally first (FPFH + RANSAC, FPFH + FGR, principal
    axes); with a ``T_init`` too, the guess competes with the global candidates.
    With neither, ICP starts from the identity.

    Raises RegistrationError with ``kind``: ``mismatched`` (an array of the
    wrong shape), ``non_finite`` (NaN or inf in vertices, points or
    ``T_init``), ``out_of_range`` (a coordinate or the ``T_init`` translation beyond
    ``MAX_COORDINATE_MM``), ``too_few_points`` (N < 3, or too few voxels for the global
    search), ``bad_mesh`` (no vertices, triangles out of range, a model with no
    area), ``insufficient_overlap`` (fitness below ``config.min_fitness``),
    ``not_converged`` (the last ICP stage hit ``config.max_iterations``).
    Raises ValueError for a ``T_init`` that is not rigid.
    """
    t_start = time.perf_counter()
    cfg = config if config is not None else SurfaceConfig()
    vertices = _as_points(model_vertices, "model_vertices")
    points = _as_points(points_patient, "points_patient")
    # Before Open3D sees them: 1e300 mm makes its voxel grid fail with a C++ traceback.
    check_coordinates(points, "points_patient")
    check_coordinates(vertices, "model_vertices")
    if len(points) < MIN_POINTS:
        raise RegistrationError(
            "too_few_points", f"only {len(points)} points, need at least {MIN_POINTS}"
        )
    triangles = _as_triangles(model_triangles, vertices)
    T_guess = _as_rigid(T_init) if T_init is not None else None
    surface = _Surface(vertices, triangles)
    rng = np.random.default_rng(cfg.seed)

    # ICP works on the points and moves them into the model frame (T_model_from_patient):
    # the model's normals are exact, the points' (sparse traces) are not.
    icp_points = _subsample(points, cfg.max_icp_points, rng)

    candidates: list[tuple[Initialisation, Mat4]] = []
    if T_guess is not None:
        candidates.append(("given", invert_rigid(T_guess)))
    if global_init:
        candidates += [("global", T) for T in _global_candidates(surface, points, cfg, rng)]
    if not candidates:
        candidates.append(("identity", np.eye(4)))
    if len(candidates) > 1:
        initialisation, T_start = _best_candidate(surface, points, candidates, cfg, rng)
    else:
        initialisation, T_start = candidates[0]

    T_model_from_patient, iterations, converged = _icp(surface, icp_points, T_start, cfg, rng)
    T_patient_from_model = invert_rigid(T_model_from_patient)

    x = _apply(T_model_from_patient, points)
    q, n = surface.closest(x)
    residuals_mm = np.linalg.norm(x - q, axis=1)
    inlier_mask = residuals_mm <= cfg.max_correspondence_mm
    fitness = float(np.mean(inlier_mask))
    rms = float(np.sqrt(np.mean(residuals_mm[inlier_mask] ** 2))) if inlier_mask.any() else math.inf
    if fitness < cfg.min_fitness:
        raise RegistrationError(
            "insufficient_overlap",
            f"only {fitness:.0%} of the {len(points)} points lie within "
            f"{cfg.max_correspondence_mm:g} mm of the registered model surface, "
            f"need at least {cfg.min_fitness:.0%}",
        )
    if not converged:
        raise RegistrationError(
            "not_converged",
            f"ICP did not converge: the last stage hit its limit of {cfg.max_iterations} "
            f"iterations with updates above {cfg.tolerance_mm:g} mm",
        )
    time_s = time.perf_counter() - t_start
    log.debug(
        "surface registration (%s start): fitness %.3f, RMS %.3f mm, %d iterations, %.3f s",
        initialisation,
        fitness,
        rms,
        iterations,
        time_s,
    )
    centre, covariance = _pose_covariance(x[inlier_mask], q[inlier_mask], n[inlier_mask])
    for a in (T_patient_from_model, residuals_mm, inlier_mask, centre, covariance):
        a.setflags(write=False)  # the result is frozen; so are its arrays
    return SurfaceResult(
        T_patient_from_model=T_patient_from_model,
        residuals_mm=residuals_mm,
        inlier_mask=inlier_mask,
        rms_residual_mm=rms,
        fitness=fitness,
        iterations=iterations,
        converged=converged,
        initialisation=initialisation,
        time_s=time_s,
        pose_covariance=covariance,
        covariance_centre_model=centre,
    )


def surface_distances_mm(
    model_vertices: npt.ArrayLike, model_triangles: npt.ArrayLike | None, p_model: npt.ArrayLike
) -> FloatArray:
    """Return each point's distance (N,) in mm to the model surface, all in the model frame.

    The residual of :func:`register_surface` for points already registered (e.g. by
    fiducials): point-to-triangle, or nearest point for a point cloud model
    (``model_triangles`` None or (0, 3)). Raises RegistrationError as
    :func:`register_surface` does for a bad model or points.
    """
    vertices = _as_points(model_vertices, "model_vertices")
    points = _as_points(p_model, "p_model")
    check_coordinates(vertices, "model_vertices")
    check_coordinates(points, "p_model")
    return _Surface(vertices, _as_triangles(model_triangles, vertices)).distance(points)


def _pose_covariance(x: FloatArray, q: FloatArray, n: FloatArray) -> tuple[Points, FloatArray]:
    """Return the centroid (3,) of the inliers ``x`` and the pose covariance (6, 6) about it.

    See :meth:`SurfaceResult.predicted_error_mm`. All inf when the inliers do not fix
    the pose: fewer than 7 of them, or a direction the patch does not constrain.
    """
    centre = x.mean(axis=0) if len(x) else np.zeros(3)
    if len(x) <= 6:
        return centre, np.full((6, 6), math.inf)
    J = np.hstack([np.cross(x - centre, n), n])
    r = np.einsum("ij,ij->i", x - q, n)
    noise2 = float(r @ r) / (len(x) - 6)
    information = J.T @ J
    eigenvalues = np.linalg.eigvalsh(information)
    # A direction constrained 1e12 times less than the best is not constrained: sliding.
    if eigenvalues[0] <= 1e-12 * eigenvalues[-1]:
        return centre, np.full((6, 6), math.inf)
    covariance: FloatArray = noise2 * np.linalg.inv(information)
    return centre, covariance


# --- the model surface ------------------------------------------------------------------------


@dataclass(eq=False)
class _Surface:
    """The model: closest points with normals, and distances, on triangles or a point cloud.

    Open3D's RaycastingScene is float32, so queries are made relative to the
    model's centroid: a model 500 mm from its image origin keeps 1e-5 mm precision.
    """

    vertices: FloatArray
    triangles: IntArray | None
    centre: FloatArray = field(init=False)
    _scene: o3d.t.geometry.RaycastingScene | None = field(init=False, default=None)
    _nns: o3d.core.nns.NearestNeighborSearch | None = field(init=False, default=None)
    _normals: FloatArray | None = field(init=False, default=None)
    _face_normals: FloatArray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.centre = self.vertices.mean(axis=0)
        local = self.vertices - self.centre
        if self.triangles is not None:
            mesh = o3d.t.geometry.TriangleMesh()
            mesh.vertex.positions = _tensor(local.astype(np.float32))
            mesh.triangle.indices = _tensor(self.triangles.astype(np.int32))
            self._scene = o3d.t.geometry.RaycastingScene()
            self._scene.add_triangles(mesh)
            self._face_normals, self._normals = _mesh_normals(self.vertices, self.triangles)
        else:
            self._nns = o3d.core.nns.NearestNeighborSearch(_tensor(local))
            self._nns.knn_index()
            self._normals = _estimate_normals(local, knn=min(20, len(local)))

    @property
    def diagonal_mm(self) -> float:
        return float(np.linalg.norm(self.vertices.max(axis=0) - self.vertices.min(axis=0)))

    def closest(self, p_model: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return the closest surface points (N, 3) and their unit normals (N, 3)."""
        local = p_model - self.centre
        if self._scene is not None:
            found = self._scene.compute_closest_points(_tensor(local.astype(np.float32)))
            q = found["points"].numpy().astype(np.float64)
            return q + self.centre, self._interpolated_normals(found)
        assert self._normals is not None
        index, _ = self._nearest(local)
        return self.vertices[index], self._normals[index]

    def _interpolated_normals(self, found: dict[str, o3d.core.Tensor]) -> FloatArray:
        """Return the vertex normals interpolated at the closest points (Phong normals).

        The triangles' own normals jump at every edge, so as points cross edges the
        point-to-plane cost jumps too and ICP chatters at about 0.01 mm instead of
        converging; interpolated normals make it continuous. Where the winding is
        inconsistent the interpolated normal is unreliable and the face's is used.
        """
        assert self.triangles is not None and self._normals is not None
        assert self._face_normals is not None
        face = found["primitive_ids"].numpy().astype(np.int64)
        uv = found["primitive_uvs"].numpy().astype(np.float64)
        corners = self.triangles[face]  # (N, 3) vertex indices
        n = (
            (1.0 - uv[:, :1] - uv[:, 1:]) * self._normals[corners[:, 0]]
            + uv[:, :1] * self._normals[corners[:, 1]]
            + uv[:, 1:] * self._normals[corners[:, 2]]
        )
        face_n = self._face_normals[face]
        length = np.linalg.norm(n, axis=1)
        ok = np.einsum("ij,ij->i", n, face_n) > 0.5 * length
        n[ok] /= length[ok, None]
        n[~ok] = face_n[~ok]
        return n

    def distance(self, p_model: FloatArray) -> FloatArray:
        """Return each point's (N, 3) distance (N,) to the surface, mm."""
        local = p_model - self.centre
        if self._scene is not None:
            d = self._scene.compute_distance(_tensor(local.astype(np.float32)))
            distance: FloatArray = d.numpy().astype(np.float64)
            return distance
        _, distance = self._nearest(local)
        return distance

    def _nearest(self, local: FloatArray) -> tuple[IntArray, FloatArray]:
        """Return the nearest model point's index (N,) and distance (N,) for centred points."""
        assert self._nns is not None
        index, distance2 = self._nns.knn_search(_tensor(local), 1)
        return index.numpy()[:, 0].astype(np.int64), np.sqrt(distance2.numpy()[:, 0])

    def sample(self, spacing_mm: float, rng: np.random.Generator) -> FloatArray:
        """Return points on the surface about ``spacing_mm`` apart (all vertices for a cloud)."""
        if self.triangles is None:
            return self.vertices
        corners = self.vertices[self.triangles]  # (F, 3, 3)
        area = 0.5 * np.linalg.norm(
            np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
        )
        count = int(min(max(len(self.vertices), 2.0 * area.sum() / spacing_mm**2), 500_000))
        chosen = rng.choice(len(area), size=count, p=area / area.sum())
        # Uniform on each triangle: fold the unit square's upper half back onto the triangle.
        u, v = rng.random(count), rng.random(count)
        fold = u + v > 1.0
        u[fold], v[fold] = 1.0 - u[fold], 1.0 - v[fold]
        a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
        samples: FloatArray = a + u[:, None] * (b - a) + v[:, None] * (c - a)
        return np.vstack([self.vertices, samples])


def _tensor(a: npt.NDArray[np.generic]) -> o3d.core.Tensor:
    """An Open3D tensor of ``a`` (copied if not contiguous; shared otherwise, so keep ``a``)."""
    return o3d.core.Tensor.from_numpy(np.ascontiguousarray(a))


def _mesh_normals(vertices: FloatArray, triangles: IntArray) -> tuple[FloatArray, FloatArray]:
    """Return unit face normals (F, 3) and area-weighted unit vertex normals (V, 3) (0 if none)."""
    corners = vertices[triangles]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # 2 x area
    length = np.linalg.norm(cross, axis=1, keepdims=True)
    face_normals = np.divide(cross, length, out=np.zeros_like(cross), where=length > 0.0)
    vertex_sum = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vertex_sum, triangles[:, k], cross)
    norm = np.linalg.norm(vertex_sum, axis=1, keepdims=True)
    vertex_normals = np.divide(vertex_sum, norm, out=np.zeros_like(vertex_sum), where=norm > 0.0)
    return face_normals, vertex_normals


def _estimate_normals(points: FloatArray, *, knn: int) -> FloatArray:
    """Return unit normals (N, 3) from the ``knn`` nearest neighbours' covariance (any sign)."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=max(knn, 3)))
    return np.asarray(cloud.normals, dtype=np.float64)


# --- ICP ------------------------------------------------------------------------------------------


def _icp(
    surface: _Surface,
    points: FloatArray,
    T_model_from_patient: Mat4,
    cfg: SurfaceConfig,
    rng: np.random.Generator,
) -> tuple[Mat4, int, bool]:
    """Return the refined ``T_model_from_patient``, iterations, and the last stage's convergence.

    The coarse stages use at most :data:`COARSE_POINTS` of the points, the last all of them.
    """
    T = T_model_from_patient.copy()
    coarse_points = _subsample(points, COARSE_POINTS, rng)
    total = 0
    converged = False
    for stage, factor in enumerate(cfg.coarse_to_fine):
        last = stage == len(cfg.coarse_to_fine) - 1
        T, iterations, converged = _icp_stage(
            surface,
            points if last else coarse_points,
            T,
            gate_mm=factor * cfg.max_correspondence_mm,
            kernel_mm=factor * cfg.robust_kernel_mm,
            max_iterations=cfg.max_iterations,
            tolerance_mm=cfg.tolerance_mm,
        )
        total += iterations
    return T, total, converged


def _icp_stage(
    surface: _Surface,
    points: FloatArray,
    T: Mat4,
    *,
    gate_mm: float,
    kernel_mm: float,
    max_iterations: int,
    tolerance_mm: float,
) -> tuple[Mat4, int, bool]:
    """One gate and kernel: robust point-to-plane Gauss-Newton until the update is small."""
    for iteration in range(1, max_iterations + 1):
        x = _apply(T, points)
        q, n = surface.closest(x)
        gap = x - q
        near = np.einsum("ij,ij->i", gap, gap) <= gate_mm**2
        if np.count_nonzero(near) < MIN_POINTS:
            return T, iteration - 1, False  # nothing left to pull on
        x, n, gap = x[near], n[near], gap[near]
        r = np.einsum("ij,ij->i", gap, n)  # point-to-plane residuals
        w = np.clip(1.0 - (r / kernel_mm) ** 2, 0.0, None) ** 2  # Tukey's biweight
        if np.count_nonzero(w) < MIN_POINTS:
            return T, iteration - 1, False
        # Rotate about the weighted centroid, so rotation and translation decouple and the
        # movement bound below uses a radius of the patch, not of the frame's origin.
        c = (w @ x) / w.sum()
        y = x - c
        J = np.hstack([np.cross(y, n), n])  # (M, 6): d r / d (w, v)
        A = (J * w[:, None]).T @ J
        b = -(J * w[:, None]).T @ r
        # A flat or cylindrical patch leaves directions unconstrained: a tiny ridge keeps
        # the solve finite and leaves those directions where they are.
        A += np.eye(6) * (1e-12 * max(float(np.trace(A)), 1e-300))
        step = np.linalg.solve(A, b)
        omega, v = step[:3], step[3:]
        angle = float(np.linalg.norm(omega))
        R = axis_angle_to_matrix(omega, angle) if angle > 0.0 else np.eye(3)
        update = np.eye(4)
        update[:3, :3] = R
        update[:3, 3] = c - R @ c + v
        T = update @ T
        radius = float(np.sqrt(np.max(np.einsum("ij,ij->i", y, y))))
        if float(np.linalg.norm(v)) + angle * radius < tolerance_mm:
            return T, iteration, True
    return T, max_iterations, False


# --- global initialisation ---------------------------------------------------------------------


def _global_candidates(
    surface: _Surface, points: FloatArray, cfg: SurfaceConfig, rng: np.random.Generator
) -> list[Mat4]:
    """Return ``T_model_from_patient`` candidates from FPFH + RANSAC and FPFH + FGR."""
    reg = o3d.pipelines.registration
    voxel = cfg.global_voxel_mm or GLOBAL_VOXEL_FRACTION * surface.diagonal_mm
    source, source_fpfh = _fpfh(points, voxel)
    if len(source.points) < MIN_POINTS:
        raise RegistrationError(
            "too_few_points",
            f"the {len(points)} points fill only {len(source.points)} voxels of {voxel:.3g} mm, "
            f"need at least {MIN_POINTS} for the global search; pass T_init instead",
        )
    target, target_fpfh = _fpfh(surface.sample(voxel / 2.0, rng), voxel)
    o3d.utility.random.seed(cfg.seed)
    ransac = reg.registration_ransac_based_on_feature_matching(
        source,
        target,
        source_fpfh,
        target_fpfh,
        True,  # mutual filter: keep feature matches that agree both ways
        1.5 * voxel,
        reg.TransformationEstimationPointToPoint(False),
        MIN_POINTS,
        [
            reg.CorrespondenceCheckerBasedOnEdgeLength(0.9),
            reg.CorrespondenceCheckerBasedOnDistance(1.5 * voxel),
        ],
        reg.RANSACConvergenceCriteria(cfg.ransac_max_iterations, cfg.ransac_confidence),
    )
    fgr = reg.registration_fgr_based_on_feature_matching(
        source,
        target,
        source_fpfh,
        target_fpfh,
        reg.FastGlobalRegistrationOption(maximum_correspondence_distance=0.5 * voxel),
    )
    log.debug(
        "global search, voxel %.3g mm, %d points on %d model samples: RANSAC fitness %.3f, "
        "FGR fitness %.3f",
        voxel,
        len(source.points),
        len(target.points),
        ransac.fitness,
        fgr.fitness,
    )
    return [
        np.array(ransac.transformation),
        np.array(fgr.transformation),
        *_pca_candidates(surface.sample(voxel / 2.0, rng), points),
    ]


def _pca_candidates(p_model: FloatArray, p_patient: FloatArray) -> list[Mat4]:
    """Return the 4 ``T_model_from_patient`` that align centroids and principal axes.

    Right only when the points cover the whole model (the points of a partial view
    have other axes), and then even where FPFH has nothing to describe (a random
    cloud, a near-featureless shape); RANSAC covers partial views.
    """
    c_model, c_patient = p_model.mean(axis=0), p_patient.mean(axis=0)
    _, E_model = np.linalg.eigh(np.cov((p_model - c_model).T))
    _, E_patient = np.linalg.eigh(np.cov((p_patient - c_patient).T))
    candidates = []
    for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        # Flip the first two axes as chosen, the third to keep a proper rotation.
        flip = np.diag([signs[0], signs[1], 1.0])
        R = E_model @ flip @ E_patient.T
        if np.linalg.det(R) < 0.0:
            R = E_model @ flip @ np.diag([1.0, 1.0, -1.0]) @ E_patient.T
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = c_model - R @ c_patient
        candidates.append(T)
    return candidates


def _fpfh(
    points: FloatArray, voxel: float
) -> tuple[o3d.geometry.PointCloud, o3d.pipelines.registration.Feature]:
    """Return the voxel-downsampled cloud with normals and its FPFH features."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)).voxel_down_sample(voxel)
    cloud.estimate_normals(
        o3d.geometry.KDTreeSearchParamHybrid(radius=_FPFH_NORMAL_RADIUS * voxel, max_nn=30)
    )
    # ``indices`` is optional at run time (all points); Open3D's stub says otherwise.
    features = o3d.pipelines.registration.compute_fpfh_feature(  # type: ignore[call-arg]
        cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=_FPFH_FEATURE_RADIUS * voxel, max_nn=100)
    )
    return cloud, features


def _best_candidate(
    surface: _Surface,
    points: FloatArray,
    candidates: list[tuple[Initialisation, Mat4]],
    cfg: SurfaceConfig,
    rng: np.random.Generator,
) -> tuple[Initialisation, Mat4]:
    """Refine each candidate briefly on a subsample; return the fittest (then lowest RMS)."""
    sample = _subsample(points, RANK_POINTS, rng)
    coarse = SurfaceConfig(
        max_correspondence_mm=cfg.max_correspondence_mm,
        robust_kernel_mm=cfg.robust_kernel_mm,
        coarse_to_fine=cfg.coarse_to_fine,
        max_iterations=min(cfg.max_iterations, 10),
        tolerance_mm=max(cfg.tolerance_mm, 1e-2 * cfg.robust_kernel_mm),
    )
    best: tuple[float, float, Initialisation, Mat4] | None = None
    for initialisation, T in candidates:
        T_refined, _, _ = _icp(surface, sample, T, coarse, rng)
        d = surface.distance(_apply(T_refined, sample))
        inliers = d <= cfg.max_correspondence_mm
        fitness = float(np.mean(inliers))
        rms = float(np.sqrt(np.mean(d[inliers] ** 2))) if inliers.any() else math.inf
        log.debug("candidate (%s): fitness %.3f, RMS %.3g", initialisation, fitness, rms)
        if best is None or (fitness, -rms) > (best[0], -best[1]):
            best = (fitness, rms, initialisation, T_refined)
    assert best is not None
    return best[2], best[3]


# --- input checks ------------------------------------------------------------------------------


def _subsample(points: FloatArray, n: int, rng: np.random.Generator) -> FloatArray:
    """Return ``n`` of the points drawn without replacement (in their order), or all of them."""
    if len(points) <= n:
        return points
    return points[np.sort(rng.choice(len(points), n, replace=False))]


def _apply(T: Mat4, p: FloatArray) -> FloatArray:
    out: FloatArray = p @ T[:3, :3].T + T[:3, 3]
    return out


def _as_points(p: npt.ArrayLike, name: str) -> Points:
    """Return ``p`` as a float64 (N, 3) array; raise RegistrationError("mismatched") otherwise."""
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise RegistrationError("mismatched", f"{name} must have shape (N, 3), got {a.shape}")
    return a


def _as_triangles(triangles: npt.ArrayLike | None, vertices: FloatArray) -> IntArray | None:
    """Return the triangles (F, 3) int64, or None for a point cloud model; raise ``bad_mesh``."""
    n_vertices = len(vertices)
    if n_vertices == 0:
        raise RegistrationError("bad_mesh", "the model has no vertices")
    if triangles is None:
        faces = np.zeros((0, 3), dtype=np.int64)
    else:
        a = np.asarray(triangles)
        if a.size == 0:
            a = a.reshape(0, 3)
        if a.ndim != 2 or a.shape[1] != 3:
            raise RegistrationError(
                "bad_mesh", f"model_triangles must have shape (F, 3), got {a.shape}"
            )
        if not np.issubdtype(a.dtype, np.integer):
            raise RegistrationError("bad_mesh", f"model_triangles must be integers, got {a.dtype}")
        faces = a.astype(np.int64)
    if len(faces) == 0:
        if n_vertices < MIN_POINTS:
            raise RegistrationError(
                "bad_mesh",
                f"a point cloud model of {n_vertices} points, need at least {MIN_POINTS}",
            )
        return None
    low, high = int(faces.min()), int(faces.max())
    if low < 0 or high >= n_vertices:
        bad = low if low < 0 else high
        raise RegistrationError(
            "bad_mesh", f"a triangle uses vertex {bad}, outside 0..{n_vertices - 1}"
        )
    corners = vertices[faces]
    area_mm2 = 0.5 * float(
        np.linalg.norm(
            np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
        ).sum()
    )
    if not area_mm2 > 0.0:
        raise RegistrationError("bad_mesh", f"the model's {len(faces)} triangles have no area")
    return faces


def _as_rigid(T: npt.ArrayLike) -> Mat4:
    a = np.asarray(T, dtype=np.float64)
    if a.shape != (4, 4):
        raise RegistrationError("mismatched", f"T_init must have shape (4, 4), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise RegistrationError("non_finite", "T_init contains NaN or inf")
    check_coordinates(a[:3, 3], "T_init's translation")
    error = rigidity_error(a)
    if error > _RIGID_TOLERANCE:
        raise ValueError(f"T_init is not rigid: rigidity error {error:.3g} > {_RIGID_TOLERANCE}")
    return a

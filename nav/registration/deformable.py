"""Deformable surface registration: a rigidly aligned model deformed onto partial surface data.

After a rigid registration (fiducials or surface ICP), the organ in theatre still differs
from the preop model by a smooth deformation of several mm. The intraoperative data show
only part of it: a depth or stereo cloud of 20-45 % of the surface, or a few hundred
points traced with the pointer, with 0.5-1 mm noise and some outliers. This module finds
a rigid transform and a smooth displacement field such that the deformed model surface
passes through the data, and moves every point of the model (vertices, and the tumour,
vessels and targets inside) with the same field. Lengths are millimetres throughout.

Model. A model point ``p`` (model frame) goes to ``T p + u(p)`` in the patient frame,
``T`` the rigid ``T_patient_from_model`` and ``u`` a displacement field with a zero-mean
Gaussian-process prior whose kernel is a sum of Gaussians (per axis, axes independent)::

    k(p, p') = sum_j sd_j^2 exp(-|p - p'|^2 / (2 w_j^2))

The widths ``w_j`` default to 2.0 and 1.2 times the organ's radius (the area-weighted
RMS distance of its surface from its centroid: about 75 mm for a liver, so 150 and
90 mm), the amplitudes ``sd_j`` to 4 and 2 mm: bends and bulges on the scale of the
organ. The widths follow the organ's size, so the defaults are not tied to one mesh. The
field lives on control points, a farthest-point subset of the vertices within reach of
the data (the "deterministic training conditional" sparse GP of J. Quinonero-Candela,
C. E. Rasmussen, "A unifying view of sparse approximate Gaussian process regression",
JMLR 6:1939-1959, 2005), so a solve costs (3M + 6)^3 for M control points (M is 8-100)
however many data points there are.

Fit: a non-rigid ICP (B. Amberg, S. Romdhani, T. Vetter, "Optimal step nonrigid ICP
algorithms for surface registration", CVPR 2007) with the GP as its regulariser (as in
M. Luethi et al., "Gaussian process morphable models", IEEE TPAMI 40(8):1860-1873,
2018). The data are first grouped into cells about ``cluster_spacing_mm`` (3 mm) across;
each iteration then

1. finds, for each cell's robust mean, the closest point and normal on the current
   deformed surface (Open3D's BVH). Correspondences go data -> model, never
   model -> data, so the unseen part of the model is never drawn onto the seen patch,
   the failure of plain coherent point drift on partial data;
2. weights every data point by its distance to that tangent plane with the Geman-McClure
   kernel (``robust_scale_mm``), drops points beyond ``gate_mm`` (outliers), and
   recomputes the cells' weighted means;
3. solves one linear system for the rigid increment and the field together:
   point-to-plane residuals (Y. Chen, G. Medioni, "Object modelling by registration of
   multiple range images", IVC 10(3):145-155, 1992) and the GP prior
   ``noise_mm^2 a^T K a`` on the coefficients ``a``.

The levels add the kernels one at a time (the widest alone, then both): the first
iterations see only a stiff field, so the capture range is about that of a rigid ICP.

Why these choices (figures: mean target error over the 16 cases of
bench/registration.py: two livers, 10k points, 8 mm peak deformation, 20-45 % seen). A
surface shows only the normal part of a displacement; the part along the surface
(sliding) is fixed by its curvature and by the smoothness of the field, so the prior
decides much of the answer. The rigid part is solved with the field, not before it: a
rigid ICP alone tilts the model to fit the deformed patch (3.85 mm), and a field added
on top of that fixed tilt gets 1.33 mm where the joint fit gets 1.09 mm. Each cell
counts once however many points it holds (its mean robust weight), so the balance
between data and prior follows the area seen more than the density of the sampling (10k
points on a third of a liver make about 3.7k cells). Smaller cells keep more of the data
and cost time: 2 mm cells give 1.01 mm in 1.35 times the time, one cell per point 0.94
mm in about 1.8 times; 3 mm keeps 10k points under 0.3 s on two cores. After three full
Gauss-Newton steps a level takes half steps, which damps the back-and-forth sliding that
closest-point correspondences allow on a smooth patch.

Limits, measured. Where the data fix the surface, the fit follows it to the noise; away
from the data the answer is the rigid part plus the smooth continuation of the field, so
a deformation confined to the unseen part is not recovered (by this or any surface
method), and :attr:`DeformableResult.confidence_mm` grows there. Noise moves the weakly
determined sliding: on the smooth, nearly ellipsoidal phantom liver with no deformation
at all, 0.5 mm noise moves the field by 0.3-0.8 mm on average (1.4 mm at most); a stiffer
prior (``deformation_sd_mm`` (2, 1)) halves that but loses 0.15-0.3 mm of accuracy on
deformed livers. It does not model tissue mechanics (no stiffness, no volume
conservation, no sliding boundaries).

Worked example (asserted as a doctest by ``tests/unit/test_registration_deformable.py``): a
sphere of radius 50 mm is seen on its upper half, moved up by 3 mm. The rigid part takes
the translation and the field stays near zero:

>>> import numpy as np, trimesh
>>> sphere = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
>>> v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
>>> seen = v[v[:, 2] > 0.0] + [0.0, 0.0, 3.0]
>>> result = register_deformable(v, f, seen, np.eye(4))
>>> (result.warp([[0.0, 0.0, 0.0]]).round(1) + 0.0).tolist()  # + 0.0: no "-0.0"
[[0.0, 0.0, 3.0]]
>>> bool(np.abs(result.displacements_mm).max() < 0.1), result.converged
(True, True)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import open3d as o3d
import torch
from scipy.spatial import cKDTree

from nav.arrays import FloatArray, IntArray
from nav.messages.deformation import kernel_displacement_mm
from nav.registration.confidence import deformable_confidence_mm
from nav.registration.errors import RegistrationError, check_coordinates
from nav.transforms import Mat4, apply, invert_rigid, is_rigid, make_rigid

MIN_POINTS: Final = 10
"""Fewest data points (within the gate of the surface) that the method accepts."""

MIN_CONTROL_POINTS: Final = 8
"""Fewest control points of a level: below this the field is too stiff to mean much."""

FULL_STEPS: Final = 3
"""Iterations of each level that take the whole Gauss-Newton step; later ones take half.

Along a featureless stretch of surface the closest-point correspondences let the solution
slide back and forth between iterations; half steps (the mean of the old and the new
solution) damp that, and the levels end on the tolerance about twice as often, at no
measured cost in accuracy."""


@dataclass(frozen=True, kw_only=True)
class DeformableConfig:
    """Settings of :func:`register_deformable`; the defaults are the benchmarked ones.

    - ``kernel_widths``: the GP kernel widths, coarse to fine, as multiples of the organ
      radius (area-weighted RMS distance of the model surface from its centroid);
      ``kernel_widths_mm`` overrides them with absolute widths.
    - ``deformation_sd_mm``: prior standard deviation (per axis) of each kernel's part of
      the displacement, one per width.
    - ``noise_mm``: the noise assumed for one data cell; with the prior it sets how
      closely the surface follows the data (larger: stiffer).
    - ``iterations``: the most iterations of each level (level j uses widths 0..j).
    - ``tolerance_mm``: a level ends when no vertex moved more than this in an iteration.
    - ``gate_mm``: data points farther than this from the surface are ignored.
    - ``robust_scale_mm``: the Geman-McClure scale; a point at this distance has 1/4 weight.
    - ``cluster_spacing_mm``: size of the data cells (one observation each).
    - ``control_spacing``: control-point spacing as a multiple of the level's finest width.
    - ``refine_rigid``: solve the rigid transform with the field (else keep the init).
    - ``min_inlier_fraction``: refuse (``insufficient_overlap``) when fewer data points end
      within ``gate_mm`` of the surface.
    - ``device``: torch device of the solver ("cpu", "cuda", "cuda:1"); neighbour search
      stays on the CPU.
    - ``seed``: first control point of the farthest-point sampling (results are
      deterministic for a given seed).
    """

    kernel_widths: tuple[float, ...] = (2.0, 1.2)
    kernel_widths_mm: tuple[float, ...] | None = None
    deformation_sd_mm: tuple[float, ...] = (4.0, 2.0)
    noise_mm: float = 1.0
    iterations: tuple[int, ...] = (15, 6)
    tolerance_mm: float = 0.05
    gate_mm: float = 10.0
    robust_scale_mm: float = 2.0
    cluster_spacing_mm: float = 3.0
    control_spacing: float = 0.6
    refine_rigid: bool = True
    min_inlier_fraction: float = 0.3
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        widths = self.kernel_widths_mm if self.kernel_widths_mm is not None else self.kernel_widths
        if not widths or any(not (math.isfinite(w) and w > 0.0) for w in widths):
            raise ValueError(f"kernel widths must be positive and finite, got {widths}")
        if len(self.deformation_sd_mm) != len(widths):
            raise ValueError(
                f"deformation_sd_mm has {len(self.deformation_sd_mm)} entries, "
                f"need one per kernel width ({len(widths)})"
            )
        if len(self.iterations) != len(widths) or any(i < 1 for i in self.iterations):
            raise ValueError(
                f"iterations must be one count >= 1 per kernel width, got {self.iterations}"
            )
        positive = {
            "deformation_sd_mm": min(self.deformation_sd_mm),
            "noise_mm": self.noise_mm,
            "tolerance_mm": self.tolerance_mm,
            "gate_mm": self.gate_mm,
            "robust_scale_mm": self.robust_scale_mm,
            "cluster_spacing_mm": self.cluster_spacing_mm,
            "control_spacing": self.control_spacing,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ValueError(
                f"min_inlier_fraction must be in [0, 1], got {self.min_inlier_fraction}"
            )


@dataclass(frozen=True, eq=False)
class DisplacementField:
    """The fitted displacement ``u(p)`` (mm, patient orientation) at model points ``p``.

    ``u(p) = sum_m sum_j kernel_weights[j] exp(-|p - centres_mm[m]|^2 / (2 widths_mm[j]^2))
    coefficients_mm[m]``. ``centres_mm`` (M, 3) are the control points in the model frame;
    ``coefficients_mm`` (M, 3) are in the patient frame's orientation, so ``u`` adds
    directly to ``T_patient_from_model @ p``.
    """

    centres_mm: FloatArray
    coefficients_mm: FloatArray
    widths_mm: FloatArray
    kernel_weights: FloatArray

    def displacement_mm(self, p_model: npt.ArrayLike) -> FloatArray:
        """Return ``u`` (K, 3) at model points ``p_model`` (K, 3), mm."""
        return kernel_displacement_mm(
            p_model,
            centres_mm=self.centres_mm,
            coefficients_mm=self.coefficients_mm,
            widths_mm=self.widths_mm,
            kernel_weights=self.kernel_weights,
        )


@dataclass(frozen=True, eq=False)
class DeformableResult:
    """A deformable registration: the rigid part, the field, and how well it fits.

    - ``T_patient_from_model`` (4, 4): the rigid part (the init, refined unless
      ``refine_rigid`` is off).
    - ``displacements_mm`` (V, 3): each model vertex's deformed position minus its
      rigidly mapped position, patient frame.
    - ``confidence_mm`` (V,): the estimated overlay error at each vertex, mm (larger is
      less trustworthy); see :func:`nav.registration.confidence.deformable_confidence_mm`.
    - ``residuals_mm`` (N,): each data point's distance to the deformed surface, outliers
      included (so a high percentile shows them).
    - ``rms_residual_mm``: RMS of the residuals within ``gate_mm`` (the inliers).
    - ``iterations``: iterations run, all levels; ``converged``: the last level ended on
      ``tolerance_mm`` rather than on its iteration limit.
    - ``time_s``: wall time of the call; ``field``: the displacement field itself.

    :meth:`confidence_at_mm` is ``confidence_mm``'s estimate at any model point (the
    targets inside the organ, say): the same posterior, widened alike.
    """

    T_patient_from_model: Mat4
    displacements_mm: FloatArray
    confidence_mm: FloatArray
    residuals_mm: FloatArray
    rms_residual_mm: float
    iterations: int
    converged: bool
    time_s: float
    field: DisplacementField
    posterior: _Posterior | None = dataclasses.field(default=None, repr=False)

    def confidence_at_mm(self, p_model: npt.ArrayLike) -> FloatArray:
        """Return the estimated overlay error (K,) in mm at model points ``p_model`` (K, 3).

        At the vertices it equals ``confidence_mm`` (to rounding). The posterior RMS (3D)
        position error of a model point under the fit's own model (see
        ``_Posterior``), widened as ``confidence_mm`` is
        (:func:`nav.registration.confidence.deformable_confidence_mm`). RuntimeError for a
        result made without its posterior (constructed by hand).
        """
        if self.posterior is None:
            raise RuntimeError("this result carries no posterior to evaluate")
        p = np.asarray(p_model, dtype=np.float64).reshape(-1, 3)
        return self.posterior.confidence_mm(p)

    def warp(self, p_model: npt.ArrayLike) -> FloatArray:
        """Return model points ``p_model`` (K, 3) mapped into the patient frame (K, 3), mm.

        Rigid part and deformation: ``T_patient_from_model @ p + u(p)``. Use it for targets
        and internal structures; at the vertices it equals the rigid map plus
        ``displacements_mm`` (to rounding).
        """
        p = np.asarray(p_model, dtype=np.float64).reshape(-1, 3)
        warped: FloatArray = apply(self.T_patient_from_model, p) + self.field.displacement_mm(p)
        return warped


def register_deformable(
    model_vertices: npt.ArrayLike,
    model_triangles: npt.ArrayLike,
    points_patient: npt.ArrayLike,
    T_patient_from_model_init: Mat4,
    *,
    config: DeformableConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DeformableResult:
    """Deform the rigidly aligned model onto ``points_patient``; see the module docstring.

    ``model_vertices`` (V, 3), model frame, mm, and ``model_triangles`` (F, 3) vertex
    indices: a triangle mesh of the organ surface (closed or not, any orientation).
    ``points_patient`` (N, 3): intraoperative surface points, patient frame, mm: a partial,
    noisy cloud or pointer traces. ``T_patient_from_model_init`` (4, 4): a rigid
    registration good to roughly 10 mm / 10 degrees (fiducials, or surface ICP).
    ``progress(iteration, most_iterations)`` is called after each iteration.

    Raises RegistrationError with ``kind``: ``mismatched`` (an array of the wrong shape, or
    an init that is not a rigid transform), ``non_finite`` (NaN or inf in the inputs),
    ``out_of_range`` (a coordinate or the init's translation beyond ``MAX_COORDINATE_MM``),
    ``bad_mesh`` (no triangles, an index out of range, or zero area), ``too_few_points``
    (fewer than :data:`MIN_POINTS` data points), ``insufficient_overlap`` (fewer than
    ``min_inlier_fraction`` of the points, or fewer than :data:`MIN_POINTS`, end within
    ``gate_mm`` of the surface). Raises ValueError for a torch ``device`` that does not
    exist here.
    """
    t_start = time.perf_counter()
    cfg = config if config is not None else DeformableConfig()
    vertices, triangles, points, T_init = _checked_inputs(
        model_vertices, model_triangles, points_patient, T_patient_from_model_init
    )
    try:
        device = torch.device(cfg.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"torch device {cfg.device!r} is not available: {error}") from None
    solver = _Solver(vertices, triangles, points, T_init, cfg, device)
    state = solver.run(progress)
    return solver.result(state, time.perf_counter() - t_start)


# -- implementation ---------------------------------------------------------------------


@dataclass
class _State:
    """The solver's state: rigid increment (centred frame), field, bookkeeping."""

    R: FloatArray  # (3, 3) rigid increment on top of the init, centred frame
    t: FloatArray  # (3,)
    U: torch.Tensor  # (V, 3) field at the vertices, pre-rigid orientation
    U_np: FloatArray  # the same on the CPU
    alpha: torch.Tensor  # (M, 3) GP coefficients of the current level
    C: torch.Tensor  # (M, 3) control points, centred init frame
    comps: list[tuple[float, float]]  # (width mm, variance mm^2) of the current kernel
    H: torch.Tensor | None  # last normal matrix (posterior precision / noise^2)
    iterations: int
    converged: bool


@dataclass(frozen=True, eq=False)
class _Posterior:
    """The fit's Gaussian posterior over (rigid increment, coefficients), kept to evaluate.

    A point's posterior RMS (3D) position error, mm: the joint posterior covariance of
    (rigid increment, coefficients) is ``noise^2 H^-1`` (``H_inv`` here, scaled), H the
    last normal matrix; a point moves by ``J_p = [-[x]_x, I, k_p^T (x) I]`` of them, plus
    the prior variance that the control points cannot express (the DTC correction
    ``k(x, x) - k_p^T K_cc^-1 k_p``, per axis; ``L`` is the Cholesky factor of ``K_cc``).
    ``C`` and ``H_inv`` None: no iteration ran, the prior's spread everywhere. Frames as
    the solver's: the init's patient frame, centred on ``centre``.
    """

    T_init: Mat4
    centre: FloatArray
    C: torch.Tensor | None
    comps: list[tuple[float, float]]
    alpha: torch.Tensor | None
    R: FloatArray
    t: FloatArray
    H_inv: torch.Tensor | None
    L: torch.Tensor | None
    refine_rigid: bool
    prior_sd_mm: float
    widen: float
    device: torch.device
    dtype: torch.dtype

    def sd_centred_mm(self, X: torch.Tensor) -> FloatArray:
        """Posterior RMS (3D) error (K,) mm of points ``X`` (K, 3), centred init frame."""
        if self.C is None or self.H_inv is None or self.L is None or self.alpha is None:
            return np.full(len(X), self.prior_sd_mm)
        dev, dtype = self.device, self.dtype
        K_pc = _kernel(X, self.C, self.comps)
        prior = sum(v for _, v in self.comps)
        explained = torch.cholesky_solve(K_pc.T, self.L).T.mul(K_pc).sum(1)  # k^T K^-1 k
        dtc = (prior - explained).clamp(min=0.0) * 3.0
        U = (K_pc @ self.alpha).cpu().numpy()
        D = torch.as_tensor((X.cpu().numpy() + U) @ self.R.T + self.t, device=dev, dtype=dtype)
        R = torch.as_tensor(self.R, device=dev, dtype=dtype)
        K, M = len(X), len(self.C)
        var = torch.zeros(K, device=dev, dtype=dtype)
        for axis in range(3):
            e = torch.zeros(3, device=dev, dtype=dtype)
            e[axis] = 1.0
            # d(position . e)/d(unknowns): rotation e.(w x p) = w.(p x e), translation e,
            # coefficients R e . (k a).
            parts = []
            if self.refine_rigid:
                parts.append(torch.cross(D, e.expand_as(D), dim=1))
                parts.append(e.expand(K, 3))
            parts.append((K_pc[:, :, None] * (e @ R)[None, None, :]).reshape(K, 3 * M))
            J = torch.cat(parts, 1)
            var += ((J @ self.H_inv) * J).sum(1)
        sd: FloatArray = torch.sqrt(var.clamp(min=0.0) + dtc).cpu().numpy()
        return sd

    def confidence_mm(self, p_model: FloatArray) -> FloatArray:
        """The widened estimate (K,) mm at model points ``p_model`` (K, 3)."""
        X = apply(self.T_init, p_model) - self.centre
        sd = self.sd_centred_mm(torch.as_tensor(X, device=self.device, dtype=self.dtype))
        out: FloatArray = sd * self.widen
        return out


def _kernel(a: torch.Tensor, b: torch.Tensor, comps: list[tuple[float, float]]) -> torch.Tensor:
    """The GP kernel matrix (len a, len b): a sum of Gaussians (width mm, variance mm^2)."""
    d2 = torch.cdist(a, b).square()
    k = torch.zeros_like(d2)
    for width, variance in comps:
        k += variance * torch.exp(-d2 / (2.0 * width * width))
    return k


class _Solver:
    """One registration: set-up from the inputs, the iterations, and the result."""

    def __init__(
        self,
        vertices: FloatArray,
        triangles: IntArray,
        points: FloatArray,
        T_init: Mat4,
        cfg: DeformableConfig,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.dev = device
        self.dtype = torch.float64
        self.vertices = vertices
        self.triangles = triangles
        self.T_init = T_init
        self._tri32 = o3d.core.Tensor.from_numpy(np.ascontiguousarray(triangles, dtype=np.uint32))
        # Work in the init's patient frame, centred, so that float32 neighbour search keeps
        # um precision and the rotation increments act about the organ's middle.
        X = apply(T_init, vertices)
        self.centre = X.mean(axis=0)
        self.X0 = X - self.centre
        self.Y = points - self.centre
        corner = self.X0[triangles]
        area = 0.5 * np.linalg.norm(
            np.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0]), axis=1
        )
        if not area.sum() > 0.0:
            raise RegistrationError("bad_mesh", "the model mesh has zero surface area")
        self.area_mm2 = float(area.sum())
        middle = corner.mean(axis=1)
        mean = area @ middle / self.area_mm2
        self.radius_mm = math.sqrt(
            float(area @ np.sum((middle - mean) ** 2, axis=1)) / self.area_mm2
        )
        widths = (
            cfg.kernel_widths_mm
            if cfg.kernel_widths_mm is not None
            else tuple(w * self.radius_mm for w in cfg.kernel_widths)
        )
        self.widths_mm = [float(w) for w in widths]
        self.variances = [float(sd) ** 2 for sd in cfg.deformation_sd_mm]
        self.label, self.n_cells = _cells(self.Y, cfg.cluster_spacing_mm)
        self.cell_count = np.bincount(self.label, minlength=self.n_cells).astype(np.float64)
        unweighted = np.ones(len(self.Y))
        self.cell_centres, _ = _weighted_means(self.label, self.n_cells, self.Y, unweighted)
        self.Xt = torch.as_tensor(self.X0, device=device, dtype=self.dtype)
        self.eye3 = torch.eye(3, device=device, dtype=self.dtype)
        self._order: IntArray | None = None
        self._distance_to_data = np.zeros(len(self.X0))

    # -- geometry helpers

    def closest(
        self, vertices: FloatArray, q: FloatArray
    ) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
        """Closest points of ``q`` on the mesh: triangle, barycentrics, point, unit normal."""
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(_tensor32(vertices), self._tri32)
        answer = scene.compute_closest_points(_tensor32(q))
        tri = answer["primitive_ids"].numpy().astype(np.int64)
        uv = answer["primitive_uvs"].numpy().astype(np.float64)
        bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
        corner = vertices[self.triangles[tri]]
        point = np.einsum("nk,nkd->nd", bary, corner)
        normal = np.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        return tri, bary, point, normal

    def deformed(self, s: _State) -> FloatArray:
        """Deformed vertices (V, 3), centred patient frame."""
        D: FloatArray = (self.X0 + s.U_np) @ s.R.T + s.t
        return D

    def tensor(self, a: FloatArray) -> torch.Tensor:
        return torch.as_tensor(a, device=self.dev, dtype=self.dtype)

    def kernel(
        self, a: torch.Tensor, b: torch.Tensor, comps: list[tuple[float, float]]
    ) -> torch.Tensor:
        return _kernel(a, b, comps)

    def control_kernel(self, s: _State) -> torch.Tensor:
        """K(C, C) with a relative 1e-6 on the diagonal: wide Gaussians on close control
        points are nearly singular, and the jitter keeps the solves and Cholesky sound."""
        K = self.kernel(s.C, s.C, s.comps)
        jitter = 1e-6 * float(K.diagonal().mean())
        return K + jitter * torch.eye(len(s.C), device=self.dev, dtype=self.dtype)

    def control_points(self, width_mm: float) -> IntArray:
        """Vertices spread ``control_spacing * width_mm`` apart, within reach of the data.

        Prefixes of one farthest-point order are themselves well spread, so every level
        takes the first points of the same order that lie within 1.5 widths of a data cell.
        """
        if self._order is None:
            reach = 1.5 * max(self.widths_mm)
            d, _ = cKDTree(self.cell_centres).query(self.X0, distance_upper_bound=reach)
            self._distance_to_data = d
            near = np.flatnonzero(np.isfinite(d))
            if len(near) < MIN_CONTROL_POINTS:
                near = np.arange(len(self.X0))
            spacing = self.cfg.control_spacing * min(self.widths_mm)
            n = max(MIN_CONTROL_POINTS, int(self.area_mm2 * len(near) / len(self.X0) / spacing**2))
            self._order = near[_farthest_points(self.X0[near], n, self.cfg.seed)]
        in_reach = self._order[self._distance_to_data[self._order] <= 1.5 * width_mm]
        if len(in_reach) < MIN_CONTROL_POINTS:
            in_reach = self._order
        share = float(np.mean(self._distance_to_data <= 1.5 * width_mm))
        spacing = self.cfg.control_spacing * width_mm
        n = max(MIN_CONTROL_POINTS, int(self.area_mm2 * share / spacing**2))
        return in_reach[:n]

    # -- the iterations

    def run(self, progress: Callable[[int, int], None] | None) -> _State:
        cfg = self.cfg
        zeros = torch.zeros((0, 3), device=self.dev, dtype=self.dtype)
        s = _State(
            R=np.eye(3),
            t=np.zeros(3),
            U=torch.zeros_like(self.Xt),
            U_np=np.zeros_like(self.X0),
            alpha=zeros,
            C=zeros,
            comps=[],
            H=None,
            iterations=0,
            converged=False,
        )
        budget = sum(cfg.iterations)
        cell_means = self.cell_centres
        for level, n_iterations in enumerate(cfg.iterations):
            s.comps = list(
                zip(self.widths_mm[: level + 1], self.variances[: level + 1], strict=True)
            )
            s.C = self.Xt[self.control_points(self.widths_mm[level])]
            K_vc = self.kernel(self.Xt, s.C, s.comps)
            K_cc = self.control_kernel(s)
            s.converged = False
            for it in range(n_iterations):
                D = self.deformed(s)
                cell_means, moved_mm = self.step(s, D, cell_means, K_vc, K_cc, it < FULL_STEPS)
                s.iterations += 1
                if progress is not None:
                    progress(s.iterations, budget)
                if moved_mm < cfg.tolerance_mm:
                    s.converged = True
                    break
        return s

    def step(
        self,
        s: _State,
        D: FloatArray,
        cell_means: FloatArray,
        K_vc: torch.Tensor,
        K_cc: torch.Tensor,
        full_step: bool,
    ) -> tuple[FloatArray, float]:
        """One iteration: correspondences, robust cell means, joint solve; returns the move."""
        cfg = self.cfg
        dev, dtype = self.dev, self.dtype
        tri, bary, q, n = self.closest(D, cell_means)
        # Robust weights of the points against their cell's tangent plane, then the cells'
        # weighted means: one neighbour search per iteration, for the cells only.
        r = np.einsum("nd,nd->n", self.Y - q[self.label], n[self.label])
        c2 = cfg.robust_scale_mm**2
        w_pt = (c2 / (c2 + r * r)) ** 2 * (np.abs(r) < cfg.gate_mm)
        means, weight_sum = _weighted_means(self.label, self.n_cells, self.Y, w_pt)
        occupied = weight_sum > 1e-9
        cell_means = np.where(occupied[:, None], means, cell_means)
        # Each cell counts once (its mean robust weight): density-independent data term.
        w_cell = np.where(occupied, weight_sum / self.cell_count, 0.0)

        corners = self.triangles[tri]
        x_np = _interpolate(bary, self.X0, corners)  # correspondences, init frame
        u_np = _interpolate(bary, s.U_np, corners)  # the field there, pre-rigid orientation
        as_t = self.tensor
        x, u, qt, nt, w = as_t(x_np), as_t(u_np), as_t(q), as_t(n), as_t(w_cell)
        d = as_t(cell_means) - qt
        R = as_t(s.R)
        n_pre = nt @ R  # normals in the field's (pre-rigid) orientation
        M = len(s.C)
        # Unknowns: the rigid increment (rotation vector w, translation t) about the centre
        # and the level's coefficients a (M, 3), from scratch. The residual of cell i is
        #   n_i . (q_i - R u(x_i) + w x q_i + t + R K(x_i, C) a - y_i),
        # q_i its closest point, x_i the same point before the rigid part and the field.
        K_xc = self.kernel(x, s.C, s.comps)
        b = (d * nt).sum(1) + (u * n_pre).sum(1)
        # sum_i w_i (n_i n_i^T) (x) (k_i k_i^T), from six M x M products rather than one
        # (3M x 3M) product of a (N, 3M) Jacobian: a third fewer flops, no big temporary.
        H_aa = torch.empty((M, 3, M, 3), device=dev, dtype=dtype)
        for a in range(3):
            for c in range(a, 3):
                block = K_xc.T @ ((w * n_pre[:, a] * n_pre[:, c])[:, None] * K_xc)
                H_aa[:, a, :, c] = block
                H_aa[:, c, :, a] = block
        H_aa = H_aa.reshape(3 * M, 3 * M)
        H_aa += torch.kron(cfg.noise_mm**2 * K_cc, self.eye3)
        g_a = (K_xc.T @ ((w * b)[:, None] * n_pre)).reshape(-1)
        if cfg.refine_rigid:
            J_r = torch.cat([torch.cross(qt, nt, dim=1), nt], dim=1)
            # A whisper of damping keeps the rigid block solvable for degenerate data
            # (a single straight trace); it is 1e-9 of the data's own weight.
            damp = as_t(np.array([self.radius_mm**2] * 3 + [1.0] * 3))
            H_rr = J_r.T @ (w[:, None] * J_r) + torch.diag(damp) * (
                1e-9 * float(w_cell.sum()) + 1e-12
            )
            # J_r^T W J_a without forming J_a: rows (6), columns (m, d).
            H_ra = torch.einsum("ir,im,id->rmd", w[:, None] * J_r, K_xc, n_pre).reshape(6, 3 * M)
            g_r = J_r.T @ (w * b)
            H = torch.cat([torch.cat([H_rr, H_ra], 1), torch.cat([H_ra.T, H_aa], 1)], 0)
            g = torch.cat([g_r, g_a])
        else:
            H, g = H_aa, g_a
        solution = torch.linalg.solve(H, g)
        eta = 1.0 if full_step else 0.5  # a level's first steps are full: shapes match after
        if cfg.refine_rigid:
            xr = eta * solution[:6].cpu().numpy()
            new_alpha = solution[6:].reshape(M, 3)
            dR = _rotation(xr[:3])
            s.R = dR @ s.R
            s.t = dR @ s.t + xr[3:]
        else:
            new_alpha = solution.reshape(M, 3)
        s.alpha = new_alpha if eta == 1.0 else s.alpha + eta * (new_alpha - s.alpha)
        s.U = K_vc @ s.alpha
        s.U_np = s.U.cpu().numpy()
        s.H = H
        moved_mm = float(np.linalg.norm(self.deformed(s) - D, axis=1).max())
        return cell_means, moved_mm

    # -- the answer

    def posterior(self, s: _State, *, widen: float) -> _Posterior:
        """The fit's posterior, kept so that it can be evaluated at any model point."""
        dev, dtype = self.dev, self.dtype
        if s.H is None:
            return _Posterior(
                T_init=self.T_init,
                centre=self.centre,
                C=None,
                comps=[],
                alpha=None,
                R=s.R,
                t=s.t,
                H_inv=None,
                L=None,
                refine_rigid=self.cfg.refine_rigid,
                prior_sd_mm=math.sqrt(3.0 * sum(self.variances)),
                widen=widen,
                device=dev,
                dtype=dtype,
            )
        return _Posterior(
            T_init=self.T_init,
            centre=self.centre,
            C=s.C,
            comps=list(s.comps),
            alpha=s.alpha,
            R=s.R,
            t=s.t,
            H_inv=torch.linalg.inv(s.H) * self.cfg.noise_mm**2,
            L=torch.linalg.cholesky(self.control_kernel(s)),
            refine_rigid=self.cfg.refine_rigid,
            prior_sd_mm=math.sqrt(3.0 * sum(self.variances)),
            widen=widen,
            device=dev,
            dtype=dtype,
        )

    def result(self, s: _State, elapsed_s: float) -> DeformableResult:
        cfg = self.cfg
        D = self.deformed(s)
        _, _, q, _ = self.closest(D, self.Y)
        residuals = np.linalg.norm(self.Y - q, axis=1)
        inliers = residuals < cfg.gate_mm
        n_in = int(inliers.sum())
        if n_in < MIN_POINTS or n_in < cfg.min_inlier_fraction * len(self.Y):
            raise RegistrationError(
                "insufficient_overlap",
                f"only {n_in} of {len(self.Y)} points end within {cfg.gate_mm:g} mm of the "
                f"deformed model (need {cfg.min_inlier_fraction:.0%} and at least {MIN_POINTS}): "
                "the data do not lie on this model near this initial pose",
            )
        rms_mm = float(np.sqrt(np.mean(residuals[inliers] ** 2)))
        T_c = make_rigid(s.R, s.t)
        to_centre = make_rigid(np.eye(3), -self.centre)
        T = invert_rigid(to_centre) @ T_c @ to_centre @ self.T_init
        T[3] = (0.0, 0.0, 0.0, 1.0)
        displacements = s.U.cpu().numpy() @ s.R.T
        # The same widening at any point: the ratio (never below 1) of seen to assumed noise.
        widen = float(
            deformable_confidence_mm([1.0], residual_rms_mm=rms_mm, assumed_noise_mm=cfg.noise_mm)[
                0
            ]
        )
        posterior = self.posterior(s, widen=widen)
        confidence = deformable_confidence_mm(
            posterior.sd_centred_mm(self.Xt), residual_rms_mm=rms_mm, assumed_noise_mm=cfg.noise_mm
        )
        centres_model = apply(invert_rigid(self.T_init), s.C.cpu().numpy() + self.centre)
        field = DisplacementField(
            centres_mm=centres_model,
            coefficients_mm=s.alpha.cpu().numpy() @ s.R.T,
            widths_mm=np.array([w for w, _ in s.comps]),
            kernel_weights=np.array([v for _, v in s.comps]),
        )
        for a in (
            T,
            displacements,
            confidence,
            residuals,
            field.centres_mm,
            field.coefficients_mm,
            field.widths_mm,
            field.kernel_weights,
        ):
            a.setflags(write=False)  # frozen results, frozen arrays
        return DeformableResult(
            T_patient_from_model=T,
            displacements_mm=displacements,
            confidence_mm=confidence,
            residuals_mm=residuals,
            rms_residual_mm=rms_mm,
            iterations=s.iterations,
            converged=s.converged,
            time_s=elapsed_s,
            field=field,
            posterior=posterior,
        )


def _checked_inputs(
    model_vertices: npt.ArrayLike,
    model_triangles: npt.ArrayLike,
    points_patient: npt.ArrayLike,
    T_init: npt.ArrayLike,
) -> tuple[FloatArray, IntArray, FloatArray, Mat4]:
    """The inputs as float64/int64 arrays; raise RegistrationError for unusable ones."""
    v = np.asarray(model_vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise RegistrationError(
            "mismatched", f"model_vertices must have shape (V, 3), got {v.shape}"
        )
    f_raw = np.asarray(model_triangles)
    if f_raw.ndim != 2 or f_raw.shape[1] != 3:
        raise RegistrationError(
            "mismatched", f"model_triangles must have shape (F, 3), got {f_raw.shape}"
        )
    y = np.asarray(points_patient, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 3:
        raise RegistrationError(
            "mismatched", f"points_patient must have shape (N, 3), got {y.shape}"
        )
    T = np.asarray(T_init, dtype=np.float64)
    if T.shape != (4, 4):
        raise RegistrationError(
            "mismatched", f"T_patient_from_model_init must be (4, 4), got {T.shape}"
        )
    if len(v) < 3 or len(f_raw) == 0:
        raise RegistrationError(
            "bad_mesh", f"the model mesh is empty ({len(v)} vertices, {len(f_raw)} triangles)"
        )
    if not np.issubdtype(f_raw.dtype, np.integer):
        raise RegistrationError(
            "bad_mesh", f"model_triangles must be integer indices, got {f_raw.dtype}"
        )
    f = f_raw.astype(np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise RegistrationError(
            "bad_mesh", f"triangle indices must be in [0, {len(v)}), found {f.min()}..{f.max()}"
        )
    check_coordinates(v, "model_vertices")
    check_coordinates(y, "points_patient")
    if not np.all(np.isfinite(T)):
        raise RegistrationError("non_finite", "T_patient_from_model_init contains NaN or inf")
    check_coordinates(T[:3, 3], "T_patient_from_model_init's translation")
    if not is_rigid(T, tol=1e-4):
        raise RegistrationError("mismatched", "T_patient_from_model_init is not a rigid transform")
    if len(y) < MIN_POINTS:
        raise RegistrationError(
            "too_few_points", f"only {len(y)} points, need at least {MIN_POINTS}"
        )
    return v, f, y, T


def _cells(p: FloatArray, spacing_mm: float) -> tuple[IntArray, int]:
    """Label (N,) each point with its data cell, and the number of cells.

    Cells are the Voronoi cells of the means of a ``spacing_mm`` voxel grid. Averaging in
    the voxels themselves would bias the means: a voxel clips the noisy layer of points
    unevenly in the normal direction. A Voronoi boundary between neighbouring means is
    close to perpendicular to the surface and cuts the layer evenly.
    """
    ijk = np.floor((p - p.min(axis=0)) / spacing_mm).astype(np.int64)
    size = ijk.max(axis=0) + 1
    key = (ijk[:, 0] * size[1] + ijk[:, 1]) * size[2] + ijk[:, 2]  # one int per voxel
    _, voxel = np.unique(key, return_inverse=True)
    voxel = voxel.reshape(-1)
    centres, _ = _weighted_means(voxel, int(voxel.max()) + 1, p, np.ones(len(p)))
    _, nearest = cKDTree(centres).query(p)
    _, label = np.unique(nearest, return_inverse=True)
    labels: IntArray = label.reshape(-1).astype(np.int64)
    return labels, int(labels.max()) + 1


def _weighted_means(
    label: IntArray, n: int, p: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per-label weighted means (n, 3) and weight sums (n,); empty labels get mean 0."""
    total = np.bincount(label, weights=w, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(label, weights=w * p[:, k], minlength=n) for k in range(3)], 1)
    means: FloatArray = sums / np.maximum(total, 1e-300)[:, None]
    return means, total


def _farthest_points(p: FloatArray, n: int, seed: int) -> IntArray:
    """Indices of ``n`` points of ``p`` picked by farthest-point sampling (well spread)."""
    n = min(n, len(p))
    picked = np.empty(n, dtype=np.int64)
    picked[0] = int(np.random.default_rng(seed).integers(len(p)))
    d2 = np.sum((p - p[picked[0]]) ** 2, axis=1)
    for k in range(1, n):
        picked[k] = int(np.argmax(d2))
        d2 = np.minimum(d2, np.sum((p - p[picked[k]]) ** 2, axis=1))
    return picked


def _tensor32(a: FloatArray) -> o3d.core.Tensor:
    """``a`` as a contiguous float32 Open3D tensor (the raycasting scene works in float32)."""
    return o3d.core.Tensor.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _interpolate(bary: FloatArray, values: FloatArray, corners: IntArray) -> FloatArray:
    """Barycentric interpolation (N, 3) of per-vertex ``values`` (V, 3) on ``corners`` (N, 3)."""
    out: FloatArray = (
        bary[:, 0:1] * values[corners[:, 0]]
        + bary[:, 1:2] * values[corners[:, 1]]
        + bary[:, 2:3] * values[corners[:, 2]]
    )
    return out


def _rotation(w: FloatArray) -> FloatArray:
    """The rotation matrix of rotation vector ``w`` (rad), Rodrigues' formula."""
    angle = float(np.linalg.norm(w))
    if angle == 0.0:
        return np.eye(3)
    k = w / angle
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    R: FloatArray = np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * K @ K
    return R

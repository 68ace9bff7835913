"""Per-vertex confidence: the estimated overlay error at each vertex of the model, in mm.

The headset colours the registered model by this field so that the surgeon sees where the
overlay can be trusted and where it cannot. It is an *estimate* of the error magnitude
(larger = less trustworthy), one value per vertex, in millimetres.

Rigid (fiducials). :func:`rigid_confidence_mm` is the expected RMS target registration
error of Fitzpatrick, West & Maurer (IEEE TMI 17(5):694-702, 1998, eq. 46) at every
vertex, computed by :func:`nav.registration.paired_point.tre_field_mm` from the fiducial
configuration and the fiducial localisation error; it is smallest at the fiducials'
centroid and grows away from it, fastest along the direction in which the fiducials are
least spread. It assumes a rigid organ: it says nothing about deformation.

Deformable. :func:`deformable_confidence_mm` is the posterior standard deviation of each
vertex position under the deformable method's own model: a Gaussian-process prior on
the displacement and the rigid part, fitted jointly to the data cells
(``nav.registration.deformable``). It is about the data's noise where data constrain the
surface and grows with distance from the data towards the prior's spread (about 7.7 mm
RMS in 3D with the default 4 and 2 mm per-axis prior), so it ranks vertices by how far
they are from what was seen and by how weakly the data there fix the surface (a
rotation about a symmetry axis, for instance, shows up as large values). The posterior
is computed with the noise the method assumed; when the data scatter more about the
fitted surface than that, it is widened by the ratio (never narrowed).

What it does not capture, honestly: the posterior is that of the method's *assumed*
prior and of a linearised fit, so it is calibrated only as far as real deformations
resemble that prior. On the benchmark's synthetic livers (``bench/registration.py``, 16
cases) it ranks the true vertex errors with a Spearman correlation of 0.77 +- 0.16
(0.37-0.96); on average it is conservative, 0.79 mm where the true error is 0.49 mm on
the seen vertices and 2.23 against 1.57 mm on the unseen ones, but per case the ratio
ranges from 0.8 to 3 (a deformation larger than the prior expects is underestimated). It
ignores errors of the preop model itself (segmentation), tracking error of the patient
reference, motion since the data were taken, and a deformation the prior finds
implausible. Read it as a ranking with a rough scale, not a bound.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from nav.registration.paired_point import PairedPointResult, tre_field_mm

FloatArray: TypeAlias = npt.NDArray[np.float64]


def rigid_confidence_mm(
    vertices_model: npt.ArrayLike, paired_point_result: PairedPointResult
) -> FloatArray:
    """Return the predicted RMS TRE (V,) in mm at each vertex of a fiducial registration.

    ``vertices_model`` (V, 3): the mesh vertices in the model frame, mm. This is eq. 46 of
    Fitzpatrick, West & Maurer 1998 with the result's fiducials and FLE
    (:func:`nav.registration.paired_point.tre_field_mm`; see there for the assumptions);
    it is rigid-only and blind to deformation. Raises as ``tre_field_mm`` does.
    """
    return tre_field_mm(vertices_model, paired_point_result)


def deformable_confidence_mm(
    posterior_sd_mm: npt.ArrayLike, *, residual_rms_mm: float, assumed_noise_mm: float
) -> FloatArray:
    """Return the deformable estimate (V,) in mm: the posterior sd, widened if the data are noisier.

    ``posterior_sd_mm`` (V,): the deformable model's posterior RMS (3D) position error of
    each vertex, mm, computed with the noise it assumed, ``assumed_noise_mm``. If the
    inlier data scatter more than that about the fitted surface (``residual_rms_mm``),
    the posterior is too narrow by about their ratio, and is widened by it; it is never
    narrowed. See the module docstring for what the estimate does and does not include.
    Raises ValueError for a negative or non-finite input, or a zero ``assumed_noise_mm``.
    """
    sd = np.asarray(posterior_sd_mm, dtype=np.float64)
    if sd.ndim != 1 or not np.all(np.isfinite(sd)) or np.any(sd < 0.0):
        raise ValueError("posterior_sd_mm must be a finite, non-negative (V,) array")
    if not (np.isfinite(residual_rms_mm) and residual_rms_mm >= 0.0):
        raise ValueError(f"residual_rms_mm must be finite and >= 0, got {residual_rms_mm}")
    if not (np.isfinite(assumed_noise_mm) and assumed_noise_mm > 0.0):
        raise ValueError(f"assumed_noise_mm must be finite and > 0, got {assumed_noise_mm}")
    confidence: FloatArray = sd * max(1.0, residual_rms_mm / assumed_noise_mm)
    return confidence


def combined_confidence_mm(*fields_mm: npt.ArrayLike) -> FloatArray:
    """Return the root-sum-square (V,) of independent per-vertex error fields, mm.

    For example a deformable estimate and the tracking error of the patient reference.
    Raises ValueError for no fields, or fields of different shapes.
    """
    if not fields_mm:
        raise ValueError("need at least one field")
    arrays = [np.asarray(f, dtype=np.float64) for f in fields_mm]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"fields differ in shape: {[a.shape for a in arrays]}")
    total: FloatArray = np.sqrt(sum(a**2 for a in arrays))
    return total

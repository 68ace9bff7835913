"""Per-vertex confidence: the estimated overlay error at each vertex of the model, in mm.

The headset colours the registered model by this field so that the surgeon sees where the
overlay can be trusted and where it cannot. It is an *estimate* of the error magnitude
(larger = less trustworthy), one value per vertex, in millimetres.

Rigid (fiducials). :func:`rigid_confidence_mm` is the expected RMS target registration
error of Fitzpatrick, West & Maurer (IEEE TMI 17(5):694-702, 1998, eq. 46) at every
vertex (:func:`nav.registration.paired_point.predicted_tre_mm`), from the facts a
registration carries on the wire: the labels of the fiducials it used (any subset) and
the fiducial localisation error its predicted TRE was computed with. So the colours and
the TRE figure shown next to them are one computation, never an FLE re-derived from the
FRE. It is smallest at the fiducials' centroid and grows away from it, fastest along the
direction in which the fiducials are least spread. It assumes a rigid organ: it says
nothing about deformation. (With a ``PairedPointResult`` in hand,
:func:`nav.registration.paired_point.tre_field_mm` is the same field.)

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

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.case import Markups
from nav.registration.paired_point import predicted_tre_mm


def rigid_confidence_mm(
    vertices_image: npt.ArrayLike,
    *,
    fiducial_labels: Sequence[str],
    fle_mm: float,
    case_fiducials: Markups,
) -> FloatArray:
    """Return the predicted RMS TRE (V,) in mm at each vertex of a fiducial registration.

    ``vertices_image`` (V, 3): the mesh vertices in the ``image`` frame, mm.
    ``fiducial_labels`` (N,): the case fiducials the registration used, and ``fle_mm`` the
    FLE its predicted TRE was computed with (both in ``RegistrationResult``); their
    positions come from ``case_fiducials``. Eq. 46 of Fitzpatrick, West & Maurer 1998
    (:func:`nav.registration.paired_point.predicted_tre_mm`; see there for the
    assumptions): rigid-only and blind to deformation.

    Raises ValueError with one line for an unknown (NaN) or negative FLE, no labels, a
    label the case lacks or holds twice, and RegistrationError (a ValueError) for fewer
    than 3 or collinear fiducials.
    """
    if math.isnan(fle_mm):
        raise ValueError("the registration carries no FLE (recorded before it was sent)")
    if not fiducial_labels:
        raise ValueError("the registration names no fiducials (recorded before they were sent)")
    rows: list[int] = []
    for label in fiducial_labels:
        where = [i for i, case_label in enumerate(case_fiducials.labels) if case_label == label]
        if len(where) != 1:
            problem = "lacks" if not where else f"holds {len(where)} times"
            raise ValueError(f"the case {problem} fiducial {label!r}")
        rows.append(where[0])
    return predicted_tre_mm(vertices_image, case_fiducials.points_lps[rows], fle_mm=fle_mm)


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

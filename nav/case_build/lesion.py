"""Lesions and targets the user adds: a sphere at coordinates, or inside a structure.

``--lesion NAME=L,P,S:R`` puts a sphere of radius R mm centred at (L, P, S) mm; ``--lesion
NAME=inside:STRUCTURE:R`` centres it at the point of STRUCTURE deepest inside (largest
distance to its boundary, in mm, on the label's voxels), refusing when no sphere of that
radius fits. Each lesion is a ``tumor`` structure and its centre a target. The shared
TotalSegmentator data hold no tumour: a lesion placed there is a demonstration, and the
case's provenance says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import scipy.ndimage
import trimesh

from nav.case import STRUCTURE_NAME_PATTERN

_AT: Final = re.compile(r"\A([^=]+)=([-+0-9.eE]+),([-+0-9.eE]+),([-+0-9.eE]+):([0-9.eE+]+)\Z")
_INSIDE: Final = re.compile(r"\A([^=]+)=inside:([^:]+):([0-9.eE+]+)\Z")
MAX_RADIUS_MM: Final = 100.0
SPHERE_SUBDIVISIONS: Final = 3  # 1280 triangles: round to 0.3 % of the radius at 10 mm


@dataclass(frozen=True)
class LesionSpec:
    """A lesion: a sphere ``radius_mm`` at ``centre_lps``, or inside structure ``inside``."""

    name: str
    radius_mm: float
    centre_lps: tuple[float, float, float] | None = None
    inside: str | None = None

    @classmethod
    def parse(cls, text: str) -> LesionSpec:
        """From ``NAME=L,P,S:R`` or ``NAME=inside:STRUCTURE:R``; ValueError, one line."""
        at, inside = _AT.match(text.strip()), _INSIDE.match(text.strip())
        if at:
            name, radius = at.group(1), float(at.group(5))
            centre = (float(at.group(2)), float(at.group(3)), float(at.group(4)))
            spec = cls(name=name, radius_mm=radius, centre_lps=centre)
        elif inside:
            spec = cls(
                name=inside.group(1), radius_mm=float(inside.group(3)), inside=inside.group(2)
            )
        else:
            raise ValueError(
                f"lesion {text!r}: expected NAME=L,P,S:RADIUS_MM or NAME=inside:STRUCTURE:RADIUS_MM"
            )
        if not STRUCTURE_NAME_PATTERN.match(spec.name):
            raise ValueError(f"lesion {text!r}: name must match {STRUCTURE_NAME_PATTERN.pattern}")
        if not 0 < spec.radius_mm <= MAX_RADIUS_MM or not np.isfinite(spec.radius_mm):
            raise ValueError(f"lesion {text!r}: radius must be in (0, {MAX_RADIUS_MM:g}] mm")
        if spec.centre_lps is not None and not np.all(np.isfinite(spec.centre_lps)):
            raise ValueError(f"lesion {text!r}: centre must be finite")
        return spec


def deepest_point(
    mask: npt.NDArray[np.bool_], T_image_from_ijk: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], float]:
    """The voxel of ``mask`` farthest from its boundary: centre in LPS mm and that distance
    (mm, Euclidean on the anisotropic grid; the scan's ends count as boundary)."""
    spacing = np.linalg.norm(T_image_from_ijk[:3, :3], axis=0)
    distance = scipy.ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[
        1:-1, 1:-1, 1:-1
    ]
    ijk = np.array(np.unravel_index(int(np.argmax(distance)), mask.shape), dtype=np.float64)
    centre = T_image_from_ijk[:3, :3] @ ijk + T_image_from_ijk[:3, 3]
    # distance to the nearest outside voxel centre; the boundary is half a voxel nearer
    return centre, float(distance.max() - spacing.max() / 2)


def sphere_mesh(centre_lps: npt.ArrayLike, radius_mm: float) -> trimesh.Trimesh:
    """A closed icosphere, outward normals, LPS mm."""
    sphere = trimesh.creation.icosphere(subdivisions=SPHERE_SUBDIVISIONS, radius=radius_mm)
    sphere.apply_translation(np.asarray(centre_lps, dtype=np.float64))
    return sphere

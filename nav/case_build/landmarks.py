"""Fiducials for a built case when the user gives none: landmarks on a structure's surface.

A real case takes its fiducials from the CT (``--fiducials F.mrk.json``: skin markers or
anatomical landmarks picked in 3D Slicer). Without one, ``n`` points are spread over the
anterior half of the first organ's surface (the side a surgeon reaches) by farthest-point
sampling, starting at its most anterior vertex: well spread points give a low TRE
(Fitzpatrick, West and Maurer, IEEE TMI 1998).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import trimesh


def surface_landmarks(
    mesh: trimesh.Trimesh, n: int, *, usable: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float64]:
    """``n`` vertices (n, 3) of ``mesh`` on its anterior half (P below the centroid's),
    spread by farthest-point sampling; deterministic. ``usable`` (one per vertex) leaves
    out vertices that are not anatomy: where the scan cut the organ flat."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if usable is not None and usable.sum() >= n:
        vertices = vertices[usable]
    anterior = vertices[vertices[:, 1] <= vertices[:, 1].mean()]
    if len(anterior) < n:
        anterior = vertices
    chosen = [int(np.argmin(anterior[:, 1]))]
    distance = np.linalg.norm(anterior - anterior[chosen[0]], axis=1)
    while len(chosen) < n:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(anterior - anterior[chosen[-1]], axis=1))
    return anterior[chosen]

"""A voxel volume in the ``image`` frame (LPS, mm) and the one error the readers raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

MAX_VOXELS: Final = 512 * 512 * 1024
"""Largest volume read (2.7e8 voxels, 0.5 GB as int16): a bigger one is refused before its
voxels are read. A diagnostic CT is 512 x 512 x a few hundred."""


class ImagingError(ValueError):
    """An image that cannot be used: ``<path>: <problem>``, one line."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(problem.split())
        super().__init__(f"{self.path}: {self.problem}")


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxels ``array[i, j, k]`` and where they are: ``T_image_from_ijk`` (4x4, LPS mm).

    ``kind`` is ``"ct"`` (values in Hounsfield units, rescale applied), ``"image"`` (any
    other intensity image) or ``"labels"`` (integer label numbers). ``names`` maps label
    numbers to names where the file carries them (a ``.seg.nrrd``).
    """

    array: npt.NDArray[np.generic]
    T_image_from_ijk: npt.NDArray[np.float64]
    kind: str
    source: str
    names: dict[int, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a volume is 3D, got shape {self.array.shape}")
        T = np.asarray(self.T_image_from_ijk, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("T_image_from_ijk must be a finite 4x4 matrix")
        if abs(np.linalg.det(T[:3, :3])) < 1e-9:
            raise ValueError("T_image_from_ijk is singular")
        object.__setattr__(self, "T_image_from_ijk", T)

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.array.shape
        return i, j, k

    @property
    def spacing_mm(self) -> npt.NDArray[np.float64]:
        """Distance between neighbouring voxel centres along i, j, k (mm)."""
        return np.asarray(np.linalg.norm(self.T_image_from_ijk[:3, :3], axis=0), dtype=np.float64)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.T_image_from_ijk[:3, :3])))

    def ijk_to_lps(self, ijk: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Voxel indices (N, 3), fractional allowed, to LPS mm (N, 3)."""
        p = np.asarray(ijk, dtype=np.float64).reshape(-1, 3)
        T = self.T_image_from_ijk
        return np.asarray(p @ T[:3, :3].T + T[:3, 3], dtype=np.float64)

    def lps_to_ijk(self, p_lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """LPS mm (N, 3) to fractional voxel indices (N, 3)."""
        p = np.asarray(p_lps, dtype=np.float64).reshape(-1, 3)
        T = np.linalg.inv(self.T_image_from_ijk)
        return np.asarray(p @ T[:3, :3].T + T[:3, 3], dtype=np.float64)

    def corners_lps(self) -> npt.NDArray[np.float64]:
        """The 8 corner voxel centres in LPS mm, (8, 3)."""
        n = np.array(self.shape) - 1
        corners = np.array([[a, b, c] for a in (0, n[0]) for b in (0, n[1]) for c in (0, n[2])])
        return self.ijk_to_lps(corners)


def check_voxel_count(path: str | Path, shape: tuple[int, ...]) -> None:
    """Refuse a volume of more than ``MAX_VOXELS`` before reading its voxels."""
    count = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if count > MAX_VOXELS:
        raise ImagingError(
            path,
            f"volume of {'x'.join(map(str, shape))} = {count:.3g} voxels is over the limit "
            f"of {MAX_VOXELS:.3g}: crop or downsample it first",
        )

"""Image geometry: LPS/RAS, orientation, and putting a segmentation on an image's grid.

``T_image_from_ijk`` maps voxel indices to LPS mm; its columns are the i, j and k axes
scaled by the spacing, its last column the centre of voxel (0, 0, 0). NIfTI stores RAS
(``T_lps_from_ras`` = diag(-1, -1, 1) converts); DICOM and most NRRD files store LPS.

A segmentation made on the same grid as its CT may still be stored with its axes in
another order or direction (TotalSegmentator writes the DICOM CT's rows bottom-up): that
is the same grid, and :func:`align_labels` reindexes it exactly. A segmentation on
another grid is resampled (nearest neighbour) only when asked, otherwise refused: it is
never used as if it were on the CT's grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import scipy.ndimage

from nav.imaging.volume import ImagingError, Volume

T_lps_from_ras: Final = np.diag([-1.0, -1.0, 1.0, 1.0])
"""RAS <-> LPS: x and y negated (its own inverse)."""

GRID_TOLERANCE_VOXELS: Final = 1e-3
"""Two grids are the same when every voxel centre agrees within this fraction of a voxel."""


def affine_from(
    *, origin_lps: Sequence[float], directions: npt.ArrayLike, spacing_mm: Sequence[float]
) -> npt.NDArray[np.float64]:
    """``T_image_from_ijk`` from the origin, unit direction columns (3x3) and spacing (mm)."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(directions, dtype=np.float64) * np.asarray(spacing_mm, dtype=np.float64)
    T[:3, 3] = origin_lps
    return T


def reorient(volume: Volume, *, axes: Sequence[int], flips: Sequence[bool]) -> Volume:
    """The same image with its array axes permuted (new axis d = old axis ``axes[d]``) and
    then flipped where ``flips[d]``; ``T_image_from_ijk`` changes so every voxel keeps its
    LPS position."""
    if sorted(axes) != [0, 1, 2] or len(flips) != 3:
        raise ValueError(f"axes must be a permutation of 0, 1, 2 and flips 3 booleans: {axes}")
    array = np.transpose(volume.array, axes)
    # T_old_ijk_from_new_ijk: old index along axes[d] = new index d (or n-1 - it if flipped)
    M = np.zeros((4, 4))
    M[3, 3] = 1.0
    for d, a in enumerate(axes):
        if flips[d]:
            M[a, d] = -1.0
            M[a, 3] = array.shape[d] - 1
        else:
            M[a, d] = 1.0
    for d in range(3):
        if flips[d]:
            array = np.flip(array, axis=d)
    return Volume(
        array=np.ascontiguousarray(array),
        T_image_from_ijk=volume.T_image_from_ijk @ M,
        kind=volume.kind,
        source=volume.source,
        names=dict(volume.names),
        warnings=volume.warnings,
    )


def _signed_permutation(M: npt.NDArray[np.float64]) -> tuple[list[int], list[int]] | None:
    """For ``T_src_ijk_from_dst_ijk``: (src axis, sign) of each dst axis when the linear part
    is a signed permutation and the offset whole voxels, else None."""
    A, t = M[:3, :3], M[:3, 3]
    rounded = np.round(A)
    if np.max(np.abs(A - rounded)) > GRID_TOLERANCE_VOXELS:
        return None
    if not np.array_equal(np.abs(rounded).sum(axis=0), np.ones(3)):
        return None
    if not np.array_equal(np.abs(rounded).sum(axis=1), np.ones(3)):
        return None
    if np.max(np.abs(t - np.round(t))) > GRID_TOLERANCE_VOXELS:
        return None
    axes = [int(np.flatnonzero(rounded[:, d])[0]) for d in range(3)]
    signs = [int(rounded[axes[d], d]) for d in range(3)]
    return axes, signs


def same_grid_take(
    source: npt.NDArray[np.generic], M: npt.NDArray[np.float64], shape: tuple[int, int, int]
) -> npt.NDArray[np.generic] | None:
    """``source`` read on the destination grid when ``M`` (T_src_ijk_from_dst_ijk) is a
    whole-voxel signed permutation: exact, zero outside ``source``; None otherwise."""
    found = _signed_permutation(M)
    if found is None:
        return None
    axes, signs = found
    t = np.round(M[:3, 3]).astype(np.int64)
    index = []
    valid = []
    for d in range(3):
        a = axes[d]
        idx = signs[d] * np.arange(shape[d]) + t[a]
        ok = (idx >= 0) & (idx < source.shape[a])
        index.append(np.clip(idx, 0, source.shape[a] - 1))
        valid.append(ok)
    moved = np.transpose(source, axes)
    out = moved[np.ix_(*index)].copy()
    mask = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    out[~mask] = 0
    return out


def overlap_fraction(a: Volume, b: Volume) -> float:
    """Fraction of ``a``'s bounding box (LPS, axis-aligned) that lies inside ``b``'s."""
    lo_a, hi_a = a.corners_lps().min(axis=0), a.corners_lps().max(axis=0)
    lo_b, hi_b = b.corners_lps().min(axis=0), b.corners_lps().max(axis=0)
    pad_a, pad_b = a.spacing_mm.max() / 2, b.spacing_mm.max() / 2
    lo_a, hi_a, lo_b, hi_b = lo_a - pad_a, hi_a + pad_a, lo_b - pad_b, hi_b + pad_b
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None)
    return float(np.prod(inter) / np.prod(hi_a - lo_a))


def align_labels(labels: Volume, image: Volume, *, resample: bool = False) -> tuple[Volume, str]:
    """``labels`` on ``image``'s grid, and how it got there (one line for the log).

    The same grid with axes reordered or flipped (or whole-voxel shifted) is reindexed
    exactly. Another grid is resampled by nearest neighbour when ``resample``, else
    refused. Labels that do not overlap the image are always refused (another patient, or
    a wrong orientation). Raises ImagingError.
    """
    overlap = overlap_fraction(labels, image)
    if overlap < 0.5:
        raise ImagingError(
            labels.source,
            f"the segmentation lies {100 * (1 - overlap):.0f} % outside the image "
            "(bounding boxes in LPS): not a segmentation of this image",
        )
    M = np.linalg.inv(labels.T_image_from_ijk) @ image.T_image_from_ijk
    taken = same_grid_take(labels.array, M, image.shape)
    if taken is not None:
        how = (
            "on the image's grid"
            if np.allclose(M, np.eye(4), atol=GRID_TOLERANCE_VOXELS) and labels.shape == image.shape
            else "on the image's grid with its axes reordered, flipped or shifted: reindexed"
        )
        return _relabelled(labels, taken, image), how
    if not resample:
        spacing = ", ".join(f"{s:.3g}" for s in labels.spacing_mm)
        image_spacing = ", ".join(f"{s:.3g}" for s in image.spacing_mm)
        raise ImagingError(
            labels.source,
            f"the segmentation is on another grid than the image (spacing {spacing} mm vs "
            f"{image_spacing} mm, or rotated or shifted by part of a voxel): "
            "resample it onto the image (--resample-labels) or export it on the image's grid",
        )
    out = scipy.ndimage.affine_transform(
        labels.array,
        M[:3, :3],
        offset=M[:3, 3],
        output_shape=image.shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return _relabelled(labels, out, image), "on another grid: resampled (nearest neighbour)"


def _relabelled(labels: Volume, array: npt.NDArray[np.generic], image: Volume) -> Volume:
    return Volume(
        array=array,
        T_image_from_ijk=image.T_image_from_ijk.copy(),
        kind=labels.kind,
        source=labels.source,
        names=dict(labels.names),
        warnings=labels.warnings,
    )


def all_orientations() -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """Every axis permutation with every combination of flips: 48 (axes, flips) pairs."""
    return [
        (axes, flips)
        for axes in itertools.permutations(range(3))
        for flips in itertools.product((False, True), repeat=3)
    ]

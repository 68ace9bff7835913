"""NIfTI-1/2 (``.nii``, ``.nii.gz``) to a :class:`Volume` in LPS mm, with nibabel.

The sform is used when its code is set, else the qform (nibabel's ``get_best_affine``
order); a file with neither is refused, since its voxels have no place in the patient.
NIfTI world coordinates are RAS: ``T_image_from_ijk = T_lps_from_ras @ affine``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from nav.imaging.geometry import T_lps_from_ras
from nav.imaging.volume import ImagingError, Volume, check_voxel_count


def nifti_affine_lps(path: str | Path, header: Any) -> npt.NDArray[np.float64]:
    """``T_image_from_ijk`` (LPS) from a NIfTI header: sform if coded, else qform."""
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform is not None and int(sform_code) > 0:
        affine = sform
    elif qform is not None and int(qform_code) > 0:
        affine = qform
    else:
        raise ImagingError(path, "neither sform nor qform is set: no orientation in the patient")
    return np.asarray(T_lps_from_ras @ np.asarray(affine, dtype=np.float64), dtype=np.float64)


def read_nifti(path: str | Path, *, labels: bool = False) -> Volume:
    """Read a 3D NIfTI image (or label map when ``labels``). Raises ImagingError."""
    path = Path(path)
    if not path.is_file():
        raise ImagingError(path, "no such NIfTI file")
    try:
        image: Any = nib.load(path)
    except Exception as error:  # nibabel raises many kinds for a bad file
        raise ImagingError(path, f"not a NIfTI file: {type(error).__name__}: {error}") from None
    shape = tuple(int(s) for s in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ImagingError(path, f"a 3D volume is needed, got shape {image.shape}")
    check_voxel_count(path, shape)
    T = nifti_affine_lps(path, image.header)
    try:
        data = np.asarray(image.dataobj).reshape(shape)
    except Exception as error:
        raise ImagingError(path, f"cannot read voxels: {type(error).__name__}: {error}") from None
    return volume_from_array(path, data, T, labels=labels)


def volume_from_array(
    path: str | Path, data: npt.NDArray[Any], T: npt.NDArray[np.float64], *, labels: bool
) -> Volume:
    """A Volume from voxels as read; label maps must hold whole non-negative numbers."""
    if labels:
        if not np.issubdtype(data.dtype, np.integer):
            if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
                raise ImagingError(path, "a label map must hold whole numbers")
        if data.size and data.min() < 0:
            raise ImagingError(path, f"negative label {data.min()} in a label map")
        data = data.astype(np.uint16 if data.max(initial=0) > 255 else np.uint8)
        return Volume(array=data, T_image_from_ijk=T, kind="labels", source=str(path))
    if not np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise ImagingError(path, "voxels that are not finite (NaN or infinity)")
    return Volume(array=data, T_image_from_ijk=T, kind="image", source=str(path))

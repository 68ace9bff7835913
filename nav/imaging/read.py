"""Read an image or a label map by its path: a folder is a DICOM series, else the suffix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nav.imaging.dicom import read_dicom_series
from nav.imaging.nifti import read_nifti
from nav.imaging.nrrd import read_nrrd
from nav.imaging.volume import ImagingError, Volume


def read_volume(
    path: str | Path,
    *,
    labels: bool = False,
    require_ct: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Volume:
    """A folder (DICOM series), ``.nii``/``.nii.gz`` or ``.nrrd``/``.nhdr``/``.seg.nrrd``.

    ``labels``: read a label map (whole numbers). ``require_ct``: refuse a DICOM series
    whose modality is not CT. Raises ImagingError.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if labels:
            raise ImagingError(path, "a DICOM folder as segmentation: use NIfTI or .seg.nrrd")
        return read_dicom_series(path, require_ct=require_ct, progress=progress)
    if not path.exists():
        raise ImagingError(path, "no such file or folder")
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path, labels=labels)
    if name.endswith((".nrrd", ".nhdr")):
        return read_nrrd(path, labels=labels)
    raise ImagingError(
        path, "unknown image format: expected a DICOM folder, .nii, .nii.gz, .nrrd or .nhdr"
    )

"""NRRD (``.nrrd``, ``.nhdr``) and 3D Slicer ``.seg.nrrd`` to a :class:`Volume`, with pynrrd.

``space directions`` (one vector per axis, in ``space`` coordinates) and ``space origin``
give ``T_image_from_ijk``; the space may be LPS, RAS or LAS (converted to LPS). A file
without a space is refused: its voxels have no place in the patient. A Slicer
segmentation names its segments (``Segment<n>_Name``, ``_LabelValue``); one with several
layers (overlapping segments, a 4D array) is refused: export it as a label map.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import nrrd
import numpy as np
import numpy.typing as npt

from nav.imaging.nifti import volume_from_array
from nav.imaging.volume import ImagingError, Volume, check_voxel_count

# Sign of each axis of a space relative to LPS.
_SPACES: Final = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}
_SEGMENT_KEY: Final = re.compile(r"\ASegment(\d+)_(Name|LabelValue|Layer)\Z")


def _segment_names(header: dict[str, Any]) -> dict[int, str]:
    fields: dict[str, dict[str, str]] = {}
    for key, value in header.items():
        match = _SEGMENT_KEY.match(key)
        if match:
            fields.setdefault(match.group(1), {})[match.group(2)] = str(value)
    names = {}
    for segment in fields.values():
        if "Name" in segment and segment.get("LabelValue", "").isdigit():
            names[int(segment["LabelValue"])] = segment["Name"]
    return names


def segment_names(path: str | Path) -> dict[int, str]:
    """A Slicer ``.seg.nrrd``'s segment names by label value, from its header alone
    (empty for a plain NRRD). Raises ImagingError for an unreadable header."""
    try:
        return _segment_names(nrrd.read_header(str(path)))
    except Exception as error:  # pynrrd raises NRRDError, ValueError, OSError
        raise ImagingError(path, f"not a NRRD file: {type(error).__name__}: {error}") from None


def nrrd_affine_lps(path: str | Path, header: dict[str, Any]) -> npt.NDArray[np.float64]:
    """``T_image_from_ijk`` (LPS) of a 3D NRRD header's space directions and origin."""
    space = str(header.get("space", "")).lower()
    if space not in _SPACES:
        raise ImagingError(
            path, f"space {header.get('space')!r}: expected LPS, RAS or LAS (patient space)"
        )
    directions = header.get("space directions")
    origin = header.get("space origin")
    try:
        D = np.array(directions, dtype=np.float64).reshape(3, 3)
        o = np.array(origin, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise ImagingError(
            path, f"space directions {directions!r} / origin {origin!r} are not 3D"
        ) from None
    if not (np.all(np.isfinite(D)) and np.all(np.isfinite(o))):
        raise ImagingError(path, "space directions or origin are not finite")
    sign = np.array(_SPACES[space])
    T = np.eye(4)
    T[:3, :3] = sign[:, None] * D.T  # each direction is the column of one axis
    T[:3, 3] = sign * o
    return T


def read_nrrd(path: str | Path, *, labels: bool = False) -> Volume:
    """Read a 3D NRRD image (or label map when ``labels``). Raises ImagingError."""
    path = Path(path)
    if not path.is_file():
        raise ImagingError(path, "no such NRRD file")
    try:
        header = nrrd.read_header(str(path))
    except Exception as error:  # pynrrd raises NRRDError, ValueError, ...
        raise ImagingError(path, f"not a NRRD file: {type(error).__name__}: {error}") from None
    sizes = tuple(int(s) for s in header.get("sizes", ()))
    if len(sizes) == 4 and sizes[0] == 1:
        pass  # a one-layer Slicer segmentation: the list axis is dropped below
    elif len(sizes) == 4:
        raise ImagingError(
            path,
            f"{sizes[0]} layers (overlapping segments): export the segmentation as a label map",
        )
    elif len(sizes) != 3:
        raise ImagingError(path, f"a 3D volume is needed, got sizes {sizes}")
    check_voxel_count(path, sizes[-3:])
    directions = header.get("space directions")
    if directions is not None and len(sizes) == 4:
        header = dict(header)
        header["space directions"] = np.array(
            [d for d in directions if d is not None and np.all(np.isfinite(d))]
        )
    T = nrrd_affine_lps(path, header)
    try:
        data, _ = nrrd.read(str(path), index_order="F")
    except Exception as error:
        raise ImagingError(path, f"cannot read voxels: {type(error).__name__}: {error}") from None
    data = np.asarray(data).reshape(sizes[-3:])
    volume = volume_from_array(path, data, T, labels=labels)
    names = _segment_names(header)
    if names:
        volume = Volume(
            array=volume.array,
            T_image_from_ijk=volume.T_image_from_ijk,
            kind=volume.kind,
            source=volume.source,
            names=names,
        )
    return volume

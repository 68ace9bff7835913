"""A DICOM CT series (one folder) to a :class:`Volume` in LPS mm, with pydicom.

- Slices are sorted by their position along the slice normal (row x column cosines), not
  by InstanceNumber or file name, and the spacing is the distance between those positions:
  SliceThickness is the reconstructed slab, not the step (the shared TotalSegmentator
  series: 3 mm thick, 2 mm apart).
- Each slice's RescaleSlope/RescaleIntercept is applied: values are Hounsfield units.
- Refused, one line each: no DICOM file, a modality other than CT (when a CT is required),
  several series or orientations or matrix sizes in one folder, duplicate positions,
  missing slices (a gap that is a multiple of the step), irregular spacing, gantry tilt
  (positions not along the normal: the slices are sheared), colour images, a volume over
  ``MAX_VOXELS`` (checked from the headers, before any pixel is decoded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pydicom
import pydicom.errors

from nav.imaging.volume import ImagingError, Volume, check_voxel_count

log = logging.getLogger(__name__)

SPACING_TOLERANCE: Final = 0.01
"""Relative deviation of a slice step from the median step still counted regular."""
TILT_TOLERANCE_MM: Final = 0.01
"""Largest in-plane drift of slice origins (per slice) still counted untilted."""


@dataclass(frozen=True)
class _Header:
    path: Path
    dataset: Any  # pydicom.Dataset, read without pixels

    def key(self) -> tuple[Any, ...]:
        """What every slice of one volume shares."""
        d = self.dataset
        return (
            str(d.get("SeriesInstanceUID", "")),
            str(d.get("FrameOfReferenceUID", "")),
            tuple(round(float(v), 4) for v in d.get("ImageOrientationPatient", ())),
            tuple(round(float(v), 6) for v in d.get("PixelSpacing", ())),
            int(d.get("Rows", 0)),
            int(d.get("Columns", 0)),
        )


def _read_headers(folder: Path) -> tuple[list[_Header], int]:
    headers: list[_Header] = []
    skipped = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            skipped += 1
            continue
        if "ImagePositionPatient" not in dataset and "PixelSpacing" not in dataset:
            skipped += 1  # a DICOMDIR, a report, a presentation state: not an image slice
            continue
        headers.append(_Header(path, dataset))
    return headers, skipped


def _vector(folder: Path, header: _Header, tag: str, n: int) -> npt.NDArray[np.float64]:
    value = header.dataset.get(tag)
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        raise ImagingError(header.path, f"{tag} must be {n} numbers, got {value!r}")
    return array


def _describe_groups(groups: dict[tuple[Any, ...], list[_Header]]) -> str:
    parts = []
    for key, members in groups.items():
        uid, _, orientation, spacing, rows, cols = key
        name = members[0].dataset.get("SeriesDescription", "") or uid[-12:] or "no series UID"
        parts.append(f"{name!s} ({len(members)} slices {rows}x{cols}, orientation {orientation})")
    return "; ".join(parts)


def read_dicom_series(
    folder: str | Path,
    *,
    require_ct: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Volume:
    """Read the one series in ``folder`` (LPS mm, HU for CT). Raises ImagingError.

    ``progress(done, total)`` is called as slices are decoded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImagingError(folder, "not a folder of DICOM files")
    headers, skipped = _read_headers(folder)
    if not headers:
        raise ImagingError(folder, f"no DICOM image slices ({skipped} other files)")
    warnings: list[str] = []
    if skipped:
        warnings.append(f"{skipped} files in the folder are not DICOM image slices: ignored")

    groups: dict[tuple[Any, ...], list[_Header]] = {}
    for header in headers:
        groups.setdefault(header.key(), []).append(header)
    if len(groups) > 1:
        raise ImagingError(
            folder,
            f"{len(groups)} series or geometries in one folder: {_describe_groups(groups)}; "
            "put each series in its own folder",
        )
    first = headers[0]
    modality = str(first.dataset.get("Modality", ""))
    if require_ct and modality != "CT":
        raise ImagingError(
            first.path, f"modality {modality or 'unknown'!r}, not CT: a CT series is needed"
        )
    if int(first.dataset.get("SamplesPerPixel", 1)) != 1:
        raise ImagingError(first.path, "colour image (SamplesPerPixel > 1): not a CT slice")
    tilt_tag = first.dataset.get("GantryDetectorTilt")
    if tilt_tag is not None and abs(float(tilt_tag)) > 1e-3:
        raise ImagingError(
            folder,
            f"gantry tilt of {float(tilt_tag):g} degrees: the slices are sheared; "
            "resample the series to an untilted grid first",
        )

    orientation = _vector(folder, first, "ImageOrientationPatient", 6)
    row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (i), down a column (j)
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise ImagingError(first.path, f"ImageOrientationPatient is not orthonormal: {orientation}")
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    pixel_spacing = _vector(folder, first, "PixelSpacing", 2)  # [between rows, between columns]
    if np.any(pixel_spacing <= 0):
        raise ImagingError(first.path, f"PixelSpacing must be positive: {pixel_spacing}")
    rows, cols = int(first.dataset.Rows), int(first.dataset.Columns)
    check_voxel_count(folder, (cols, rows, len(headers)))

    positions = np.array([_vector(folder, h, "ImagePositionPatient", 3) for h in headers])
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    headers = [headers[i] for i in order]
    positions, distance = positions[order], distance[order]
    if len(headers) > 1:
        steps = np.diff(distance)
        if np.any(steps < 1e-6):
            i = int(np.flatnonzero(steps < 1e-6)[0])
            raise ImagingError(
                folder,
                f"two slices at the same position ({headers[i].path.name}, "
                f"{headers[i + 1].path.name}): duplicates or two series",
            )
        step = float(np.median(steps))
        irregular = np.abs(steps - step) > SPACING_TOLERANCE * step
        if np.any(irregular):
            i = int(np.flatnonzero(irregular)[0])
            ratio = steps[i] / step
            if abs(ratio - round(ratio)) < SPACING_TOLERANCE * ratio and round(ratio) >= 2:
                raise ImagingError(
                    folder,
                    f"missing slices: {round(ratio) - 1} missing between "
                    f"{distance[i]:.2f} mm and {distance[i + 1]:.2f} mm along the normal "
                    f"(step {step:.3g} mm)",
                )
            raise ImagingError(
                folder,
                f"irregular slice spacing: {steps[i]:.3g} mm between {distance[i]:.2f} and "
                f"{distance[i + 1]:.2f} mm, median step {step:.3g} mm; resample it first",
            )
        # The slice origins must advance along the normal only; a drift in-plane is tilt.
        drift = (positions - positions[0]) - np.outer(distance - distance[0], normal)
        per_slice = np.linalg.norm(drift, axis=1).max() / (len(headers) - 1)
        if per_slice > TILT_TOLERANCE_MM:
            angle = np.degrees(np.arctan2(per_slice, step))
            raise ImagingError(
                folder,
                f"slice origins drift {per_slice:.3g} mm per slice off the normal "
                f"(gantry tilt about {angle:.1f} degrees): resample to an untilted grid first",
            )
    else:
        step = float(first.dataset.get("SliceThickness", 1.0) or 1.0)
        warnings.append("a single slice: its thickness is used as the spacing")
    thickness = first.dataset.get("SliceThickness")
    if thickness is not None and len(headers) > 1 and abs(float(thickness) - step) > 1e-3:
        warnings.append(
            f"SliceThickness {float(thickness):g} mm but slices are {step:g} mm apart: "
            "the spacing is taken from the positions"
        )

    slices: list[npt.NDArray[Any]] = []
    for n, header in enumerate(headers):
        try:
            dataset = pydicom.dcmread(header.path)
            pixels = dataset.pixel_array
        except Exception as error:  # a decoder raises many kinds; each is "cannot decode"
            raise ImagingError(
                header.path, f"cannot decode pixels: {type(error).__name__}: {error}"
            ) from None
        if pixels.shape != (rows, cols):
            raise ImagingError(header.path, f"pixels {pixels.shape}, header says {(rows, cols)}")
        slope = float(dataset.get("RescaleSlope", 1.0))
        intercept = float(dataset.get("RescaleIntercept", 0.0))
        # pixel_array is [row, column]; the volume is [i = column, j = row, k = slice].
        hu = pixels.T.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        # HU as int16 where exact (whole slope and intercept, in range): half the memory
        exact = slope == round(slope) and intercept == round(intercept)
        if exact and hu.min() >= -32768 and hu.max() <= 32767:
            slices.append(hu.astype(np.int16))
        else:
            slices.append(hu)
        if progress is not None:
            progress(n + 1, len(headers))
    if all(s.dtype == np.int16 for s in slices):
        array: npt.NDArray[Any] = np.stack(slices, axis=2)
    else:
        array = np.stack([s.astype(np.float32) for s in slices], axis=2)

    T = np.eye(4)
    T[:3, 0] = row_dir * pixel_spacing[1]
    T[:3, 1] = col_dir * pixel_spacing[0]
    T[:3, 2] = normal * step
    T[:3, 3] = positions[0]
    for warning in warnings:
        log.warning("%s: %s", folder, warning)
    return Volume(
        array=array,
        T_image_from_ijk=T,
        kind="ct" if modality == "CT" else "image",
        source=str(folder),
        warnings=tuple(warnings),
    )

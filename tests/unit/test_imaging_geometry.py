"""Orientation handling: every axis flip and permutation keeps each voxel where it is."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
import scipy.spatial
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.imaging.geometry import (
    T_lps_from_ras,
    affine_from,
    align_labels,
    all_orientations,
    reorient,
)
from nav.imaging.read import read_volume
from nav.imaging.volume import ImagingError, Volume

ORIENTATIONS = all_orientations()


def _rotation(q: list[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@st.composite
def volumes(draw: st.DrawFn) -> Volume:
    shape = tuple(draw(st.integers(2, 6)) for _ in range(3))
    spacing = [draw(st.floats(0.3, 4.0)) for _ in range(3)]
    q = [draw(st.floats(-1, 1)) for _ in range(4)]
    if np.linalg.norm(q) < 0.1:
        q = [1.0, 0.0, 0.0, 0.0]
    origin = [draw(st.floats(-500, 500)) for _ in range(3)]
    seed = draw(st.integers(0, 2**31))
    array = np.random.default_rng(seed).integers(0, 200, size=shape).astype(np.uint8)
    T = affine_from(origin_lps=origin, directions=_rotation(q), spacing_mm=spacing)
    return Volume(array=array, T_image_from_ijk=T, kind="labels", source="synthetic")


def _voxels_lps(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Each voxel's centre in LPS (N, 3) and its value (N,)."""
    ijk = np.indices(volume.shape).reshape(3, -1).T
    return volume.ijk_to_lps(ijk), volume.array[tuple(ijk.T)].ravel()


def assert_same_voxels(a: Volume, b: Volume, *, tolerance_mm: float = 1e-6) -> None:
    """Both volumes hold the same value at each voxel centre (matched within tolerance)."""
    p_a, v_a = _voxels_lps(a)
    p_b, v_b = _voxels_lps(b)
    assert len(p_a) == len(p_b)
    distance, index = scipy.spatial.cKDTree(p_b).query(p_a)
    assert distance.max() <= tolerance_mm
    np.testing.assert_array_equal(v_a, v_b[index])


def test_there_are_48_orientations() -> None:
    assert len(set(ORIENTATIONS)) == 48


@pytest.mark.parametrize(("axes", "flips"), ORIENTATIONS)
@settings(max_examples=15)
@given(volume=volumes())
def test_reorient_keeps_every_voxel_at_its_lps_position(
    axes: tuple[int, ...], flips: tuple[bool, ...], volume: Volume
) -> None:
    moved = reorient(volume, axes=axes, flips=flips)
    assert_same_voxels(moved, volume)
    assert abs(moved.voxel_volume_mm3 - volume.voxel_volume_mm3) < 1e-9 * volume.voxel_volume_mm3


@pytest.mark.parametrize(("axes", "flips"), ORIENTATIONS)
@settings(max_examples=15)
@given(volume=volumes())
def test_align_labels_undoes_any_reorientation_exactly(
    axes: tuple[int, ...], flips: tuple[bool, ...], volume: Volume
) -> None:
    moved = reorient(volume, axes=axes, flips=flips)
    back, how = align_labels(moved, volume)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.T_image_from_ijk, volume.T_image_from_ijk)
    assert "grid" in how


@pytest.mark.parametrize(("axes", "flips"), ORIENTATIONS[::5])
@settings(max_examples=15)
@given(volume=volumes())
def test_nifti_and_nrrd_written_in_any_orientation_read_back_to_the_same_lps_voxels(
    tmp_path_factory: pytest.TempPathFactory,
    axes: tuple[int, ...],
    flips: tuple[bool, ...],
    volume: Volume,
) -> None:
    """Written by nibabel (RAS affine) and pynrrd (LPS and RAS spaces), read by ours."""
    moved = reorient(volume, axes=axes, flips=flips)
    folder = tmp_path_factory.mktemp("io")
    nii = folder / "v.nii.gz"
    image = nib.Nifti1Image(moved.array, T_lps_from_ras @ moved.T_image_from_ijk)
    image.set_sform(image.affine, code=1)
    nib.save(image, nii)
    lps = folder / "lps.nrrd"
    T = moved.T_image_from_ijk
    nrrd.write(
        str(lps),
        moved.array,
        {
            "space": "left-posterior-superior",
            "space directions": T[:3, :3].T,
            "space origin": T[:3, 3],
        },
        index_order="F",
    )
    ras = folder / "ras.nrrd"
    Tr = T_lps_from_ras @ T
    nrrd.write(
        str(ras),
        moved.array,
        {
            "space": "right-anterior-superior",
            "space directions": Tr[:3, :3].T,
            "space origin": Tr[:3, 3],
        },
        index_order="F",
    )
    for path, tolerance_mm in ((nii, 1e-3), (lps, 1e-6), (ras, 1e-6)):  # NIfTI: float32
        assert_same_voxels(read_volume(path, labels=True), volume, tolerance_mm=tolerance_mm)


def test_nifti_qform_is_used_when_no_sform(tmp_path) -> None:
    array = np.zeros((3, 4, 5), np.uint8)
    array[1, 2, 3] = 7
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    image = nib.Nifti1Image(array, None)
    image.set_qform(affine, code=1)
    image.set_sform(np.eye(4), code=0)
    nib.save(image, tmp_path / "q.nii")
    volume = read_volume(tmp_path / "q.nii", labels=True)
    # RAS (2*1+10, 3*2+20, 4*3+30) -> LPS (-12, -26, 42)
    np.testing.assert_allclose(volume.ijk_to_lps([[1, 2, 3]]), [[-12.0, -26.0, 42.0]])


def test_nifti_without_orientation_is_refused(tmp_path) -> None:
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), None)
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, tmp_path / "none.nii")
    with pytest.raises(ImagingError, match="neither sform nor qform"):
        read_volume(tmp_path / "none.nii")


def test_labels_on_another_grid_are_refused_unless_resampled() -> None:
    array = np.zeros((10, 10, 10), np.uint8)
    array[3:7, 3:7, 3:7] = 4
    image = Volume(
        array=np.zeros((20, 20, 20), np.int16),
        T_image_from_ijk=affine_from(
            origin_lps=[0, 0, 0], directions=np.eye(3), spacing_mm=[1, 1, 1]
        ),
        kind="ct",
        source="ct",
    )
    labels = Volume(
        array=array,
        T_image_from_ijk=affine_from(
            origin_lps=[0.5, 0, 0], directions=np.eye(3), spacing_mm=[2, 2, 2]
        ),
        kind="labels",
        source="seg",
    )
    with pytest.raises(ImagingError, match="another grid"):
        align_labels(labels, image)
    resampled, how = align_labels(labels, image, resample=True)
    assert "resampled" in how
    # label voxels 3..6 of 2 mm cover x 5.5..13.5 mm (origin 0.5) and y, z 5..13 mm: the
    # 1 mm voxels whose centres fall there (a centre on the edge goes to the upper voxel)
    inside = np.argwhere(resampled.array == 4)
    assert inside.min(axis=0).tolist() == [6, 5, 5]
    assert inside.max(axis=0).tolist() == [13, 12, 12]
    assert len(inside) == 8**3


def test_labels_elsewhere_in_the_patient_are_refused() -> None:
    image = Volume(
        array=np.zeros((10, 10, 10), np.int16),
        T_image_from_ijk=np.eye(4),
        kind="ct",
        source="ct",
    )
    far = np.eye(4)
    far[:3, 3] = [500, 0, 0]
    labels = Volume(
        array=np.ones((10, 10, 10), np.uint8), T_image_from_ijk=far, kind="labels", source="seg"
    )
    with pytest.raises(ImagingError, match="outside the image"):
        align_labels(labels, image, resample=True)

"""The readers on the real TotalSegmentator CT (DICOM) and its segmentation (NIfTI), and the
DICOM series they refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from nav.imaging.geometry import T_lps_from_ras, align_labels
from nav.imaging.read import read_volume
from nav.imaging.volume import ImagingError, Volume
from tests.conftest import shared_data

DICOM = "totalsegmentator/example_ct_dicom"
SEG = "totalsegmentator/example_seg_dicom.nii.gz"
LIVER = 5


@pytest.fixture(scope="module")
def ct() -> Volume:
    return read_volume(shared_data(DICOM), require_ct=True)


def test_dicom_series_is_sorted_along_the_normal_with_spacing_from_positions(ct: Volume) -> None:
    """20 slices 512x512, 0.977 mm pixels, 2 mm apart (SliceThickness says 3)."""
    assert ct.shape == (512, 512, 20)
    np.testing.assert_allclose(ct.spacing_mm, [0.9765625, 0.9765625, 2.0])
    # slice k=0 is the most inferior (lowest S): positions -804.5 .. -766.5
    np.testing.assert_allclose(ct.ijk_to_lps([[0, 0, 0]]), [[-249.51171875, -437.51171875, -804.5]])
    np.testing.assert_allclose(ct.ijk_to_lps([[0, 0, 19]])[0, 2], -766.5)
    assert any("SliceThickness 3 mm but slices are 2 mm apart" in w for w in ct.warnings)


def test_dicom_rescale_gives_hounsfield_units(ct: Volume) -> None:
    """RescaleIntercept -1024: air outside the body is about -1000 HU, not 0."""
    assert ct.kind == "ct"
    assert ct.array.dtype == np.int16
    corner = ct.array[:20, :20, :]  # outside the patient
    assert -1030 <= np.median(corner) <= -990


def test_segmentation_nifti_lands_on_the_dicom_ct(ct: Volume) -> None:
    """TotalSegmentator stored the rows bottom-up: reindexed exactly, and then each organ's
    voxels have its CT values (the liver 40..150 HU with contrast); the unflipped array
    would put the liver on fat and air."""
    seg = read_volume(shared_data(SEG), labels=True)
    assert seg.T_image_from_ijk[1, 1] < 0  # j runs anterior, the DICOM rows posterior
    aligned, how = align_labels(seg, ct)
    assert "reindexed" in how
    assert (aligned.array == LIVER).sum() == (seg.array == LIVER).sum()
    liver_hu = ct.array[aligned.array == LIVER].mean()
    assert 40 < liver_hu < 150
    naive = ct.array[seg.array == LIVER].mean()  # the raw arrays side by side
    assert naive < 0
    aorta_hu = ct.array[aligned.array == 52].mean()
    assert aorta_hu > liver_hu  # contrast in the blood


def test_dicom_and_nifti_paths_of_the_same_ct_agree(ct: Volume, tmp_path: Path) -> None:
    """The DICOM volume written as NIfTI by nibabel (RAS sform) reads back voxel for voxel,
    every voxel at the same LPS position."""
    image = nib.Nifti1Image(ct.array, T_lps_from_ras @ ct.T_image_from_ijk)
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    nib.save(image, tmp_path / "ct.nii.gz")
    back = read_volume(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.T_image_from_ijk, ct.T_image_from_ijk, atol=1e-4)


def test_nifti_ct_and_its_labels_share_a_grid() -> None:
    ct = read_volume(shared_data("totalsegmentator/example_ct_sm.nii.gz"))
    seg = read_volume(shared_data("totalsegmentator/example_seg.nii.gz"), labels=True)
    aligned, how = align_labels(seg, ct)
    assert how == "on the image's grid"
    assert 40 < ct.array[aligned.array == LIVER].mean() < 200
    # sform RAS x = 3 i - 177.96 -> LPS x = 177.96 - 3 i
    np.testing.assert_allclose(ct.ijk_to_lps([[1, 0, 0]])[0, 0], 177.95632935 - 3.0, atol=1e-4)


# --- bad series: real slices with one thing changed ------------------------------------


def _copy_series(tmp_path: Path, n: int = 6) -> list[Path]:
    source = sorted(shared_data(DICOM).iterdir())[:n]
    folder = tmp_path / "series"
    folder.mkdir()
    return [Path(shutil.copy(p, folder / p.name)) for p in source]


def _edit(path: Path, **tags: object) -> None:
    dataset = pydicom.dcmread(path)
    for tag, value in tags.items():
        setattr(dataset, tag, value)
    dataset.save_as(path)


def test_a_non_ct_series_is_refused(tmp_path: Path) -> None:
    files = _copy_series(tmp_path)
    for path in files:
        _edit(path, Modality="MR")
    with pytest.raises(ImagingError, match="modality 'MR', not CT"):
        read_volume(files[0].parent, require_ct=True)


def test_mixed_series_in_one_folder_are_refused(tmp_path: Path) -> None:
    files = _copy_series(tmp_path)
    for path in files[:3]:
        _edit(path, SeriesInstanceUID="1.2.3.4", SeriesDescription="other")
    with pytest.raises(ImagingError, match="2 series or geometries in one folder"):
        read_volume(files[0].parent)


def test_missing_slices_are_refused(tmp_path: Path) -> None:
    files = _copy_series(tmp_path)
    files[2].unlink()
    with pytest.raises(ImagingError, match="missing slices: 1 missing"):
        read_volume(files[0].parent)


def test_irregular_spacing_is_refused(tmp_path: Path) -> None:
    files = _copy_series(tmp_path)
    dataset = pydicom.dcmread(files[3])
    position = [float(v) for v in dataset.ImagePositionPatient]
    _edit(files[3], ImagePositionPatient=[position[0], position[1], position[2] + 0.7])
    with pytest.raises(ImagingError, match="irregular slice spacing"):
        read_volume(files[0].parent)


def test_gantry_tilt_is_refused(tmp_path: Path) -> None:
    """Slice origins that drift in-plane (a tilted gantry) are sheared, not a box grid."""
    files = _copy_series(tmp_path)
    for path in files:
        dataset = pydicom.dcmread(path)
        x, y, z = (float(v) for v in dataset.ImagePositionPatient)
        _edit(path, ImagePositionPatient=[x, y + 0.35 * (z + 766.5), z])
    with pytest.raises(ImagingError, match="gantry tilt about 19.3 degrees"):
        read_volume(files[0].parent)


def test_a_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImagingError, match="no DICOM image slices"):
        read_volume(tmp_path)


def test_an_oversized_volume_is_refused_before_reading(tmp_path: Path) -> None:
    """A 2 GB NIfTI (1024^3 int16): its header alone is written; refused from the header."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=1)
    path = tmp_path / "huge.nii"
    with path.open("wb") as f:
        header.write_to(f)  # no voxels at all: they must never be needed
    with pytest.raises(ImagingError, match="over the limit"):
        read_volume(path)


# --- NRRD and Slicer segmentations -------------------------------------------------------


def _write_seg_nrrd(path: Path, data: np.ndarray, header: dict) -> None:
    import nrrd

    nrrd.write(str(path), data, header, index_order="F")


def test_a_slicer_seg_nrrd_names_its_segments_and_places_them(tmp_path: Path) -> None:
    from nav.imaging.nrrd import segment_names

    data = np.zeros((6, 5, 4), np.uint8)
    data[2, 3, 1] = 7
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.5, 0.75, 2.0]),
        "space origin": np.array([10.0, -20.0, 30.0]),
        "Segment0_Name": "tumor",
        "Segment0_LabelValue": "7",
        "Segment0_Layer": "0",
    }
    _write_seg_nrrd(tmp_path / "s.seg.nrrd", data, header)
    volume = read_volume(tmp_path / "s.seg.nrrd", labels=True)
    assert volume.names == {7: "tumor"}
    assert segment_names(tmp_path / "s.seg.nrrd") == {7: "tumor"}
    np.testing.assert_allclose(
        volume.ijk_to_lps(np.argwhere(volume.array == 7)), [[11.0, -17.75, 32.0]]
    )


def test_a_layered_segmentation_is_refused(tmp_path: Path) -> None:
    data = np.zeros((2, 6, 5, 4), np.uint8)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.vstack([np.full(3, np.nan), np.eye(3)]),  # "none" for the list
        "space origin": np.zeros(3),
        "kinds": ["list", "domain", "domain", "domain"],
    }
    _write_seg_nrrd(tmp_path / "layers.seg.nrrd", data, header)
    with pytest.raises(ImagingError, match="2 layers \\(overlapping segments\\)"):
        read_volume(tmp_path / "layers.seg.nrrd", labels=True)


def test_a_nrrd_without_patient_space_is_refused(tmp_path: Path) -> None:
    import nrrd

    nrrd.write(str(tmp_path / "plain.nrrd"), np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ImagingError, match="expected LPS, RAS or LAS"):
        read_volume(tmp_path / "plain.nrrd")


def test_a_label_map_of_fractions_is_refused(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.full((2, 2, 2), 0.5, np.float32), np.eye(4))
    image.set_sform(np.eye(4), code=1)
    nib.save(image, tmp_path / "prob.nii.gz")
    with pytest.raises(ImagingError, match="whole numbers"):
        read_volume(tmp_path / "prob.nii.gz", labels=True)


def test_a_one_layer_segmentation_is_read_as_3d(tmp_path: Path) -> None:
    data = np.zeros((1, 6, 5, 4), np.uint8)
    data[0, 1, 2, 3] = 4
    header = {
        "space": "right-anterior-superior",
        "space directions": np.vstack([np.full(3, np.nan), np.eye(3)]),
        "space origin": np.array([1.0, 2.0, 3.0]),
        "kinds": ["list", "domain", "domain", "domain"],
    }
    _write_seg_nrrd(tmp_path / "one.seg.nrrd", data, header)
    volume = read_volume(tmp_path / "one.seg.nrrd", labels=True)
    assert volume.shape == (6, 5, 4)
    # RAS (1 + 1, 2 + 2, 3 + 3) -> LPS (-2, -4, 6)
    np.testing.assert_allclose(volume.ijk_to_lps(np.argwhere(volume.array == 4)), [[-2, -4, 6]])


# --- DICOM orientation: every row/column direction, slices stored either way -------------

_AXES = [np.array(v, dtype=float) for v in np.vstack([np.eye(3), -np.eye(3)])]
_ORIENTATIONS = [
    (r, c) for r in range(6) for c in range(6) if abs(_AXES[r] @ _AXES[c]) < 0.5
]  # 24: every right-handed (row, column, normal) frame of signed axes


@pytest.mark.parametrize(("row", "col"), _ORIENTATIONS)
def test_dicom_orientation_and_slice_order_map_each_pixel_to_its_position(
    tmp_path: Path, row: int, col: int
) -> None:
    """Slices written with a given ImageOrientationPatient and positions along its normal,
    in files named in reverse order for half the cases: voxel [i, j, k] is pixel (row j,
    column i) of the slice at position k along the normal, at origin + i r dx + j c dy."""
    r, c = _AXES[row], _AXES[col]
    normal = np.cross(r, c)
    files = _copy_series(tmp_path, n=3)
    origin = np.array([-100.0, 50.0, -700.0])
    step = 2.5
    reverse = (row + col) % 2 == 1
    pixels = {}
    for n, path in enumerate(files):
        k = len(files) - 1 - n if reverse else n
        _edit(
            path,
            ImageOrientationPatient=[*r.tolist(), *c.tolist()],
            ImagePositionPatient=(origin + k * step * normal).tolist(),
        )
        pixels[k] = pydicom.dcmread(path).pixel_array.astype(np.int32) - 1024
    volume = read_volume(files[0].parent)
    dx, dy = 0.9765625, 0.9765625
    for i, j, k in [(0, 0, 0), (5, 300, 1), (400, 17, 2)]:
        expected = origin + k * step * normal + i * dx * r + j * dy * c
        np.testing.assert_allclose(volume.ijk_to_lps([[i, j, k]])[0], expected, atol=1e-9)
        assert volume.array[i, j, k] == pixels[k][j, i]


def test_a_fractional_rescale_slope_gives_float_hounsfield_units(tmp_path: Path) -> None:
    """RescaleSlope 0.5 on one slice: that slice's HU are halves, the volume float32."""
    files = _copy_series(tmp_path, n=3)
    raw = pydicom.dcmread(files[1]).pixel_array.astype(np.float64)
    _edit(files[1], RescaleSlope=0.5, RescaleIntercept=-512.25)
    volume = read_volume(files[0].parent)
    assert volume.array.dtype == np.float32
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files]
    k = sorted(z).index(z[1])  # the edited slice's place along the normal (+S)
    np.testing.assert_allclose(volume.array[:, :, k], (raw * 0.5 - 512.25).T)

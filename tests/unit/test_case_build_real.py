"""``build_case`` on the shared CT (DICOM) and its segmentation (NIfTI): geometry checked
against the voxels, and bad input leaving no bundle."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import open3d as o3d
import pytest
import trimesh

from nav.case import load_case
from nav.case_build import build as build_module
from nav.case_build.build import (
    REPORT_FILE,
    BuildError,
    BuildSpec,
    StructureSpec,
    build_case,
    parse_structures,
)
from nav.case_build.lesion import LesionSpec
from nav.imaging.geometry import T_lps_from_ras, align_labels
from nav.imaging.read import read_volume
from nav.imaging.volume import Volume
from tests.conftest import shared_data
from tests.ct_case import ct_case

LIVER, PORTAL, AORTA = 5, 64, 52


def signed_distance_mm(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Open3D's signed distance: negative inside a closed mesh."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
        o3d.core.Tensor.from_numpy(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
    )
    query = o3d.core.Tensor.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    return np.asarray(scene.compute_signed_distance(query).numpy(), dtype=np.float64)


@pytest.fixture(scope="module")
def built() -> tuple[Path, Volume, Volume]:
    """The shared build (tests/ct_case.py), the CT and its labels on the CT's grid."""
    out = ct_case()
    ct = read_volume(shared_data("totalsegmentator/example_ct_dicom"))
    seg = read_volume(shared_data("totalsegmentator/example_seg_dicom.nii.gz"), labels=True)
    labels, _ = align_labels(seg, ct)
    return out, ct, labels


def _report(out: Path) -> dict:
    return json.loads((out / REPORT_FILE).read_text())["structures"]


@pytest.mark.slow  # builds the real case once (10-60 s on a shared machine)
def test_the_built_bundle_loads_as_ornav_case_check_reads_it(built) -> None:
    out, _, _ = built
    case = load_case(out)
    assert [s.name for s in case.structures] == [
        "liver",
        "portal_vein_and_splenic_vein",
        "aorta",
        "lesion",
    ]
    assert [s.role for s in case.structures] == ["organ", "vessel", "vessel", "tumor"]
    assert case.structure("liver").mesh.is_watertight
    assert len(case.fiducials) == 6
    assert case.targets.labels == ("lesion",)
    assert case.volume is not None
    assert not list(out.parent.glob(".*partial*"))  # no temporary folder left


@pytest.mark.slow  # builds the real case once (10-60 s on a shared machine)
def test_liver_mesh_centroid_and_bounds_match_its_voxels_within_half_a_voxel(built) -> None:
    """The label's voxels mapped through the image geometry (LPS) against the mesh."""
    out, ct, labels = built
    mesh = load_case(out).structure("liver").mesh
    voxels_lps = ct.ijk_to_lps(np.argwhere(labels.array == LIVER))
    half = ct.spacing_mm / 2  # 0.49, 0.49, 1.0 mm
    assert np.all(np.abs(mesh.center_mass - voxels_lps.mean(axis=0)) <= half)
    # the label's extent is its extreme voxel centres plus half a voxel (their faces)
    np.testing.assert_array_less(np.abs(mesh.bounds[0] - (voxels_lps.min(axis=0) - half)), half)
    np.testing.assert_array_less(np.abs(mesh.bounds[1] - (voxels_lps.max(axis=0) + half)), half)
    report = _report(out)["liver"]
    assert report["voxels"] == (labels.array == LIVER).sum()
    assert report["mesh_volume_mm3"] == pytest.approx(report["voxel_volume_mm3"], rel=1e-3)
    assert report["hausdorff_mm"] < 2 * ct.spacing_mm.max()


@pytest.mark.slow  # builds the real case once (10-60 s on a shared machine)
def test_vessels_keep_their_components_and_sit_on_their_contrast(built) -> None:
    """Every vertex of the aorta mesh is within a voxel of an aorta voxel in the CT, whose
    mean HU is contrast-filled blood."""
    out, ct, labels = built
    aorta = load_case(out).structure("aorta").mesh
    ijk = np.round(ct.lps_to_ijk(aorta.vertices)).astype(int)
    ijk = np.clip(ijk, 0, np.array(ct.shape) - 1)
    near = np.zeros(labels.shape, bool)
    near[tuple(ijk.T)] = True
    from scipy.ndimage import binary_dilation

    aorta_voxels = labels.array == AORTA
    assert np.all(binary_dilation(aorta_voxels, iterations=2)[tuple(ijk.T)])
    assert ct.array[aorta_voxels].mean() > 150
    portal = _report(out)["portal_vein_and_splenic_vein"]
    assert portal["kept_components"] == portal["components"] == 2  # vessels: every piece


@pytest.mark.slow  # builds the real case once (10-60 s on a shared machine)
def test_the_lesion_lies_inside_the_liver_and_the_fiducials_on_it(built) -> None:
    out, _, _ = built
    case = load_case(out)
    liver = case.structure("liver").mesh
    lesion = case.structure("lesion").mesh
    assert np.all(signed_distance_mm(liver, lesion.vertices) < 0)  # inside
    lesion_report = json.loads((out / REPORT_FILE).read_text())["lesions"]["lesion"]
    centre, radius = lesion_report["centre_lps"], lesion_report["radius_mm"]
    assert radius == 12.0
    np.testing.assert_allclose(case.targets.points_lps[0], centre)
    distance = np.abs(signed_distance_mm(liver, case.fiducials.points_lps))
    assert distance.max() < 1e-3  # vertices of the liver surface


@pytest.mark.slow  # builds the real case once (10-60 s on a shared machine)
def test_the_volume_brick_holds_the_ct_where_it_is(built) -> None:
    """The brick's voxel at the liver's centroid holds the liver's HU (downsampled x2)."""
    out, ct, labels = built
    volume = load_case(out).volume
    assert volume is not None
    values = volume.read().astype(np.float64) + volume.hu_offset
    assert values.shape == (256, 256, 20)
    centroid = ct.ijk_to_lps(np.argwhere(labels.array == LIVER)).mean(axis=0)
    T_inv = np.linalg.inv(volume.T_image_from_ijk)
    ijk = np.round(T_inv[:3, :3] @ centroid + T_inv[:3, 3]).astype(int)
    original = ct.array[tuple(np.round(ct.lps_to_ijk(centroid)[0]).astype(int))]
    assert abs(values[tuple(ijk)] - original) < 60  # a block mean of liver tissue
    assert 40 < values[tuple(ijk)] < 150


@pytest.mark.slow  # builds the real case once (10-60 s on a shared machine)
def test_provenance_names_the_inputs_by_hash(built) -> None:
    import tomllib

    out, _, _ = built
    document = tomllib.loads((out / "case.toml").read_text())
    provenance = document["provenance"]
    assert len(provenance["image_sha256"]) == 64
    assert len(provenance["labels_sha256"]) == 64
    assert "demonstration" in provenance["lesions"]
    assert provenance["structures"] == "liver=5,portal_vein_and_splenic_vein=64,aorta=52"


# --- bad input: one line, and no bundle ----------------------------------------------------


@pytest.fixture
def small_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 40^3 NIfTI CT (1 mm) with a ball of label 3 and its label map on the same grid."""
    ct = np.full((40, 40, 40), -1000, np.int16)
    grid = np.indices(ct.shape).transpose(1, 2, 3, 0)
    ball = np.linalg.norm(grid - 20, axis=-1) <= 10
    ct[ball] = 60
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    image = nib.Nifti1Image(ct, affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "ct.nii.gz")
    labels = nib.Nifti1Image(ball.astype(np.uint8) * 3, affine)
    labels.set_sform(affine, code=1)
    nib.save(labels, tmp_path / "seg.nii.gz")
    return tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"


def _spec(small_pair: tuple[Path, Path], out: Path, **changes: object) -> BuildSpec:
    ct, seg = small_pair
    spec = BuildSpec(image=ct, labels=seg, structures=(StructureSpec("ball", 3, "organ"),), out=out)
    return BuildSpec(**{**spec.__dict__, **changes})  # type: ignore[arg-type]


def test_a_small_nifti_case_builds_and_its_ball_has_the_right_radius(small_pair, tmp_path) -> None:
    result = build_case(_spec(small_pair, tmp_path / "case"), progress=lambda _: None)
    mesh = load_case(result.out).structure("ball").mesh
    # NIfTI RAS (20, 20, 20) is LPS (-20, -20, 20)
    np.testing.assert_allclose(mesh.center_mass, [-20, -20, 20], atol=0.05)
    r = np.linalg.norm(mesh.vertices - [-20, -20, 20], axis=1)
    assert abs(r.mean() - 10.0) < 0.5


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_a_label_absent_from_the_segmentation_is_refused(small_pair, tmp_path) -> None:
    out = tmp_path / "case"
    spec = _spec(small_pair, out, structures=(StructureSpec("liver", 5, "organ"),))
    with pytest.raises(
        BuildError, match="label 5 \\(liver\\) is not in the segmentation; labels present: 3"
    ):
        build_case(spec, progress=lambda _: None)
    _assert_nothing_written(out)


def test_an_empty_structure_is_refused(small_pair, tmp_path) -> None:
    """Label 9 is in the segmentation, but only where the CT is not."""
    ct, _ = small_pair
    seg = np.zeros((50, 40, 40), np.uint8)
    seg[20:30, 15:25, 15:25] = 3
    seg[45:, :2, :2] = 9  # beyond the CT's 40 columns
    image = nib.Nifti1Image(seg, np.eye(4))
    image.set_sform(np.eye(4), code=1)
    nib.save(image, tmp_path / "wide.nii.gz")
    out = tmp_path / "case"
    spec = _spec(
        small_pair,
        out,
        labels=tmp_path / "wide.nii.gz",
        structures=(StructureSpec("ball", 3, "organ"), StructureSpec("gone", 9, "organ")),
    )
    with pytest.raises(BuildError, match="gone \\(label 9\\) is empty on the CT's grid"):
        build_case(spec, progress=lambda _: None)
    _assert_nothing_written(out)


def test_a_segmentation_on_another_grid_is_refused_unless_resampled(small_pair, tmp_path) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    seg = np.zeros((20, 20, 20), np.uint8)
    seg[5:15, 5:15, 5:15] = 3
    image = nib.Nifti1Image(seg, affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "coarse.nii.gz")
    out = tmp_path / "case"
    spec = _spec(small_pair, out, labels=tmp_path / "coarse.nii.gz")
    with pytest.raises(BuildError, match="another grid"):
        build_case(spec, progress=lambda _: None)
    _assert_nothing_written(out)
    result = build_case(
        BuildSpec(**{**spec.__dict__, "resample_labels": True}), progress=lambda _: None
    )
    assert "resampled" in result.alignment
    assert any("resampled" in w for w in result.warnings)


def test_a_failure_while_writing_leaves_no_half_bundle(small_pair, tmp_path, monkeypatch) -> None:
    def broken(_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(build_module, "load_case", broken)
    out = tmp_path / "case"
    with pytest.raises(OSError, match="disk full"):
        build_case(_spec(small_pair, out), progress=lambda _: None)
    _assert_nothing_written(out)


def test_an_existing_bundle_is_kept_unless_forced(small_pair, tmp_path) -> None:
    out = tmp_path / "case"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(BuildError, match="not empty; --force replaces it"):
        build_case(_spec(small_pair, out), progress=lambda _: None)
    assert (out / "mine.txt").read_text() == "keep"
    build_case(_spec(small_pair, out, force=True), progress=lambda _: None)
    assert not (out / "mine.txt").exists() and (out / "case.toml").is_file()


def test_a_lesion_too_big_for_its_organ_is_refused(small_pair, tmp_path) -> None:
    out = tmp_path / "case"
    spec = _spec(small_pair, out, lesions=(LesionSpec.parse("t=inside:ball:15"),))
    with pytest.raises(BuildError, match="does not fit inside ball \\(at most 9"):
        build_case(spec, progress=lambda _: None)
    _assert_nothing_written(out)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t=1,2:5", "expected NAME="),
        ("t=1,2,3:0", "radius"),
        ("9t=1,2,3:4", "name must match"),
        ("t=inside:liver", "expected NAME="),
    ],
)
def test_bad_lesions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LesionSpec.parse(text)


def test_structures_are_parsed_with_names_and_roles() -> None:
    specs = parse_structures("liver,portal_vein=64,mass=7:tumor", {"liver": 5})
    assert specs == (
        StructureSpec("liver", 5, "organ"),
        StructureSpec("portal_vein", 64, "vessel"),
        StructureSpec("mass", 7, "tumor"),
    )
    with pytest.raises(BuildError, match="has no label number"):
        parse_structures("spleen", {})
    with pytest.raises(BuildError, match="named twice"):
        parse_structures("a=1,a=2", {})
    with pytest.raises(BuildError, match="unknown role"):
        parse_structures("a=1:bone", {})


def test_lps_from_ras_is_its_own_inverse() -> None:
    np.testing.assert_array_equal(T_lps_from_ras @ T_lps_from_ras, np.eye(4))


def test_an_oversized_ct_is_refused_before_reading_and_nothing_is_written(
    small_pair, tmp_path
) -> None:
    """A 2 GB CT (1024^3 int16; its header alone is on disk): refused from the header."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=1)
    huge = tmp_path / "huge.nii"
    with huge.open("wb") as f:
        header.write_to(f)
    out = tmp_path / "case"
    with pytest.raises(BuildError, match="over the limit"):
        build_case(_spec(small_pair, out, image=huge), progress=lambda _: None)
    _assert_nothing_written(out)


def test_an_image_that_is_not_in_hounsfield_units_is_warned_about(small_pair, tmp_path) -> None:
    """A NIfTI carries no modality: an MR-like image (0..600, no air at -1000) is built with
    a warning; the CT of the same shape is not."""
    ct_path, _ = small_pair
    ct = nib.load(ct_path)
    mr = np.asarray(ct.dataobj).astype(np.int16) + 1000  # air 0, tissue 1060
    image = nib.Nifti1Image(mr, ct.affine)
    image.set_sform(ct.affine, code=1)
    nib.save(image, tmp_path / "mr.nii.gz")
    result = build_case(
        _spec(small_pair, tmp_path / "mr_case", image=tmp_path / "mr.nii.gz"),
        progress=lambda _: None,
    )
    assert any("is this a CT in Hounsfield units?" in w for w in result.warnings)
    ok = build_case(_spec(small_pair, tmp_path / "ct_case"), progress=lambda _: None)
    assert not any("Hounsfield" in w for w in ok.warnings)

"""``ornav demo --case``: the launch file's stack re-pointed at a built case."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli.demo.case_option import with_case
from cli.errors import UserError
from nav.case import bounds_lps, load_case
from nav.case_build.build import BuildSpec, StructureSpec, build_case
from nav.case_build.lesion import LesionSpec
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime.launchfile import load
from tests.conftest import REPO


def _ball_case(tmp_path: Path, *, lesion: bool = True) -> Path:
    """A 40^3 NIfTI CT (1 mm) with a ball of radius 12 at RAS (100, 100, -700) + 20."""
    ct = np.full((40, 40, 40), -1000, np.int16)
    ball = np.linalg.norm(np.indices(ct.shape).transpose(1, 2, 3, 0) - 20, axis=-1) <= 12
    ct[ball] = 60
    affine = np.eye(4)
    affine[:3, 3] = [100, 100, -700]
    for name, data in (("ct", ct), ("seg", ball.astype(np.uint8))):
        image = nib.Nifti1Image(data, affine)
        image.set_sform(affine, code=1)
        nib.save(image, tmp_path / f"{name}.nii.gz")
    out = tmp_path / ("case" if lesion else "case_no_lesion")
    build_case(
        BuildSpec(
            image=tmp_path / "ct.nii.gz",
            labels=tmp_path / "seg.nii.gz",
            structures=(StructureSpec("ball", 1, "organ"),),
            out=out,
            lesions=(LesionSpec.parse("lesion=inside:ball:4"),) if lesion else (),
        ),
        progress=lambda _: None,
    )
    return out


def test_nav_and_render_read_the_case_and_its_centre_lands_where_the_phantoms_was(
    tmp_path: Path,
) -> None:
    launch = load(REPO / "launch" / "sim.toml", run_dir=tmp_path / "run", ipc_dir=tmp_path)
    case_dir = _ball_case(tmp_path)
    moved = with_case(launch, case_dir)
    nodes = {s.module: s for s in moved.nodes}
    assert nodes["nav.nav_node"].params["case"] == str(case_dir.resolve())
    assert nodes["render.render_node"].params["case"] == str(case_dir.resolve())
    before = np.reshape(
        {s.module: s for s in launch.nodes}["nav.nav_node"].params["truth_T_reference_from_image"],
        (4, 4),
    )
    after = np.reshape(nodes["nav.nav_node"].params["truth_T_reference_from_image"], (4, 4))
    np.testing.assert_allclose(after[:3, :3], before[:3, :3])  # the same pose, shifted
    lo, hi = bounds_lps(load_case(case_dir))
    plo, phi = bounds_lps(load_case(SHIPPED_PHANTOM_DIR))
    case_centre = np.append((lo + hi) / 2, 1.0)
    phantom_centre = np.append((plo + phi) / 2, 1.0)
    np.testing.assert_allclose(after @ case_centre, before @ phantom_centre, atol=1e-9)
    # nothing else changed
    assert [s.name for s in moved.nodes] == [s.name for s in launch.nodes]


def test_a_case_the_demo_cannot_drive_is_one_line(tmp_path: Path) -> None:
    launch = load(REPO / "launch" / "sim.toml", run_dir=tmp_path / "run", ipc_dir=tmp_path)
    with pytest.raises(UserError, match="no targets"):
        with_case(launch, _ball_case(tmp_path, lesion=False))
    with pytest.raises(UserError, match="case.toml: missing"):
        with_case(launch, tmp_path / "nowhere")

"""One case built from the shared TotalSegmentator CT per test process, for the tests that
only read it (``build_case`` takes seconds: the liver's decimation dominates)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tests.conftest import shared_data

STRUCTURES = "liver,portal_vein_and_splenic_vein,aorta"


@functools.cache
def _build(data: Path) -> Path:
    from nav.case_build.build import BuildSpec, build_case, parse_structures, read_label_names
    from nav.case_build.lesion import LesionSpec

    root = Path(tempfile.mkdtemp(prefix="ornav-ct-case-"))
    atexit.register(shutil.rmtree, root, True)
    out = root / "ct_case"
    build_case(
        BuildSpec(
            image=data / "example_ct_dicom",
            labels=data / "example_seg_dicom.nii.gz",
            structures=parse_structures(STRUCTURES, read_label_names(data / "labels.json")),
            out=out,
            lesions=(LesionSpec.parse("lesion=inside:liver:12"),),
        ),
        progress=lambda _: None,
    )
    return out


def ct_case() -> Path:
    """The built case (liver, portal_vein_and_splenic_vein, aorta, a 12 mm lesion inside the
    liver); skips where ../shared/data is absent. Read it, do not change it."""
    return _build(shared_data("totalsegmentator"))

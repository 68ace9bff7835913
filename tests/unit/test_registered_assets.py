"""render.registered_assets: a surface registration's error colours, a deformable one's
deformed case, checked against the field they come from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nav.case import Case, load_case
from nav.messages import DeformationField, RegistrationResult
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.transforms import apply, make_rigid
from render.assets import build_assets, confidence_rgba, glb_vertex_rgba, load_glb
from render.registered_assets import deformed_assets, surface_error_assets, vertex_error_field

T = make_rigid(
    np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), [160.0, -30.0, -70.0]
)


@pytest.fixture(scope="module")
def case() -> Case:
    return load_case(SHIPPED_PHANTOM_DIR)


def _organ(case: Case):  # type: ignore[no-untyped-def]
    return next(s for s in case.structures if s.role == "organ")


def _field(amplitude_mm: float) -> DeformationField:
    # One wide kernel on the organ's centre pushing along image +y, plus one narrow bump.
    return DeformationField(
        centres_image_mm=np.array([[-70.0, 20.0, 50.0], [-115.0, 25.0, 58.0]]),
        coefficients_mm=np.array([[0.0, amplitude_mm, 0.0], [amplitude_mm, 0.0, 0.0]]),
        widths_mm=np.array([80.0]),
        kernel_weights=np.array([1.0]),
    )


def _result(
    case: Case, *, method: str, field: DeformationField | None, confidence: np.ndarray
) -> RegistrationResult:
    n_targets = len(case.targets)
    return RegistrationResult(
        registration_id=42,
        state="accepted",
        method=method,
        needs_verification=False,
        T_reference_from_image=T,
        fre_mm=0.4,
        fiducial_errors_mm=np.full(20, 0.4),
        target_names=case.targets.labels,
        predicted_tre_mm=np.ones(n_targets),
        true_tre_mm=np.full(n_targets, math.nan),
        fle_mm=0.4,
        organ_confidence_mm=confidence.astype(np.float32),
        deformation=field,
    )


def _vertices(data: bytes) -> np.ndarray:
    return np.asarray(load_glb(data).vertices, dtype=np.float64)


def test_every_structure_is_moved_by_the_field_into_the_rigid_parts_image_frame(case: Case) -> None:
    field = _field(4.0)
    confidence = np.linspace(0.5, 3.5, len(_organ(case).mesh.vertices))
    result = _result(case, method="deformable", field=field, confidence=confidence)
    plain = build_assets(case)
    assets = deformed_assets(case, plain, result)
    assert assets.names == plain.names
    for structure in case.structures:
        info = assets.info(structure.name)
        drawn = _vertices(assets.data_by_sha256[info.sha256])
        # Where the display puts them (T @ drawn) is where the registration says (T p + u(p)).
        expected = apply(T, structure.mesh.vertices) + field.displacement_mm(
            structure.mesh.vertices
        )
        got = apply(T, drawn)
        assert drawn.shape == np.asarray(structure.mesh.vertices).shape
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(expected, axis=0), atol=1e-3)
        assert info.sha256 != plain.info(structure.name).sha256  # every one changed


def test_the_deformed_organ_carries_the_posterior_colours_vertex_by_vertex(case: Case) -> None:
    organ = _organ(case)
    confidence = np.linspace(0.5, 3.5, len(organ.mesh.vertices))
    result = _result(case, method="deformable", field=_field(3.0), confidence=confidence)
    assets = deformed_assets(case, build_assets(case), result)
    data = assets.data_by_sha256[assets.info(organ.name).sha256]
    rgba = glb_vertex_rgba(data)
    assert rgba is not None
    drawn = _vertices(data)
    moved = result.deformation.moved_image_mm(organ.mesh.vertices, T)  # type: ignore[union-attr]
    nearest = np.argmin(((drawn[:, None, :] - moved[None, :, :]) ** 2).sum(-1), axis=1)
    expected = confidence_rgba(confidence[nearest], organ.opacity) / 255.0
    np.testing.assert_allclose(rgba, expected, atol=1.0 / 255.0)


def test_a_zero_field_leaves_the_other_structures_bytes_and_hashes_as_they_were(case: Case) -> None:
    organ = _organ(case)
    result = _result(
        case, method="deformable", field=_field(0.0), confidence=np.ones(len(organ.mesh.vertices))
    )
    plain = build_assets(case)
    assets = deformed_assets(case, plain, result)
    for structure in case.structures:
        same = assets.info(structure.name).sha256 == plain.info(structure.name).sha256
        assert same == (structure is not organ)  # only the organ: its colours


def test_a_surface_registration_colours_the_organ_by_its_own_error_field(case: Case) -> None:
    organ = _organ(case)
    confidence = np.where(np.asarray(organ.mesh.vertices)[:, 0] < -70.0, 0.5, 3.5)
    result = _result(case, method="surface", field=None, confidence=confidence)
    plain = build_assets(case)
    assets = surface_error_assets(plain, organ, result)
    data = assets.data_by_sha256[assets.info(organ.name).sha256]
    rgba = glb_vertex_rgba(data)
    assert rgba is not None
    right = _vertices(data)[:, 0] < -70.0  # the good half green, the other red
    np.testing.assert_allclose(rgba[right, :3], [[0.0, 0.8, 0.0]] * int(right.sum()), atol=0.01)
    np.testing.assert_allclose(rgba[~right, :3], [[0.9, 0.0, 0.0]] * int((~right).sum()), atol=0.01)
    for structure in case.structures:
        if structure is not organ:
            assert assets.info(structure.name).sha256 == plain.info(structure.name).sha256


def test_a_field_that_does_not_fit_the_organ_is_refused_with_one_line(case: Case) -> None:
    organ = _organ(case)
    short = _result(case, method="surface", field=None, confidence=np.ones(10))
    with pytest.raises(ValueError, match="10 error values for an organ of"):
        surface_error_assets(build_assets(case), organ, short)
    with pytest.raises(ValueError, match="negative or NaN"):
        vertex_error_field(np.zeros((2, 3)), np.array([1.0, math.nan]))


def test_whole_assets_cost_more_bytes_than_a_displacement_stream_but_stay_small(case: Case) -> None:
    """The module's measurement: the deformed asset set against float16 displacements."""
    organ = _organ(case)
    result = _result(
        case, method="deformable", field=_field(4.0), confidence=np.ones(len(organ.mesh.vertices))
    )
    assets = deformed_assets(case, build_assets(case), result)
    n_vertices = sum(len(s.mesh.vertices) for s in case.structures)
    displacement_bytes = n_vertices * 3 * 2
    field_bytes = sum(a.nbytes for a in (_field(4.0).centres_image_mm, _field(4.0).coefficients_mm))
    print(
        f"deformed assets {assets.total_bytes} B, float16 displacements {displacement_bytes} B "
        f"({n_vertices} vertices), field {field_bytes} B"
    )
    assert field_bytes < displacement_bytes < assets.total_bytes < 1_000_000

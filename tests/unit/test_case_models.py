"""render.case_models.CaseModels: what a surface or deformable registration makes the render
node serve, and a deformable field it cannot draw."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from nav.case import Case, load_case
from nav.messages import DeformationField, RegistrationResult
from nav.navigation import case_id
from nav.phantom import SHIPPED_PHANTOM_DIR
from render.assets import build_assets, load_glb
from render.case_models import CaseModels


def _models(case: Case) -> CaseModels:
    return CaseModels(
        case,
        build_assets(case),
        case_path=SHIPPED_PHANTOM_DIR,
        triangle_budget=20_000,
        counters=Counter(),
    )


def _result(
    case: Case, registration_id: int, *, method: str, n_confidence: int
) -> RegistrationResult:
    field = (
        DeformationField(
            centres_image_mm=np.array([[-70.0, 20.0, 50.0]]),
            coefficients_mm=np.array([[0.0, 0.0, 3.0]]),
            widths_mm=np.array([100.0]),
            kernel_weights=np.array([1.0]),
        )
        if method == "deformable"
        else None
    )
    n = len(case.targets)
    return RegistrationResult(
        registration_id=registration_id,
        state="accepted",
        method=method,
        needs_verification=False,
        T_reference_from_image=np.eye(4),
        fre_mm=0.3,
        fiducial_errors_mm=np.full(5, 0.3),
        target_names=case.targets.labels,
        predicted_tre_mm=np.ones(n),
        true_tre_mm=np.full(n, math.nan),
        fle_mm=0.3,
        case_id=case_id(case),
        organ_confidence_mm=np.ones(n_confidence, dtype=np.float32),
        deformation=field,
    )


def test_a_deformable_registration_serves_every_structure_moved_and_a_new_version() -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    models = _models(case)
    plain_version = models.version
    organ = next(s for s in case.structures if s.role == "organ")
    assert models.on_registration(
        _result(case, 5, method="deformable", n_confidence=len(organ.mesh.vertices))
    )
    assert models.version != plain_version and models.coloured
    assert models.undrawable_id == 0 and models.counters["deformed_assets_built"] == 1
    tumour = case.structure("tumor")
    served = load_glb(models.served.data_by_sha256[models.served.info("tumor").sha256])
    # Near the kernel's centre the field is ~3 mm along +z (T is the identity).
    shift = np.asarray(served.vertices).mean(axis=0) - np.asarray(tumour.mesh.vertices).mean(axis=0)
    assert 2.0 < shift[2] < 3.0 and abs(shift[0]) < 1e-6 and abs(shift[1]) < 1e-6
    # The same registration again (republished, restored -> accepted) builds nothing.
    assert not models.on_registration(
        _result(case, 5, method="deformable", n_confidence=len(organ.mesh.vertices))
    )
    assert models.counters["deformed_assets_built"] == 1


def test_a_deformable_field_that_does_not_fit_the_organ_names_its_registration_undrawable() -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    models = _models(case)
    models.on_registration(_result(case, 6, method="deformable", n_confidence=7))
    assert models.undrawable_id == 6
    assert models.counters["deformed_assets_refused"] == 1
    assert not models.coloured  # the plain models, hidden by the scene under registration 6


def test_a_surface_registration_without_an_error_field_keeps_the_plain_colours() -> None:
    case = load_case(SHIPPED_PHANTOM_DIR)
    models = _models(case)
    models.on_registration(_result(case, 8, method="surface", n_confidence=0))
    assert not models.coloured and models.undrawable_id == 0
    organ = next(s for s in case.structures if s.role == "organ")
    models.on_registration(
        _result(case, 9, method="surface", n_confidence=len(organ.mesh.vertices))
    )
    assert models.coloured

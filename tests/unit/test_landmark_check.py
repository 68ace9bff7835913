"""nav.navigation.check_landmarks: a deformable fit tested against the fiducials the pointer
touched (held out of the fit), against the closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.navigation import LANDMARK_MARGIN_MM, Landmarks, check_landmarks
from nav.registration.deformable import DeformableResult, DisplacementField
from nav.registration.errors import RegistrationError
from nav.transforms import apply, make_rigid

P_IMAGE = np.array(
    [[0.0, 0.0, 0.0], [80.0, 0.0, 0.0], [0.0, 60.0, 0.0], [0.0, 0.0, 40.0], [50.0, 50.0, 30.0]]
)
T_START = make_rigid(np.eye(3), [10.0, -5.0, 3.0])


def _fit(T: np.ndarray, push_mm: np.ndarray) -> DeformableResult:
    """A fit whose field pushes every landmark by ``push_mm`` (one very wide kernel)."""
    field = DisplacementField(
        centres_mm=np.zeros((1, 3)),
        coefficients_mm=push_mm[None, :],
        widths_mm=np.array([1e6]),
        kernel_weights=np.array([1.0]),
    )
    return DeformableResult(
        T_patient_from_model=T,
        displacements_mm=np.zeros((0, 3)),
        confidence_mm=np.zeros(0),
        residuals_mm=np.zeros(0),
        rms_residual_mm=0.0,
        iterations=1,
        converged=True,
        time_s=0.0,
        field=field,
    )


@settings(max_examples=40, deadline=None)
@given(
    offset=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    push=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
)
def test_the_check_is_the_rms_of_each_answer_against_the_touched_points(
    offset: list[float], push: list[float]
) -> None:
    # Touched where the start puts them plus a common offset: the start's RMS is |offset|,
    # a fit that pushes them all by `push` leaves |offset - push|.
    touched = apply(T_START, P_IMAGE) + np.array(offset)
    landmarks = Landmarks(tuple("ABCDE"), P_IMAGE, touched)
    expected_rigid = float(np.linalg.norm(offset))
    expected_fit = float(np.linalg.norm(np.array(offset) - np.array(push)))
    fit = _fit(T_START, np.array(push))
    if expected_fit > expected_rigid + LANDMARK_MARGIN_MM + 1e-6:
        with pytest.raises(RegistrationError) as refused:
            check_landmarks(landmarks, T_START, fit)
        assert refused.value.kind == "contradicts_landmarks"
        assert "5 touched fiducials" in str(refused.value)
    elif expected_fit < expected_rigid + LANDMARK_MARGIN_MM - 1e-6:
        check = check_landmarks(landmarks, T_START, fit)
        assert check.n == 5
        assert check.rigid_rms_mm == pytest.approx(expected_rigid, abs=1e-6)
        assert check.deformable_rms_mm == pytest.approx(expected_fit, abs=1e-6)


def test_a_fit_that_brings_the_landmarks_to_where_they_were_touched_passes() -> None:
    push = np.array([0.0, 0.0, 2.5])
    touched = apply(T_START, P_IMAGE) + push  # the organ really moved 2.5 mm along z
    check = check_landmarks(
        Landmarks(tuple("ABCDE"), P_IMAGE, touched), T_START, _fit(T_START, push)
    )
    assert check.rigid_rms_mm == pytest.approx(2.5) and check.deformable_rms_mm < 1e-6

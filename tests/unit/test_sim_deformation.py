"""The simulated organ deformation (nav.sim_deformation): scale, determinism, smoothness, and
the demo seed's documented effect on the phantom."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.sim_deformation import PEAK_RANGE_MM, organ_deformation


def _organ_vertices(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(300, 3)) * [90.0, 70.0, 50.0] + [-70.0, 20.0, 50.0]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mesh_seed=st.integers(0, 100),
    peak=st.floats(PEAK_RANGE_MM[0], PEAK_RANGE_MM[1]),
)
def test_the_largest_displacement_over_the_organ_is_the_peak(
    seed: int, mesh_seed: int, peak: float
) -> None:
    v = _organ_vertices(mesh_seed)
    d = organ_deformation(v, seed=seed, peak_mm=peak).displacement_mm(v)
    assert np.linalg.norm(d, axis=1).max() == pytest.approx(peak, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_field_is_smooth_on_the_organ_scale(seed: int) -> None:
    # Each term's gradient is bounded by its amplitude over a length of at least 0.3 L / 2pi
    # (a bulge of width >= 0.3 L, a bend over L / 2, a wave of period >= L): two points 1 mm
    # apart move by at most a few percent of the peak.
    v = _organ_vertices(1)
    field = organ_deformation(v, seed=seed, peak_mm=10.0)
    rng = np.random.default_rng(seed)
    p = v[rng.integers(len(v), size=200)]
    step = rng.normal(size=p.shape)
    step /= np.linalg.norm(step, axis=1)[:, None]
    change = np.linalg.norm(field.displacement_mm(p + step) - field.displacement_mm(p), axis=1)
    assert change.max() < 0.5  # mm per mm, with the organ ~300 mm long: < 0.05 would do


def test_a_seed_names_one_field_and_deformed_adds_it() -> None:
    v = _organ_vertices(2)
    a, b = organ_deformation(v, seed=3), organ_deformation(v, seed=3)
    other = organ_deformation(v, seed=4)
    np.testing.assert_array_equal(a.displacement_mm(v), b.displacement_mm(v))
    assert not np.allclose(a.displacement_mm(v), other.displacement_mm(v))
    np.testing.assert_allclose(a.deformed(v), v + a.displacement_mm(v))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": 0, "peak_mm": 20.0}, "peak_mm must be in"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_settings_are_refused_with_one_line(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        organ_deformation(_organ_vertices(0), **kwargs)  # type: ignore[arg-type]


def test_an_organ_that_is_one_point_or_not_finite_is_refused() -> None:
    with pytest.raises(ValueError, match="all one point"):
        organ_deformation(np.zeros((10, 3)), seed=0)
    bad = _organ_vertices(0)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        organ_deformation(bad, seed=0)

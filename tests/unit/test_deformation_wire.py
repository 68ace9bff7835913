"""The deformable registration on the wire: ``DeformationField`` and the two new
``RegistrationResult`` fields (``organ_confidence_mm``, ``deformation``).

The closed form the field must match, for image point ``p`` and control points ``c_m``::

    u(p) = sum_m sum_j w_j exp(-|p - c_m|^2 / (2 s_j^2)) a_m,   moved_image(p, T) = p + R^T u(p)
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nav.messages import (
    MAX_PAYLOAD_BYTES,
    DeformationField,
    MessageError,
    RegistrationResult,
    decode,
    encode,
)
from nav.registration.deformable import DisplacementField
from nav.transforms import apply, axis_angle_to_matrix, make_rigid

FloatArray = npt.NDArray[np.float64]

coordinate = st.floats(-200.0, 200.0, allow_nan=False)
point = st.tuples(coordinate, coordinate, coordinate)


def _closed_form(p: FloatArray, field: DeformationField) -> FloatArray:
    """The module's sum, one point and one control point at a time (the naive loop)."""
    out = np.zeros((len(p), 3))
    for k, q in enumerate(p):
        for c, a in zip(field.centres_image_mm, field.coefficients_mm, strict=True):
            r2 = float(np.sum((q - c) ** 2))
            for s, w in zip(field.widths_mm, field.kernel_weights, strict=True):
                out[k] += w * math.exp(-r2 / (2.0 * s * s)) * a
    return out


@st.composite
def fields(draw: st.DrawFn, max_centres: int = 6) -> DeformationField:
    m = draw(st.integers(0, max_centres))
    j = draw(st.integers(1, 3))
    return DeformationField(
        centres_image_mm=np.array([draw(point) for _ in range(m)]).reshape(-1, 3),
        coefficients_mm=np.array(
            [draw(st.tuples(*[st.floats(-5.0, 5.0)] * 3)) for _ in range(m)]
        ).reshape(-1, 3),
        widths_mm=np.array([draw(st.floats(5.0, 150.0)) for _ in range(j)]),
        kernel_weights=np.array([draw(st.floats(0.0, 16.0)) for _ in range(j)]),
    )


@st.composite
def rigid(draw: st.DrawFn) -> FloatArray:
    axis = np.array(draw(st.tuples(*[st.floats(-1.0, 1.0)] * 3))) + [0.0, 0.0, 1e-3]
    angle = draw(st.floats(-math.pi, math.pi))
    return make_rigid(axis_angle_to_matrix(axis / np.linalg.norm(axis), angle), draw(point))


# --- the field's maths ------------------------------------------------------------------


@given(field=fields(), T=rigid(), p=st.lists(point, min_size=1, max_size=8))
def test_the_field_is_the_closed_form_and_moved_image_maps_back_through_the_rigid_part(
    field: DeformationField, T: FloatArray, p: list[tuple[float, float, float]]
) -> None:
    q = np.array(p)
    u = field.displacement_mm(q)
    np.testing.assert_allclose(u, _closed_form(q, field), atol=1e-9)
    moved = field.moved_image_mm(q, T)
    # moved_image(p) = T^-1 (T p + u(p)): the deformed point, in the rigid part's image frame.
    np.testing.assert_allclose(apply(T, moved), apply(T, q) + u, atol=1e-9)


@given(T=rigid(), p=st.lists(point, min_size=1, max_size=8))
def test_a_zero_field_moves_nothing(T: FloatArray, p: list[tuple[float, float, float]]) -> None:
    q = np.array(p)
    zero = DeformationField(
        centres_image_mm=np.array([[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]]),
        coefficients_mm=np.zeros((2, 3)),
        widths_mm=np.array([100.0]),
        kernel_weights=np.array([16.0]),
    )
    np.testing.assert_array_equal(zero.moved_image_mm(q, T), q)
    none = DeformationField(
        centres_image_mm=np.zeros((0, 3)),
        coefficients_mm=np.zeros((0, 3)),
        widths_mm=np.array([100.0]),
        kernel_weights=np.array([16.0]),
    )
    np.testing.assert_array_equal(none.moved_image_mm(q, T), q)


@given(centre=point, T=rigid(), far=st.floats(10.0, 200.0))
def test_one_narrow_control_point_moves_only_the_points_near_it(
    centre: tuple[float, float, float], T: FloatArray, far: float
) -> None:
    c = np.array(centre)
    field = DeformationField(
        centres_image_mm=c[None],
        coefficients_mm=np.array([[0.0, 0.0, 2.0]]),
        widths_mm=np.array([1.0]),
        kernel_weights=np.array([1.0]),
    )
    near, away = c, c + [far, 0.0, 0.0]
    moved = field.moved_image_mm(np.stack([near, away]), T)
    # At the centre the full 2 mm (turned into the image frame by R^T); 10 widths away
    # exp(-50), nothing.
    np.testing.assert_allclose(moved[0], near + T[:3, :3].T @ [0.0, 0.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(moved[1], away, atol=1e-12)


def test_the_worked_example_of_the_module() -> None:
    field = DeformationField(
        centres_image_mm=np.zeros((1, 3)),
        coefficients_mm=np.array([[0.0, 0.0, 2.0]]),
        widths_mm=np.array([10.0]),
        kernel_weights=np.array([1.0]),
    )
    T = make_rigid(axis_angle_to_matrix([0.0, 0.0, 1.0], math.pi / 2), [5.0, 6.0, 7.0])
    moved = field.moved_image_mm([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], T)
    np.testing.assert_allclose(moved, [[0.0, 0.0, 2.0], [10.0, 0.0, 1.21]], atol=5e-3)


def test_the_solver_field_and_the_wire_field_are_one_formula() -> None:
    rng = np.random.default_rng(3)
    centres, coefficients = rng.normal(0, 50, (30, 3)), rng.normal(0, 3, (30, 3))
    widths, weights = np.array([150.0, 90.0]), np.array([16.0, 4.0])
    p = rng.normal(0, 80, (5000, 3))  # more than one block of the chunked sum
    solver = DisplacementField(centres, coefficients, widths, weights)
    wire = DeformationField(
        centres_image_mm=centres,
        coefficients_mm=coefficients,
        widths_mm=widths,
        kernel_weights=weights,
    )
    np.testing.assert_array_equal(solver.displacement_mm(p), wire.displacement_mm(p))
    np.testing.assert_allclose(wire.displacement_mm(p[:20]), _closed_form(p[:20], wire), atol=1e-9)


# --- on the wire ------------------------------------------------------------------------


def _field(m: int = 40, j: int = 2) -> DeformationField:
    rng = np.random.default_rng(0)
    return DeformationField(
        centres_image_mm=rng.normal(0, 50, (m, 3)),
        coefficients_mm=rng.normal(0, 3, (m, 3)),
        widths_mm=np.linspace(150.0, 90.0, j),
        kernel_weights=np.linspace(16.0, 4.0, j),
    )


def _result(**changes: Any) -> RegistrationResult:
    fields: dict[str, Any] = {
        "registration_id": 12,
        "state": "proposed",
        "method": "deformable",
        "needs_verification": False,
        "T_reference_from_image": make_rigid(
            axis_angle_to_matrix([0.0, 0.0, 1.0], 0.3), [1.0, 2.0, 3.0]
        ),
        "fre_mm": 0.3,
        "fiducial_errors_mm": np.full(500, 0.3),
        "target_names": ("tumor_centre",),
        "predicted_tre_mm": np.array([4.1]),
        "true_tre_mm": np.array([np.nan]),
        "fle_mm": 0.3,
        "case_id": "ab" * 32,
        "organ_confidence_mm": np.linspace(0.5, 6.0, 2562).astype(np.float32),
        "deformation": _field(),
    }
    fields.update(changes)
    return RegistrationResult(**fields)


def _raw(result: RegistrationResult) -> dict[str, Any]:
    raw: dict[str, Any] = msgpack.unpackb(encode(result, seq=0, t_pub_ns=0), raw=False)
    return raw


def _decode(raw: dict[str, Any]) -> RegistrationResult:
    message = decode(msgpack.packb(raw, use_bin_type=True)).message
    assert isinstance(message, RegistrationResult)
    return message


def test_a_deformable_result_round_trips_with_its_field_and_confidence() -> None:
    result = _result()
    out = decode(encode(result, seq=0, t_pub_ns=0)).message
    assert isinstance(out, RegistrationResult) and out.method == "deformable"
    assert out.organ_confidence_mm.dtype == np.float32
    np.testing.assert_array_equal(out.organ_confidence_mm, result.organ_confidence_mm)
    assert out.deformation is not None and result.deformation is not None
    for name in ("centres_image_mm", "coefficients_mm", "widths_mm", "kernel_weights"):
        np.testing.assert_array_equal(
            getattr(out.deformation, name), getattr(result.deformation, name)
        )
    p = np.array([[10.0, -20.0, 30.0]])
    np.testing.assert_array_equal(
        out.deformation.moved_image_mm(p, out.T_reference_from_image),
        result.deformation.moved_image_mm(p, result.T_reference_from_image),
    )


def test_a_payload_from_before_the_fields_reads_as_no_confidence_and_no_deformation() -> None:
    raw = _raw(_result(method="surface", deformation=None))
    del raw["body"]["organ_confidence_mm"], raw["body"]["deformation"]
    out = _decode(raw)
    assert out.deformation is None and out.organ_confidence_mm.shape == (0,)


def test_a_deformable_result_for_a_50k_vertex_organ_is_well_inside_the_payload_limit() -> None:
    result = _result(
        organ_confidence_mm=np.ones(50_000, dtype=np.float32),
        fiducial_errors_mm=np.ones(20_000),  # nav_node.MAX_SURFACE_POINTS residuals
        deformation=_field(m=DeformationField.MAX_CENTRES, j=DeformationField.MAX_KERNELS),
    )
    size = len(encode(result, seq=0, t_pub_ns=0))
    print(f"\ndeformable RegistrationResult, 50k vertices, 2000 centres: {size} bytes")
    assert size < 0.6 * MAX_PAYLOAD_BYTES


def _set_field(name: str, value: Any) -> Any:
    def change(raw: dict[str, Any]) -> None:
        raw["body"]["deformation"][name] = value

    return change


def _set_kernels(j: int) -> Any:
    def change(raw: dict[str, Any]) -> None:
        raw["body"]["deformation"]["widths_mm"] = _array(np.full(j, 10.0))
        raw["body"]["deformation"]["kernel_weights"] = _array(np.ones(j))

    return change


def _array(a: npt.ArrayLike, dtype: str = "<f8") -> dict[str, Any]:
    b = np.asarray(a, dtype=dtype)
    return {"dtype": b.dtype.str, "shape": list(b.shape), "data": b.tobytes()}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda raw: raw["body"].update(deformation=None), "only with it"),
        (lambda raw: raw["body"].update(method="points"), "only with it"),
        (lambda raw: raw["body"].update(method="elastic"), "unknown registration method"),
        (lambda raw: raw["body"].update(deformation=[1, 2]), "not a map"),
        (lambda raw: raw["body"]["deformation"].pop("widths_mm"), "missing field 'widths_mm'"),
        (lambda raw: raw["body"]["deformation"].update(extra=1), "unknown fields"),
        (_set_field("centres_image_mm", _array(np.zeros((3, 2)))), "shape"),
        (_set_field("coefficients_mm", _array(np.zeros((39, 3)))), "shape"),
        (_set_field("centres_image_mm", _array(np.full((40, 3), np.nan))), "non-finite"),
        (_set_field("coefficients_mm", _array(np.full((40, 3), np.inf))), "non-finite"),
        (_set_field("centres_image_mm", _array(np.zeros((40, 3)), "<f4")), "dtype"),
        (_set_field("widths_mm", _array([150.0, 0.0])), "widths must be > 0"),
        (_set_field("kernel_weights", _array([16.0, -1.0])), "weights >= 0"),
        (_set_kernels(0), "1 <= J <= 8"),
        (_set_kernels(9), "1 <= J <= 8"),
        (
            lambda raw: raw["body"].update(organ_confidence_mm=_array([1.0, -0.5], "<f4")),
            "organ_confidence_mm must be >= 0",
        ),
        (
            lambda raw: raw["body"].update(organ_confidence_mm=_array([1.0, np.nan], "<f4")),
            "non-finite",
        ),
    ],
)
def test_a_bad_deformation_or_confidence_is_refused_on_decode(change: Any, problem: str) -> None:
    raw = _raw(_result())
    change(raw)
    with pytest.raises(MessageError, match=problem) as refused:
        _decode(raw)
    assert refused.value.kind == "invalid"


def test_more_control_points_than_the_bound_are_refused_on_decode_and_construction() -> None:
    raw = _raw(_result())
    n = DeformationField.MAX_CENTRES + 1
    raw["body"]["deformation"]["centres_image_mm"] = _array(np.zeros((n, 3)))
    raw["body"]["deformation"]["coefficients_mm"] = _array(np.zeros((n, 3)))
    with pytest.raises(MessageError, match="2001 control points"):
        _decode(raw)
    with pytest.raises(ValueError, match="2001 control points"):
        _field(m=n)

"""A deformable registration's displacement field on the wire: ``DeformationField``.

It travels inside a ``RegistrationResult`` (``deformation``, ``nav.messages.bus``) of
method "deformable"; ``nav.registration.deformable.DisplacementField`` is the same field
as the solver returns it. The displacement of an image-frame point ``p`` (mm), in the
reference frame's orientation, is a sum of Gaussian kernels on ``M`` control points::

    u(p) = sum_m sum_j kernel_weights[j] exp(-|p - c_m|^2 / (2 widths_mm[j]^2)) coefficients_mm[m]

and the registered position of ``p`` in the reference frame is ``T p + u(p)``, ``T`` the
registration's rigid ``T_reference_from_image``. A renderer that keeps drawing the model
in the image frame under ``T`` draws ``p`` at ``moved_image_mm(p, T) = p + R^T u(p)``.

Worked example: one control point at the origin, one kernel of width 10 mm and weight 1,
coefficient (0, 0, 2) mm, and ``T`` a 90 degree turn about z. At the origin u = (0, 0, 2)
and R^T u = (0, 0, 2), so the origin is drawn at (0, 0, 2) in the image frame; at 10 mm
along x the kernel is exp(-1/2) = 0.61, u = (0, 0, 1.21), drawn at (10, 0, 1.21).

Body (a map inside the RegistrationResult's body):

    "centres_image_mm"  <f8 (M, 3)  control points, image frame, M <= MAX_CENTRES
    "coefficients_mm"   <f8 (M, 3)  reference frame orientation
    "widths_mm"         <f8 (J,)    1 <= J <= MAX_KERNELS, each > 0
    "kernel_weights"    <f8 (J,)    each >= 0

Every value finite; anything else is a ``MessageError`` ("invalid"). Size: 2000 control
points are 96 kB, far inside a payload (``MAX_PAYLOAD_BYTES``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.messages.wire import MessageError, _check_fields, decode_array, encode_array, field_names

_CHUNK = 4096
"""Points per block in :func:`kernel_displacement_mm`: a (block, M) kernel matrix of at
most 64 MB for M = 2000, so a 50k-vertex organ never needs a 800 MB one."""


def kernel_displacement_mm(
    p: npt.ArrayLike,
    *,
    centres_mm: FloatArray,
    coefficients_mm: FloatArray,
    widths_mm: FloatArray,
    kernel_weights: FloatArray,
) -> FloatArray:
    """Return ``u`` (K, 3) at points ``p`` (K, 3), the module's sum of Gaussian kernels, mm.

    ``centres_mm`` (M, 3) in the frame of ``p``; ``coefficients_mm`` (M, 3);
    ``widths_mm`` and ``kernel_weights`` (J,). Works in blocks of ``_CHUNK`` points.
    """
    q = np.asarray(p, dtype=np.float64).reshape(-1, 3)
    u = np.zeros_like(q)
    c = np.asarray(centres_mm, dtype=np.float64)
    if len(c) == 0:
        return u
    a = np.asarray(coefficients_mm, dtype=np.float64)
    c2 = np.sum(c**2, 1)[None, :]
    for start in range(0, len(q), _CHUNK):
        block = q[start : start + _CHUNK]
        d2 = np.maximum(np.sum(block**2, 1)[:, None] + c2 - 2.0 * block @ c.T, 0.0)
        k = np.zeros_like(d2)
        for w, v in zip(widths_mm, kernel_weights, strict=True):
            k += v * np.exp(-d2 / (2.0 * w * w))
        u[start : start + _CHUNK] = k @ a
    return u


@dataclass(frozen=True, eq=False)
class DeformationField:
    """A displacement field (see the module): ``u(p)`` at image points, reference orientation.

    ``centres_image_mm`` (M, 3) and ``coefficients_mm`` (M, 3) float64; ``widths_mm`` and
    ``kernel_weights`` (J,) float64. Construction checks shapes, finiteness and bounds
    (ValueError); the arrays are kept as read-only float64 copies.
    """

    centres_image_mm: FloatArray
    coefficients_mm: FloatArray
    widths_mm: FloatArray
    kernel_weights: FloatArray

    MAX_CENTRES: ClassVar[int] = 2000
    MAX_KERNELS: ClassVar[int] = 8

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("centres_image_mm", "coefficients_mm", "widths_mm", "kernel_weights"):
            a = np.array(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"deformation {name} holds a non-finite value")
            a.setflags(write=False)
            arrays[name] = a
            object.__setattr__(self, name, a)
        c, a, w, v = arrays.values()
        if c.ndim != 2 or c.shape[1] != 3 or a.shape != c.shape:
            raise ValueError(
                f"deformation centres {c.shape} and coefficients {a.shape} must both be (M, 3)"
            )
        if len(c) > self.MAX_CENTRES:
            raise ValueError(f"deformation has {len(c)} control points (max {self.MAX_CENTRES})")
        if w.ndim != 1 or not 1 <= len(w) <= self.MAX_KERNELS or v.shape != w.shape:
            raise ValueError(
                f"deformation widths {w.shape} and weights {v.shape} must both be (J,), "
                f"1 <= J <= {self.MAX_KERNELS}"
            )
        if not np.all(w > 0.0) or not np.all(v >= 0.0):
            raise ValueError("deformation widths must be > 0 and kernel weights >= 0")

    def displacement_mm(self, p_image: npt.ArrayLike) -> FloatArray:
        """Return ``u`` (K, 3) at image points ``p_image`` (K, 3), mm, reference orientation."""
        return kernel_displacement_mm(
            p_image,
            centres_mm=self.centres_image_mm,
            coefficients_mm=self.coefficients_mm,
            widths_mm=self.widths_mm,
            kernel_weights=self.kernel_weights,
        )

    def moved_image_mm(
        self, p_image: npt.ArrayLike, T_reference_from_image: npt.ArrayLike
    ) -> FloatArray:
        """Return ``p + R^T u(p)`` (K, 3): the deformed points in the rigid part's image frame.

        ``T_reference_from_image`` (4, 4) rigid (its rotation ``R`` is used). So that
        ``T @ moved_image_mm(p, T) == T p + u(p)``: what a renderer drawing in the image
        frame under ``T`` needs.
        """
        p = np.asarray(p_image, dtype=np.float64).reshape(-1, 3)
        R = np.asarray(T_reference_from_image, dtype=np.float64)[:3, :3]
        moved: FloatArray = p + self.displacement_mm(p) @ R
        return moved

    def to_body(self) -> dict[str, Any]:
        return {name: encode_array(getattr(self, name)) for name in field_names(type(self))}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DeformationField:
        """Decode and check; MessageError ("invalid") for anything the module refuses."""
        if not isinstance(body, Mapping):
            raise MessageError("invalid", "field 'deformation' is not a map")
        _check_fields(body, field_names(cls), "DeformationField")
        centres = decode_array(body, "centres_image_mm", dtype="<f8", shape=(None, 3))
        if len(centres) > cls.MAX_CENTRES:
            raise MessageError(
                "invalid", f"deformation has {len(centres)} control points (max {cls.MAX_CENTRES})"
            )
        coefficients = decode_array(body, "coefficients_mm", dtype="<f8", shape=(len(centres), 3))
        widths = decode_array(body, "widths_mm", dtype="<f8", shape=(None,))
        weights = decode_array(body, "kernel_weights", dtype="<f8", shape=(len(widths),))
        try:
            return cls(
                centres_image_mm=centres,
                coefficients_mm=coefficients,
                widths_mm=widths,
                kernel_weights=weights,
            )
        except ValueError as error:
            raise MessageError("invalid", str(error)) from None

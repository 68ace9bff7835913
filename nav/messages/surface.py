"""Intraoperative surface points: one message type, ``SurfaceCloud`` (wire format:
``nav.messages.wire``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nav.messages.wire import (
    _NODE_NAME,
    MessageError,
    _check_fields,
    _get,
    _name,
    _time_ns,
    decode_array,
    encode_array,
    field_names,
)

MAX_SURFACE_POINTS = 20_000  # float32 xyz + confidence: 320 KiB, inside one payload
MAX_COORDINATE_MM = 1e5
SURFACE_FRAMES = frozenset({"reference", "camera"})


@dataclass(frozen=True, eq=False)
class SurfaceCloud:
    """A patch of the organ's surface seen by one source, on ``surface/<source>``.

    ``points_mm`` (N, 3) float32 and ``confidence_mm`` (N,) float32 (the expected error of
    each point, > 0) in ``frame``: "reference" (the patient reference marker, as
    registration wants them: the source was tracked) or "camera" (the source's own optical
    frame: an untracked source, for calibration and offline use only). ``t_sensor_ns``:
    when the images were taken (host monotonic clock). Every coordinate is finite and
    within 1e5 mm; at most ``MAX_SURFACE_POINTS`` points.
    """

    TYPE: ClassVar[str] = "SurfaceCloud"
    source: str
    frame: str
    t_sensor_ns: int
    points_mm: npt.NDArray[np.float32]
    confidence_mm: npt.NDArray[np.float32]

    def to_body(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frame": self.frame,
            "t_sensor_ns": int(self.t_sensor_ns),
            "points_mm": encode_array(np.asarray(self.points_mm, np.float32)),
            "confidence_mm": encode_array(np.asarray(self.confidence_mm, np.float32)),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SurfaceCloud:
        _check_fields(body, field_names(cls), cls.TYPE)
        frame = _get(body, "frame", str)
        if frame not in SURFACE_FRAMES:
            raise MessageError(
                "invalid", f"surface frame {frame[:40]!r} is not one of {sorted(SURFACE_FRAMES)}"
            )
        points = decode_array(body, "points_mm", dtype="<f4", shape=(None, 3))
        n = len(points)
        if n > MAX_SURFACE_POINTS:
            raise MessageError("invalid", f"{n} surface points > {MAX_SURFACE_POINTS}")
        if n and float(np.abs(points).max()) > MAX_COORDINATE_MM:
            raise MessageError("invalid", f"a surface coordinate beyond {MAX_COORDINATE_MM:g} mm")
        confidence = decode_array(body, "confidence_mm", dtype="<f4", shape=(n,))
        if n and not float(confidence.min()) > 0:
            raise MessageError("invalid", "confidence_mm must be > 0")
        return cls(
            source=_name(body, "source", _NODE_NAME),
            frame=frame,
            t_sensor_ns=_time_ns(body, "t_sensor_ns"),
            points_mm=points,
            confidence_mm=confidence,
        )

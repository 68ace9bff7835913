"""SurfaceCloud on the wire: round trip (hypothesis), and every bad body refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nav.messages import MAX_SURFACE_POINTS, MessageError, SurfaceCloud, decode, encode

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@given(
    arrays(np.float32, st.tuples(st.integers(0, 50), st.just(3)), elements=finite),
    st.sampled_from(["reference", "camera"]),
    st.integers(0, 2**62),
)
def test_round_trip(points: np.ndarray, frame: str, t_ns: int) -> None:
    confidence = np.linspace(0.1, 2.0, len(points), dtype=np.float32)
    cloud = SurfaceCloud("stereo", frame, t_ns, points, confidence)
    back = decode(encode(cloud, seq=3, t_pub_ns=5)).message
    assert isinstance(back, SurfaceCloud)
    assert (back.source, back.frame, back.t_sensor_ns) == ("stereo", frame, t_ns)
    assert np.array_equal(back.points_mm, points) and np.array_equal(back.confidence_mm, confidence)


def _body(**change: object) -> dict[str, object]:
    cloud = SurfaceCloud(
        "stereo", "reference", 1, np.zeros((2, 3), np.float32), np.ones(2, np.float32)
    )
    return {**cloud.to_body(), **change}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"frame": "tracker"}, "surface frame"),
        (
            {
                "points_mm": SurfaceCloud(
                    "s", "camera", 0, np.array([[np.nan, 0, 0]], np.float32), np.ones(1, np.float32)
                ).to_body()["points_mm"]
            },
            "non-finite",
        ),
        (
            {
                "points_mm": SurfaceCloud(
                    "s", "camera", 0, np.array([[2e5, 0, 0]], np.float32), np.ones(1, np.float32)
                ).to_body()["points_mm"]
            },
            "beyond",
        ),
        (
            {
                "confidence_mm": SurfaceCloud(
                    "s", "camera", 0, np.zeros((2, 3), np.float32), np.zeros(2, np.float32)
                ).to_body()["confidence_mm"]
            },
            "> 0",
        ),
        (
            {
                "confidence_mm": SurfaceCloud(
                    "s", "camera", 0, np.zeros((3, 3), np.float32), np.ones(3, np.float32)
                ).to_body()["confidence_mm"]
            },
            "shape",
        ),
        ({"source": "Not A Name"}, "valid name"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_bad_bodies_are_refused(change: dict[str, object], problem: str) -> None:
    with pytest.raises(MessageError, match=problem):
        SurfaceCloud.from_body(_body(**change))


def test_too_many_points_are_refused() -> None:
    n = MAX_SURFACE_POINTS + 1
    body = _body(
        **SurfaceCloud(
            "s", "camera", 0, np.zeros((n, 3), np.float32), np.ones(n, np.float32)
        ).to_body()
    )
    with pytest.raises(MessageError, match="surface points"):
        SurfaceCloud.from_body(body)

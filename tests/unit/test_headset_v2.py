"""Protocol 2 (docs/headset-protocol.md, "World-locked poses"): tracker-frame poses, the
session's ``T_xr_from_tracker``, and the world matrices a client composes from them."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nav.messages import (
    HEADSET_PROTOCOL_VERSION,
    MessageError,
    NavState,
    NavStatus,
    RegistrationResult,
    SceneUpdate,
    ToolStatus,
    Welcome,
    XrRegistration,
    decode,
    encode,
)
from nav.transforms import axis_angle_to_matrix, make_rigid
from render.scene import HeadsetSample, SceneState

SESSION = "0123456789abcdef0123456789abcdef"
CASE = "c" * 64
MS = 1_000_000
T0 = 10_000 * MS


def _rigid() -> st.SearchStrategy[np.ndarray]:
    unit = st.floats(-1.0, 1.0, allow_nan=False)
    return st.builds(
        lambda ax, ay, az, angle, tx, ty, tz: make_rigid(
            axis_angle_to_matrix(
                [ax, ay, az] if abs(ax) + abs(ay) + abs(az) > 1e-3 else [0, 0, 1], angle
            ),
            [tx, ty, tz],
        ),
        unit,
        unit,
        unit,
        st.floats(-math.pi, math.pi),
        *(st.floats(-3000.0, 3000.0),) * 3,
    )


def _nav(T_tracker_from_image: np.ndarray, p_tip_image: np.ndarray) -> NavState:
    return NavState(
        t_sensor_ns=T0,
        frame_number=1,
        status=NavStatus.OK,
        needs_verification=False,
        registration_id=4,
        T_tracker_from_image=T_tracker_from_image,
        pointer_status=ToolStatus.OK,
        p_tip_image=p_tip_image,
        target_names=("t1",),
        target_distances_mm=np.array([5.0]),
        critical_names=(),
        critical_distances_mm=np.zeros(0),
        predicted_tre_mm=0.5,
        case_id=CASE,
    )


def _registration() -> RegistrationResult:
    return RegistrationResult(
        registration_id=4,
        state="accepted",
        method="points",
        needs_verification=False,
        T_reference_from_image=np.eye(4),
        fre_mm=0.1,
        fiducial_errors_mm=np.array([0.1]),
        target_names=(),
        predicted_tre_mm=np.zeros(0),
        true_tre_mm=np.zeros(0),
        case_id=CASE,
    )


def _scene() -> SceneState:
    s = SceneState(
        session=SESSION, scene_version=1, structure_names=("liver", "tumor"), case_id=CASE
    )
    s.on_registration(_registration())
    return s


def test_the_protocol_is_version_3_with_version_2_still_served() -> None:
    # 3 adds the CT volume to Welcome (tests/unit/test_volume_asset.py); the poses are 2's.
    assert HEADSET_PROTOCOL_VERSION == 3


@given(
    T_xr_from_tracker=_rigid(),
    T_tracker_from_image=_rigid(),
    T_tracker_from_headset=_rigid(),
    p_image=st.tuples(*(st.floats(-300.0, 300.0),) * 3),
)
def test_world_matrices_are_the_session_registration_times_the_tracker_pose(
    T_xr_from_tracker: np.ndarray,
    T_tracker_from_image: np.ndarray,
    T_tracker_from_headset: np.ndarray,
    p_image: tuple[float, float, float],
) -> None:
    """What the client's root node composes equals the closed form, whatever the headset."""
    s = _scene()
    s.on_headset(HeadsetSample(T_tracker_from_headset, ToolStatus.OK, T0))
    s.on_nav(_nav(T_tracker_from_image, np.array(p_image)))
    update = decode(encode(s.update(T0 + MS), seq=0, t_pub_ns=1)).message
    assert isinstance(update, SceneUpdate)
    welcome = decode(
        encode(
            Welcome(2, SESSION, "ipc:///x", 1, 1, (), T_xr_from_tracker, math.nan),
            seq=0,
            t_pub_ns=1,
        )
    ).message
    assert isinstance(welcome, Welcome)
    p = np.append(p_image, 1.0)
    # Closed form: the point's place in xr, computed with a general inverse-free chain.
    expected = T_xr_from_tracker @ (T_tracker_from_image @ p)
    for T_structure in update.T_tracker_from_structures:
        world = welcome.T_xr_from_tracker @ T_structure
        np.testing.assert_allclose(world @ p, expected, atol=1e-6)
    np.testing.assert_allclose(
        welcome.T_xr_from_tracker[:3, :3] @ update.p_tip_tracker + welcome.T_xr_from_tracker[:3, 3],
        expected[:3],
        atol=1e-6,
    )
    # Head motion changes nothing in the world-locked poses: only T_tracker_from_headset.
    s.on_headset(HeadsetSample(np.eye(4), ToolStatus.OK, T0))
    moved = s.update(T0 + MS)
    np.testing.assert_array_equal(moved.T_tracker_from_structures, update.T_tracker_from_structures)
    np.testing.assert_allclose(update.T_tracker_from_headset, T_tracker_from_headset, atol=0)


@given(T=_rigid(), rms=st.one_of(st.just(math.nan), st.floats(0.0, 100.0)))
def test_an_xr_registration_round_trips_exactly(T: np.ndarray, rms: float) -> None:
    out = decode(encode(XrRegistration(T, rms), seq=3, t_pub_ns=4)).message
    assert isinstance(out, XrRegistration)
    np.testing.assert_array_equal(out.T_xr_from_tracker, T)
    assert (math.isnan(rms) and math.isnan(out.rms_mm)) or out.rms_mm == rms


@given(
    T=_rigid(),
    scale=st.floats(1.001, 3.0),
    shear=st.floats(0.01, 1.0),
)
def test_a_registration_that_is_not_a_pose_is_refused(
    T: np.ndarray, scale: float, shear: float
) -> None:
    for bad in (T @ np.diag([scale, 1.0, 1.0, 1.0]), T @ _shear(shear)):
        raw = msgpack.unpackb(encode(XrRegistration(T, 1.0), seq=0, t_pub_ns=0), raw=False)
        raw["body"]["T_xr_from_tracker"]["data"] = np.ascontiguousarray(bad, "<f8").tobytes()
        with pytest.raises(MessageError) as info:
            decode(msgpack.packb(raw, use_bin_type=True))
        assert info.value.kind == "invalid"


def _shear(k: float) -> np.ndarray:
    S = np.eye(4)
    S[0, 1] = k
    return S


@pytest.mark.parametrize("rms", [-1.0, math.inf, 1e7])
def test_a_bad_residual_is_refused(rms: float) -> None:
    raw = msgpack.unpackb(encode(XrRegistration(np.eye(4), 1.0), seq=0, t_pub_ns=0), raw=False)
    raw["body"]["rms_mm"] = rms
    with pytest.raises(MessageError):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_a_hidden_update_carries_identity_and_no_headset_pose_when_it_is_lost() -> None:
    s = _scene()
    s.on_headset(HeadsetSample(np.eye(4), ToolStatus.OUT_OF_VIEW, T0))
    s.on_nav(_nav(make_rigid(np.eye(3), [1.0, 2.0, 3.0]), np.zeros(3)))
    update = s.update(T0 + MS)
    assert not update.headset_ok
    np.testing.assert_array_equal(update.T_tracker_from_headset, np.eye(4))
    assert np.isnan(update.p_tip_tracker).all()


def test_without_a_headset_marker_the_overlay_depends_on_the_nav_pose_alone() -> None:
    """A Quest places itself (render node headset_tool = ""): no marker, no HEADSET_LOST;
    the age is the nav pose's, and the STALE/HIDDEN instants follow it."""
    s = SceneState(
        session=SESSION,
        scene_version=1,
        structure_names=("liver", "tumor"),
        case_id=CASE,
        headset_marker=False,
    )
    s.on_registration(_registration())
    s.on_nav(_nav(make_rigid(np.eye(3), [1.0, 2.0, 3.0]), np.zeros(3)))
    assert s.transition_times_ns() == (T0 + 100 * MS, T0 + 300 * MS)
    current = s.update(T0 + 50 * MS)
    assert current.overlay.value == "CURRENT" and current.headset_ok
    np.testing.assert_array_equal(current.T_tracker_from_headset, np.eye(4))
    assert s.update(T0 + 150 * MS).overlay.value == "STALE"
    assert s.update(T0 + 301 * MS).overlay.value == "HIDDEN"
    # A stray headset sample changes nothing.
    s.on_headset(HeadsetSample(np.eye(4), ToolStatus.OUT_OF_VIEW, T0 - 10 * MS))
    assert s.update(T0 + 50 * MS).overlay.value == "CURRENT"

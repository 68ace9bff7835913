"""Headset-to-tracker registration (render/xr_registration.py) against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from nav.transforms import make_rigid
from render.xr_registration import XrRegistrationError, register_headset


def _random_rigid(
    rng: np.random.Generator, *, t_mm: float, max_angle_rad: float = math.pi
) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-max_angle_rad, max_angle_rad)
    return make_rigid(Rotation.from_rotvec(axis * angle).as_matrix(), rng.uniform(-t_mm, t_mm, 3))


def _collection(seed: int, n: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """X = T_xr_from_tracker, Y = T_grip_from_marker, and n paired poses that obey
    X @ M_k = G_k @ Y exactly: the controller waved about in front of the user."""
    rng = np.random.default_rng(seed)
    X = _random_rigid(rng, t_mm=3000.0)
    Y = _random_rigid(rng, t_mm=80.0)  # the marker a few cm from the grip
    G = np.stack(
        [
            make_rigid(
                Rotation.from_rotvec(rng.normal(size=3) * 0.8).as_matrix(),
                [
                    rng.uniform(-400, 400),
                    1200 + rng.uniform(-300, 300),
                    -500 + rng.uniform(-300, 300),
                ],
            )
            for _ in range(n)
        ]
    )
    M = np.stack([np.linalg.inv(X) @ g @ Y for g in G])  # general inverse: independent of ours
    return X, Y, G, M


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1))
def test_noise_free_poses_give_back_both_transforms(seed: int) -> None:
    X, Y, G, M = _collection(seed)
    result = register_headset(G, M)
    np.testing.assert_allclose(result.T_xr_from_tracker, X, atol=1e-6)
    np.testing.assert_allclose(result.T_grip_from_marker, Y, atol=1e-6)
    assert result.rms_mm < 1e-6 and result.n_poses == 10


@pytest.mark.parametrize("noise_mm", [0.5, 2.0])
def test_the_residual_reports_the_position_noise(noise_mm: float) -> None:
    X, Y, G, M = _collection(7, n=40)
    rng = np.random.default_rng(1)
    noisy = M.copy()
    noisy[:, :3, 3] += rng.normal(scale=noise_mm / math.sqrt(3), size=(len(M), 3))  # RMS 3D
    result = register_headset(G, noisy)
    # The RMS residual estimates the noise (a little under it: 6 of 3N dof are fitted out
    # and the rotation noise is zero); the transform is off by far less than the noise.
    assert 0.5 * noise_mm < result.rms_mm < 1.2 * noise_mm
    p = np.array([0.0, 0.0, 0.0, 1.0])  # the tracker origin, in xr
    assert np.linalg.norm(result.T_xr_from_tracker @ p - X @ p) < 3 * noise_mm


def test_translation_only_motion_is_refused_with_the_reason() -> None:
    X, Y, _, _ = _collection(3)
    G = np.stack([make_rigid(np.eye(3), [x, 1200.0, -500.0]) for x in np.linspace(-300, 300, 8)])
    M = np.stack([np.linalg.inv(X) @ g @ Y for g in G])
    with pytest.raises(XrRegistrationError, match="not_enough_rotation.*larger turns"):
        register_headset(G, M)


def test_a_loose_marker_is_refused_by_its_residual() -> None:
    X, Y, G, M = _collection(5, n=12)
    slipped = M.copy()
    slipped[6:] = slipped[6:] @ make_rigid(np.eye(3), [0.0, 25.0, 0.0])  # slid 25 mm midway
    with pytest.raises(XrRegistrationError, match="residual .* mm > 5 mm"):
        register_headset(G, slipped)


def test_unpaired_stacks_are_refused() -> None:
    _, _, G, M = _collection(2)
    with pytest.raises(XrRegistrationError, match="one length"):
        register_headset(G, M[:-1])


def test_history_pairs_each_instant_with_the_nearest_sample_within_tolerance() -> None:
    from render.xr_registration import MarkerHistory

    history = MarkerHistory(4)
    for k in range(6):  # wraps: keeps the samples at 20..50 ms
        history.add(k * 10_000_000, make_rigid(np.eye(3), [float(k), 0.0, 0.0]))
    ok, T = history.match([19_000_000, 34_000_000, 36_000_000, 70_000_000, 5_000_000])
    assert ok.tolist() == [True, True, True, False, False]
    assert T[:3, 0, 3].tolist() == [2.0, 3.0, 4.0]  # nearest in time, not first
    np.testing.assert_array_equal(T[3], np.eye(4))


def test_a_grip_pose_that_is_not_rigid_never_reaches_the_solver() -> None:
    import msgpack

    from nav.messages import MessageError, XrPairedPoses, decode, encode

    raw = msgpack.unpackb(
        encode(XrPairedPoses(np.array([1], np.int64), np.eye(4)[None]), seq=0, t_pub_ns=0)
    )
    raw["body"]["T_xr_from_grip"]["data"] = np.diag([1.0, 1.0, 1.001, 1.0]).tobytes()
    with pytest.raises(MessageError, match="not rigid"):
        decode(msgpack.packb(raw, use_bin_type=True))

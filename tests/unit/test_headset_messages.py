"""Headset protocol messages (docs/headset-protocol.md): round trips and strict refusals."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.messages import (
    MAX_ASSET_BYTES,
    Alert,
    AlertAck,
    AlertSeverity,
    AssetData,
    AssetInfo,
    AssetRequest,
    ClockPing,
    ClockPong,
    HeadsetTelemetry,
    Hello,
    Message,
    MessageError,
    NavStatus,
    OverlayState,
    SceneUpdate,
    SnapshotRequest,
    Welcome,
    XrPairedPoses,
    XrRegistration,
    decode,
    encode,
)

SESSION = "0123456789abcdef0123456789abcdef"
GLB = b"glTF\x02\x00\x00\x00" + bytes(range(40))
GLB_SHA = hashlib.sha256(GLB).hexdigest()


def _rigid(angle_rad: float = 0.4) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = [10.0, -5.0, 450.0]
    return T


def scene_update(
    status: NavStatus = NavStatus.OK,
    overlay: OverlayState = OverlayState.CURRENT,
    headset_ok: bool = True,
    Ts: np.ndarray | None = None,
) -> SceneUpdate:
    return SceneUpdate(
        session=SESSION,
        scene_version=1,
        t_sensor_ns=1_000_000,
        frame_number=42,
        status=status,
        overlay=overlay,
        headset_ok=headset_ok,
        needs_verification=False,
        registration_id=3,
        structure_names=("liver", "tumor"),
        T_tracker_from_structures=np.stack([_rigid(), _rigid()]) if Ts is None else Ts,
        p_tip_tracker=np.array([1.0, 2.0, 300.0]),
        T_tracker_from_headset=_rigid(0.1) if headset_ok else np.eye(4),
        target_names=("tumor_centre",),
        target_distances_mm=np.array([25.0]),
        critical_names=("portal_vein", "hepatic_vein"),
        critical_distances_mm=np.array([7.5, np.nan]),
        predicted_tre_mm=0.8,
        age_ms=1.2,
    )


def telemetry(n: int = 3) -> HeadsetTelemetry:
    return HeadsetTelemetry(
        client="headset-1",
        clock_offset_ns=-1234,
        frame_numbers=np.arange(n, dtype=np.int64),
        t_sensor_ns=np.arange(n, dtype=np.int64) * 1000,
        t_receive_ns=np.arange(n, dtype=np.int64) * 1000 + 700,
        t_display_ns=np.arange(n, dtype=np.int64) * 1000 + 900,
    )


SAMPLES: dict[str, Message] = {
    "SceneUpdate": scene_update(),
    "Alert": Alert(SESSION, 7, AlertSeverity.CRITICAL, "REFERENCE_LOST", "Reference lost", 5),
    "AlertAck": AlertAck(SESSION, 7),
    "Hello": Hello(2, "headset-1"),
    "Welcome": Welcome(
        1,
        SESSION,
        "ipc:///tmp/ornav/render.pub",
        2,
        99,
        (AssetInfo("liver", GLB_SHA, len(GLB), 1000, (0.8, 0.4, 0.3, 0.6)),),
        _rigid(0.2),
        float("nan"),
    ),
    "XrRegistration": XrRegistration(_rigid(0.3), 1.5),
    "XrPairedPoses": XrPairedPoses(
        np.array([10, 20, 30], np.int64), np.stack([_rigid(0.1), _rigid(0.2), _rigid(0.3)])
    ),
    "ClockPing": ClockPing(11),
    "ClockPong": ClockPong(11, 12),
    "AssetRequest": AssetRequest(GLB_SHA),
    "AssetData": AssetData(GLB_SHA, "liver", GLB),
    "SnapshotRequest": SnapshotRequest(),
    "HeadsetTelemetry": telemetry(),
}


def raw_of(message: Message) -> dict[str, Any]:
    raw: dict[str, Any] = msgpack.unpackb(encode(message, seq=1, t_pub_ns=2), raw=False)
    return raw


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(MessageError) as info:
        decode(msgpack.packb(raw, use_bin_type=True))
    return info.value.kind


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_every_headset_message_round_trips_to_the_same_body(type_name: str) -> None:
    message = SAMPLES[type_name]
    out = decode(encode(message, seq=5, t_pub_ns=6), max_bytes=MAX_ASSET_BYTES + 4096)
    assert type(out.message) is type(message)
    # Bodies compare through msgpack: NaN-safe and array-aware.
    assert msgpack.packb(out.message.to_body()) == msgpack.packb(message.to_body())


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_missing_or_extra_fields_are_refused(type_name: str) -> None:
    for key in SAMPLES[type_name].to_body():
        raw = raw_of(SAMPLES[type_name])
        del raw["body"][key]
        assert refusal(raw) == "invalid", key
    raw = raw_of(SAMPLES[type_name])
    raw["body"]["colour"] = "red"
    assert refusal(raw) == "invalid"


@pytest.mark.parametrize(
    ("status", "headset_ok"),
    [
        (NavStatus.REFERENCE_LOST, True),
        (NavStatus.UNREGISTERED, True),
        (NavStatus.STALE, True),
        (NavStatus.OK, False),
    ],
)
def test_an_overlay_the_system_cannot_vouch_for_cannot_claim_to_be_current(
    status: NavStatus, headset_ok: bool
) -> None:
    raw = raw_of(scene_update())
    raw["body"]["status"] = status.value
    raw["body"]["headset_ok"] = headset_ok
    assert refusal(raw) == "invalid"
    for overlay in (OverlayState.STALE, OverlayState.HIDDEN):
        raw["body"]["overlay"] = overlay.value
        out = decode(msgpack.packb(raw, use_bin_type=True)).message
        assert isinstance(out, SceneUpdate) and out.overlay is overlay


def test_a_drawn_structure_pose_must_be_rigid_but_a_hidden_one_is_carried() -> None:
    scaled = np.stack([np.diag([2.0, 1.0, 1.0, 1.0]), _rigid()])
    for overlay in (OverlayState.CURRENT, OverlayState.STALE):
        with pytest.raises(MessageError):
            decode(encode(scene_update(overlay=overlay, Ts=scaled), seq=0, t_pub_ns=0))
    hidden = scene_update(NavStatus.REFERENCE_LOST, OverlayState.HIDDEN, Ts=scaled)
    assert isinstance(decode(encode(hidden, seq=0, t_pub_ns=0)).message, SceneUpdate)


def test_structure_pose_count_must_match_the_names() -> None:
    raw = raw_of(scene_update())
    raw["body"]["structure_names"] = ["liver"]
    assert refusal(raw) == "invalid"


def test_asset_bytes_that_do_not_match_their_hash_are_refused() -> None:
    raw = raw_of(SAMPLES["AssetData"])
    raw["body"]["data"] = GLB[:-1] + b"\x00"
    assert refusal(raw) == "invalid"


def test_asset_entries_in_welcome_are_validated() -> None:
    for field, value in [
        ("color_rgba", [1.0, 0.0, 0.0]),
        ("color_rgba", [2.0, 0.0, 0.0, 1.0]),
        ("sha256", "not-a-hash"),
        ("size_bytes", 0),
        ("size_bytes", MAX_ASSET_BYTES + 1),
    ]:
        raw = raw_of(SAMPLES["Welcome"])
        raw["body"]["assets"][0][field] = value
        assert refusal(raw) == "invalid", (field, value)
    raw = raw_of(SAMPLES["Welcome"])
    raw["body"]["scene_endpoint"] = "http://example.org"
    assert refusal(raw) == "invalid"


def test_alert_text_must_be_one_short_line() -> None:
    for text in ("two\nlines", "x" * 201):
        raw = raw_of(SAMPLES["Alert"])
        raw["body"]["text"] = text
        assert refusal(raw) == "invalid"


def test_telemetry_arrays_must_align() -> None:
    raw = raw_of(telemetry(3))
    raw["body"]["t_receive_ns"] = raw_of(telemetry(2))["body"]["t_receive_ns"]
    assert refusal(raw) == "invalid"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_corrupted_headset_payloads_only_ever_raise_message_error(
    type_name: str, data: Any
) -> None:
    payload = bytearray(encode(SAMPLES[type_name], seq=1, t_pub_ns=2))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(payload))
    except MessageError:
        pass

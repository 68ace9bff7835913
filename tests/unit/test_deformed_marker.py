"""The DEFORMABLE marker: Welcome.deformed_for on the wire, the banner that shows it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nav.messages import (
    MessageError,
    NavStatus,
    OverlayState,
    SceneUpdate,
    Welcome,
    decode,
    encode,
)
from render.snapshot import banner_text

SESSION = "a" * 32


def _welcome(protocol: int, deformed_for: int = 0) -> Welcome:
    return Welcome(protocol, SESSION, "ipc:///x", 7, 1, (), np.eye(4), math.nan, None, deformed_for)


def test_a_protocol_3_welcome_carries_the_registration_its_models_are_deformed_for() -> None:
    back = decode(encode(_welcome(3, 1796600983705728226), seq=1, t_pub_ns=1)).message
    assert isinstance(back, Welcome) and back.deformed_for == 1796600983705728226
    plain = decode(encode(_welcome(3), seq=1, t_pub_ns=1)).message
    assert isinstance(plain, Welcome) and plain.deformed_for == 0


def test_a_protocol_2_welcome_never_carries_it_so_old_clients_keep_decoding() -> None:
    body = _welcome(2).to_body()
    assert "deformed_for" not in body
    with pytest.raises(ValueError, match="cannot say deformed_for"):
        _welcome(2, 5)
    with pytest.raises(MessageError, match="deformed_for"):
        Welcome.from_body({**body, "deformed_for": 5})


def test_a_protocol_3_welcome_without_the_field_reads_as_not_deformed() -> None:
    body = _welcome(3).to_body()
    del body["deformed_for"]
    assert Welcome.from_body(body).deformed_for == 0


def _update(overlay: OverlayState) -> SceneUpdate:
    return SceneUpdate(
        session=SESSION,
        scene_version=7,
        t_sensor_ns=1,
        frame_number=1,
        status=NavStatus.OK,
        overlay=overlay,
        headset_ok=True,
        needs_verification=False,
        registration_id=9,
        structure_names=(),
        T_tracker_from_structures=np.zeros((0, 4, 4)),
        p_tip_tracker=np.full(3, np.nan),
        T_tracker_from_headset=np.eye(4),
        target_names=("tumor",),
        target_distances_mm=np.array([12.0]),
        critical_names=(),
        critical_distances_mm=np.zeros(0),
        predicted_tre_mm=1.5,
        age_ms=3.0,
    )


def test_the_banner_says_deformable_only_when_told_and_never_over_a_hidden_overlay() -> None:
    live = _update(OverlayState.CURRENT)
    assert banner_text(live, OverlayState.CURRENT, "", deformed=True).startswith(
        "LIVE | OK | DEFORMABLE | tumor 12.0 mm"
    )
    assert "DEFORMABLE" not in banner_text(live, OverlayState.CURRENT, "")
    stale = banner_text(_update(OverlayState.STALE), OverlayState.STALE, "late", deformed=True)
    assert stale.startswith("STALE | OK | DEFORMABLE")
    hidden = banner_text(None, OverlayState.HIDDEN, "REFERENCE_LOST", deformed=True)
    assert hidden == "HIDDEN: REFERENCE_LOST - model not shown"

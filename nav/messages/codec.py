"""Every message type by name, the envelope, and encode/decode of a payload (the format is
in ``nav.messages.wire``'s docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import msgpack

from nav.messages.bus import (
    Command,
    Heartbeat,
    NavState,
    RegistrationResult,
    Reply,
    ToolPose,
    TrackerFrame,
)
from nav.messages.headset import (
    Alert,
    AlertAck,
    AssetData,
    AssetRequest,
    ClockPing,
    ClockPong,
    HeadsetTelemetry,
    Hello,
    SceneUpdate,
    SnapshotRequest,
    Welcome,
    XrPairedPoses,
    XrRegistration,
)
from nav.messages.surface import SurfaceCloud
from nav.messages.wire import (
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    MessageError,
    _check_fields,
    _get,
)

Message: TypeAlias = (
    ToolPose
    | TrackerFrame
    | Heartbeat
    | Command
    | Reply
    | NavState
    | RegistrationResult
    | SceneUpdate
    | Alert
    | AlertAck
    | Hello
    | Welcome
    | ClockPing
    | ClockPong
    | AssetRequest
    | AssetData
    | SnapshotRequest
    | HeadsetTelemetry
    | XrRegistration
    | XrPairedPoses
    | SurfaceCloud
)
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        ToolPose,
        TrackerFrame,
        Heartbeat,
        Command,
        Reply,
        NavState,
        RegistrationResult,
        SceneUpdate,
        Alert,
        AlertAck,
        Hello,
        Welcome,
        ClockPing,
        ClockPong,
        AssetRequest,
        AssetData,
        SnapshotRequest,
        HeadsetTelemetry,
        XrRegistration,
        XrPairedPoses,
        SurfaceCloud,
    )
}


@dataclass(frozen=True, eq=False)
class Envelope:
    """A decoded payload: the publisher's sequence number and publish time, and the message.

    ``epoch`` names the publisher process that sent it (0: unknown, a recording made before
    epochs); compare ``seq`` only within one epoch.
    """

    seq: int
    t_pub_ns: int
    message: Message
    epoch: int = 0

    @property
    def type_name(self) -> str:
        return self.message.TYPE


MAX_EPOCH = (1 << 63) - 1  # epochs are positive int64: msgpack and MCAP keep them exact


def encode(message: Message, *, seq: int, t_pub_ns: int, epoch: int = 0) -> bytes:
    """Message -> payload bytes (frame 1 of the multipart message)."""
    return msgpack.packb(
        {
            "v": SCHEMA_VERSION,
            "type": message.TYPE,
            "seq": int(seq),
            "epoch": int(epoch),
            "t_pub_ns": int(t_pub_ns),
            "body": message.to_body(),
        },
        use_bin_type=True,
    )


def decode(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Envelope:
    """Payload bytes -> validated ``Envelope``; raises ``MessageError`` on anything wrong."""
    if len(payload) > max_bytes:
        raise MessageError("oversized", f"{len(payload)} bytes > {max_bytes}")
    try:
        raw = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )  # unpackb bounds every container by len(payload), already checked above
    except Exception as exc:  # msgpack raises many types for hostile input
        raise MessageError("malformed", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise MessageError("malformed", "payload is not a map")
    version = raw.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:  # not 1.0, not True
        raise MessageError(
            "version", f"schema version {str(version)[:20]}, expected {SCHEMA_VERSION}"
        )
    _check_fields(raw, frozenset({"v", "type", "seq", "epoch", "t_pub_ns", "body"}), "envelope")
    type_name = _get(raw, "type", str)
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise MessageError("unknown_type", f"type {type_name[:40]!r}")
    seq = _get(raw, "seq", int)
    t_pub_ns = _get(raw, "t_pub_ns", int)
    epoch = _get(raw, "epoch", int) if "epoch" in raw else 0
    if seq < 0 or t_pub_ns < 0:
        raise MessageError("invalid", "negative seq or t_pub_ns")
    if not 0 <= epoch <= MAX_EPOCH:
        raise MessageError("invalid", f"epoch {epoch} is out of range")
    return Envelope(seq, t_pub_ns, cls.from_body(_get(raw, "body", dict)), epoch)


def peek_type(payload: bytes) -> str:
    """The type name of a payload without validating its body (for recorders); '' if unknown."""
    try:
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return ""
    name = raw.get("type") if isinstance(raw, dict) else None
    return name if isinstance(name, str) and name in MESSAGE_TYPES else ""

"""Every message type that crosses the ornav bus, with its wire format and validation.

- ``wire``: the payload format (see its docstring), the field and array checks, and
  ``MessageError``;
- ``bus``: the types the nodes exchange (poses, frames, heartbeats, commands, navigation
  state, registration results);
- ``headset``: the headset protocol's types (docs/headset-protocol.md);
- ``codec``: the type registry, the envelope, ``encode`` and ``decode``.

Everything is re-exported here: ``from nav.messages import TrackerFrame, decode``.
"""

from __future__ import annotations

from nav.messages.bus import (
    Command,
    Heartbeat,
    NavState,
    NavStatus,
    RegistrationResult,
    Reply,
    ToolPose,
    ToolStatus,
    TrackerFrame,
)
from nav.messages.codec import (
    MAX_EPOCH,
    MESSAGE_TYPES,
    Envelope,
    Message,
    decode,
    encode,
    peek_type,
)
from nav.messages.headset import (
    HEADSET_PROTOCOL_VERSION,
    MAX_ASSET_BYTES,
    MAX_TELEMETRY_SAMPLES,
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
    OverlayState,
    SceneUpdate,
    SnapshotRequest,
    Welcome,
)
from nav.messages.wire import (
    MAX_NAME_LEN,
    MAX_PAYLOAD_BYTES,
    MAX_TOOLS_PER_FRAME,
    RIGID_TOLERANCE,
    SCHEMA_VERSION,
    JsonScalar,
    JsonValue,
    MessageError,
    decode_array,
    encode_array,
    field_names,
)

__all__ = [
    "Alert",
    "AlertAck",
    "AlertSeverity",
    "AssetData",
    "AssetInfo",
    "AssetRequest",
    "ClockPing",
    "ClockPong",
    "Command",
    "Envelope",
    "HEADSET_PROTOCOL_VERSION",
    "HeadsetTelemetry",
    "Heartbeat",
    "Hello",
    "JsonScalar",
    "JsonValue",
    "MAX_ASSET_BYTES",
    "MAX_EPOCH",
    "MAX_NAME_LEN",
    "MAX_PAYLOAD_BYTES",
    "MAX_TELEMETRY_SAMPLES",
    "MAX_TOOLS_PER_FRAME",
    "MESSAGE_TYPES",
    "Message",
    "MessageError",
    "NavState",
    "NavStatus",
    "OverlayState",
    "RIGID_TOLERANCE",
    "RegistrationResult",
    "Reply",
    "SCHEMA_VERSION",
    "SceneUpdate",
    "SnapshotRequest",
    "ToolPose",
    "ToolStatus",
    "TrackerFrame",
    "Welcome",
    "decode",
    "decode_array",
    "encode",
    "encode_array",
    "field_names",
    "peek_type",
]

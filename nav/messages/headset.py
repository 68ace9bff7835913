"""The headset protocol's message types (docs/headset-protocol.md): scene updates, alerts,
the session's hello, clock, assets, snapshot and telemetry."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.messages.bus import (
    NavStatus,
    _named_distances,
    _predicted_tre,
)
from nav.messages.wire import (
    _SHA256,
    MAX_TOOLS_PER_FRAME,
    RIGID_TOLERANCE,
    MessageError,
    _check_fields,
    _finite_float,
    _get,
    _name,
    _time_ns,
    decode_array,
    encode_array,
    field_names,
)
from nav.transforms import rigidity_errors

# --- headset protocol (docs/headset-protocol.md) -------------------------------------

HEADSET_PROTOCOL_VERSION = 3
SUPPORTED_HEADSET_PROTOCOLS = (2, 3)
"""What a render node answers: a protocol-2 client (no CT volume) is served as before."""
VOLUME_PROTOCOL = 3  # the first version whose Welcome carries the CT volume
MAX_ASSET_BYTES = 32 << 20  # one decimated structure as GLB, or one CT brick
MAX_VOLUME_VOXELS = 256 * 256 * 256  # nav.imaging.brick.MAX_BRICK_VOXELS
VOLUME_DTYPES = ("uint16",)
_SESSION = re.compile(r"[0-9a-f]{32}")
_CLIENT_NAME = r"[A-Za-z0-9_.-]{1,64}"
_STRUCTURE_NAME = r"[A-Za-z0-9_. -]{1,64}"
MAX_TELEMETRY_SAMPLES = 4096


class OverlayState(enum.Enum):
    """How the headset must draw the overlay of one scene update.

    CURRENT: draw as a valid overlay. STALE: the pose is older than the stale limit
    (100 ms by default); draw it marked as stale (dimmed, with a warning), never as current.
    HIDDEN: do not draw the model at all (pose older than the hide limit, 300 ms by
    default, or no registration, or the reference or headset marker lost).
    """

    CURRENT = "CURRENT"
    STALE = "STALE"
    HIDDEN = "HIDDEN"


def _check_rigid(T: FloatArray, key: str) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        if not (rigidity_errors(T[None]) <= RIGID_TOLERANCE).all():
            raise MessageError("invalid", f"{key} is not a rigid transform")


def _int_field(body: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value: int = _get(body, key, int)
    if not low <= value <= high:
        raise MessageError("invalid", f"field {key!r} = {value} is outside [{low}, {high}]")
    return value


@dataclass(frozen=True, eq=False)
class SceneUpdate:
    """The overlay for one tracker sample, published by the render node on ``scene/update``.

    Protocol 2: poses are in the ``tracker`` frame (world-locked; the client places them in
    its own world with its session's ``T_xr_from_tracker``). All structures of the case
    share the ``image`` frame; ``T_tracker_from_structures`` (S, 4, 4) mm carries one pose
    per name in ``structure_names`` (equal today, kept per structure so a structure can
    move on its own). ``p_tip_tracker`` (3,) mm, NaN when the tip is unknown.
    ``T_tracker_from_headset`` (4, 4) mm: the headset marker in the sample drawn, for a
    client that places its view with that marker (the simulated headset); identity when
    ``headset_ok`` is false or the stack tracks no headset marker. ``headset_ok``: the
    headset marker is tracked in the newest sample, or the stack tracks none (its
    render node's ``headset_tool`` is empty: world-locked clients place themselves).
    ``age_ms``: the pose's age when the render node sent it (its
    clock minus ``t_sensor_ns``). Structure poses are identity and meaningless while
    ``overlay`` is HIDDEN.

    Safety is checked on decode: an update that claims CURRENT while the navigation status
    is not OK or the headset is not tracked is refused, so no peer can make an overlay the
    system cannot vouch for look current.
    """

    TYPE: ClassVar[str] = "SceneUpdate"
    session: str
    scene_version: int
    t_sensor_ns: int
    frame_number: int
    status: NavStatus
    overlay: OverlayState
    headset_ok: bool
    needs_verification: bool
    registration_id: int
    structure_names: tuple[str, ...]
    T_tracker_from_structures: FloatArray
    p_tip_tracker: FloatArray
    T_tracker_from_headset: FloatArray
    target_names: tuple[str, ...]
    target_distances_mm: FloatArray
    critical_names: tuple[str, ...]
    critical_distances_mm: FloatArray
    predicted_tre_mm: float
    age_ms: float

    def to_body(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "scene_version": int(self.scene_version),
            "t_sensor_ns": int(self.t_sensor_ns),
            "frame_number": int(self.frame_number),
            "status": self.status.value,
            "overlay": self.overlay.value,
            "headset_ok": bool(self.headset_ok),
            "needs_verification": bool(self.needs_verification),
            "registration_id": int(self.registration_id),
            "structure_names": list(self.structure_names),
            "T_tracker_from_structures": encode_array(
                np.asarray(self.T_tracker_from_structures, np.float64)
            ),
            "p_tip_tracker": encode_array(np.asarray(self.p_tip_tracker, np.float64)),
            "T_tracker_from_headset": encode_array(
                np.asarray(self.T_tracker_from_headset, np.float64)
            ),
            "target_names": list(self.target_names),
            "target_distances_mm": encode_array(np.asarray(self.target_distances_mm, np.float64)),
            "critical_names": list(self.critical_names),
            "critical_distances_mm": encode_array(
                np.asarray(self.critical_distances_mm, np.float64)
            ),
            "predicted_tre_mm": float(self.predicted_tre_mm),
            "age_ms": float(self.age_ms),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SceneUpdate:
        _check_fields(body, field_names(cls), cls.TYPE)
        try:
            status = NavStatus(_get(body, "status", str))
            overlay = OverlayState(_get(body, "overlay", str))
        except ValueError:
            raise MessageError("invalid", "unknown status or overlay state") from None
        headset_ok = _get(body, "headset_ok", bool)
        if overlay is OverlayState.CURRENT and not (status is NavStatus.OK and headset_ok):
            raise MessageError(
                "invalid", f"overlay CURRENT with status {status.value}, headset_ok={headset_ok}"
            )
        structures = tuple(
            _name({"structure": n}, "structure", _STRUCTURE_NAME)
            for n in _get(body, "structure_names", list)[: MAX_TOOLS_PER_FRAME + 1]
        )
        if len(structures) > MAX_TOOLS_PER_FRAME:
            raise MessageError("invalid", f"more than {MAX_TOOLS_PER_FRAME} structures")
        Ts = decode_array(
            body, "T_tracker_from_structures", dtype="<f8", shape=(len(structures), 4, 4)
        )
        if overlay is not OverlayState.HIDDEN and len(structures):
            with np.errstate(over="ignore", invalid="ignore"):
                if not (rigidity_errors(Ts) <= RIGID_TOLERANCE).all():
                    raise MessageError("invalid", "a drawn structure pose is not rigid")
        T_headset = decode_array(body, "T_tracker_from_headset", dtype="<f8", shape=(4, 4))
        if headset_ok:
            _check_rigid(T_headset, "T_tracker_from_headset")
        targets, target_distances = _named_distances(body, "target")
        criticals, critical_distances = _named_distances(body, "critical")
        tre = _predicted_tre(body)
        age_ms = _finite_float(body, "age_ms")
        return cls(
            session=_name(body, "session", _SESSION),
            scene_version=_time_ns(body, "scene_version"),
            t_sensor_ns=_time_ns(body, "t_sensor_ns"),
            frame_number=_time_ns(body, "frame_number"),
            status=status,
            overlay=overlay,
            headset_ok=headset_ok,
            needs_verification=_get(body, "needs_verification", bool),
            registration_id=_time_ns(body, "registration_id"),
            structure_names=structures,
            T_tracker_from_structures=Ts,
            p_tip_tracker=decode_array(
                body, "p_tip_tracker", dtype="<f8", shape=(3,), allow_nan=True
            ),
            T_tracker_from_headset=T_headset,
            target_names=targets,
            target_distances_mm=target_distances,
            critical_names=criticals,
            critical_distances_mm=critical_distances,
            predicted_tre_mm=tre,
            age_ms=age_ms,
        )


class AlertSeverity(enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class Alert:
    """A message the surgeon must see, delivered reliably: resent until ``AlertAck``.

    Published on ``scene/alert`` (for the recorder) and sent to every headset session.
    ``code``: a stable machine name (``REFERENCE_LOST``, ``STALE``, ``UNREGISTERED``,
    ``HEADSET_LOST``, ``REGISTRATION_ACCEPTED``, ``NEEDS_VERIFICATION``, ``RECOVERED``...);
    ``text``: one line for the display. ``alert_id`` grows within a render session.
    """

    TYPE: ClassVar[str] = "Alert"
    session: str
    alert_id: int
    severity: AlertSeverity
    code: str
    text: str
    t_ns: int

    def to_body(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "alert_id": int(self.alert_id),
            "severity": self.severity.value,
            "code": self.code,
            "text": self.text,
            "t_ns": int(self.t_ns),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Alert:
        _check_fields(body, field_names(cls), cls.TYPE)
        try:
            severity = AlertSeverity(_get(body, "severity", str))
        except ValueError:
            raise MessageError("invalid", "unknown alert severity") from None
        text: str = _get(body, "text", str)
        if len(text) > 200 or "\n" in text:
            raise MessageError("invalid", "alert text is not one line of at most 200 characters")
        return cls(
            session=_name(body, "session", _SESSION),
            alert_id=_time_ns(body, "alert_id"),
            severity=severity,
            code=_name(body, "code", r"[A-Z][A-Z0-9_]{0,63}"),
            text=text,
            t_ns=_time_ns(body, "t_ns"),
        )


@dataclass(frozen=True)
class AlertAck:
    """The headset has shown alert ``alert_id`` of render session ``session``."""

    TYPE: ClassVar[str] = "AlertAck"
    session: str
    alert_id: int

    def to_body(self) -> dict[str, Any]:
        return {"session": self.session, "alert_id": int(self.alert_id)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AlertAck:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(_name(body, "session", _SESSION), _time_ns(body, "alert_id"))


@dataclass(frozen=True)
class Hello:
    """First message of a headset session: the client's protocol version and its name."""

    TYPE: ClassVar[str] = "Hello"
    protocol: int
    client: str

    def to_body(self) -> dict[str, Any]:
        return {"protocol": int(self.protocol), "client": self.client}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Hello:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(_int_field(body, "protocol", 0, 1 << 16), _name(body, "client", _CLIENT_NAME))


@dataclass(frozen=True)
class AssetInfo:
    """One structure's mesh asset: fetch it by ``sha256`` (of the GLB bytes)."""

    name: str
    sha256: str
    size_bytes: int
    triangles: int
    color_rgba: tuple[float, float, float, float]

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": int(self.size_bytes),
            "triangles": int(self.triangles),
            "color_rgba": [float(c) for c in self.color_rgba],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> AssetInfo:
        if not isinstance(raw, dict):
            raise MessageError("invalid", "asset entry is not a map")
        _check_fields(
            raw, frozenset({"name", "sha256", "size_bytes", "triangles", "color_rgba"}), "asset"
        )
        color = _get(raw, "color_rgba", list)
        if len(color) != 4 or not all(
            isinstance(c, int | float) and not isinstance(c, bool) and 0.0 <= c <= 1.0
            for c in color
        ):
            raise MessageError("invalid", "asset color_rgba is not 4 values in [0, 1]")
        return cls(
            name=_name(raw, "name", _STRUCTURE_NAME),
            sha256=_name(raw, "sha256", _SHA256),
            size_bytes=_int_field(raw, "size_bytes", 1, MAX_ASSET_BYTES),
            triangles=_int_field(raw, "triangles", 1, 1 << 24),
            color_rgba=(float(color[0]), float(color[1]), float(color[2]), float(color[3])),
        )


@dataclass(frozen=True, eq=False)
class VolumeInfo:
    """The case's CT brick (``nav.imaging.brick``): fetch it by ``sha256`` like a mesh.

    The asset's bytes are the brick file as the case stores it: gzip of the voxels as
    ``dtype`` little-endian, i fastest (a WebGL ``Data3DTexture``'s order), ``shape`` (i, j,
    k); ``HU = value + hu_offset``. ``T_image_from_ijk`` (4, 4): voxel centre (i, j, k) ->
    ``image`` (LPS, mm), an affine (spacing included, so not rigid). The volume lies in the
    structures' ``image`` frame and is placed by their pose in each ``SceneUpdate``.
    """

    name: str
    sha256: str
    size_bytes: int
    shape: tuple[int, int, int]
    dtype: str
    hu_offset: float
    T_image_from_ijk: FloatArray

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": int(self.size_bytes),
            "shape": [int(n) for n in self.shape],
            "dtype": self.dtype,
            "hu_offset": float(self.hu_offset),
            "T_image_from_ijk": encode_array(np.asarray(self.T_image_from_ijk, np.float64)),
        }

    @classmethod
    def from_wire(cls, raw: Any) -> VolumeInfo:
        if not isinstance(raw, dict):
            raise MessageError("invalid", "volume entry is not a map")
        _check_fields(raw, frozenset(f.name for f in dataclasses.fields(cls)), "volume")
        shape = _get(raw, "shape", list)
        if (
            len(shape) != 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
            or math.prod(shape) > MAX_VOLUME_VOXELS
        ):
            raise MessageError("invalid", f"volume shape {shape!r} is not 3 sizes, <= 256^3")
        dtype = _get(raw, "dtype", str)
        if dtype not in VOLUME_DTYPES:
            raise MessageError(
                "invalid", f"volume dtype {dtype[:20]!r} is not one of {VOLUME_DTYPES}"
            )
        T = decode_array(raw, "T_image_from_ijk", dtype="<f8", shape=(4, 4))
        if not np.allclose(T[3], [0, 0, 0, 1]) or abs(np.linalg.det(T[:3, :3])) < 1e-9:
            raise MessageError("invalid", "volume T_image_from_ijk is not an invertible affine")
        return cls(
            name=_name(raw, "name", _STRUCTURE_NAME),
            sha256=_name(raw, "sha256", _SHA256),
            size_bytes=_int_field(raw, "size_bytes", 1, MAX_ASSET_BYTES),
            shape=(shape[0], shape[1], shape[2]),
            dtype=dtype,
            hu_offset=_finite_float(raw, "hu_offset"),
            T_image_from_ijk=T,
        )


@dataclass(frozen=True)
class Welcome:
    """The render node's answer to ``Hello``: its session, where scene updates are
    published, the server clock at reply, and the case's assets (scene ``scene_version``).

    ``T_xr_from_tracker`` (4, 4) mm: this session's registration of the tracker into the
    client's own world-tracking space (``xr``), applied by the client on one root node;
    the render node's configured default until the session sends an ``XrRegistration``
    (``xr_rms_mm`` NaN: not from a registration procedure).

    ``volume``: the case's CT brick (``VolumeInfo``), None when the case has none. Only a
    protocol-3 Welcome has the field (nil without a volume); a protocol-2 one, for a client
    that predates it, never does, so its strict decoder keeps working.

    ``deformed_for``: the registration id the assets were deformed for (a deformable
    registration: ``render.registered_assets``), 0 when they are the case as planned. A
    client says "DEFORMABLE" on an update of that registration. Protocol 3 only (optional
    on decode, 0 when absent); a protocol-2 Welcome never carries it.
    """

    TYPE: ClassVar[str] = "Welcome"
    protocol: int
    session: str
    scene_endpoint: str
    scene_version: int
    t_server_ns: int
    assets: tuple[AssetInfo, ...]
    T_xr_from_tracker: FloatArray
    xr_rms_mm: float
    volume: VolumeInfo | None = None
    deformed_for: int = 0

    def __post_init__(self) -> None:
        if self.volume is not None and self.protocol < VOLUME_PROTOCOL:
            raise ValueError(f"a protocol-{self.protocol} Welcome cannot carry a volume")
        if self.deformed_for and self.protocol < VOLUME_PROTOCOL:
            raise ValueError(f"a protocol-{self.protocol} Welcome cannot say deformed_for")

    def to_body(self) -> dict[str, Any]:
        body = {
            "T_xr_from_tracker": encode_array(np.asarray(self.T_xr_from_tracker, np.float64)),
            "xr_rms_mm": float(self.xr_rms_mm),
            "protocol": int(self.protocol),
            "session": self.session,
            "scene_endpoint": self.scene_endpoint,
            "scene_version": int(self.scene_version),
            "t_server_ns": int(self.t_server_ns),
            "assets": [a.to_wire() for a in self.assets],
        }
        if self.protocol >= VOLUME_PROTOCOL:
            body["volume"] = None if self.volume is None else self.volume.to_wire()
            body["deformed_for"] = int(self.deformed_for)
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Welcome:
        _check_fields(body, field_names(cls), cls.TYPE)
        raw_assets = _get(body, "assets", list)
        if len(raw_assets) > MAX_TOOLS_PER_FRAME:
            raise MessageError("invalid", f"{len(raw_assets)} assets")
        endpoint: str = _get(body, "scene_endpoint", str)
        if not re.fullmatch(r"(ipc|tcp|inproc)://[^\s]{1,200}", endpoint):
            raise MessageError("invalid", f"scene_endpoint {endpoint[:80]!r} is not a zmq endpoint")
        protocol = _int_field(body, "protocol", 0, 1 << 16)
        volume = None
        if protocol >= VOLUME_PROTOCOL:
            if "volume" not in body:
                raise MessageError("invalid", f"a protocol-{protocol} Welcome without 'volume'")
            if body["volume"] is not None:
                volume = VolumeInfo.from_wire(body["volume"])
        elif "volume" in body:
            raise MessageError("invalid", f"a protocol-{protocol} Welcome with a volume")
        deformed_for = 0
        if "deformed_for" in body:
            if protocol < VOLUME_PROTOCOL:
                raise MessageError("invalid", f"a protocol-{protocol} Welcome with deformed_for")
            deformed_for = _time_ns(body, "deformed_for")
        return cls(
            protocol=protocol,
            session=_name(body, "session", _SESSION),
            scene_endpoint=endpoint,
            scene_version=_time_ns(body, "scene_version"),
            t_server_ns=_time_ns(body, "t_server_ns"),
            assets=tuple(AssetInfo.from_wire(a) for a in raw_assets),
            T_xr_from_tracker=_rigid_field(body, "T_xr_from_tracker"),
            xr_rms_mm=_rms_field(body, "xr_rms_mm"),
            volume=volume,
            deformed_for=deformed_for,
        )


def _rigid_field(body: Mapping[str, Any], key: str) -> FloatArray:
    T = decode_array(body, key, dtype="<f8", shape=(4, 4))
    _check_rigid(T, key)
    return T


def _rms_field(body: Mapping[str, Any], key: str) -> float:
    rms = float(_get(body, key, (int, float)))
    if not (math.isnan(rms) or 0.0 <= rms < 1e6):
        raise MessageError("invalid", f"{key} {rms} is not NaN or in [0, 1e6)")
    return rms


MAX_XR_PAIRED_POSES = 2048


@dataclass(frozen=True, eq=False)
class XrPairedPoses:
    """The headset registration's collection, client -> render node: at each instant k
    the controller's grip pose in the headset's world, ``T_xr_from_grip`` (N, 4, 4) mm
    (WebXR's metres times 1000), and that instant on the **server** clock,
    ``t_sensor_ns`` (N,) (the client's clock plus its offset estimate). The render node
    pairs each with the tracker's pose of its ``xr_marker_tool`` (the marker fixed to the
    controller) at that instant, solves ``T_xr_from_tracker`` (``render/xr_registration.py``)
    and answers ``XrRegistration`` (now this session's) or a ``Reply`` error with the reason
    (code ``xr_registration``). Every pose must be rigid (checked on decode).
    """

    TYPE: ClassVar[str] = "XrPairedPoses"
    t_sensor_ns: npt.NDArray[np.int64]
    T_xr_from_grip: FloatArray

    def to_body(self) -> dict[str, Any]:
        return {
            "t_sensor_ns": encode_array(np.asarray(self.t_sensor_ns, np.int64)),
            "T_xr_from_grip": encode_array(np.asarray(self.T_xr_from_grip, np.float64)),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> XrPairedPoses:
        _check_fields(body, field_names(cls), cls.TYPE)
        times = decode_array(body, "t_sensor_ns", dtype="<i8", shape=(None,))
        n = len(times)
        if n > MAX_XR_PAIRED_POSES:
            raise MessageError("invalid", f"{n} paired poses > {MAX_XR_PAIRED_POSES}")
        if n and times.min() < 0:
            raise MessageError("invalid", "negative t_sensor_ns")
        poses = decode_array(body, "T_xr_from_grip", dtype="<f8", shape=(n, 4, 4))
        if n:
            with np.errstate(over="ignore", invalid="ignore"):
                if not (rigidity_errors(poses) <= RIGID_TOLERANCE).all():
                    raise MessageError("invalid", "a grip pose is not rigid")
        return cls(times, poses)


@dataclass(frozen=True, eq=False)
class XrRegistration:
    """A headset session's ``T_xr_from_tracker`` (4, 4) mm and its RMS residual (mm; NaN
    when not measured).

    Client -> render node: use this registration for my session from now on. The render
    node answers with the registration it now holds (the same message), or a ``Reply``
    error. Rigid (checked on decode): a registration is a pose, never a scale or shear.
    """

    TYPE: ClassVar[str] = "XrRegistration"
    T_xr_from_tracker: FloatArray
    rms_mm: float

    def to_body(self) -> dict[str, Any]:
        return {
            "T_xr_from_tracker": encode_array(np.asarray(self.T_xr_from_tracker, np.float64)),
            "rms_mm": float(self.rms_mm),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> XrRegistration:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(_rigid_field(body, "T_xr_from_tracker"), _rms_field(body, "rms_mm"))


@dataclass(frozen=True)
class ClockPing:
    """Clock sync request: the client's monotonic clock at send, ns."""

    TYPE: ClassVar[str] = "ClockPing"
    t_client_ns: int

    def to_body(self) -> dict[str, Any]:
        return {"t_client_ns": int(self.t_client_ns)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClockPing:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(_time_ns(body, "t_client_ns"))


@dataclass(frozen=True)
class ClockPong:
    """Clock sync answer: the ping's client time echoed and the server clock at reply, ns."""

    TYPE: ClassVar[str] = "ClockPong"
    t_client_ns: int
    t_server_ns: int

    def to_body(self) -> dict[str, Any]:
        return {"t_client_ns": int(self.t_client_ns), "t_server_ns": int(self.t_server_ns)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ClockPong:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(_time_ns(body, "t_client_ns"), _time_ns(body, "t_server_ns"))


@dataclass(frozen=True)
class AssetRequest:
    """Fetch one asset by the SHA-256 (hex) of its bytes."""

    TYPE: ClassVar[str] = "AssetRequest"
    sha256: str

    def to_body(self) -> dict[str, Any]:
        return {"sha256": self.sha256}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AssetRequest:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls(_name(body, "sha256", _SHA256))


@dataclass(frozen=True, eq=False)
class AssetData:
    """One asset's bytes (binary glTF, ``model/gltf-binary``, or the CT brick of
    ``VolumeInfo``: gzip); decode checks the hash.

    Larger than any bus message: decode with ``max_bytes=MAX_ASSET_BYTES + 4096``.
    """

    TYPE: ClassVar[str] = "AssetData"
    sha256: str
    name: str
    data: bytes = field(repr=False)

    def to_body(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "name": self.name, "data": bytes(self.data)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> AssetData:
        _check_fields(body, field_names(cls), cls.TYPE)
        sha = _name(body, "sha256", _SHA256)
        data: bytes = _get(body, "data", bytes)
        if len(data) > MAX_ASSET_BYTES:
            raise MessageError("oversized", f"asset of {len(data)} bytes > {MAX_ASSET_BYTES}")
        if hashlib.sha256(data).hexdigest() != sha:
            raise MessageError("invalid", "asset bytes do not match their sha256")
        return cls(sha, _name(body, "name", _STRUCTURE_NAME), data)


@dataclass(frozen=True)
class SnapshotRequest:
    """Ask for the newest ``SceneUpdate`` (on connect and after a reconnect)."""

    TYPE: ClassVar[str] = "SnapshotRequest"

    def to_body(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SnapshotRequest:
        _check_fields(body, field_names(cls), cls.TYPE)
        return cls()


@dataclass(frozen=True, eq=False)
class HeadsetTelemetry:
    """What a headset client measured, batched; republished on ``headset/telemetry``.

    Per displayed update k: ``frame_numbers[k]``, ``t_sensor_ns[k]`` (server clock),
    ``t_receive_ns[k]`` and ``t_display_ns[k]`` (client clock). ``clock_offset_ns``: the
    client's estimate of server minus client clock, so ``t_receive_ns + clock_offset_ns -
    t_sensor_ns`` is the tracker-sample-to-headset latency.
    """

    TYPE: ClassVar[str] = "HeadsetTelemetry"
    client: str
    clock_offset_ns: int
    frame_numbers: npt.NDArray[np.int64]
    t_sensor_ns: npt.NDArray[np.int64]
    t_receive_ns: npt.NDArray[np.int64]
    t_display_ns: npt.NDArray[np.int64]

    def to_body(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "clock_offset_ns": int(self.clock_offset_ns),
            "frame_numbers": encode_array(np.asarray(self.frame_numbers, np.int64)),
            "t_sensor_ns": encode_array(np.asarray(self.t_sensor_ns, np.int64)),
            "t_receive_ns": encode_array(np.asarray(self.t_receive_ns, np.int64)),
            "t_display_ns": encode_array(np.asarray(self.t_display_ns, np.int64)),
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> HeadsetTelemetry:
        _check_fields(body, field_names(cls), cls.TYPE)
        frames = decode_array(body, "frame_numbers", dtype="<i8", shape=(None,))
        n = len(frames)
        if n > MAX_TELEMETRY_SAMPLES:
            raise MessageError("invalid", f"{n} telemetry samples > {MAX_TELEMETRY_SAMPLES}")
        offset = _get(body, "clock_offset_ns", int)
        if not -(1 << 62) < offset < 1 << 62:
            raise MessageError("invalid", "clock_offset_ns out of range")
        return cls(
            client=_name(body, "client", _CLIENT_NAME),
            clock_offset_ns=offset,
            frame_numbers=frames,
            t_sensor_ns=decode_array(body, "t_sensor_ns", dtype="<i8", shape=(n,)),
            t_receive_ns=decode_array(body, "t_receive_ns", dtype="<i8", shape=(n,)),
            t_display_ns=decode_array(body, "t_display_ns", dtype="<i8", shape=(n,)),
        )

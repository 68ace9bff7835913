"""Recordings into arrays: an ornav MCAP session or a PLUS sequence file -> ``Session``.

One pass, streaming: a recording of an hour never sits in memory as messages, only as the
arrays the report needs. What could not be read is kept, not raised: a cut-off or corrupt
recording gives a ``Session`` with ``partial`` set and its ``problems`` (one line each),
so what was readable is still reported. A message that does not decode (a recording of an
older schema, a corrupt payload) is counted per type in ``undecodable`` and skipped.

Clocks (ornav recordings, ``nav/runtime/recording.py``): ``t_sensor_ns``, ``t_pub_ns`` and
the receive time recovered from ``log_time`` are all the host's monotonic clock, so their
differences are the hop latencies. Session time 0 is the first tracker sample's
``t_sensor_ns`` (the first navigation state's when there is none).

PLUS files: tool poses are ``<Tool>ToTracker`` transforms; a nearly rigid matrix is
projected to the nearest rotation as the bus would (``nav.transforms.nearest_rigids``,
counted with its largest deviation), and one that is clearly not a pose (deviation over
``MAX_PROJECTED_DEVIATION``) counts as not tracked. Time is PLUS's ``Timestamp``.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nav.messages import (
    MessageError,
    NavState,
    RegistrationResult,
    ToolStatus,
    TrackerFrame,
    decode,
)
from nav.messages.headset import Alert, HeadsetTelemetry, SceneUpdate
from nav.runtime.recording import RecordingError, damage_report, iter_recording
from nav.transforms import MAX_PROJECTED_DEVIATION, nearest_rigids
from tracking.plus_sequence import PlusSequenceError, open_plus_sequence, plus_tool_name

LAUNCH_METADATA = "ornav.launch"  # nav.runtime.recorder_node.LAUNCH_METADATA
RECORDING_METADATA = "ornav.recording"
PLUS_SUFFIXES = (".mha", ".mhd", ".nrrd", ".seq.nrrd")


class SourceError(ValueError):
    """A file that cannot be read at all (missing, not a recording); ``str`` is one line."""


class _Growing:
    """Append-only columns of one kind of sample, turned into arrays at the end."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {}

    def add(self, **values: Any) -> None:
        for key, value in values.items():
            self.columns.setdefault(key, []).append(value)

    def array(self, key: str, dtype: npt.DTypeLike, shape: tuple[int, ...] = ()) -> np.ndarray:
        rows = self.columns.get(key, [])
        if not rows:
            return np.zeros((0, *shape), dtype=dtype)
        return np.asarray(rows, dtype=dtype).reshape(len(rows), *shape)


@dataclass
class ToolTrack:
    """One tool's samples: ``t_sensor_ns`` (N,), ``ok`` (N,), ``T_tracker_from_tool``
    (N, 4, 4) mm (NaN where not ok), ``frame_index`` (N,) into ``Session.frames``."""

    t_sensor_ns: npt.NDArray[np.int64]
    ok: npt.NDArray[np.bool_]
    T_tracker_from_tool: npt.NDArray[np.float64]
    frame_index: npt.NDArray[np.int64]


@dataclass
class Session:
    """Everything of one recording that the report uses (see the module docstring)."""

    path: Path
    kind: str  # "ornav" or "plus"
    t0_ns: int = 0
    wall_start: datetime | None = None
    partial: bool = False
    problems: list[str] = field(default_factory=list)
    messages: int = 0
    undecodable: dict[str, int] = field(default_factory=dict)
    launch_toml: str = ""
    launch_path: str = ""
    # tracker frames: t_sensor_ns, t_pub_ns, t_recv_ns (F,); the tools' tracks
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    tools: dict[str, ToolTrack] = field(default_factory=dict)
    nav: dict[str, Any] = field(default_factory=dict)
    scene: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, np.ndarray] = field(default_factory=dict)
    registrations: list[tuple[int, RegistrationResult]] = field(default_factory=list)
    alerts: list[tuple[int, Alert]] = field(default_factory=list)
    plus: dict[str, Any] = field(default_factory=dict)

    def seconds(self, t_ns: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Session seconds of monotonic (or PLUS) times in ns."""
        return (np.asarray(t_ns, dtype=np.int64) - self.t0_ns) / 1e9

    @property
    def duration_s(self) -> float:
        t = self.frames.get("t_sensor_ns")
        return float(self.seconds(t[-1])) if t is not None and len(t) else 0.0

    def launch_params(self, role_module: str) -> dict[str, Any]:
        """The params of the launch file's first node running ``role_module`` ({} if none)."""
        if not self.launch_toml:
            return {}
        try:
            document = tomllib.loads(self.launch_toml)
        except tomllib.TOMLDecodeError:
            return {}
        for node in (document.get("nodes") or {}).values():
            if isinstance(node, dict) and node.get("module") == role_module:
                params = node.get("params", {})
                return params if isinstance(params, dict) else {}
        return {}


def is_plus_file(path: Path) -> bool:
    return path.name.lower().endswith(PLUS_SUFFIXES)


def read_session(path: str | Path) -> Session:
    """Read a recording (ornav MCAP or PLUS sequence, told by name); see the module doc."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    return _read_plus(path) if is_plus_file(path) else _read_ornav(path)


# --- ornav MCAP ------------------------------------------------------------------------


class _ToolColumns:
    def __init__(self) -> None:
        self.t: list[int] = []
        self.ok: list[bool] = []
        self.T: list[np.ndarray] = []
        self.frame: list[int] = []

    def track(self) -> ToolTrack:
        return ToolTrack(
            np.asarray(self.t, dtype=np.int64),
            np.asarray(self.ok, dtype=bool),
            np.asarray(self.T, dtype=np.float64).reshape(-1, 4, 4),
            np.asarray(self.frame, dtype=np.int64),
        )


_NAN44 = np.full((4, 4), np.nan)


def _read_ornav(path: Path) -> Session:
    session = Session(path=path, kind="ornav")
    try:
        reader = iter_recording(path)
    except RecordingError as error:
        raise SourceError(str(error)) from None
    frames, nav, scene, telemetry = _Growing(), _Growing(), _Growing(), _Growing()
    tools: dict[str, _ToolColumns] = {}
    undecodable: Counter[str] = Counter()
    offset_ns: int | None = None
    with reader:
        for recorded in reader:
            session.messages += 1
            if offset_ns is None:
                offset_ns = _monotonic_offset(reader.metadata)
            try:
                envelope = decode(recorded.payload)
            except MessageError:
                undecodable[recorded.schema_name.removeprefix("ornav.")] += 1
                continue
            message = envelope.message
            t_recv = recorded.log_time_ns - (offset_ns or 0)
            if isinstance(message, TrackerFrame):
                k = len(frames.columns.get("t_sensor_ns", []))
                frames.add(
                    t_sensor_ns=message.t_sensor_ns, t_pub_ns=envelope.t_pub_ns, t_recv_ns=t_recv
                )
                for i, name in enumerate(message.tools):
                    columns = tools.setdefault(name, _ToolColumns())
                    ok = message.statuses[i] is ToolStatus.OK
                    columns.t.append(message.t_sensor_ns)
                    columns.ok.append(ok)
                    columns.T.append(message.T_tracker_from_tools[i] if ok else _NAN44)
                    columns.frame.append(k)
            elif isinstance(message, NavState):
                nav.add(
                    t_sensor_ns=message.t_sensor_ns,
                    t_pub_ns=envelope.t_pub_ns,
                    status=message.status.value,
                    registration_id=message.registration_id,
                    needs_verification=message.needs_verification,
                    p_tip_image=message.p_tip_image,
                    predicted_tre_mm=message.predicted_tre_mm,
                )
                session.nav.setdefault("target_names", message.target_names)
                if message.target_names == session.nav["target_names"]:
                    nav.add(target_distances_mm=message.target_distances_mm)
                else:  # the case changed mid-session: distances to other targets
                    nav.add(target_distances_mm=np.full(len(session.nav["target_names"]), np.nan))
            elif isinstance(message, SceneUpdate):
                scene.add(
                    t_sensor_ns=message.t_sensor_ns,
                    t_pub_ns=envelope.t_pub_ns,
                    overlay=message.overlay.value,
                    status=message.status.value,
                    age_ms=message.age_ms,
                )
            elif isinstance(message, HeadsetTelemetry):
                n = len(message.frame_numbers)
                telemetry.add(
                    client=[message.client] * n,
                    t_sensor_ns=message.t_sensor_ns,
                    t_receive_ns=message.t_receive_ns + message.clock_offset_ns,
                    t_display_ns=message.t_display_ns + message.clock_offset_ns,
                )
            elif isinstance(message, RegistrationResult):
                session.registrations.append((t_recv, message))
            elif isinstance(message, Alert):
                session.alerts.append((t_recv, message))
        session.partial = bool(reader.truncated or reader.corrupt_chunks or reader.lost_messages)
        if session.partial:
            session.problems.append(damage_report(reader))
        launch = reader.notes.get(LAUNCH_METADATA, {})
        session.launch_toml = launch.get("toml", "")
        session.launch_path = launch.get("path", "")
        wall = reader.metadata.get("wall_ns_at_open")
    session.undecodable = dict(undecodable)
    for count_name, count in sorted(undecodable.items()):
        session.problems.append(f"{count} {count_name} message(s) did not decode: skipped")
    session.frames = {
        "t_sensor_ns": frames.array("t_sensor_ns", np.int64),
        "t_pub_ns": frames.array("t_pub_ns", np.int64),
        "t_recv_ns": frames.array("t_recv_ns", np.int64),
    }
    session.tools = {name: columns.track() for name, columns in sorted(tools.items())}
    if nav.columns:
        session.nav |= {
            "t_sensor_ns": nav.array("t_sensor_ns", np.int64),
            "t_pub_ns": nav.array("t_pub_ns", np.int64),
            "status": list(nav.columns["status"]),
            "registration_id": nav.array("registration_id", np.int64),
            "needs_verification": nav.array("needs_verification", bool),
            "p_tip_image": nav.array("p_tip_image", np.float64, (3,)),
            "predicted_tre_mm": nav.array("predicted_tre_mm", np.float64),
            "target_distances_mm": nav.array(
                "target_distances_mm", np.float64, (len(session.nav["target_names"]),)
            ),
        }
    if scene.columns:
        session.scene = {
            "t_sensor_ns": scene.array("t_sensor_ns", np.int64),
            "t_pub_ns": scene.array("t_pub_ns", np.int64),
            "overlay": list(scene.columns["overlay"]),
            "status": list(scene.columns["status"]),
            "age_ms": scene.array("age_ms", np.float64),
        }
    if telemetry.columns:
        session.telemetry = {
            key: np.concatenate([np.asarray(v) for v in telemetry.columns[key]])
            for key in ("t_sensor_ns", "t_receive_ns", "t_display_ns")
        }
        session.telemetry["client"] = np.concatenate(
            [np.asarray(v) for v in telemetry.columns["client"]]
        )
    t = session.frames["t_sensor_ns"]
    # Session time 0: the first tracker sample; without one, the first navigation state.
    if len(t):
        session.t0_ns = int(t[0])
    elif session.nav:
        session.t0_ns = int(session.nav["t_sensor_ns"][0])
    if wall and wall.isdigit():
        session.wall_start = datetime.fromtimestamp(int(wall) / 1e9, tz=UTC)
    return session


def _monotonic_offset(metadata: dict[str, str]) -> int | None:
    """``log_time - this`` is the host monotonic receive time (recording.py, Clocks)."""
    wall, mono = metadata.get("wall_ns_at_open", ""), metadata.get("monotonic_ns_at_open", "")
    if wall.isdigit() and mono.isdigit():
        return int(wall) - int(mono)
    return None


# --- PLUS sequence files ---------------------------------------------------------------


def _read_plus(path: Path) -> Session:
    session = Session(path=path, kind="plus")
    try:
        reader = open_plus_sequence(path, log_problems=False)
    except (PlusSequenceError, OSError) as error:
        raise SourceError(str(error).splitlines()[0]) from None
    times: list[int] = []
    unfiltered: list[float] = []
    frame_numbers: list[int] = []
    columns: dict[str, tuple[list[int], list[np.ndarray], list[str]]] = {}
    with reader:
        try:
            for frame in reader:
                k = len(times)
                times.append(frame.timestamp_ns)
                if frame.unfiltered_timestamp_ns is not None and frame.frame_number is not None:
                    unfiltered.append(frame.unfiltered_timestamp_ns / 1e9)
                    frame_numbers.append(frame.frame_number)
                for name, T in frame.transforms.items():
                    if not name.endswith("ToTracker"):
                        continue
                    index, matrices, statuses = columns.setdefault(name, ([], [], []))
                    index.append(k)
                    matrices.append(T)
                    statuses.append(frame.statuses.get(name, "MISSING"))
        except PlusSequenceError as error:
            session.partial = True
            session.problems.append(str(error).splitlines()[0])
        session.problems += reader.problems
        if reader.skipped:
            session.problems.append(f"{reader.skipped} broken frame(s) left out")
    t = np.asarray(times, dtype=np.int64)
    session.t0_ns = int(t[0]) if len(t) else 0
    session.messages = len(t)
    session.frames = {"t_sensor_ns": t, "t_pub_ns": t, "t_recv_ns": t}
    projected = refused = 0
    max_deviation = 0.0
    for name, (index, matrices, statuses) in sorted(columns.items()):
        idx = np.asarray(index, dtype=np.int64)
        stack = np.asarray(matrices, dtype=np.float64).reshape(-1, 4, 4)
        ok = np.array([s == "OK" for s in statuses], dtype=bool)
        rigid, deviation = nearest_rigids(stack)
        keep = deviation <= MAX_PROJECTED_DEVIATION
        projected += int(np.count_nonzero(ok & keep & (deviation > 0)))
        refused += int(np.count_nonzero(ok & ~keep))
        if np.any(ok & keep):
            max_deviation = max(max_deviation, float(deviation[ok & keep].max()))
        ok &= keep
        rigid[~ok] = np.nan
        try:
            tool = plus_tool_name(name.removesuffix("ToTracker"))
        except PlusSequenceError as error:
            session.problems.append(str(error))
            continue
        session.tools[tool] = ToolTrack(t[idx], ok, rigid, idx)
    session.plus = {
        "projected": projected,
        "refused_not_rigid": refused,
        "max_projected_deviation": max_deviation,
        "frame_numbers": np.asarray(frame_numbers, dtype=np.int64),
        "unfiltered_s": np.asarray(unfiltered, dtype=np.float64),
        "filtered_s": t[: len(unfiltered)] / 1e9 if len(unfiltered) == len(t) else None,
    }
    return session

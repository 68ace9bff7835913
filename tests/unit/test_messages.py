"""Tests for nav.messages: bit-exact round trips, and strict refusal of every bad payload.

Property tests are derandomised (the same examples every run). Matrices inside tracker
frames come from a numpy generator seeded by hypothesis, which keeps a 64-tool example
inside hypothesis's data budget. Refusal tests build payloads by hand with msgpack, so
they exercise exactly what a hostile or buggy peer could put on the wire.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nav.frames import TOOL_NAME_PATTERN
from nav.messages import (
    MAX_PAYLOAD_BYTES,
    MAX_TOOLS_PER_FRAME,
    SCHEMA_VERSION,
    Command,
    Envelope,
    Heartbeat,
    Message,
    MessageError,
    NavState,
    NavStatus,
    RegistrationResult,
    Reply,
    ToolPose,
    ToolStatus,
    TrackerFrame,
    decode,
    encode,
    peek_type,
)
from nav.transforms import pose_from_quat

seeded = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NOT_OK = [s for s in ToolStatus if s is not ToolStatus.OK]
Raw = dict[str, Any]

# --- strategies ----------------------------------------------------------------------

tool_names = st.from_regex(TOOL_NAME_PATTERN, fullmatch=True)
node_names = st.from_regex(r"\A[a-z][a-z0-9_]{0,31}\Z", fullmatch=True)
time_ns = st.integers(0, (1 << 63) - 1)
seqs = st.integers(0, (1 << 64) - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
fits_mm = st.floats(0.0, 1e3)


def random_rigid(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """A rigid transform with a uniform random rotation and a translation up to ~1e6 mm."""
    q = rng.normal(size=4)
    while np.linalg.norm(q) < 1e-3:
        q = rng.normal(size=4)
    t = rng.normal(size=3) * 10.0 ** rng.uniform(-3, 6)
    return pose_from_quat(q / np.linalg.norm(q), t)


def random_garbage_matrix(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Any finite 4x4: what a non-OK tool may carry (never drawn, only recorded)."""
    specials = np.array([0.0, -0.0, 1.0, 5e-324, 1e308, -1e308, 2.2e-308])
    T = rng.normal(size=(4, 4)) * 10.0 ** rng.uniform(-300, 300, size=(4, 4))
    mask = rng.random((4, 4)) < 0.2
    T[mask] = rng.choice(specials, size=int(mask.sum()))
    return T


@st.composite
def tool_entries(draw: st.DrawFn) -> tuple[ToolStatus, npt.NDArray[np.float64], float]:
    status = draw(st.sampled_from(ToolStatus))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if status is ToolStatus.OK:
        return status, random_rigid(rng), draw(fits_mm)
    kind = draw(st.sampled_from(["identity", "rigid", "garbage"]))
    T = {"identity": np.eye(4), "rigid": random_rigid(rng), "garbage": random_garbage_matrix(rng)}
    return status, T[kind], draw(st.one_of(st.just(math.nan), fits_mm))


@st.composite
def tracker_frames(draw: st.DrawFn, max_tools: int = MAX_TOOLS_PER_FRAME) -> TrackerFrame:
    n = draw(st.integers(1, max_tools))
    tools = draw(st.lists(tool_names, min_size=n, max_size=n, unique=True))
    entries = draw(st.lists(tool_entries(), min_size=n, max_size=n))
    return TrackerFrame(
        tracker=draw(tool_names),
        t_sensor_ns=draw(time_ns),
        frame_number=draw(time_ns),
        tools=tuple(tools),
        T_tracker_from_tools=np.stack([T for _, T, _ in entries]),
        statuses=tuple(status for status, _, _ in entries),
        fit_errors_mm=np.array([fit for _, _, fit in entries]),
    )


@st.composite
def tool_poses(draw: st.DrawFn) -> ToolPose:
    status, T, fit = draw(tool_entries())
    return ToolPose(draw(tool_names), T, draw(time_ns), status, fit)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    finite,
    st.text(max_size=20),
)


def json_values(depth: int) -> st.SearchStrategy[Any]:
    """JSON-like values nested at most ``depth`` containers deep (the decoder allows 8)."""
    if depth == 0:
        return json_scalars
    inner = json_values(depth - 1)
    return st.one_of(
        json_scalars,
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=10), inner, max_size=4),
    )


json_objects = st.dictionaries(st.text(max_size=10), json_values(3), max_size=5)

heartbeats = st.builds(
    Heartbeat,
    node=node_names,
    pid=st.integers(0, 1 << 31),
    state=node_names,
    uptime_s=finite,
    counters=st.dictionaries(
        st.text(max_size=64), st.integers(-(1 << 63), (1 << 63) - 1), max_size=20
    ),
    rates_hz=st.dictionaries(st.text(max_size=64), finite, max_size=20),
    latency_ms=st.dictionaries(st.text(max_size=64), finite, max_size=5),
)
commands = st.builds(
    Command,
    name=st.from_regex(r"\A[a-z][a-z0-9_.]{0,63}\Z", fullmatch=True),
    args=json_objects,
)
replies = st.builds(Reply, ok=st.booleans(), result=json_objects, error=st.text(max_size=200))


# --- helpers -------------------------------------------------------------------------


def same_json(a: Any, b: Any) -> bool:
    """Equal with the same Python types throughout (so True != 1 and 1 != 1.0), NaN == NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a.hex() == b.hex() if not math.isnan(a) else math.isnan(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return bool(a == b)


def same_bits(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def round_trip(message: Message, seq: int, t_pub_ns: int) -> Envelope:
    envelope = decode(encode(message, seq=seq, t_pub_ns=t_pub_ns))
    assert envelope.seq == seq
    assert envelope.t_pub_ns == t_pub_ns
    assert envelope.type_name == message.TYPE
    assert type(envelope.message) is type(message)
    return envelope


def rigid(angle_rad: float = 0.3, t: tuple[float, float, float] = (10.0, -20.0, 300.0)) -> Any:
    half = angle_rad / 2
    return pose_from_quat([math.cos(half), 0.0, math.sin(half), 0.0], t)


def valid_frame(n: int = 3) -> TrackerFrame:
    statuses = [ToolStatus.OK, ToolStatus.MISSING, ToolStatus.OUT_OF_VIEW] * n
    fits = [0.12, math.nan, math.nan] * n
    return TrackerFrame(
        tracker="sim",
        t_sensor_ns=123_456_789,
        frame_number=42,
        tools=tuple(f"tool{i}" for i in range(n)),
        T_tracker_from_tools=np.stack([rigid(0.1 * i) for i in range(n)]),
        statuses=tuple(statuses[:n]),
        fit_errors_mm=np.array(fits[:n]),
    )


def valid_pose() -> ToolPose:
    return ToolPose("pointer", rigid(), 5_000, ToolStatus.OK, 0.2)


SAMPLES: dict[str, Message] = {
    "ToolPose": valid_pose(),
    "TrackerFrame": valid_frame(),
    "Heartbeat": Heartbeat("tracker", 1234, "running", 1.5, {"published": 3}, {"published": 2.0}),
    "Command": Command("ping", {"verbose": True}),
    "Reply": Reply(ok=True, result={"node": "tracker"}),
}


def raw_of(message: Message) -> Raw:
    """The payload of ``message`` as a plain msgpack map, ready to be tampered with."""
    raw: Raw = msgpack.unpackb(encode(message, seq=7, t_pub_ns=99), raw=False)
    return raw


def pack(raw: Any) -> bytes:
    return msgpack.packb(raw, use_bin_type=True)


def refusal(payload: bytes, **kwargs: Any) -> str:
    """The ``MessageError.kind`` that ``decode`` raises; fails if it accepts the payload."""
    with pytest.raises(MessageError) as info:
        decode(payload, **kwargs)
    return info.value.kind


def decodes_or_refuses(payload: bytes) -> None:
    """``decode`` either returns an Envelope or raises MessageError: nothing else escapes."""
    try:
        envelope = decode(payload)
    except MessageError as error:
        assert error.kind in MessageError.KINDS
    else:
        assert isinstance(envelope, Envelope)


# --- round trips ---------------------------------------------------------------------


@seeded
# Up to 8 tools: the codec treats every tool alike, and the 64-tool limit has its own test
# below (64 drew 64 unique names per example: 3.5 s for nothing more).
@given(tracker_frames(max_tools=8), seqs, time_ns)
def test_tracker_frame_round_trips_bit_exact(frame: TrackerFrame, seq: int, t: int) -> None:
    decoded = round_trip(frame, seq, t).message
    assert isinstance(decoded, TrackerFrame)
    assert decoded.tracker == frame.tracker
    assert decoded.t_sensor_ns == frame.t_sensor_ns
    assert decoded.frame_number == frame.frame_number
    assert decoded.tools == frame.tools
    assert decoded.statuses == frame.statuses
    assert same_bits(decoded.T_tracker_from_tools, frame.T_tracker_from_tools)
    assert same_bits(decoded.fit_errors_mm, frame.fit_errors_mm)
    # Decoded arrays alias the payload bytes: nobody downstream may edit a received pose.
    assert not decoded.T_tracker_from_tools.flags.writeable


@seeded
@given(tool_poses(), seqs, time_ns)
def test_tool_pose_round_trips_bit_exact(pose: ToolPose, seq: int, t: int) -> None:
    decoded = round_trip(pose, seq, t).message
    assert isinstance(decoded, ToolPose)
    assert decoded.tool == pose.tool
    assert decoded.t_sensor_ns == pose.t_sensor_ns
    assert decoded.status is pose.status
    assert same_json(decoded.fit_error_mm, pose.fit_error_mm)
    assert same_bits(decoded.T_tracker_from_tool, pose.T_tracker_from_tool)


@seeded
@given(heartbeats, seqs, time_ns)
def test_heartbeat_round_trips_with_types_kept(heartbeat: Heartbeat, seq: int, t: int) -> None:
    decoded = round_trip(heartbeat, seq, t).message
    assert isinstance(decoded, Heartbeat)
    assert decoded == heartbeat
    assert same_json(decoded.counters, heartbeat.counters)
    assert same_json(decoded.rates_hz, heartbeat.rates_hz)
    assert same_json(decoded.latency_ms, heartbeat.latency_ms)
    assert same_json(decoded.uptime_s, heartbeat.uptime_s)


@seeded
@given(commands, seqs, time_ns)
def test_command_round_trips_nested_json_args(command: Command, seq: int, t: int) -> None:
    decoded = round_trip(command, seq, t).message
    assert isinstance(decoded, Command)
    assert decoded.name == command.name
    assert same_json(decoded.args, command.args)


@seeded
@given(replies, seqs, time_ns)
def test_reply_round_trips_result_and_error(reply: Reply, seq: int, t: int) -> None:
    decoded = round_trip(reply, seq, t).message
    assert isinstance(decoded, Reply)
    assert decoded.ok is reply.ok
    assert decoded.error == reply.error
    assert same_json(decoded.result, reply.result)


def test_frame_with_max_tools_is_accepted_and_one_more_is_refused() -> None:
    decoded = round_trip(valid_frame(MAX_TOOLS_PER_FRAME), 0, 0).message
    assert isinstance(decoded, TrackerFrame)
    assert len(decoded.tools) == MAX_TOOLS_PER_FRAME
    assert refusal(encode(valid_frame(MAX_TOOLS_PER_FRAME + 1), seq=0, t_pub_ns=0)) == "invalid"


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_peek_type_names_the_type_without_validating(type_name: str) -> None:
    raw = raw_of(SAMPLES[type_name])
    raw["body"] = {"anything": "goes"}
    assert peek_type(pack(raw)) == type_name
    assert peek_type(b"\xc1") == ""
    assert peek_type(pack({"type": "Bogus"})) == ""


# --- TrackerFrame.pose / poses -------------------------------------------------------


@settings(seeded, max_examples=60)
@given(tracker_frames(max_tools=16))
def test_frame_pose_and_poses_agree_with_the_arrays(frame: TrackerFrame) -> None:
    decoded = round_trip(frame, 0, 0).message
    assert isinstance(decoded, TrackerFrame)
    poses = decoded.poses()
    assert [p.tool for p in poses] == list(decoded.tools)
    for i, tool in enumerate(decoded.tools):
        pose = decoded.pose(tool)
        assert pose.tool == tool
        assert pose.status is decoded.statuses[i]
        assert pose.t_sensor_ns == decoded.t_sensor_ns
        assert same_bits(pose.T_tracker_from_tool, decoded.T_tracker_from_tools[i])
        assert same_json(pose.fit_error_mm, float(decoded.fit_errors_mm[i]))
        assert same_bits(poses[i].T_tracker_from_tool, pose.T_tracker_from_tool)
    with pytest.raises(KeyError):
        decoded.pose("not_in_this_frame")


# --- refusals: size, framing, msgpack ------------------------------------------------


def test_payload_over_the_size_limit_is_refused_as_oversized() -> None:
    payload = encode(valid_frame(), seq=0, t_pub_ns=0)
    assert decode(payload, max_bytes=len(payload)).seq == 0
    assert refusal(payload, max_bytes=len(payload) - 1) == "oversized"
    assert refusal(b"\x80" * (MAX_PAYLOAD_BYTES + 1)) == "oversized"


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_every_truncation_of_a_valid_payload_is_refused_as_malformed(type_name: str) -> None:
    payload = encode(SAMPLES[type_name], seq=3, t_pub_ns=4)
    assert decode(payload).seq == 3
    for n in range(len(payload)):
        assert refusal(payload[:n]) == "malformed", n


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xc1", id="reserved-msgpack-byte"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="text"),
        pytest.param(encode(valid_pose(), seq=0, t_pub_ns=0) + b"\x00", id="trailing-bytes"),
        pytest.param(pack([1, 2, 3]), id="array"),
        pytest.param(pack(1), id="int"),
        pytest.param(pack("ToolPose"), id="str"),
        pytest.param(pack(None), id="nil"),
        pytest.param(pack(b"\x85\xa1v\x01"), id="bin"),
        pytest.param(pack({1: 2}), id="int-keys"),
        pytest.param(b"\x91" * 100_000 + b"\x01", id="nested-beyond-msgpack-stack"),
    ],
)
def test_non_msgpack_or_non_map_payload_is_refused_as_malformed(payload: bytes) -> None:
    assert refusal(payload) == "malformed"


@settings(seeded, max_examples=1000)
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_message_error(payload: bytes) -> None:
    decodes_or_refuses(payload)


@settings(seeded, max_examples=1000)
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_corrupted_valid_payloads_only_ever_raise_message_error(
    type_name: str, edits: list[tuple[int, int]]
) -> None:
    payload = bytearray(encode(SAMPLES[type_name], seq=1, t_pub_ns=2))
    for position, value in edits:
        payload[position % len(payload)] = value
    decodes_or_refuses(bytes(payload))


# Anything msgpack can carry, including what JSON cannot (bytes, NaN, uint64, non-str keys).
wire_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(1 << 63), (1 << 64) - 1),
        st.floats(),
        st.text(max_size=10),
        st.binary(max_size=10),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.binary(max_size=4)), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(seeded, max_examples=500)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_any_wire_value_in_any_field_only_ever_raises_message_error(
    type_name: str, data: st.DataObject
) -> None:
    raw = raw_of(SAMPLES[type_name])
    where = data.draw(st.sampled_from(["envelope", "body", "array"]))
    target = raw if where == "envelope" else raw["body"]
    if where == "array":
        arrays = [v for v in raw["body"].values() if isinstance(v, dict) and "dtype" in v]
        target = data.draw(st.sampled_from(arrays)) if arrays else raw["body"]
    key = data.draw(st.one_of(st.sampled_from(sorted(target)), st.text(max_size=8)))
    target[key] = data.draw(wire_values)
    decodes_or_refuses(pack(raw))


# --- refusals: envelope --------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [SCHEMA_VERSION + 1, 0, -1, True, float(SCHEMA_VERSION), str(SCHEMA_VERSION), None, [1]],
    ids=repr,
)
def test_wrong_schema_version_is_refused_as_version(version: Any) -> None:
    raw = raw_of(valid_pose())
    raw["v"] = version
    assert refusal(pack(raw)) == "version"


def test_missing_schema_version_is_refused_as_version() -> None:
    raw = raw_of(valid_pose())
    del raw["v"]
    assert refusal(pack(raw)) == "version"


@pytest.mark.parametrize("type_name", ["Bogus", "toolpose", "ToolPose ", "", "Envelope"])
def test_unknown_type_is_refused_as_unknown_type(type_name: str) -> None:
    raw = raw_of(valid_pose())
    raw["type"] = type_name
    assert refusal(pack(raw)) == "unknown_type"


def _set(container: str, key: str, value: Any) -> Callable[[Raw], None]:
    def edit(raw: Raw) -> None:
        target = raw if container == "envelope" else raw["body"]
        target[key] = value

    return edit


def _drop(key: str) -> Callable[[Raw], None]:
    def edit(raw: Raw) -> None:
        del raw[key]

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_drop("type"), id="missing-type"),
        pytest.param(_drop("seq"), id="missing-seq"),
        pytest.param(_drop("t_pub_ns"), id="missing-t_pub_ns"),
        pytest.param(_drop("body"), id="missing-body"),
        pytest.param(_set("envelope", "extra", 1), id="extra-envelope-field"),
        pytest.param(_set("envelope", "type", 5), id="type-not-str"),
        pytest.param(_set("envelope", "seq", -1), id="negative-seq"),
        pytest.param(_set("envelope", "seq", True), id="bool-seq"),
        pytest.param(_set("envelope", "seq", 1.0), id="float-seq"),
        pytest.param(_set("envelope", "t_pub_ns", -5), id="negative-t_pub_ns"),
        pytest.param(_set("envelope", "t_pub_ns", False), id="bool-t_pub_ns"),
        pytest.param(_set("envelope", "body", [1, 2]), id="body-not-map"),
    ],
)
def test_bad_envelope_is_refused_as_invalid(edit: Callable[[Raw], None]) -> None:
    raw = raw_of(valid_pose())
    edit(raw)
    assert refusal(pack(raw)) == "invalid"


# --- refusals: body fields -----------------------------------------------------------

FIELD_CASES = [(name, key) for name, message in SAMPLES.items() for key in message.to_body()]


@pytest.mark.parametrize(("type_name", "key"), FIELD_CASES)
def test_missing_field_is_refused_as_invalid(type_name: str, key: str) -> None:
    raw = raw_of(SAMPLES[type_name])
    del raw["body"][key]
    assert refusal(pack(raw)) == "invalid"


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_extra_field_is_refused_as_invalid(type_name: str) -> None:
    raw = raw_of(SAMPLES[type_name])
    raw["body"]["colour"] = "red"
    assert refusal(pack(raw)) == "invalid"


@pytest.mark.parametrize(
    ("type_name", "key", "value"),
    [
        ("TrackerFrame", "tracker", 7),
        ("TrackerFrame", "t_sensor_ns", 1.5),
        ("TrackerFrame", "t_sensor_ns", "123"),
        ("TrackerFrame", "t_sensor_ns", -1),
        ("TrackerFrame", "t_sensor_ns", 1 << 63),
        ("TrackerFrame", "frame_number", None),
        ("TrackerFrame", "tools", "tool0"),
        ("TrackerFrame", "tools", [b"tool0", b"tool1", b"tool2"]),
        ("TrackerFrame", "statuses", "OK"),
        ("TrackerFrame", "statuses", ["OK", "MISSING"]),
        ("TrackerFrame", "statuses", ["OK", "MISSING", "GOOD"]),
        ("TrackerFrame", "statuses", ["OK", "MISSING", ["OUT_OF_VIEW"]]),
        ("TrackerFrame", "T_tracker_from_tools", [[1.0, 0.0, 0.0, 0.0]] * 4),
        ("TrackerFrame", "fit_errors_mm", [0.1, 0.2, 0.3]),
        ("ToolPose", "tool", None),
        ("ToolPose", "status", 0),
        ("ToolPose", "status", "ok"),
        ("ToolPose", "fit_error_mm", "0.2"),
        ("ToolPose", "fit_error_mm", -0.1),
        ("ToolPose", "fit_error_mm", math.inf),
        ("Heartbeat", "pid", 12.0),
        ("Heartbeat", "state", "Running"),
        ("Heartbeat", "uptime_s", math.nan),
        ("Heartbeat", "counters", {"published": 1.5}),
        ("Heartbeat", "counters", [["published", 1]]),
        ("Heartbeat", "counters", {"x" * 65: 1}),
        ("Heartbeat", "counters", {f"c{i}": i for i in range(257)}),
        ("Heartbeat", "rates_hz", {"published": math.inf}),
        ("Heartbeat", "rates_hz", {"published": "fast"}),
        ("Command", "name", "Ping"),
        ("Command", "name", "ping\n"),
        ("Command", "args", [1, 2]),
        ("Command", "args", {"blob": b"\x00"}),
        ("Command", "args", {"x": math.nan}),
        ("Command", "args", {"x": [math.inf]}),
        ("Reply", "ok", 1),
        ("Reply", "ok", "yes"),
        ("Reply", "error", None),
        ("Reply", "result", {"nested": {"x": -math.inf}}),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_field_of_wrong_type_or_value_is_refused_as_invalid(
    type_name: str, key: str, value: Any
) -> None:
    raw = raw_of(SAMPLES[type_name])
    raw["body"][key] = value
    assert refusal(pack(raw)) == "invalid"


@pytest.mark.parametrize(
    ("type_name", "key"),
    [
        ("TrackerFrame", "t_sensor_ns"),
        ("TrackerFrame", "frame_number"),
        ("ToolPose", "t_sensor_ns"),
        ("ToolPose", "fit_error_mm"),
        ("Heartbeat", "pid"),
        ("Heartbeat", "uptime_s"),
    ],
)
@pytest.mark.parametrize("flag", [True, False])
def test_bool_where_a_number_belongs_is_refused_as_invalid(
    type_name: str, key: str, flag: bool
) -> None:
    raw = raw_of(SAMPLES[type_name])
    raw["body"][key] = flag
    assert refusal(pack(raw)) == "invalid"


@pytest.mark.parametrize("where", ["counters", "rates_hz", "latency_ms"])
def test_bool_inside_heartbeat_maps_is_refused_as_invalid(where: str) -> None:
    raw = raw_of(SAMPLES["Heartbeat"])
    raw["body"][where] = {"published": True}
    assert refusal(pack(raw)) == "invalid"


def test_deeply_nested_command_args_are_refused_without_recursion_error() -> None:
    raw = raw_of(Command("ping"))
    value: Any = 1
    for _ in range(200):
        value = [value]
    raw["body"]["args"] = {"deep": value}
    assert refusal(pack(raw)) == "invalid"


# --- refusals: names -----------------------------------------------------------------

BAD_NAMES = [
    "Pointer",  # uppercase
    "POINTER",
    "a" * 33,  # longer than a tool name may be
    "x" * 10_000,
    "pointer\n",  # $ would match before this newline; \Z does not
    "poi\nnter",
    "",
    "1pointer",
    "_pointer",
    "poi nter",
    "pointer-2",
    "pointér",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda s: repr(s)[:20])
def test_bad_tool_name_in_a_frame_is_refused_as_invalid(name: str) -> None:
    raw = raw_of(valid_frame(3))
    raw["body"]["tools"][1] = name
    assert refusal(pack(raw)) == "invalid"


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda s: repr(s)[:20])
def test_bad_tool_or_tracker_name_elsewhere_is_refused_as_invalid(name: str) -> None:
    pose = raw_of(valid_pose())
    pose["body"]["tool"] = name
    assert refusal(pack(pose)) == "invalid"
    frame = raw_of(valid_frame())
    frame["body"]["tracker"] = name
    assert refusal(pack(frame)) == "invalid"


def test_tool_name_ending_in_tip_is_refused_because_it_names_a_tip_frame() -> None:
    raw = raw_of(valid_frame(3))
    raw["body"]["tools"][1] = "pointer_tip"
    assert refusal(pack(raw)) == "invalid"
    pose = raw_of(valid_pose())
    pose["body"]["tool"] = "pointer_tip"
    assert refusal(pack(pose)) == "invalid"


def test_longest_valid_tool_name_is_accepted() -> None:
    raw = raw_of(valid_frame(3))
    raw["body"]["tools"][1] = "a" * 32
    frame = decode(pack(raw)).message
    assert isinstance(frame, TrackerFrame)
    assert frame.tools[1] == "a" * 32


def test_duplicate_tool_names_in_a_frame_are_refused_as_invalid() -> None:
    raw = raw_of(valid_frame(3))
    raw["body"]["tools"][2] = raw["body"]["tools"][0]
    assert refusal(pack(raw)) == "invalid"


# --- refusals: arrays ----------------------------------------------------------------


def _array_edit(raw: Raw, key: str, **changes: Any) -> None:
    raw["body"][key].update(changes)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"dtype": "<f4"}, id="f4"),
        pytest.param({"dtype": ">f8"}, id="big-endian"),
        pytest.param({"dtype": "<i8"}, id="int64"),
        pytest.param({"dtype": "|O"}, id="object"),
        pytest.param({"dtype": 8}, id="dtype-not-str"),
        pytest.param({"shape": [3, 4, 3]}, id="wrong-shape"),
        pytest.param({"shape": [2, 4, 4]}, id="shape-not-matching-tools"),
        pytest.param({"shape": [3, 16]}, id="wrong-rank"),
        pytest.param({"shape": [3, 4, True]}, id="bool-in-shape"),
        pytest.param({"shape": [-3, 4, 4]}, id="negative-shape"),
        pytest.param({"shape": (3, 4, 4.0)}, id="float-in-shape"),
        pytest.param({"data": "not bytes"}, id="data-not-bytes"),
        pytest.param({"extra": 1}, id="extra-key"),
    ],
)
def test_bad_matrix_array_is_refused_as_invalid(changes: dict[str, Any]) -> None:
    raw = raw_of(valid_frame(3))
    _array_edit(raw, "T_tracker_from_tools", **changes)
    assert refusal(pack(raw)) == "invalid"


@pytest.mark.parametrize("key", ["T_tracker_from_tools", "fit_errors_mm"])
@pytest.mark.parametrize("delta", [-8, -1, 1, 8])
def test_array_byte_count_not_matching_shape_is_refused_as_invalid(key: str, delta: int) -> None:
    raw = raw_of(valid_frame(3))
    data = raw["body"][key]["data"]
    raw["body"][key]["data"] = data[:delta] if delta < 0 else data + b"\x00" * delta
    assert refusal(pack(raw)) == "invalid"


def test_array_with_same_byte_count_but_f4_dtype_is_refused_as_invalid() -> None:
    raw = raw_of(valid_frame(3))
    raw["body"]["fit_errors_mm"] = {
        "dtype": "<f4",
        "shape": [6],  # 6 * 4 bytes == 3 * 8 bytes
        "data": raw["body"]["fit_errors_mm"]["data"],
    }
    assert refusal(pack(raw)) == "invalid"


def _frame_with(T: npt.NDArray[np.float64], status: ToolStatus, fit: float = 0.1) -> bytes:
    frame = valid_frame(3)
    Ts = np.array(frame.T_tracker_from_tools)
    Ts[1] = T
    statuses = list(frame.statuses)
    statuses[1] = status
    fits = np.array(frame.fit_errors_mm)
    fits[1] = fit
    return encode(
        TrackerFrame(
            frame.tracker,
            frame.t_sensor_ns,
            frame.frame_number,
            frame.tools,
            Ts,
            tuple(statuses),
            fits,
        ),
        seq=0,
        t_pub_ns=0,
    )


def _pose_with(T: npt.NDArray[np.float64], status: ToolStatus, fit: float = 0.1) -> bytes:
    return encode(ToolPose("pointer", T, 1, status, fit), seq=0, t_pub_ns=0)


BUILDERS = [pytest.param(_frame_with, id="TrackerFrame"), pytest.param(_pose_with, id="ToolPose")]
Builder = Callable[..., bytes]


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("status", list(ToolStatus), ids=lambda s: s.value)
def test_non_finite_matrix_entry_is_refused_whatever_the_status(
    build: Builder, bad: float, status: ToolStatus
) -> None:
    T = rigid()
    T[1, 3] = bad
    assert refusal(build(T, status)) == "invalid"


def _reflection() -> npt.NDArray[np.float64]:
    T = rigid()
    T[:3, 0] *= -1.0
    return T


def _scaled() -> npt.NDArray[np.float64]:
    T = rigid()
    T[:3, :3] *= 1.01
    return T


def _sheared() -> npt.NDArray[np.float64]:
    T = rigid()
    T[0, 1] += 0.01
    return T


def _projective() -> npt.NDArray[np.float64]:
    T = rigid()
    T[3, 0] = 0.001
    return T


def _overflowing() -> npt.NDArray[np.float64]:
    # Finite, but R^T R and det overflow: a NaN rigidity error must not read as "rigid".
    T = np.eye(4)
    T[:3, :3] = 1e200
    return T


NON_RIGID = [
    pytest.param(_reflection, id="reflection"),
    pytest.param(_scaled, id="scaled"),
    pytest.param(_sheared, id="sheared"),
    pytest.param(_projective, id="bottom-row"),
    pytest.param(_overflowing, id="overflowing"),
    pytest.param(lambda: np.zeros((4, 4)), id="zeros"),
]


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("make", NON_RIGID)
def test_non_rigid_matrix_with_status_ok_is_refused_as_invalid(
    build: Builder, make: Callable[[], npt.NDArray[np.float64]]
) -> None:
    assert refusal(build(make(), ToolStatus.OK)) == "invalid"


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("make", NON_RIGID)
@pytest.mark.parametrize("status", NOT_OK, ids=lambda s: s.value)
def test_non_rigid_matrix_with_status_not_ok_is_carried(
    build: Builder, make: Callable[[], npt.NDArray[np.float64]], status: ToolStatus
) -> None:
    T = make()
    envelope = decode(build(T, status, math.nan))
    message = envelope.message
    carried = message.pose("tool1") if isinstance(message, TrackerFrame) else message
    assert isinstance(carried, ToolPose)
    assert carried.status is status
    assert same_bits(np.asarray(carried.T_tracker_from_tool), T)


@pytest.mark.parametrize("build", BUILDERS)
def test_rigid_matrix_rounded_like_a_device_sdk_is_accepted_as_ok(build: Builder) -> None:
    T = rigid(1.234)
    rounded = np.vectorize(lambda x: float(f"{x:.6g}"))(T)
    assert not np.array_equal(rounded, T)
    assert decode(build(rounded, ToolStatus.OK)).seq == 0


@pytest.mark.parametrize("build", BUILDERS)
def test_nan_fit_error_with_status_ok_is_accepted_as_not_reported(build: Builder) -> None:
    assert decode(build(rigid(), ToolStatus.OK, math.nan)).seq == 0


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("status", NOT_OK, ids=lambda s: s.value)
def test_nan_fit_error_with_status_not_ok_is_accepted(build: Builder, status: ToolStatus) -> None:
    assert decode(build(rigid(), status, math.nan)).seq == 0


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("fit", [math.inf, -math.inf, -0.5])
@pytest.mark.parametrize("status", list(ToolStatus), ids=lambda s: s.value)
def test_infinite_or_negative_fit_error_is_refused(
    build: Builder, fit: float, status: ToolStatus
) -> None:
    assert refusal(build(rigid(), status, fit)) == "invalid"


# --- navigation messages -------------------------------------------------------------


def _nav_state(status: NavStatus = NavStatus.OK, T: np.ndarray | None = None) -> NavState:
    return NavState(
        t_sensor_ns=10,
        frame_number=3,
        status=status,
        needs_verification=True,
        registration_id=2,
        T_tracker_from_image=np.eye(4) if T is None else T,
        pointer_status=ToolStatus.OUT_OF_VIEW,
        p_tip_image=np.full(3, np.nan),
        target_names=("tumor_centre", "margin"),
        target_distances_mm=np.array([12.5, np.nan]),
        critical_names=("portal_vein",),
        critical_distances_mm=np.array([4.0]),
        predicted_tre_mm=float("nan"),
    )


def test_nav_state_round_trips_with_nan_for_unknown_distances() -> None:
    out = decode(encode(_nav_state(), seq=1, t_pub_ns=2)).message
    assert isinstance(out, NavState)
    assert out.status is NavStatus.OK and out.needs_verification
    assert out.target_names == ("tumor_centre", "margin")
    assert out.target_distances_mm[0] == 12.5 and np.isnan(out.target_distances_mm[1])
    assert np.isnan(out.p_tip_image).all() and np.isnan(out.predicted_tre_mm)


def test_nav_state_carries_its_case_id_and_an_old_payload_without_one_reads_as_unknown() -> None:
    case_id = "0123456789abcdef" * 4
    state = dataclasses.replace(_nav_state(), case_id=case_id)
    out = decode(encode(state, seq=1, t_pub_ns=2)).message
    assert isinstance(out, NavState) and out.case_id == case_id
    raw = msgpack.unpackb(encode(state, seq=1, t_pub_ns=2), raw=False)
    del raw["body"]["case_id"]  # recorded before NavState named its case
    old = decode(msgpack.packb(raw, use_bin_type=True)).message
    assert isinstance(old, NavState) and old.case_id == ""
    raw["body"]["case_id"] = "not a digest"
    with pytest.raises(MessageError) as caught:
        decode(msgpack.packb(raw, use_bin_type=True))
    assert caught.value.kind == "invalid"


def test_nav_state_ok_with_a_non_rigid_model_pose_is_refused() -> None:
    scaled = np.diag([2.0, 1.0, 1.0, 1.0])
    with pytest.raises(MessageError) as caught:
        decode(encode(_nav_state(T=scaled), seq=0, t_pub_ns=0))
    assert caught.value.kind == "invalid"
    # carried, not drawn, when the state says it cannot be vouched for
    out = decode(encode(_nav_state(NavStatus.REFERENCE_LOST, T=scaled), seq=0, t_pub_ns=0))
    assert isinstance(out.message, NavState)


def _registration_result(**changes: Any) -> RegistrationResult:
    fields: dict[str, Any] = dict(
        registration_id=1,
        state="accepted",
        method="points",
        needs_verification=False,
        T_reference_from_image=np.eye(4),
        fre_mm=0.31,
        fiducial_errors_mm=np.array([0.2, 0.3, 0.4]),
        target_names=("tumor_centre",),
        predicted_tre_mm=np.array([0.5]),
        true_tre_mm=np.array([np.nan]),
        fle_mm=0.25,
        fiducial_labels=("F-3", "Fiducial #1", "F-7"),
        case_id="0123456789abcdef" * 4,
    )
    fields.update(changes)
    return RegistrationResult(**fields)


def test_registration_result_round_trips_and_refuses_an_unknown_state() -> None:
    result = _registration_result()
    out = decode(encode(result, seq=0, t_pub_ns=0)).message
    assert isinstance(out, RegistrationResult)
    assert out.state == "accepted" and out.fre_mm == 0.31
    assert np.isnan(out.true_tre_mm[0])
    assert out.fle_mm == 0.25 and out.fiducial_labels == ("F-3", "Fiducial #1", "F-7")
    assert out.case_id == "0123456789abcdef" * 4 and out.method == "points"
    raw = msgpack.unpackb(encode(result, seq=0, t_pub_ns=0), raw=False)
    raw["body"]["state"] = "maybe"
    with pytest.raises(MessageError):
        decode(msgpack.packb(raw, use_bin_type=True))


def test_a_registration_result_recorded_before_its_facts_decodes_with_them_unknown() -> None:
    raw = msgpack.unpackb(encode(_registration_result(), seq=0, t_pub_ns=0), raw=False)
    for key in ("fle_mm", "fiducial_labels", "case_id"):
        del raw["body"][key]
    out = decode(msgpack.packb(raw, use_bin_type=True)).message
    assert isinstance(out, RegistrationResult)
    assert math.isnan(out.fle_mm) and out.fiducial_labels == () and out.case_id == ""
    # NaN also travels: a registration that does not know its FLE says so.
    unknown = decode(encode(_registration_result(fle_mm=math.nan), seq=0, t_pub_ns=0)).message
    assert isinstance(unknown, RegistrationResult) and math.isnan(unknown.fle_mm)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("fle_mm", -0.1, "fle_mm"),
        ("fle_mm", math.inf, "fle_mm"),
        ("fle_mm", "0.25", "fle_mm"),
        ("fiducial_labels", ["F-1", "F-2"], "2 fiducial_labels for 3"),
        ("fiducial_labels", ["F-1", "", "F-3"], "fiducial label"),
        ("fiducial_labels", ["F-1", "a\nb", "F-3"], "fiducial label"),
        ("fiducial_labels", ["F-1", 2, "F-3"], "fiducial label"),
        ("fiducial_labels", ["F-1", "x" * 65, "F-3"], "fiducial label"),
        ("fiducial_labels", "F-1", "fiducial_labels"),
        ("case_id", "phantom", "case_id"),
        ("case_id", "0123456789ABCDEF" * 4, "case_id"),
        ("case_id", 7, "case_id"),
    ],
)
def test_registration_result_refuses_bad_facts(key: str, value: Any, problem: str) -> None:
    raw = msgpack.unpackb(encode(_registration_result(), seq=0, t_pub_ns=0), raw=False)
    raw["body"][key] = value
    with pytest.raises(MessageError, match=problem) as caught:
        decode(msgpack.packb(raw, use_bin_type=True))
    assert caught.value.kind == "invalid"

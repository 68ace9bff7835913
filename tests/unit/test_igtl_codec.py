"""The OpenIGTLink codec: wire-exact corpora, round trips, CRC-64, timestamps, stream framing."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import shared_data
from tracking import igtl_codec as igtl

CORPUS = "openigtlink-ng/spec/corpus"


def _fixtures() -> dict[str, dict[str, Any]]:
    path = shared_data(f"{CORPUS}/upstream-fixtures.json")
    fixtures: dict[str, dict[str, Any]] = json.loads(path.read_text())["fixtures"]
    return fixtures


def _negative() -> tuple[Path, dict[str, dict[str, Any]]]:
    base = shared_data(f"{CORPUS}/negative")
    entries: dict[str, dict[str, Any]] = json.loads((base / "index.json").read_text())["entries"]
    return base, entries


# Names only, so that collection works without ../shared (the tests then skip).
FIXTURE_NAMES = [
    "bind", "capability", "colortable", "colortable2", "command", "commandFormat2", "image",
    "imgmeta", "lbmeta", "ndarray", "point", "polydata", "position", "positionFormat2",
    "sensor", "status", "string", "tdata", "tdataFormat2", "trajectory", "trajectoryFormat2",
    "transform", "transformFormat2", "videometa",
]  # fmt: skip

# The matrix of upstream's transform test (igtlutil_transform_test.c), float32 on the wire.
UPSTREAM_MATRIX = np.array(
    [
        [-0.954892, -0.196632, 0.222525, 46.0531],
        [0.196632, 0.142857, 0.970014, 19.4709],
        [-0.222525, 0.970014, -0.0977491, 46.0531],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


# --- wire-exact corpus ---------------------------------------------------------------------


def test_corpus_has_the_24_fixtures_named_here() -> None:
    assert sorted(_fixtures()) == sorted(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_upstream_fixture_decodes_to_its_values_and_encodes_to_the_same_bytes(name: str) -> None:
    fixture = _fixtures()[name]
    wire = bytes.fromhex(fixture["wire_hex"])
    message = igtl.decode(wire)
    assert message.type_id == fixture["type_id"]
    assert message.version == fixture["version"]
    assert message.device_name == fixture["device_name"]
    assert igtl.unpack_header(wire).body_size == fixture["body_size"]
    assert igtl.is_supported(message.type_id)
    assert not isinstance(message.body, igtl.RawBody)
    assert igtl.encode(message) == wire  # CRC-64 included


def test_upstream_fixtures_decode_to_upstream_test_values() -> None:
    fixtures = {name: igtl.decode(bytes.fromhex(f["wire_hex"])) for name, f in _fixtures().items()}
    for name in ("transform", "transformFormat2"):
        body = fixtures[name].body
        assert isinstance(body, igtl.Transform)
        np.testing.assert_allclose(body.matrix, UPSTREAM_MATRIX, atol=1e-5)
    assert fixtures["transform"].timestamp == 1234567892
    v2 = fixtures["transformFormat2"]
    assert v2.message_id == 1
    assert v2.meta("First patient age") == "22" and v2.meta("Second patient age") == "25"
    tdata = fixtures["tdata"].body
    assert isinstance(tdata, igtl.TrackingData)
    assert [e.name for e in tdata.elements] == ["Tracker0", "Tracker1", "Tracker2"]
    for element in tdata.elements:
        np.testing.assert_allclose(element.matrix, UPSTREAM_MATRIX, atol=1e-5)
    position = fixtures["position"].body
    assert isinstance(position, igtl.Position)
    np.testing.assert_allclose(position.position, [46.0531, 19.4709, 46.0531], atol=1e-4)
    np.testing.assert_allclose(
        position.quaternion, [0.0, 0.5773503, 0.5773503, 0.3333333], atol=1e-6
    )
    status = fixtures["status"].body
    assert status == igtl.Status(15, 10, "ACTUATOR_DISABLED", "Actuator A is disabled.")
    string = fixtures["string"].body
    assert isinstance(string, igtl.String) and string.text == "Welcome to OpenIGTLink"
    capability = fixtures["capability"].body
    assert capability == igtl.Capability(("IMAGE", "GET_IMAGE", "TRANSFORM", "GET_TRANS"))
    polydata = fixtures["polydata"].body
    assert isinstance(polydata, igtl.PolyData)
    assert polydata.points.shape == (8, 3) and polydata.polygons.count == 6  # a unit cube
    assert [a.name for a in polydata.attributes] == ["attr"]
    sensor = fixtures["sensor"].body
    assert isinstance(sensor, igtl.Sensor)
    np.testing.assert_allclose(
        sensor.data, [123456.78, 12345.678, 1234.5678, 123.45678, 12.345678, 1.2345678]
    )
    ndarray = fixtures["ndarray"].body
    assert isinstance(ndarray, igtl.NDArray)
    np.testing.assert_array_equal(ndarray.array().reshape(-1), np.arange(60.0))
    bind = fixtures["bind"].body
    assert isinstance(bind, igtl.Bind)
    assert [(c.type_id, c.device_name) for c in bind.children] == [
        ("TRANSFORM", "ChildTrans"),
        ("IMAGE", "ChildImage"),
        ("SENSOR", "ChildSensor"),
    ]
    child = igtl.decode_body("TRANSFORM", bind.children[0].body)
    assert isinstance(child, igtl.Transform)
    np.testing.assert_allclose(child.matrix, UPSTREAM_MATRIX, atol=1e-5)


def test_negative_corpus_has_32_labelled_entries() -> None:
    _, entries = _negative()
    assert len(entries) == 32
    assert {e["error_class"] for e in entries.values()} <= {c.value for c in igtl.ErrorClass}


def test_every_negative_entry_is_refused_with_its_labelled_error_class() -> None:
    base, entries = _negative()
    for name, entry in entries.items():
        wire = (base / entry["path"]).read_bytes()
        with pytest.raises(igtl.IgtlError) as caught:
            igtl.decode(wire)
        assert caught.value.error_class.value == entry["error_class"], (name, caught.value)


def test_negative_entries_never_crash_the_stream_decoder() -> None:
    base, entries = _negative()
    for name, entry in entries.items():
        wire = (base / entry["path"]).read_bytes()
        decoder = igtl.StreamDecoder()
        items = decoder.feed(wire)
        # Refused, or (truncated frames) still waiting for bytes; never a message.
        assert all(isinstance(item, igtl.IgtlError) for item in items), name
        assert items or decoder.pending_bytes == len(wire), name


# --- CRC-64 and timestamps -------------------------------------------------------------------


def test_crc64_matches_the_ecma182_check_value() -> None:
    assert igtl.crc64(b"123456789") == 0x6C40DF5F0B497347  # CRC-64/ECMA-182 catalogue check
    assert igtl.crc64(b"") == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=9000))
def test_crc64_agrees_with_crcmod_reference(data: bytes) -> None:
    crcmod = pytest.importorskip("crcmod")
    reference = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, rev=False, initCrc=0, xorOut=0)
    assert igtl.crc64(data) == reference(data)


@pytest.mark.parametrize("size", [4095, 4096, 4097, 65536 + 3, 1 << 20])
def test_crc64_vector_path_agrees_with_the_byte_loop(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert igtl.crc64(data) == igtl._crc64_scalar(data)


@given(st.integers(min_value=0, max_value=(1 << 32) * 10**9 - 1))
def test_timestamp_round_trips_nanoseconds_exactly(t_ns: int) -> None:
    assert igtl.timestamp_to_ns(igtl.timestamp_from_ns(t_ns)) == t_ns


def test_timestamp_fraction_is_32_32_fixed_point() -> None:
    assert igtl.timestamp_from_ns(1_500_000_000) == (1 << 32) | 0x80000000
    assert igtl.timestamp_to_ns((7 << 32) | 0x40000000) == 7_250_000_000


# --- round trips of every supported body ------------------------------------------------------

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
u8, u16 = st.integers(0, 255), st.integers(0, 0xFFFF)
name20 = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
name64 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)
matrices = st.lists(f32, min_size=12, max_size=12).map(igtl.matrix_from_wire)
rgba = st.tuples(u8, u8, u8, u8)
vec3 = st.tuples(f32, f32, f32)


def _arrays(dtype: str, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    n = int(np.prod(shape))
    return st.lists(f32, min_size=n, max_size=n).map(
        lambda v: np.array(v, dtype=np.float64).reshape(shape)
    )


@st.composite
def polydata(draw: st.DrawFn) -> igtl.PolyData:
    n = draw(st.integers(1, 12))
    points = draw(_arrays("f4", (n, 3)))
    faces = draw(st.lists(st.tuples(*[st.integers(0, n - 1)] * 3), max_size=10))
    lines = draw(st.lists(st.lists(st.integers(0, n - 1), min_size=2, max_size=5), max_size=4))
    line_data = np.array([x for line in lines for x in [len(line), *line]], dtype=np.uint32)
    attributes = tuple(
        igtl.PolyAttribute(kind, f"a{i}", draw(_arrays("f4", (n, comps))))
        for i, (kind, comps) in enumerate(
            draw(st.lists(st.sampled_from([(0, 1), (1, 3), (2, 3), (4, 4)]), max_size=3))
        )
    )
    base = igtl.PolyData.from_triangles(points, np.array(faces, dtype=np.int64).reshape(-1, 3))
    return igtl.PolyData(
        base.points, lines=igtl.Cells(len(lines), line_data), polygons=base.polygons,
        attributes=attributes,
    )  # fmt: skip


@st.composite
def images(draw: st.DrawFn) -> igtl.Image:
    scalar = draw(st.sampled_from(sorted(igtl.SCALAR_SIZES)))
    comps = draw(st.integers(1, 3))
    size = draw(st.tuples(*[st.integers(1, 4)] * 3))
    n = comps * int(np.prod(size)) * igtl.SCALAR_SIZES[scalar]
    return igtl.Image(
        comps, scalar, draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2])), size,
        tuple(draw(st.lists(f32, min_size=12, max_size=12))), (0, 0, 0), size,
        draw(st.binary(min_size=n, max_size=n)),
    )  # fmt: skip


@st.composite
def ndarrays(draw: st.DrawFn) -> igtl.NDArray:
    scalar = draw(st.sampled_from([2, 3, 4, 5, 6, 7, 10, 11, 13]))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    size = {2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 10: 4, 11: 8, 13: 16}[scalar]
    n = int(np.prod(shape)) * size
    return igtl.NDArray(scalar, shape, draw(st.binary(min_size=n, max_size=n)))


BODIES: dict[str, st.SearchStrategy[Any]] = {
    "TRANSFORM": matrices.map(igtl.Transform),
    "POSITION": st.builds(
        igtl.Position,
        _arrays("f4", (3,)),
        st.sampled_from([0, 3, 4]).flatmap(lambda n: _arrays("f4", (n,))),
    ),
    "TDATA": st.lists(
        st.builds(igtl.TrackingElement, name20, st.integers(1, 4), matrices), max_size=5
    ).map(lambda e: igtl.TrackingData(tuple(e))),
    "QTDATA": st.lists(
        st.builds(
            igtl.QuaternionTrackingElement,
            name20,
            st.integers(1, 4),
            _arrays("f4", (3,)),
            _arrays("f4", (4,)),
        ),
        max_size=4,
    ).map(lambda e: igtl.QuaternionTrackingData(tuple(e))),
    "STATUS": st.builds(
        igtl.Status,
        u16,
        st.integers(-(2**63), 2**63 - 1),
        name20,
        st.text(st.characters(min_codepoint=1, max_codepoint=0x7E), max_size=50),
    ),
    "STRING": st.builds(igtl.String, st.binary(max_size=100), u16),
    "SENSOR": st.builds(
        igtl.Sensor,
        st.lists(st.floats(allow_nan=False), max_size=20).map(
            lambda v: np.array(v, dtype=np.float64)
        ),
        u8,
        st.integers(0, 2**64 - 1),
    ),
    "CAPABILITY": st.lists(name20.filter(lambda s: len(s) <= 12), max_size=6).map(
        lambda t: igtl.Capability(tuple(t))
    ),
    "COMMAND": st.builds(
        igtl.Command, st.integers(0, 2**32 - 1), name64, st.binary(max_size=80), u16, st.booleans()
    ),
    "POINT": st.lists(
        st.builds(igtl.PointElement, name64, name20, rgba, vec3, f32, name20), max_size=3
    ).map(lambda e: igtl.Point(tuple(e))),
    "TRAJ": st.lists(
        st.builds(
            igtl.TrajectoryElement, name64, name20, st.integers(1, 3), rgba, vec3, vec3, f32, name20
        ),
        max_size=3,
    ).map(lambda e: igtl.Trajectory(tuple(e))),
    "IMGMETA": st.lists(
        st.builds(
            igtl.ImageMetaElement,
            name64,
            name20,
            name20,
            name64,
            name64,
            st.integers(0, 2**64 - 1),
            st.tuples(u16, u16, u16),
            u8,
        ),
        max_size=3,
    ).map(lambda e: igtl.ImageMeta(tuple(e))),
    "LBMETA": st.lists(
        st.builds(
            igtl.LabelMetaElement, name64, name20, u8, rgba, st.tuples(u16, u16, u16), name20
        ),
        max_size=3,
    ).map(lambda e: igtl.LabelMeta(tuple(e))),
    "VIDEOMETA": st.lists(
        st.builds(
            igtl.VideoMetaElement,
            name64,
            name64,
            name64,
            name64,
            st.integers(-(2**15), 2**15 - 1),
            st.floats(allow_nan=False),
            st.tuples(u16, u16, u16),
            st.lists(f32, min_size=12, max_size=12).map(tuple),
            u8,
        ),
        max_size=3,
    ).map(lambda e: igtl.VideoMeta(tuple(e))),
    "IMAGE": images(),
    "NDARRAY": ndarrays(),
    "COLORT": st.tuples(
        st.sampled_from([3, 5]), st.sampled_from([3, 5, 19]), st.booleans()
    ).flatmap(
        lambda t: st.binary(
            min_size={3: 256, 5: 65536}[t[0]] * {3: 1, 5: 2, 19: 3}[t[1]],
            max_size={3: 256, 5: 65536}[t[0]] * {3: 1, 5: 2, 19: 3}[t[1]],
        ).map(lambda table: igtl.ColorTable(t[0], t[1], table, t[2]))
    ),
    "POLYDATA": polydata(),
    "BIND": st.lists(
        st.builds(
            igtl.BindChild,
            name20.filter(bool).filter(lambda s: len(s) <= 12),
            name20,
            st.binary(max_size=30),
        ),
        max_size=4,
    ).map(lambda c: igtl.Bind(tuple(c))),
    "STT_TDATA": st.builds(igtl.StartTrackingData, st.integers(0, 2**32 - 1), name20),
    "GET_*": st.sampled_from(["GET_TRANS", "GET_POLYDATA", "STP_TDATA", "STT_POLYDATA"]).map(
        igtl.Query
    ),
    "RTS_*": st.builds(igtl.Rts, st.sampled_from(["RTS_TDATA", "RTS_POLYDATA"]), u8),
    "unsupported": st.builds(
        igtl.RawBody, st.sampled_from(["VIDEO", "FUTURE_TYPE"]), st.binary(max_size=40)
    ),
}

metadata = st.lists(
    st.builds(igtl.MetaItem, st.text(min_size=1, max_size=20), st.binary(max_size=20), u16),
    max_size=4,
).map(tuple)


def _same(a: Any, b: Any) -> bool:
    """Field-by-field equality, numpy arrays compared by value (bodies use eq=False)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(
            _same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__
        )
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_every_supported_body_round_trips_exactly(kind: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        body=BODIES[kind],
        version=st.sampled_from([1, 2]),
        meta=metadata,
        device=name20,
        timestamp=st.integers(0, 2**64 - 1),
        message_id=st.integers(0, 2**32 - 1),
    )
    def check(
        body: Any, version: int, meta: Any, device: str, timestamp: int, message_id: int
    ) -> None:
        message = igtl.IgtlMessage(
            device,
            body,
            timestamp,
            version,
            message_id if version > 1 else 0,
            meta if version > 1 else (),
        )
        wire = igtl.encode(message)
        again = igtl.decode(wire)
        assert _same(again.body, body)
        assert (again.device_name, again.timestamp, again.version) == (device, timestamp, version)
        assert (again.message_id, again.metadata) == (message.message_id, message.metadata)
        assert igtl.encode(again) == wire

    check()


def test_polydata_from_triangles_gives_the_triangles_back() -> None:
    points = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    message = igtl.IgtlMessage("Tet", igtl.PolyData.from_triangles(points, faces))
    body = igtl.decode(igtl.encode(message)).body
    assert isinstance(body, igtl.PolyData)
    np.testing.assert_array_equal(body.points, points)
    np.testing.assert_array_equal(body.triangles(), faces)


def test_polydata_with_an_index_past_the_points_is_malformed() -> None:
    bad = igtl.PolyData(np.zeros((2, 3)), polygons=igtl.Cells(1, np.array([3, 0, 1, 2], np.uint32)))
    with pytest.raises(igtl.IgtlError) as caught:
        igtl.decode(igtl.encode(igtl.IgtlMessage("Bad", bad)))
    assert caught.value.error_class is igtl.ErrorClass.MALFORMED


def test_transform_matrix_goes_on_the_wire_column_by_column() -> None:
    T = np.eye(4)
    T[:3, 3] = [10.0, 20.0, 30.0]
    T[0, 1] = 0.5  # R12
    wire = igtl.encode(igtl.IgtlMessage("ToolToTracker", igtl.Transform(T)))
    values = struct.unpack(">12f", wire[58:])
    assert values[3] == 0.5  # R12 is the fourth float: R11 R21 R31 R12 ...
    assert values[9:] == (10.0, 20.0, 30.0)


def test_encoder_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="device name"):
        igtl.encode(igtl.IgtlMessage("x" * 21, igtl.Transform(np.eye(4))))
    with pytest.raises(ValueError, match="metadata"):
        igtl.encode(
            igtl.IgtlMessage("a", igtl.Transform(np.eye(4)), metadata=(igtl.MetaItem.of("k", "v"),))
        )
    with pytest.raises(ValueError, match="version"):
        igtl.encode(igtl.IgtlMessage("a", igtl.Transform(np.eye(4)), version=7))


def test_an_unknown_type_decodes_as_unsupported_raw_body() -> None:
    wire = igtl.encode(igtl.IgtlMessage("Cam", igtl.RawBody("VIDEO", b"\x01\x02\x03")))
    message = igtl.decode(wire)
    assert message.body == igtl.RawBody("VIDEO", b"\x01\x02\x03")
    assert not igtl.is_supported("VIDEO") and igtl.is_supported("TRANSFORM")


def test_v2_metadata_is_readable_by_key() -> None:
    meta = (
        igtl.MetaItem.of("TransformStatus", "INVALID"),
        igtl.MetaItem.of("Note", "ü", igtl.MIB_UTF_8),
    )
    message = igtl.decode(
        igtl.encode(
            igtl.IgtlMessage("ToolToTracker", igtl.Transform(np.eye(4)), version=2, metadata=meta)
        )
    )
    assert message.meta("TransformStatus") == "INVALID"
    assert message.meta("Note") == "ü"
    assert message.meta("Missing") is None


# --- the stream decoder ---------------------------------------------------------------------


def _stream_messages() -> list[bytes]:
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 3.0]
    ok = (igtl.MetaItem.of("TransformStatus", "OK"),)
    good = [
        igtl.IgtlMessage("StylusToTracker", igtl.Transform(T), 1 << 32),
        igtl.IgtlMessage("StylusToTracker", igtl.Transform(T), 2 << 32, 2, 7, ok),
        igtl.IgtlMessage("Tracker", igtl.TrackingData((igtl.TrackingElement("A", 2, T),)), 3 << 32),
        igtl.IgtlMessage("Dev", igtl.Status(igtl.StatusCode.DISABLED, 0, "DISABLED", "covered")),
        igtl.IgtlMessage("Cube", igtl.PolyData.from_triangles(np.eye(3), [[0, 1, 2]])),
        igtl.IgtlMessage("Cam", igtl.RawBody("VIDEO", b"xyz")),
    ]
    wires = [igtl.encode(m) for m in good]
    bad_crc = bytearray(wires[0])
    bad_crc[50:58] = bytes(8)
    bad_version = b"\x00\x63" + wires[0][2:]
    bad_body = igtl.encode(igtl.IgtlMessage("Short", igtl.RawBody("TRANSFORM", bytes(47))))
    return [*wires[:3], bytes(bad_crc), *wires[3:], bad_version, bad_body]


def _summary(items: list[igtl.Decoded]) -> list[tuple[str, str]]:
    return [
        ("error", item.kind)
        if isinstance(item, igtl.IgtlError)
        else (item.type_id, item.device_name)
        for item in items
    ]


def test_stream_decoder_gives_the_same_result_wherever_the_stream_is_split() -> None:
    stream = b"".join(_stream_messages())
    expected = _summary(igtl.StreamDecoder().feed(stream))
    assert expected == [
        ("TRANSFORM", "StylusToTracker"), ("TRANSFORM", "StylusToTracker"), ("TDATA", "Tracker"),
        ("error", "crc"), ("STATUS", "Dev"), ("POLYDATA", "Cube"), ("VIDEO", "Cam"),
        ("error", "version"), ("error", "body"),
    ]  # fmt: skip
    for split in range(len(stream) + 1):
        decoder = igtl.StreamDecoder()
        first = decoder.feed(stream[:split])
        assert decoder.pending_bytes == split - sum(
            len(w) for w in _prefix_frames(stream[:split])
        ), split
        assert _summary(first + decoder.feed(stream[split:])) == expected, split
        assert decoder.pending_bytes == 0


def _prefix_frames(prefix: bytes) -> list[bytes]:
    frames = []
    pos = 0
    while len(prefix) - pos >= igtl.HEADER_SIZE:
        size = igtl.HEADER_SIZE + igtl.unpack_header(prefix[pos : pos + igtl.HEADER_SIZE]).body_size
        if len(prefix) - pos < size:
            break
        frames.append(prefix[pos : pos + size])
        pos += size
    return frames


def test_stream_decoder_fed_one_byte_at_a_time_finds_every_message() -> None:
    stream = b"".join(_stream_messages())
    decoder = igtl.StreamDecoder()
    items: list[igtl.Decoded] = []
    for i in range(len(stream)):
        items += decoder.feed(stream[i : i + 1])
    assert _summary(items) == _summary(igtl.StreamDecoder().feed(stream))


def test_stream_decoder_stops_at_garbage_until_reset() -> None:
    good = _stream_messages()[0]
    decoder = igtl.StreamDecoder()
    items = decoder.feed(good + bytes(range(200, 256)) + good)
    assert _summary(items) == [("TRANSFORM", "StylusToTracker"), ("error", "header")]
    assert isinstance(items[1], igtl.IgtlError) and items[1].fatal
    assert decoder.feed(good) == []
    assert decoder.reset() > 0
    assert _summary(decoder.feed(good)) == [("TRANSFORM", "StylusToTracker")]


def test_stream_decoder_refuses_an_absurd_body_size_without_waiting_for_it() -> None:
    header = bytearray(_stream_messages()[0][:58])
    header[42:50] = struct.pack(">Q", igtl.MAX_BODY_BYTES + 1)
    decoder = igtl.StreamDecoder()
    (error,) = decoder.feed(bytes(header))
    assert isinstance(error, igtl.IgtlError)
    assert (error.kind, error.fatal, error.error_class) == (
        "oversized",
        True,
        igtl.ErrorClass.MALFORMED,
    )


def test_partial_message_waits_and_counts_as_pending() -> None:
    wire = _stream_messages()[1]
    decoder = igtl.StreamDecoder()
    assert decoder.feed(wire[:70]) == []
    assert decoder.pending_bytes == 70
    assert decoder.reset() == 70
    assert decoder.pending_bytes == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_random_bytes_never_crash_the_decoders(data: bytes, chunk: int) -> None:
    decoder = igtl.StreamDecoder(max_body_bytes=1 << 16)
    for i in range(0, len(data), chunk):
        for item in decoder.feed(data[i : i + chunk]):
            assert isinstance(item, igtl.IgtlMessage | igtl.IgtlError)
    try:
        igtl.decode(data)
    except igtl.IgtlError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_transform_is_refused_or_decoded_never_crashes(data: st.DataObject) -> None:
    wire = bytearray(_stream_messages()[1])
    for _ in range(data.draw(st.integers(1, 4))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(u8)
    try:
        igtl.decode(bytes(wire), verify_crc=data.draw(st.booleans()))
    except igtl.IgtlError as error:
        assert error.error_class in igtl.ErrorClass


def test_large_polydata_decodes_in_reasonable_time() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50_000, 3)) * 100
    faces = rng.integers(0, len(points), size=(100_000, 3))
    wire = igtl.encode(igtl.IgtlMessage("Liver", igtl.PolyData.from_triangles(points, faces)))
    assert len(wire) > 2_000_000
    body = igtl.decode(wire).body
    assert isinstance(body, igtl.PolyData)
    np.testing.assert_array_equal(body.triangles(), faces)


def test_stream_decoder_drops_unwanted_types_without_decoding_them() -> None:
    stream = b"".join(_stream_messages())
    decoder = igtl.StreamDecoder(accept={"TRANSFORM", "STATUS"})
    items = _summary(decoder.feed(stream))
    assert items == [
        ("TRANSFORM", "StylusToTracker"),
        ("TRANSFORM", "StylusToTracker"),
        ("error", "crc"),
        ("STATUS", "Dev"),
        ("error", "version"),
        ("error", "body"),
    ]
    assert decoder.skipped == 3  # TDATA, POLYDATA, VIDEO: framed, not decoded

"""PLUS sequence files: reading without the pixels, writing, names, and conversion to MCAP.

Real files come from ../shared/data/PlusLibData/TestImages (skipped when absent); synthetic
sequences from hypothesis cover what those files do not (other target frames, every
status, missing optional fields); hand-broken files the timestamps PLUS should never write.
"""

from __future__ import annotations

import io
import json
import logging
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.convert import ConvertError, convert
from nav.messages import RIGID_TOLERANCE, MessageError, ToolStatus, TrackerFrame, decode, encode
from nav.runtime.recording import RecordingWriter, inspect_recording, iter_recording
from nav.transforms import (
    MAX_PROJECTED_DEVIATION,
    axis_angle_to_matrix,
    make_rigid,
    pose_from_quat,
    rigidity_error,
)
from tests.conftest import REPO, shared_data
from tracking.plus_sequence import (
    PlusFrame,
    PlusSequenceError,
    TransformName,
    check_mappings,
    format_seconds,
    frames_equal,
    open_plus_sequence,
    parse_seconds_ns,
    read_plus_sequence,
    summarize_plus_sequence,
    to_tracker_frames,
    tool_mapping,
    tool_status,
    write_plus_sequence,
)

TEST_IMAGES = "PlusLibData/TestImages"
NWIRE = f"{TEST_IMAGES}/NwirePhantomFreehand"
PLUS_STATUSES = ("OK", "MISSING", "OUT_OF_VIEW", "OUT_OF_VOLUME", "INVALID", "REQ_TIMEOUT")
NAMES = ("StylusToTracker", "ProbeToTracker", "ReferenceToTracker", "ProbeToReference")


def _same(a: list[PlusFrame], b: list[PlusFrame]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert frames_equal(x, y), f"frame {i} differs: {x} != {y}"


def _frame(
    index: int,
    transforms: dict[str, np.ndarray],
    statuses: dict[str, str],
    t_ns: int,
    **extra: object,
) -> PlusFrame:
    return PlusFrame(index, t_ns, transforms, statuses, **extra)  # type: ignore[arg-type]


# --- synthetic sequences -------------------------------------------------------------

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
unit = st.floats(-1.0, 1.0, allow_nan=False)


@st.composite
def rigid(draw: st.DrawFn) -> np.ndarray:
    q = np.array([draw(unit) for _ in range(4)])
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    return pose_from_quat(q, [draw(finite) for _ in range(3)])


@st.composite
def plus_frames(draw: st.DrawFn, *, statuses: tuple[str, ...] = PLUS_STATUSES) -> list[PlusFrame]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, 6))
    with_unfiltered = draw(st.booleans())
    with_numbers = draw(st.booleans())
    frames = []
    # Timestamps move forward by at most 1000 s: the reader skips a frame that goes back
    # or jumps an hour (tracking.plus_sequence, "Timestamps").
    t_ns = draw(st.integers(0, 10**16))
    for i in range(n):
        t_ns += draw(st.integers(0, 10**12)) if i else 0
        present = [name for name in names if draw(st.integers(0, 9)) > 0]
        status = {name: draw(st.sampled_from(statuses)) for name in present}
        matrices = {name: draw(rigid()) for name in present}
        fields = {"Note": draw(st.text("abcXYZ019_.", min_size=1, max_size=8))}
        frames.append(
            _frame(
                i,
                matrices,
                status,
                t_ns,
                unfiltered_timestamp_ns=draw(st.integers(0, 10**16)) if with_unfiltered else None,
                frame_number=draw(st.integers(0, 2**40)) if with_numbers else None,
                fields=fields if draw(st.booleans()) else {},
            )
        )
    return frames


@settings(max_examples=60, deadline=None)
@given(frames=plus_frames(), suffix=st.sampled_from([".igs.mha", ".seq.nrrd"]))
def test_written_sequence_reads_back_every_transform_status_and_timestamp(
    frames: list[PlusFrame], suffix: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"s{suffix}"
        assert write_plus_sequence(path, frames) == len(frames)
        header, back = read_plus_sequence(path)
    assert header.declared_frames == len(frames)
    assert header.has_pixels == (suffix == ".seq.nrrd")  # NRRD needs 1x1 blank frames
    _same(frames, back)


@settings(max_examples=30, deadline=None)
@given(frames=plus_frames())
def test_mha_to_nrrd_and_back_keeps_every_frame(frames: list[PlusFrame]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mha, nrrd, again = Path(tmp) / "a.igs.mha", Path(tmp) / "b.igs.nrrd", Path(tmp) / "c.mha"
        write_plus_sequence(mha, frames)
        convert(mha, nrrd)
        convert(nrrd, again)
        _same(frames, read_plus_sequence(nrrd)[1])
        _same(frames, read_plus_sequence(again)[1])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=plus_frames())
def test_plus_to_mcap_to_plus_reproduces_every_transform_status_and_timestamp(
    frames: list[PlusFrame],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, mcap, back = Path(tmp) / "s.igs.mha", Path(tmp) / "s.mcap", Path(tmp) / "b.seq.nrrd"
        write_plus_sequence(src, frames)
        report = convert(src, mcap)
        assert report.frames == len(frames)
        convert(mcap, back)
        _same(frames, read_plus_sequence(back)[1])


@given(ns=st.integers(-(10**18), 10**18))
def test_plus_seconds_text_round_trips_every_nanosecond(ns: int) -> None:
    assert parse_seconds_ns(format_seconds(ns)) == ns


def test_plus_seconds_text_is_read_exactly_and_written_as_plus_does() -> None:
    assert parse_seconds_ns("345.627957") == 345_627_957_000
    assert parse_seconds_ns(" 1840749.750288 ") == 1_840_749_750_288_000
    assert parse_seconds_ns("1.0") == 1_000_000_000
    assert parse_seconds_ns("347.0668714287492") == 347_066_871_429  # beyond ns: rounded
    assert format_seconds(345_627_957_000) == "345.627957"
    assert format_seconds(1_000_000_001) == "1.000000001"
    for bad in ("nan", "abc", "", "inf"):
        with pytest.raises(ValueError):
            parse_seconds_ns(bad)


# --- real PLUS files -----------------------------------------------------------------


def test_nwire_phantom_mha_and_nrrd_decode_to_identical_content_with_the_stylus_invalid() -> None:
    header_mha, mha = read_plus_sequence(shared_data(f"{NWIRE}.igs.mha"))
    header_nrrd, nrrd = read_plus_sequence(shared_data(f"{NWIRE}.igs.nrrd"))
    _same(mha, nrrd)
    assert len(mha) == 97 == header_mha.declared_frames == header_nrrd.declared_frames
    assert header_mha.image_size == header_nrrd.image_size == (820, 616)
    names = {"ProbeToTracker", "ReferenceToTracker", "StylusToTracker"}
    for frame in mha:
        assert set(frame.transforms) == names
        assert frame.statuses == {
            "ProbeToTracker": "OK",
            "ReferenceToTracker": "OK",
            "StylusToTracker": "INVALID",
        }
    assert all(frame.image_status == "OK" for frame in mha + nrrd)
    first = mha[0]
    assert first.timestamp_ns == 345_627_957_000 and first.frame_number is None
    assert first.transforms["ProbeToTracker"][0, 3] == -190.886
    assert first.transforms["StylusToTracker"][0, 1] == -8.43482e-05  # written e-005
    times = [f.timestamp_ns for f in mha]
    assert times == sorted(times)


def test_nwire_phantom_publishes_the_stylus_as_invalid_in_every_frame_not_dropped() -> None:
    _header, frames = read_plus_sequence(shared_data(f"{NWIRE}.igs.mha"))
    for i, frame in enumerate(frames):
        bus = to_tracker_frames(frame, t_sensor_ns=i, frame_number=i)
        (message,) = bus.frames
        assert message.tools == ("probe", "reference", "stylus")
        statuses = (ToolStatus.OK, ToolStatus.OK, ToolStatus.INVALID)
        assert message.statuses == statuses and not bus.downgraded
        back = decode(encode(message, seq=i, t_pub_ns=i)).message
        assert isinstance(back, TrackerFrame) and back.statuses == message.statuses


class _CountingRaw(io.RawIOBase):
    """A raw file that counts every byte handed to the buffered reader above it."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb", buffering=0)  # closed in close()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._file.readinto(buffer)
        self.bytes_read += n or 0
        return n or 0

    def close(self) -> None:
        self._file.close()
        super().close()


def _bytes_read(path: Path, buffer_size: int = 64 * 1024) -> tuple[int, int, int]:
    raw = _CountingRaw(path)
    with io.BufferedReader(raw, buffer_size=buffer_size) as file:
        reader = open_plus_sequence(file, name=str(path))
        frames = sum(1 for _ in reader)
        assert reader.header_bytes is not None
        return frames, reader.header_bytes, raw.bytes_read


def test_reading_frames_never_reads_the_pixel_payload(tmp_path: Path) -> None:
    # A real file: 70 KB of header before 548 KB of compressed pixels.
    path = shared_data(f"{NWIRE}.igs.mha")
    frames, header_bytes, read = _bytes_read(path)
    assert frames == 97
    assert read <= header_bytes + 64 * 1024 < path.stat().st_size
    # A synthetic 32 MB one: the same header, then 32 MB of pixels that are never touched.
    big = tmp_path / "big.igs.mha"
    text = path.read_bytes()[:header_bytes]
    big.write_bytes(text + np.random.default_rng(0).bytes(32 << 20))
    frames, header_bytes, read = _bytes_read(big)
    assert frames == 97 and read <= header_bytes + 64 * 1024


@pytest.mark.parametrize(
    "name",
    [
        "EightLandmarkPointsTrackedForPhantomRegistration.igs.mha",
        "NwirePhantomFreehand.igs.mha",
        "NwirePhantomFreehand.igs.nrrd",
        "Prostate10_tracker.igs.mha",
        "ReferenceToRASCalibration.igs.mha",
        "SyntheticTrackerBuffer20.igs.mha",
        "TimestampFilteringTest.igs.mha",
        "TransformInterpolationTest.igs.mha",
        "WaterTankBottomTranslationTrackerBuffer.igs.mha",
        "WaterTankBottomTranslationVideoBuffer.igs.mha",
    ],
)
def test_every_plus_test_sequence_reads_to_its_declared_frame_count(name: str) -> None:
    summary = summarize_plus_sequence(shared_data(f"{TEST_IMAGES}/{name}"))
    assert summary.frame_count == summary.header.declared_frames
    assert summary.skipped == 0
    assert summary.header_bytes <= summary.file_bytes


def test_plus_tracker_buffer_fields_are_read_with_their_unfiltered_time_and_number() -> None:
    _h, frames = read_plus_sequence(shared_data(f"{TEST_IMAGES}/SyntheticTrackerBuffer20.igs.mha"))
    assert len(frames) == 20
    assert frames[1].frame_number == 2 and frames[1].timestamp_ns == 1_500_000_000
    assert frames[1].unfiltered_timestamp_ns == 1_500_000_000
    assert frames[1].statuses == {"ToolToTracker": "OK"}  # written "OK " with a space
    assert frames[1].transforms["ToolToTracker"][2, 3] == 31.0


def test_a_transform_without_status_reads_as_invalid_and_a_plain_field_is_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = shared_data(f"{TEST_IMAGES}/TransformInterpolationTest.igs.mha")
    with caplog.at_level(logging.WARNING):
        _h, frames = read_plus_sequence(path)
    assert all(f.statuses["ReferenceToTracker"] == "INVALID" for f in frames)
    assert "ReferenceToTracker has no status" in caplog.text
    assert frames[0].fields["Stylus"] == "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1"  # not a Transform
    assert "Stylus" not in frames[0].transforms


def test_real_file_converts_to_mcap_and_back_with_every_transform_status_and_timestamp(
    tmp_path: Path,
) -> None:
    src = shared_data(f"{NWIRE}.igs.nrrd")
    report = convert(src, tmp_path / "n.mcap")
    assert (report.frames, report.messages) == (97, 97)
    messages = list(iter_recording(tmp_path / "n.mcap"))
    assert {m.topic for m in messages} == {"pose/plus"}
    first = decode(messages[0].payload).message
    assert isinstance(first, TrackerFrame)
    assert first.t_sensor_ns == 345_627_957_000  # the PLUS clock, kept
    assert first.statuses[first.tools.index("stylus")] is ToolStatus.INVALID
    convert(tmp_path / "n.mcap", tmp_path / "back.igs.mha")
    _same(read_plus_sequence(src)[1], read_plus_sequence(tmp_path / "back.igs.mha")[1])


# --- names and statuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("plus_name", "tracker", "tool"),
    [
        ("StylusToTracker", "plus", "stylus"),
        ("ReferenceToTracker", "plus", "reference"),
        ("ToolToTracker", "plus", "tool"),
        ("ProbeToReference", "plus_reference", "probe"),
        ("StylusTipToStylus", "plus_stylus", "stylustip"),
        ("Probe2ToTracker", "plus", "probe2"),
    ],
)
def test_plus_transform_names_map_to_a_tool_of_the_tracker_of_their_target_frame(
    plus_name: str, tracker: str, tool: str
) -> None:
    mapping = tool_mapping(plus_name)
    assert (mapping.tracker, mapping.tool, mapping.topic) == (tracker, tool, f"pose/{tracker}")


@pytest.mark.parametrize("bad", ["Stylus", "ToTracker", "StylusTo", "AToBToC", "Sty lus2Tracker"])
def test_a_transform_name_that_is_not_from_to_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(PlusSequenceError) as caught:
        TransformName.parse(bad)
    assert "\n" not in str(caught.value)


def test_two_plus_names_for_one_ornav_tool_are_refused() -> None:
    with pytest.raises(PlusSequenceError, match="both map to tool 'stylus'"):
        check_mappings([tool_mapping("StylusToTracker"), tool_mapping("STYLUSToTracker")])


def test_plus_statuses_outside_ornavs_vocabulary_are_invalid_never_ok() -> None:
    assert tool_status("OK") is ToolStatus.OK
    assert tool_status("OK ") is ToolStatus.OK
    assert tool_status("OUT_OF_VIEW") is ToolStatus.OUT_OF_VIEW
    assert tool_status("TOOL_MISSING") is ToolStatus.MISSING  # PLUS < 2.6
    for other in ("REQ_TIMEOUT", "SWITCH1_IS_ON", "UNKNOWN", "PATH_NOT_FOUND", "", "ok-ish"):
        assert tool_status(other) is ToolStatus.INVALID


def test_an_ok_matrix_that_is_not_rigid_or_finite_is_published_invalid_and_counted() -> None:
    scaled = np.diag([0.1, 0.1, 1.0, 1.0])  # an ImageToProbe with its pixel spacing
    nan = np.full((4, 4), np.nan)
    frame = _frame(
        0,
        {"ImageToProbe": scaled, "StylusToTracker": nan, "ProbeToTracker": np.eye(4)},
        {"ImageToProbe": "OK", "StylusToTracker": "MISSING", "ProbeToTracker": "OK"},
        5,
    )
    bus = to_tracker_frames(frame, t_sensor_ns=7, frame_number=3)
    assert bus.downgraded == ("ImageToProbe",)
    own, probe = bus.frames
    assert own.tracker == "plus" and own.tools == ("stylus", "probe")
    assert own.statuses == (ToolStatus.MISSING, ToolStatus.OK)
    assert np.array_equal(own.T_tracker_from_tools[0], np.eye(4))  # NaN cannot travel
    assert probe.tracker == "plus_probe" and probe.statuses == (ToolStatus.INVALID,)
    for message in bus.frames:  # both pass the bus's own validation
        assert isinstance(decode(encode(message, seq=0, t_pub_ns=0)).message, TrackerFrame)


def test_a_nearly_rigid_ok_matrix_is_projected_and_stays_ok_where_the_bus_would_refuse_it() -> None:
    T = make_rigid(axis_angle_to_matrix([1.0, 2.0, 3.0], 0.7), [10.0, -20.0, 1500.0])
    nearly = T.copy()
    nearly[:3, :3] @= np.diag([1.0004, 0.9998, 1.0])  # an NDI matrix's size of error
    assert rigidity_error(nearly) > RIGID_TOLERANCE
    unprojected = TrackerFrame(
        tracker="plus", t_sensor_ns=7, frame_number=3, tools=("stylus",),
        T_tracker_from_tools=nearly[None], statuses=(ToolStatus.OK,),
        fit_errors_mm=np.full(1, np.nan),
    )  # fmt: skip
    with pytest.raises(MessageError, match="not a rigid transform"):  # the bus stays strict
        decode(encode(unprojected, seq=0, t_pub_ns=0))
    frame = _frame(0, {"StylusToTracker": nearly}, {"StylusToTracker": "OK"}, 5)
    bus = to_tracker_frames(frame, t_sensor_ns=7, frame_number=3)
    assert bus.downgraded == () and bus.projected == ("StylusToTracker",)
    assert bus.max_deviation == pytest.approx(4e-4, rel=1e-6)
    (own,) = bus.frames
    assert own.statuses == (ToolStatus.OK,)
    np.testing.assert_allclose(own.T_tracker_from_tools[0], T, atol=1e-12, rtol=0)
    assert isinstance(decode(encode(own, seq=0, t_pub_ns=0)).message, TrackerFrame)


def test_statuses_and_matrices_the_bus_cannot_carry_survive_plus_to_mcap_to_plus(
    tmp_path: Path,
) -> None:
    frames = [
        _frame(
            i,
            {
                "ImageToProbe": np.diag([0.1, 0.1, 1.0, 1.0]),
                "StylusToTracker": np.full((4, 4), np.nan),
                "ProbeToReference": np.eye(4),
            },
            {"ImageToProbe": "OK", "StylusToTracker": "REQ_TIMEOUT", "ProbeToReference": "OK"},
            2_000_000_000 + i * 25_000_000,
            unfiltered_timestamp_ns=-1_990_000_000 + i * 25_000_000,  # only kept, not used
            frame_number=100 + 2 * i,
        )
        for i in range(5)
    ]
    write_plus_sequence(tmp_path / "s.igs.mha", frames)
    report = convert(tmp_path / "s.igs.mha", tmp_path / "s.mcap")
    assert report.downgraded == 5 and report.messages == 15  # plus, plus_probe, plus_reference
    sensor = [
        decode(m.payload).message.t_sensor_ns  # type: ignore[union-attr]
        for m in iter_recording(tmp_path / "s.mcap")
        if m.topic == "pose/plus"
    ]
    assert sensor[0] == 2_000_000_000 and np.all(np.diff(sensor) == 25_000_000)
    convert(tmp_path / "s.mcap", tmp_path / "b.seq.nrrd")
    _same(frames, read_plus_sequence(tmp_path / "b.seq.nrrd")[1])


def test_a_recording_not_from_plus_exports_one_trackers_frames_with_camel_case_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sim.mcap"
    with RecordingWriter(path, wall_ns_at_open=0, monotonic_ns_at_open=0) as writer:
        for i in range(3):
            message = TrackerFrame(
                tracker="sim",
                t_sensor_ns=1_000_000_000 + i * 10_000_000,
                frame_number=i,
                tools=("pointer", "us_probe"),
                T_tracker_from_tools=np.stack([np.eye(4), np.eye(4)]),
                statuses=(ToolStatus.OK, ToolStatus.OUT_OF_VIEW),
                fit_errors_mm=np.array([0.2, math.nan]),
            )
            payload = encode(message, seq=i, t_pub_ns=i)
            writer.write(
                "pose/sim", payload, type_name="TrackerFrame", seq=i, t_pub_ns=i, t_recv_ns=i
            )
    convert(path, tmp_path / "sim.igs.mha")
    _h, frames = read_plus_sequence(tmp_path / "sim.igs.mha")
    assert [f.timestamp_ns for f in frames] == [1_000_000_000, 1_010_000_000, 1_020_000_000]
    assert frames[2].frame_number == 2
    assert frames[0].statuses == {"PointerToTracker": "OK", "UsProbeToTracker": "OUT_OF_VIEW"}


def test_conversion_between_two_recordings_or_unknown_suffixes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="cannot convert"):
        convert(tmp_path / "a.mcap", tmp_path / "b.mcap")
    with pytest.raises(ConvertError, match=".mha or .nrrd"):
        convert(tmp_path / "a.mcap", tmp_path / "b.nhdr")


# --- bad input -----------------------------------------------------------------------


def _tiny(tmp_path: Path, suffix: str = ".igs.mha") -> tuple[Path, list[PlusFrame]]:
    frames = [
        _frame(i, {"StylusToTracker": np.eye(4)}, {"StylusToTracker": "OK"}, i * 10**8)
        for i in range(3)
    ]
    path = tmp_path / f"tiny{suffix}"
    write_plus_sequence(path, frames)
    return path, frames


@pytest.mark.parametrize("suffix", [".igs.mha", ".igs.nrrd"])
def test_every_truncation_of_the_header_is_a_one_line_error_after_only_complete_frames(
    tmp_path: Path, suffix: str
) -> None:
    path, frames = _tiny(tmp_path, suffix)
    data = path.read_bytes()
    with open_plus_sequence(path) as reader:
        list(reader)
        header_bytes = reader.header_bytes
    assert header_bytes is not None
    for cut in range(header_bytes):
        got: list[PlusFrame] = []
        with pytest.raises(PlusSequenceError) as caught:
            with open_plus_sequence(io.BytesIO(data[:cut]), name="cut") as reader:
                got.extend(reader)
        assert "\n" not in str(caught.value), cut
        assert len(got) < len(frames), cut  # the frame being read when the file ended: never
        _same(frames[: len(got)], got)


def test_a_truncated_real_file_is_one_line_naming_the_file_and_the_cut(tmp_path: Path) -> None:
    cut = tmp_path / "cut.igs.mha"
    cut.write_bytes(shared_data(f"{NWIRE}.igs.mha").read_bytes()[:30_000])
    with pytest.raises(PlusSequenceError) as caught:
        summarize_plus_sequence(cut)
    message = str(caught.value)
    assert "\n" not in message and str(cut) in message and "truncated" in message


def test_a_broken_frame_is_skipped_counted_and_logged_and_the_others_are_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, frames = _tiny(tmp_path)
    text = path.read_text().replace(
        "Seq_Frame0001_StylusToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1",
        "Seq_Frame0001_StylusToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0",
    )
    path.write_text(text)
    with caplog.at_level(logging.WARNING), open_plus_sequence(path) as reader:
        got = list(reader)
    assert reader.skipped == 1
    _same([frames[0], frames[2]], got)
    assert "frame 1 skipped: 15 numbers" in caplog.text


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (("Seq_Frame0001_Timestamp = 0.100000\n", ""), "no Timestamp"),
        (("Seq_Frame0001_Timestamp = 0.100000", "Seq_Frame0001_Timestamp = soon"), "not a number"),
        (
            ("Seq_Frame0001_StylusToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1\n", ""),
            "without its matrix",
        ),
        (
            ("Seq_Frame0001_Timestamp = 0.100000", "Seq_Frame0001_Timestamp = 0.1\n" * 2),
            "given twice",
        ),
    ],
)
def test_frames_with_missing_or_bad_fields_are_skipped_never_guessed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: tuple[str, str], why: str
) -> None:
    path, frames = _tiny(tmp_path)
    text = path.read_text()
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1]))
    with caplog.at_level(logging.WARNING), open_plus_sequence(path) as reader:
        got = list(reader)
    assert reader.skipped == 1, caplog.text
    _same([frames[0], frames[2]], got)
    assert why in caplog.text


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty file"),
        (b"\x89MCAP0\r\n\x01\x02", "not a PLUS sequence"),
        (b"hello world\n", "not a PLUS sequence"),
        (
            b"ObjectType = Image\nNDims = 3\n\x00\x01\x02binary\nElementDataFile = LOCAL\n",
            "not header text",
        ),
        (b"ObjectType = Image\nthis line has no separator\n", "not a header field"),
        (
            b"ObjectType = Image\nSeq_Frame0001_Timestamp = 1\nSeq_Frame0000_Timestamp = 2\n"
            b"ElementDataFile = LOCAL\n",
            "out of order",
        ),
        (b"ObjectType = Image\n" + b"x" * 100_000 + b"\n", "longer than"),
    ],
)
def test_a_file_that_is_not_a_sequence_header_is_a_one_line_error(data: bytes, why: str) -> None:
    with pytest.raises(PlusSequenceError) as caught:
        with open_plus_sequence(io.BytesIO(data), name="bad.mha") as reader:
            list(reader)
    assert why in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_or_an_existing_output_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PlusSequenceError, match="no such file"):
        open_plus_sequence(tmp_path / "nope.igs.mha")
    path, frames = _tiny(tmp_path)
    with pytest.raises(PlusSequenceError, match="already exists"):
        write_plus_sequence(path, frames)
    with pytest.raises(PlusSequenceError, match=".mha or .nrrd"):
        write_plus_sequence(tmp_path / "x.txt", frames)


# --- the ornav command ---------------------------------------------------------------


def _ornav(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_ornav_inspect_shows_tools_frames_duration_rate_and_invalid_fraction() -> None:
    result = _ornav("inspect", str(shared_data(f"{NWIRE}.igs.mha")))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("StylusToTracker", "pose/plus", "stylus", "100.0%", "97 frames", "10.16 s"):
        assert text in out, out
    assert "9.5 Hz" in out and "820x616" in out


# Real NDI recordings whose matrices are off rigid by more than the bus's 1e-4: each was
# converted with (nearly) every OK transform sent as INVALID before projection (1971 of
# 2000; 4997/5000 ReferenceToTracker of WaterTank). Figures: OK transforms, max deviation.
REAL_NEARLY_RIGID = {
    "EightLandmarkPointsTrackedForPhantomRegistration": (2000, 3.59e-4),
    "WaterTankBottomTranslationTrackerBuffer": (15000, 2.75e-4),
}


@pytest.mark.parametrize("name", sorted(REAL_NEARLY_RIGID))
def test_real_ndi_recordings_convert_with_no_transform_invalid_for_rigidity(
    name: str, tmp_path: Path
) -> None:
    path = shared_data(f"{TEST_IMAGES}/{name}.igs.mha")
    ok, max_deviation = REAL_NEARLY_RIGID[name]
    report = convert(path, tmp_path / "r.mcap")
    assert report.downgraded == 0, report.problems
    assert report.projected == ok
    assert report.max_deviation == pytest.approx(max_deviation, rel=0.01)
    assert report.max_deviation < MAX_PROJECTED_DEVIATION / 5  # well inside the limit
    assert any(f"{ok} OK transforms were nearly rigid" in p for p in report.problems)
    published = 0
    for recorded in iter_recording(tmp_path / "r.mcap"):
        message = decode(recorded.payload).message  # the bus's own strict check
        assert isinstance(message, TrackerFrame)
        assert set(message.statuses) == {ToolStatus.OK}
        published += len(message.tools)
    assert published == ok
    # inspect reports what the bus carries: every frame OK, every matrix projected
    summary = summarize_plus_sequence(path)
    for transform in summary.transforms:
        assert transform.not_ok_fraction == 0.0 and transform.refused == 0
        assert transform.projected == transform.frames
    assert max(t.max_deviation for t in summary.transforms) == report.max_deviation
    # and PLUS -> MCAP -> PLUS still gives back the file's own matrices, bit for bit
    convert(tmp_path / "r.mcap", tmp_path / "back.igs.mha")
    _same(read_plus_sequence(path)[1], read_plus_sequence(tmp_path / "back.igs.mha")[1])


def test_ornav_inspect_of_an_ndi_recording_shows_projected_counts_and_max_deviation() -> None:
    result = _ornav("inspect", str(shared_data(f"{TEST_IMAGES}/{min(REAL_NEARLY_RIGID)}.igs.mha")))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "ToTracker" in line]
    assert len(rows) == 2, result.stdout
    for row in rows:  # frames, not OK, projected, max dev
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert cells[3:6] == ["1000", "0.0%", "1000"], row
        assert 1e-4 < float(cells[6]) < MAX_PROJECTED_DEVIATION, row
    assert "projected" in result.stdout and "nearest rigid" in result.stdout


def test_ornav_convert_writes_the_mcap_and_a_truncated_file_is_one_line_exit_2(
    tmp_path: Path,
) -> None:
    src = shared_data(f"{NWIRE}.igs.mha")
    result = _ornav("convert", str(src), str(tmp_path / "n.mcap"))
    assert result.returncode == 0, result.stderr
    assert "97 frames" in result.stdout
    meta = iter_recording(tmp_path / "n.mcap")
    next(meta)
    transforms = json.loads(meta.metadata["plus.transforms"])
    meta.close()
    assert ["StylusToTracker", "plus", "stylus"] in transforms
    cut = tmp_path / "cut.igs.mha"
    cut.write_bytes(src.read_bytes()[:5000])
    for args in (("inspect", str(cut)), ("convert", str(cut), str(tmp_path / "c.mcap"))):
        result = _ornav(*args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ornav: ") and "truncated" in lines[0]


def test_a_transform_field_that_is_not_from_to_and_its_status_are_kept_as_plain_fields(
    tmp_path: Path,
) -> None:
    path, frames = _tiny(tmp_path)
    text = path.read_text().replace(
        "Seq_Frame0001_Timestamp",
        "Seq_Frame0001_ImageTransform = 1 2 3\nSeq_Frame0001_ImageTransformStatus = OK\n"
        "Seq_Frame0001_US Depth = 40 mm\nSeq_Frame0001_Timestamp",
    )
    path.write_text(text)
    with open_plus_sequence(path) as reader:
        got = list(reader)
    assert reader.skipped == 0 and "ImageTransform: not a <From>To<To>" in reader.problems[0]
    assert got[1].transforms.keys() == {"StylusToTracker"}
    assert got[1].fields == {
        "ImageTransform": "1 2 3",
        "ImageTransformStatus": "OK",
        "US Depth": "40 mm",
    }
    write_plus_sequence(tmp_path / "again.igs.nrrd", got)
    _same(got, read_plus_sequence(tmp_path / "again.igs.nrrd")[1])


# --- timestamps PLUS should never write (issue 10, item 9) ---------------------------


def test_plus_seconds_text_out_of_int64_range_is_a_value_error_not_a_decimal_overflow() -> None:
    for bad in ("1e999999", "-1e999999", "1e10", "9223372037"):
        with pytest.raises(ValueError, match="out of range"):
            parse_seconds_ns(bad)
    assert parse_seconds_ns("9223372036") == 9_223_372_036_000_000_000


def _five(tmp_path: Path) -> tuple[Path, list[PlusFrame]]:
    frames = [
        _frame(i, {"StylusToTracker": np.eye(4)}, {"StylusToTracker": "OK"}, (10 + i) * 10**8)
        for i in range(5)
    ]
    path = tmp_path / "five.igs.mha"
    write_plus_sequence(path, frames)
    return path, frames


@pytest.mark.parametrize(
    ("stamp", "why"),
    [
        ("1e999999", "out of range"),
        ("nan", "not finite"),
        ("-inf", "not finite"),
        ("-5", "negative"),
        ("1.05", "comes before the previous frame's 1.100000 s"),
        ("1000000", "after the previous frame's"),
    ],
)
def test_a_frame_with_an_unusable_timestamp_is_skipped_and_reported_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stamp: str, why: str
) -> None:
    path, frames = _five(tmp_path)
    text = path.read_text()
    assert "Seq_Frame0002_Timestamp = 1.200000\n" in text
    key = "Seq_Frame0002_Timestamp = "
    path.write_text(text.replace(f"{key}1.200000", f"{key}{stamp}"))
    with caplog.at_level(logging.WARNING), open_plus_sequence(path) as reader:
        got = list(reader)
    _same([frames[i] for i in (0, 1, 3, 4)], got)
    assert (reader.skipped, reader.bad_timestamps) == (1, 1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "1 frame(s) skipped for an unusable Timestamp" in lines[0]
    assert "the first is frame 2" in lines[0] and why in lines[0]


def test_a_file_with_no_usable_timestamp_is_refused_in_one_line(tmp_path: Path) -> None:
    path, _frames = _five(tmp_path)
    text = path.read_text()
    for i in range(5):
        key = f"Seq_Frame000{i}_Timestamp = "
        text = text.replace(f"{key}1.{i}00000", f"{key}-{i + 1}")
    path.write_text(text)
    with pytest.raises(PlusSequenceError) as caught:
        summarize_plus_sequence(path)
    message = str(caught.value)
    assert "\n" not in message and "no frame has a usable Timestamp" in message
    assert "5 frame(s) skipped" in message and "frame 0" in message
    result = _ornav("convert", str(path), str(tmp_path / "none.mcap"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("ornav: ") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "none.mcap").exists()


NWIRE_FIRST_S, NWIRE_LAST_S = 345.627957, 355.783014


def _nwire_with_bad_stamps(tmp_path: Path) -> Path:
    """The real NwirePhantomFreehand file with frame 5 at 1e999999 s, frame 10 at -5 s and
    frame 20 back at the first frame's time: 94 good frames, the real range kept."""
    text = shared_data(f"{NWIRE}.igs.mha").read_bytes()
    for index, stamp in ((5, b"1e999999"), (10, b"-5"), (20, b"345.627957")):
        key = b"Seq_Frame%04d_Timestamp = " % index
        at = text.index(key) + len(key)
        end = text.index(b"\n", at)
        text = text[:at] + stamp + text[end:]
    path = tmp_path / "bad-stamps.igs.mha"
    path.write_bytes(text)
    return path


def _one_warning(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if "unusable Timestamp" in line]
    assert len(lines) == 1, stderr
    assert "3 frame(s) skipped" in lines[0] and "the first is frame 5" in lines[0]
    return lines[0]


def test_ornav_inspect_of_bad_plus_timestamps_counts_them_and_shows_the_real_range(
    tmp_path: Path,
) -> None:
    result = _ornav("inspect", str(_nwire_with_bad_stamps(tmp_path)))
    assert result.returncode == 0, result.stderr
    _one_warning(result.stderr)
    assert "94 frames (3 broken, skipped), 10.16 s" in result.stdout
    assert "unusable Timestamp" in result.stdout


def test_ornav_convert_of_bad_plus_timestamps_spans_only_the_real_time_range(
    tmp_path: Path,
) -> None:
    out = tmp_path / "n.mcap"
    result = _ornav("convert", str(_nwire_with_bad_stamps(tmp_path)), str(out))
    assert result.returncode == 0, result.stderr
    _one_warning(result.stderr)
    assert "94 frames, 94 messages, 3 broken frames skipped" in result.stdout
    sensor = [
        decode(m.payload).message.t_sensor_ns  # type: ignore[union-attr]
        for m in iter_recording(out)
    ]
    assert len(sensor) == 94 and sensor == sorted(sensor)
    assert (sensor[0], sensor[-1]) == (
        parse_seconds_ns(str(NWIRE_FIRST_S)),
        parse_seconds_ns(str(NWIRE_LAST_S)),
    )
    assert inspect_recording(out).duration_s == pytest.approx(NWIRE_LAST_S - NWIRE_FIRST_S)


def test_ornav_replay_of_bad_plus_timestamps_plays_the_good_frames_and_warns_once(
    tmp_path: Path,
) -> None:
    sock = Path(tempfile.mkdtemp(prefix="ornav-plus-", dir="/tmp"))
    try:
        result = _ornav(
            "replay", str(_nwire_with_bad_stamps(tmp_path)), "--pub", f"ipc://{sock}/r.pub",
            "--speed", "50", "--start-delay", "0",
        )  # fmt: skip
    finally:
        shutil.rmtree(sock, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    _one_warning(result.stderr)
    assert "94 PLUS frames" in result.stderr


def test_ornav_calibrate_pivot_from_plus_with_bad_timestamps_uses_the_other_samples(
    tmp_path: Path,
) -> None:
    from tests.unit.test_calibration_pivot import pivot_poses

    rng = np.random.default_rng(3)
    p_tip, p_pivot = np.array([1.0, 2.0, -150.0]), np.array([10.0, -40.0, -1200.0])
    Ts = pivot_poses(rng, n=60, p_tip=p_tip, p_pivot=p_pivot, max_angle_deg=35.0)
    frames = [
        _frame(i, {"StylusToReference": T}, {"StylusToReference": "OK"}, 10**9 + i * 20_000_000)
        for i, T in enumerate(Ts)
    ]
    path = tmp_path / "pivot.igs.mha"
    write_plus_sequence(path, frames)
    text = path.read_text()
    for index, stamp in ((5, "1e999999"), (10, "-5"), (20, "1.000000")):
        key = f"Seq_Frame{index:04d}_Timestamp = "
        at = text.index(key) + len(key)
        text = text[:at] + stamp + text[text.index("\n", at) :]
    path.write_text(text)
    out = tmp_path / "pivot.toml"
    result = _ornav(
        "calibrate", "pivot", "--input", str(path), "--transform", "StylusToReference",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _one_warning(result.stderr)
    assert "n_poses = 57" in out.read_text()

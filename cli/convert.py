"""``ornav convert IN OUT``: PLUS sequence files <-> ornav MCAP recordings, losslessly.

The direction follows the file names: ``.mha``/``.nrrd`` (``.igs.mha``, ``.seq.nrrd``, ...)
to ``.mcap``, ``.mcap`` to ``.mha``/``.nrrd``, or between the two PLUS formats. The pixels
of a PLUS file are never read, and never written: the result is the tracking.

PLUS -> MCAP. Each PLUS frame becomes the ``TrackerFrame`` messages that
``tracking.plus_sequence.to_tracker_frames`` makes of it (``pose/<tracker>`` first, then one
per other target frame, e.g. ``pose/plus_reference`` for ``ProbeToReference``), exactly
what ``tracking.plus_file_node`` publishes, so a converted file replays like a recorded
session. Clocks: ``t_sensor_ns = PLUS Timestamp (ns) + clock_offset_ns``, where the offset is
0: the PLUS clock is kept as it is. (Frames with a negative, non-finite, backward or
jumping timestamp are skipped and counted by the reader, ``tracking.plus_sequence``, so the
recording spans only the file's real time range; the offset stays for older recordings.)
``t_pub_ns`` and the receive time are ``t_sensor_ns`` too (nothing was
received: the file replays on its sensor timing). ``log_time`` is anchored at the PLUS
file's modification time minus its duration (PLUS files carry no wall clock, so the date
is an estimate). ``frame_number`` is PLUS's ``FrameNumber``, or the frame's position when
the file has none.

What the messages cannot carry goes into the recording's ``ornav.recording`` metadata
(MCAP metadata values are strings; these are JSON):

    plus.source          the PLUS file's name
    plus.format          mha | nrrd
    plus.tracker         the ornav tracker name (topic ``pose/<tracker>``)
    plus.tracker_frame   the PLUS frame that is the tracker's (``Tracker``)
    plus.clock_offset_ns t_sensor_ns - PLUS timestamp ns, an integer
    plus.transforms      [[PLUS name, tracker, tool], ...], e.g. ["StylusToTracker", "plus",
                         "stylus"]: the name of every transform, from (tracker, tool) alone
    plus.frames          one object per PLUS frame, in order, with only what it has:
                         "u" UnfilteredTimestamp ns, "n" FrameNumber, "f" other frame
                         fields {name: text}, "s" {PLUS name: status text} where the
                         published status differs (e.g. REQ_TIMEOUT published as
                         INVALID), "m" {PLUS name: [16 numbers as text]} where the
                         published matrix differs (a non-finite one, sent as identity;
                         a nearly rigid one, projected onto the nearest rotation)

MCAP -> PLUS. A recording with ``plus.transforms`` is written back exactly: every
transform (bit for bit), status and timestamp (to the ns) of the original, so PLUS -> MCAP ->
PLUS reproduces the file's tracking. Any other recording (one made by ``ornav launch``)
becomes a PLUS file of the ``TrackerFrame``s of one tracker (``tracker``, or the first one
seen): tool ``us_probe`` -> ``UsProbeToTracker``, its status, ``Timestamp`` =
``t_sensor_ns`` (the host monotonic clock, in seconds), ``FrameNumber`` = ``frame_number``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nav.messages import MessageError, ToolStatus, TrackerFrame, decode, encode
from nav.runtime.recording import (
    RecordingError,
    RecordingReader,
    RecordingWriter,
    damage_report,
    iter_recording,
)
from nav.transforms import MAX_PROJECTED_DEVIATION
from tracking.plus_sequence import (
    DEFAULT_TRACKER,
    DEFAULT_TRACKER_FRAME,
    WRITE_SUFFIXES,
    BusFrames,
    PlusFrame,
    PlusSequenceError,
    PlusSummary,
    ToolMapping,
    TransformName,
    check_mappings,
    is_plus_path,
    open_plus_sequence,
    summarize_plus_sequence,
    to_tracker_frames,
    tool_mapping,
    write_plus_sequence,
)

log = logging.getLogger(__name__)

MCAP_SUFFIX = ".mcap"
META_PREFIX = "plus."


class ConvertError(ValueError):
    """A conversion that cannot be done; the message is one line."""


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion did: frames (PLUS frames), messages (MCAP messages) and notes."""

    source: Path
    destination: Path
    frames: int
    messages: int = 0
    skipped: int = 0
    downgraded: int = 0
    problems: tuple[str, ...] = field(default_factory=tuple)
    projected: int = 0
    max_deviation: float = 0.0


def convert(
    source: str | Path,
    destination: str | Path,
    *,
    tracker: str | None = None,
    tracker_frame: str = DEFAULT_TRACKER_FRAME,
    overwrite: bool = False,
) -> ConvertReport:
    """Convert ``source`` into ``destination``, the formats told by the file names.

    ``tracker``: the ornav tracker name for PLUS -> MCAP (default ``plus``), or the one
    tracker to export for a recording that did not come from PLUS. Raises ConvertError,
    PlusSequenceError or RecordingError (each one line) on bad input.
    """
    source, destination = Path(source), Path(destination)
    src_plus, dst_plus = is_plus_path(source), is_plus_path(destination)
    src_mcap = source.suffix.lower() == MCAP_SUFFIX
    dst_mcap = destination.suffix.lower() == MCAP_SUFFIX
    if dst_plus and destination.suffix.lower() not in WRITE_SUFFIXES:
        raise ConvertError(f"{destination}: PLUS files are written as .mha or .nrrd")
    if source.resolve() == destination.resolve():
        raise ConvertError(f"{source}: source and destination are the same file")
    if src_plus and dst_mcap:
        return plus_to_mcap(
            source,
            destination,
            tracker=tracker or DEFAULT_TRACKER,
            tracker_frame=tracker_frame,
            overwrite=overwrite,
        )
    if src_mcap and dst_plus:
        return mcap_to_plus(
            source, destination, tracker=tracker, tracker_frame=tracker_frame, overwrite=overwrite
        )
    if src_plus and dst_plus:
        return plus_to_plus(source, destination, overwrite=overwrite)
    raise ConvertError(
        f"cannot convert {source.name} to {destination.name}: give a PLUS sequence "
        "(.mha, .nrrd) and an MCAP recording (.mcap), or two PLUS files"
    )


def plus_to_plus(source: Path, destination: Path, *, overwrite: bool = False) -> ConvertReport:
    """mha <-> nrrd: the tracking of every frame, as it is (no pixels)."""
    with open_plus_sequence(source) as reader:
        count = write_plus_sequence(destination, reader, overwrite=overwrite)
        return ConvertReport(
            source, destination, count, skipped=reader.skipped, problems=tuple(reader.problems)
        )


# --- PLUS -> MCAP --------------------------------------------------------------------


def _matrix_text(matrix: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in np.asarray(matrix, dtype=np.float64).reshape(-1)]


def _frame_extras(
    frame: PlusFrame,
    published: Mapping[tuple[str, str], tuple[ToolStatus, np.ndarray]],
    mappings: Mapping[str, ToolMapping],
) -> dict[str, Any]:
    """The facts of one frame for ``plus.frames``: what its bus messages do not carry."""
    extra: dict[str, Any] = {}
    if frame.unfiltered_timestamp_ns is not None:
        extra["u"] = frame.unfiltered_timestamp_ns
    if frame.frame_number is not None:
        extra["n"] = frame.frame_number
    if frame.fields:
        extra["f"] = dict(frame.fields)
    statuses: dict[str, str] = {}
    matrices: dict[str, list[str]] = {}
    for plus_name, matrix in frame.transforms.items():
        mapping = mappings[plus_name]
        status, T = published[(mapping.tracker, mapping.tool)]
        if frame.statuses[plus_name] != status.value:
            statuses[plus_name] = frame.statuses[plus_name]
        if not np.array_equal(T, matrix):
            matrices[plus_name] = _matrix_text(matrix)
    if statuses:
        extra["s"] = statuses
    if matrices:
        extra["m"] = matrices
    return extra


def _bus_frames(
    frame: PlusFrame, position: int, offset_ns: int, tracker: str, tracker_frame: str
) -> BusFrames:
    number = frame.frame_number
    return to_tracker_frames(
        frame,
        t_sensor_ns=frame.timestamp_ns + offset_ns,
        frame_number=number if number is not None and number >= 0 else position,
        tracker=tracker,
        tracker_frame=tracker_frame,
    )


def plus_to_mcap(
    source: Path,
    destination: Path,
    *,
    tracker: str = DEFAULT_TRACKER,
    tracker_frame: str = DEFAULT_TRACKER_FRAME,
    overwrite: bool = False,
) -> ConvertReport:
    """A PLUS sequence -> an ornav MCAP recording (module docstring for the mapping).

    Two passes over the header (never the pixels): the first finds the names, the clock
    offset and the per-frame extras that go into the metadata (written first in the file),
    the second writes the messages.
    """
    if destination.exists() and not overwrite:
        raise RecordingError(f"{destination}: already exists")
    mappings: dict[str, ToolMapping] = {}
    extras: list[dict[str, Any]] = []
    first_ns = last_ns = lowest_ns = 0
    with open_plus_sequence(source) as reader:
        for position, frame in enumerate(reader):
            for plus_name in frame.transforms:
                if plus_name not in mappings:
                    mappings[plus_name] = tool_mapping(
                        plus_name, tracker=tracker, tracker_frame=tracker_frame
                    )
            t = frame.timestamp_ns
            first_ns = t if position == 0 else first_ns
            last_ns = t
            lowest_ns = t if position == 0 else min(lowest_ns, t)
            extras.append({})
        fmt, skipped, problems = reader.format, reader.skipped, list(reader.problems)
    if not extras:
        raise ConvertError(f"{source}: no readable frame to convert")
    check_mappings(mappings.values())
    offset_ns = max(0, -lowest_ns)

    # Pass 2 computes the bus messages; their differences from the file complete the
    # extras, which must be known before the metadata record is written. So the messages
    # are built twice (cheap: no pixels) rather than held in memory.
    with open_plus_sequence(source, log_problems=False) as reader:
        for position, frame in enumerate(reader):
            bus = _bus_frames(frame, position, offset_ns, tracker, tracker_frame)
            published = {
                (m.tracker, tool): (m.statuses[i], m.T_tracker_from_tools[i])
                for m in bus.frames
                for i, tool in enumerate(m.tools)
            }
            extras[position] = _frame_extras(frame, published, mappings)
    metadata = {
        META_PREFIX + "source": source.name,
        META_PREFIX + "format": fmt,
        META_PREFIX + "tracker": tracker,
        META_PREFIX + "tracker_frame": tracker_frame,
        META_PREFIX + "clock_offset_ns": str(offset_ns),
        META_PREFIX + "transforms": json.dumps(
            [[m.plus_name, m.tracker, m.tool] for m in mappings.values()]
        ),
        META_PREFIX + "frames": json.dumps(extras, separators=(",", ":")),
    }
    wall_ns = max(0, source.stat().st_mtime_ns - (last_ns - first_ns))
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    messages = downgraded = projected = frames = 0
    max_deviation = 0.0
    seqs: dict[str, int] = {}
    try:
        with (
            RecordingWriter(
                partial,
                metadata=metadata,
                wall_ns_at_open=wall_ns,
                monotonic_ns_at_open=first_ns + offset_ns,
            ) as writer,
            open_plus_sequence(source, log_problems=False) as reader,
        ):
            for position, frame in enumerate(reader):
                bus = _bus_frames(frame, position, offset_ns, tracker, tracker_frame)
                downgraded += len(bus.downgraded)
                projected += len(bus.projected)
                max_deviation = max(max_deviation, bus.max_deviation)
                for message in bus.frames:
                    topic = f"pose/{message.tracker}"
                    seq = seqs.get(topic, 0)
                    seqs[topic] = seq + 1
                    t_ns = message.t_sensor_ns
                    writer.write(
                        topic,
                        encode(message, seq=seq, t_pub_ns=t_ns),
                        type_name=TrackerFrame.TYPE,
                        seq=seq,
                        t_pub_ns=t_ns,
                        t_recv_ns=t_ns,
                    )
                    messages += 1
                frames += 1
        if frames != len(extras):
            raise ConvertError(f"{source}: the file changed while it was converted")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    if projected:
        problems.append(
            f"{projected} OK transforms were nearly rigid (max deviation {max_deviation:.2g}): "
            "projected onto the nearest rotation, sent as OK"
        )
    if downgraded:
        problems.append(
            f"{downgraded} OK transforms were not a pose (not finite, scaled or sheared): "
            "sent as INVALID"
        )
    return ConvertReport(
        source,
        destination,
        frames,
        messages,
        skipped,
        downgraded,
        tuple(problems),
        projected=projected,
        max_deviation=max_deviation,
    )


# --- MCAP -> PLUS --------------------------------------------------------------------


def _camel(tool: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in tool.split("_"))


class _McapFrames:
    """The PLUS frames of a recording, streamed (see the module docstring)."""

    def __init__(self, reader: RecordingReader, *, tracker: str | None, tracker_frame: str) -> None:
        self.reader = reader
        self.tracker = tracker
        self.tracker_frame = tracker_frame
        self.messages = 0
        self.problems: list[str] = []
        self.exact = False  # the recording came from PLUS: names and extras in its metadata
        self.names: dict[tuple[str, str], str] = {}  # (tracker, tool) -> PLUS name
        self.extras: list[dict[str, Any]] = []
        self.offset_ns = 0

    def _setup(self, first: TrackerFrame) -> None:
        """Read the plus.* metadata (complete by the first message: it comes first)."""
        meta = self.reader.metadata
        self.exact = META_PREFIX + "transforms" in meta
        if not self.exact:
            self.tracker = self.tracker or first.tracker
            return
        try:
            table = json.loads(meta[META_PREFIX + "transforms"])
            self.names = {(t, tool): name for name, t, tool in table}
            self.extras = json.loads(meta.get(META_PREFIX + "frames", "[]"))
            self.offset_ns = int(meta.get(META_PREFIX + "clock_offset_ns", "0"))
            self.tracker = meta[META_PREFIX + "tracker"]
            for name in self.names.values():
                TransformName.parse(name)
        except (ValueError, TypeError, KeyError) as error:
            raise ConvertError(f"{self.reader.path}: corrupt plus.* metadata: {error}") from None
        if not isinstance(self.extras, list) or not all(isinstance(e, dict) for e in self.extras):
            raise ConvertError(f"{self.reader.path}: corrupt plus.frames metadata")

    def _plus_name(self, tracker: str, tool: str) -> str:
        if not self.exact:
            return f"{_camel(tool)}To{self.tracker_frame}"
        name = self.names.get((tracker, tool))
        if name is None:
            raise ConvertError(
                f"{self.reader.path}: tool {tool!r} of {tracker!r} is not in plus.transforms"
            )
        return name

    def _frame(self, messages: list[TrackerFrame], position: int) -> PlusFrame:
        """The PLUS frame of one primary message and the messages of its other frames."""
        extra: dict[str, Any] = {}
        if self.exact:
            if position >= len(self.extras):
                raise ConvertError(
                    f"{self.reader.path}: more frames than plus.frames describes ({position + 1})"
                )
            extra = self.extras[position]
        statuses_override = extra.get("s") or {}
        matrices_override = extra.get("m") or {}
        transforms: dict[str, np.ndarray] = {}
        statuses: dict[str, str] = {}
        for message in messages:
            for i, tool in enumerate(message.tools):
                name = self._plus_name(message.tracker, tool)
                if name in matrices_override:
                    values = [float(v) for v in matrices_override[name]]
                    transforms[name] = np.array(values, dtype=np.float64).reshape(4, 4)
                else:
                    transforms[name] = np.array(message.T_tracker_from_tools[i], dtype=np.float64)
                statuses[name] = str(statuses_override.get(name, message.statuses[i].value))
        primary = messages[0]
        return PlusFrame(
            index=position,
            timestamp_ns=primary.t_sensor_ns - self.offset_ns,
            transforms=transforms,
            statuses=statuses,
            unfiltered_timestamp_ns=extra.get("u"),
            frame_number=extra.get("n") if self.exact else primary.frame_number,
            fields=dict(extra.get("f") or {}),
        )

    def __iter__(self) -> Iterator[PlusFrame]:
        group: list[TrackerFrame] = []
        position = 0
        others: set[str] = set()
        for recorded in self.reader:
            if recorded.schema_name != "ornav." + TrackerFrame.TYPE:
                continue
            try:
                message = decode(recorded.payload).message
            except MessageError as error:
                raise ConvertError(
                    f"{self.reader.path}: undecodable message on {recorded.topic}: {error}"
                ) from None
            assert isinstance(message, TrackerFrame)
            if self.messages == 0:
                self._setup(message)
                others = {t for t, _tool in self.names if t != self.tracker}
            if message.tracker == self.tracker:
                if group:
                    yield self._frame(group, position)
                    position += 1
                group = [message]
            elif self.exact and message.tracker in others:
                if not group or message.t_sensor_ns != group[0].t_sensor_ns:
                    raise ConvertError(
                        f"{self.reader.path}: {recorded.topic} message at t_sensor_ns "
                        f"{message.t_sensor_ns} does not follow its frame on pose/{self.tracker}"
                    )
                group.append(message)
            else:
                continue  # another tracker's message: not exported
            self.messages += 1
        if group:
            yield self._frame(group, position)
            position += 1
        damage = damage_report(self.reader)
        if damage:
            self.problems.append(f"the recording is damaged: {damage}")
        if self.exact and position != len(self.extras):
            self.problems.append(f"the recording holds {position} of {len(self.extras)} frames")
        if self.reader.messages_read == 0:
            raise ConvertError(
                f"{self.reader.path}: no readable message" + (f" ({damage})" if damage else "")
            )
        if self.messages == 0:
            raise ConvertError(f"{self.reader.path}: no TrackerFrame messages to convert")


def mcap_to_plus(
    source: Path,
    destination: Path,
    *,
    tracker: str | None = None,
    tracker_frame: str = DEFAULT_TRACKER_FRAME,
    overwrite: bool = False,
) -> ConvertReport:
    """An MCAP recording -> a tracking-only PLUS sequence (module docstring)."""
    with iter_recording(source) as reader:
        frames = _McapFrames(reader, tracker=tracker, tracker_frame=tracker_frame)
        count = write_plus_sequence(destination, frames, overwrite=overwrite)
    for problem in frames.problems:
        log.warning("%s: %s", source, problem)
    return ConvertReport(
        source, destination, count, frames.messages, problems=tuple(frames.problems)
    )


# --- the ornav command (convert; inspect and replay of a PLUS file) ---------------------


def _user_error(error: Exception) -> Exception:
    from cli.errors import UserError

    return UserError(str(error))


def cmd_convert(args: argparse.Namespace) -> int:
    """``ornav convert IN OUT``."""
    try:
        report = convert(
            args.input,
            args.output,
            tracker=args.tracker,
            tracker_frame=args.tracker_frame,
            overwrite=args.overwrite,
        )
    except (ConvertError, PlusSequenceError) as error:
        raise _user_error(error) from None
    messages = f", {report.messages} messages" if report.messages else ""
    skipped = f", {report.skipped} broken frames skipped" if report.skipped else ""
    print(f"{report.source} -> {report.destination}: {report.frames} frames{messages}{skipped}")
    for problem in report.problems:
        print(f"  note: {problem}")
    return 0


def _summary(
    path: str | Path, tracker: str = DEFAULT_TRACKER, *, log_problems: bool = True
) -> PlusSummary:
    try:
        return summarize_plus_sequence(path, tracker=tracker, log_problems=log_problems)
    except PlusSequenceError as error:
        raise _user_error(error) from None


def cmd_inspect_plus(args: argparse.Namespace) -> int:
    """``ornav inspect FILE.mha|.nrrd``: tools, frames, duration, rate, invalid fractions."""
    from rich.console import Console
    from rich.table import Table

    summary = _summary(args.file)
    table = Table(title=f"{summary.path} (PLUS {summary.format})", title_justify="left")
    numeric = ("frames", "not OK", "projected", "max dev")
    for column in ("PLUS transform", "topic", "tool", *numeric, "statuses"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for t in summary.transforms:
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(t.statuses.items()))
        if t.refused:
            statuses += f"; {t.refused} OK not a pose: sent INVALID"
        table.add_row(
            t.mapping.plus_name,
            t.mapping.topic,
            t.mapping.tool,
            str(t.frames),
            f"{100 * t.not_ok_fraction:.1f}%",
            str(t.projected),
            f"{t.max_deviation:.2g}" if t.projected else "-",
            statuses,
        )
    clocks = ["Timestamp"]
    clocks += ["UnfilteredTimestamp"] if summary.has_unfiltered_timestamps else []
    clocks += ["FrameNumber"] if summary.has_frame_numbers else []
    size = summary.header.image_size
    pixels = (
        f"pixels {'x'.join(map(str, size))} per frame, not read"
        if summary.header.has_pixels
        else "no pixels"
    )
    skipped = f" ({summary.skipped} broken, skipped)" if summary.skipped else ""
    lines = [
        f"{summary.frame_count} frames{skipped}, {summary.duration_s:.2f} s, "
        f"{summary.rate_hz:.1f} Hz; {', '.join(clocks)}; {pixels}"
    ]
    if any(t.projected for t in summary.transforms):
        lines.append(
            "projected: OK matrices nearly rigid (deviation <= "
            f"{MAX_PROJECTED_DEVIATION:g}), sent OK as the nearest rigid transform"
        )
    lines += [f"note: {p}" for p in summary.problems]
    table.caption = "\n".join(lines)
    Console(width=120).print(table)
    return 0


def cmd_replay_plus(args: argparse.Namespace) -> int:
    """``ornav replay FILE.mha|.nrrd``: republish as TrackerFrames with the file's timing."""
    from cli.playback import check_playback_args, run_playback
    from tracking import plus_file_node

    check_playback_args(args)
    summary = _summary(args.file, log_problems=False)  # the node reads it again, and logs
    log.info(
        "replaying %s (%d PLUS frames) on %s at %gx",
        args.file,
        summary.frame_count,
        args.pub,
        args.speed,
    )
    cfg = plus_file_node.Config(
        path=str(args.file), speed=args.speed, loop=args.loop, start_delay_s=args.start_delay
    )
    return run_playback(
        plus_file_node.run,
        cfg,
        module="tracking.plus_file_node",
        pub=args.pub,
        status_command="plus",
        describe=lambda s: f"{s['state']}: {s['frames']} frames, pass {s['passes']}",
    )


def add_convert_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ornav convert`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "convert", help="PLUS sequence (.mha, .nrrd) <-> MCAP recording, tracking only"
    )
    parser.add_argument("input", help="e.g. session.igs.mha, session.mcap")
    parser.add_argument("output", help="e.g. session.mcap, session.igs.nrrd")
    parser.add_argument(
        "--tracker",
        help=f"ornav tracker name for PLUS -> MCAP (default {DEFAULT_TRACKER}); for MCAP -> "
        "PLUS of a non-PLUS recording, the tracker to export (default: the first seen)",
    )
    parser.add_argument(
        "--tracker-frame",
        default=DEFAULT_TRACKER_FRAME,
        help="the PLUS frame that is the tracker's own (default %(default)s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.set_defaults(func=cmd_convert)

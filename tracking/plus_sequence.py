"""PLUS sequence files (``.igs.mha``, ``.igs.nrrd``, ``.seq.mha``, ``.seq.nrrd``): the tracking.

PLUS (https://plustoolkit.github.io, IGSIO's ``vtkIGSIOMetaImageSequenceIO`` and
``vtkIGSIONrrdSequenceIO``) records a tracked session as one image file whose text header
carries, per frame, every transform with its status and the frame's timestamps; the pixels
(if any) follow the header. Reading here streams the header line by line and stops at its
end, so the pixel payload is never read, however many GB it is.

Header, MetaImage (``.mha``; ``.mhd`` has the same header and its pixels elsewhere)::

    ObjectType = Image
    DimSize = 820 616 97                  (width, height, frames; 0 0 N: tracking only)
    Seq_Frame0000_ProbeToTrackerTransform = 0.956683 -0.263308 ... 0 0 0 1
    Seq_Frame0000_ProbeToTrackerTransformStatus = OK
    Seq_Frame0000_Timestamp = 345.627957
    Seq_Frame0000_UnfilteredTimestamp = 345.611000      (optional)
    Seq_Frame0000_FrameNumber = 5539                    (optional)
    Seq_Frame0000_ImageStatus = OK                      (only with pixels)
    ElementDataFile = LOCAL               (the last header line; the pixels follow)

NRRD (``.nrrd``; ``.nhdr`` is a detached header): first line ``NRRD0004``, ``#`` comments,
fields ``name: value``, and the per-frame key/value pairs as ``Seq_Frame0000_<Name>:=value``;
the image status is ``Seq_Frame0000_Status`` there. The header ends at the first empty line.

Per frame: ``<From>To<To>Transform`` is 16 numbers, row-major, the 4x4 matrix that maps
``<From>`` coordinates into ``<To>`` (PLUS's ``StylusToTracker`` is ornav's
``T_tracker_from_stylus``), in mm; ``<From>To<To>TransformStatus`` is PLUS's tool status
(``OK``, ``MISSING``, ``OUT_OF_VIEW``, ``OUT_OF_VOLUME``, ``INVALID``, ``REQ_TIMEOUT``, ...);
a transform without a status reads as ``INVALID``, as IGSIO reads it. ``Timestamp`` is
PLUS's (filtered) acquisition time in seconds on the PLUS clock, ``UnfilteredTimestamp`` the
time the sample reached PLUS, ``FrameNumber`` the device's sample counter. Any other frame
field is kept verbatim in ``PlusFrame.fields``. Timestamps are held as integer nanoseconds
parsed from the decimal text (PLUS writes microseconds; finer digits round to 1 ns), so they
survive every conversion exactly.

PLUS names onto ornav frames and topics (``tool_mapping``): PLUS frame names are CamelCase,
ornav tool names lowercase. A transform into the tracker's frame (``tracker_frame``, PLUS's
``Tracker`` by default), ``<Tool>ToTracker``, is tool ``<tool>`` (the name lowercased:
``StylusToTracker`` -> ``stylus``, ``ReferenceToTracker`` -> ``reference``) of tracker
``<tracker>``, published on ``pose/<tracker>`` with its matrix as ``T_tracker_from_<tool>``.
A transform into any other PLUS frame ``<Frame>`` (``ProbeToReference``) is never put into
the tracker frame: it is tool ``<tool>`` of the virtual tracker ``<tracker>_<frame>``
(``plus_reference``), published on ``pose/<tracker>_<frame>``, whose measurement frame is
``<Frame>``; its matrix is ``T_<frame>_from_<tool>``. Every PLUS frame gives one
``TrackerFrame`` on ``pose/<tracker>`` (with no tools if it has no transform into the
tracker frame) and one per other target frame, all with the frame's ``t_sensor_ns``. So a
subscriber to ``pose/<tracker>`` only ever sees tracker-frame poses, and nothing is
composed or dropped: the PLUS name comes back from (tracker, tool) alone.

Statuses onto ornav (``tool_status``): ``OK``, ``MISSING``, ``OUT_OF_VIEW``,
``OUT_OF_VOLUME``, ``INVALID`` map to themselves (older PLUS wrote ``TOOL_MISSING`` etc.;
the prefix is accepted); every other PLUS status (``REQ_TIMEOUT``, ``SWITCH1_IS_ON``,
``UNKNOWN``, ...) is ``INVALID``: not drawn. Real tracker matrices are rigid only to the
digits written (PLUS files of NDI trackers lie up to 3.6e-4 from a rotation), so an ``OK``
matrix is projected onto the nearest rigid transform (``nav.transforms.nearest_rigid``) and
published ``OK``, counted in ``projected`` with its deviation, when its deviation is at most
``nav.transforms.MAX_PROJECTED_DEVIATION`` (2e-3); a matrix rigid to round-off is published
bit for bit. An ``OK`` matrix that is not finite or clearly not a pose (scale, shear: an
``ImageToProbe`` carries the pixel spacing) is published as ``INVALID`` and counted as
``downgraded``; a non-finite matrix of a non-OK tool travels as identity (the bus refuses
non-finite numbers). So every ``OK`` pose on the bus is rigid within
``nav.messages.RIGID_TOLERANCE``. PLUS files carry no marker fit
error: every tool gets ``fit_error_mm`` NaN ("not measured"). Invalid tools are always carried.

Bad input: a file that is not a sequence header, a header cut off before its end (a
truncated file), binary or overlong lines, or frames out of order raise
``PlusSequenceError`` with one line naming the file and the byte offset. A frame whose own
fields are broken (a matrix of 15 numbers, no timestamp, a status with no matrix, a field
given twice) is skipped, counted in ``skipped`` and logged; the frames around it are read.
Nothing here guesses a pose.

Timestamps: a frame whose ``Timestamp`` is not a finite number (``nan``, ``1e999999``),
beyond what int64 ns holds (``MAX_TIMESTAMP_S``), negative, earlier than the frame read
before it, or more than ``MAX_FRAME_GAP_S`` after it (a PLUS buffer is one continuous
capture: an hour's jump is a corrupt stamp, not a pause) is skipped too, counted in
``skipped`` and ``bad_timestamps``, and reported once at the end of the file in one line
with the count and the first such frame; the frames around it are read. Every consumer
(inspect, replay, convert, calibrate) therefore sees frames whose timestamps only move
forward within the file's real time range. A file none of whose frames has a usable
timestamp raises ``PlusSequenceError`` at its end.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import BinaryIO, Final, cast

import numpy as np
import numpy.typing as npt

from nav.arrays import FloatArray
from nav.frames import is_valid_tool_name
from nav.messages import MAX_TOOLS_PER_FRAME, ToolStatus, TrackerFrame
from nav.transforms import MAX_PROJECTED_DEVIATION, nearest_rigids

log = logging.getLogger(__name__)


READ_SUFFIXES: Final = (".mha", ".mhd", ".nrrd", ".nhdr")
WRITE_SUFFIXES: Final = (".mha", ".nrrd")
DEFAULT_TRACKER: Final = "plus"
DEFAULT_TRACKER_FRAME: Final = "Tracker"  # PLUS's name for the tracker's measurement frame
MAX_LINE_BYTES: Final = 64 * 1024  # a 4x4 matrix line is ~200 bytes; longer is not a header
MAX_PROBLEMS: Final = 20  # distinct problems remembered per file
MAX_SKIP_LOGS: Final = 5  # skipped frames logged one by one, then only counted
MAX_TIMESTAMP_S: Final = Decimal(2**63 - 1) / 1_000_000_000  # int64 ns, the bus's limit
MAX_FRAME_GAP_S: Final = 3600.0  # between consecutive frames of one PLUS capture

FRAME_PREFIX: Final = "Seq_Frame"
TRANSFORM_SUFFIX: Final = "Transform"
STATUS_SUFFIX: Final = "TransformStatus"
TIMESTAMP: Final = "Timestamp"
UNFILTERED_TIMESTAMP: Final = "UnfilteredTimestamp"
FRAME_NUMBER: Final = "FrameNumber"
# The image status field has a different name in each format (IGSIO's own constants).
IMAGE_STATUS: Final[Mapping[str, str]] = MappingProxyType({"mha": "ImageStatus", "nrrd": "Status"})

_STATUS_BY_PLUS: Final[Mapping[str, ToolStatus]] = MappingProxyType(
    {status.value: status for status in ToolStatus}
)
_FRAME_KEY = re.compile(r"Seq_Frame(\d+)_(.+)")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]+(?: [A-Za-z0-9_.-]+)*")  # writable: no = or :
_PLUS_FRAME_NAME = re.compile(r"[A-Za-z0-9_]+")
_IDENTITY = np.eye(4)
_TEXT_LINE = re.compile(rb"[\t\x20-\x7e]*")  # printable ASCII: what a header line holds


class PlusSequenceError(ValueError):
    """A PLUS sequence file that cannot be read or written; the message is one line."""


# --- names ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformName:
    """A PLUS transform name ``<From>To<To>``: maps ``from_frame`` coordinates into ``to_frame``."""

    from_frame: str
    to_frame: str

    @property
    def name(self) -> str:
        return f"{self.from_frame}To{self.to_frame}"

    @classmethod
    def parse(cls, text: str) -> TransformName:
        """``StylusToTracker`` -> (Stylus, Tracker), with IGSIO's rule for ``To``.

        IGSIO (``igsioTransformName::SetTransformName``) takes the one ``To`` that is
        followed by a character that is not a lowercase letter, so ``ToolToTracker`` is
        (Tool, Tracker). Raises PlusSequenceError for none or several such ``To``.
        """
        return _parse_transform_name(text)


@functools.lru_cache(maxsize=1024)  # a file repeats a few names in every frame
def _parse_transform_name(text: str) -> TransformName:
    if not _PLUS_FRAME_NAME.fullmatch(text):
        raise PlusSequenceError(f"transform name {text[:80]!r} has characters PLUS never uses")
    splits = []
    start = 0
    while (at := text.find("To", start)) != -1 and at + 2 < len(text):
        following = text[at + 2]
        if following == following.upper():
            splits.append(at)
        start = at + 2
    if len(splits) != 1 or splits[0] == 0:
        raise PlusSequenceError(
            f"transform name {text!r} is not <From>To<To> (needs exactly one 'To' "
            "before a capital letter)"
        )
    at = splits[0]
    return TransformName(text[:at], text[at + 2 :])


def plus_tool_name(plus_frame: str) -> str:
    """The ornav name of a PLUS coordinate frame: lowercased (``StylusTip`` -> ``stylustip``).

    Raises PlusSequenceError if the result is not a valid ornav tool name.
    """
    tool = plus_frame.lower()
    if not is_valid_tool_name(tool):
        raise PlusSequenceError(
            f"PLUS frame {plus_frame!r} gives {tool!r}, not a valid ornav tool name "
            "(a letter, then up to 31 lowercase letters, digits or _, not ending in _tip)"
        )
    return tool


@dataclass(frozen=True)
class ToolMapping:
    """Where one PLUS transform travels: ``tool`` of ``tracker``, on ``pose/<tracker>``."""

    plus_name: str
    tracker: str
    tool: str

    @property
    def topic(self) -> str:
        return f"pose/{self.tracker}"


@functools.lru_cache(maxsize=1024)
def tool_mapping(
    plus_name: str, *, tracker: str = DEFAULT_TRACKER, tracker_frame: str = DEFAULT_TRACKER_FRAME
) -> ToolMapping:
    """Map a PLUS transform name onto an ornav (tracker, tool); see the module docstring.

    ``StylusToTracker`` -> (``plus``, ``stylus``); ``ProbeToReference`` ->
    (``plus_reference``, ``probe``). Raises PlusSequenceError for a name that does not map.
    """
    name = TransformName.parse(plus_name)
    tool = plus_tool_name(name.from_frame)
    if name.to_frame == tracker_frame:
        return ToolMapping(plus_name, tracker, tool)
    virtual = f"{tracker}_{plus_tool_name(name.to_frame)}"
    if not is_valid_tool_name(virtual):
        raise PlusSequenceError(
            f"{plus_name}: tracker name {virtual!r} for frame {name.to_frame!r} is too long "
            "or invalid; choose a shorter tracker name"
        )
    return ToolMapping(plus_name, virtual, tool)


def check_mappings(mappings: Iterable[ToolMapping]) -> None:
    """Raise PlusSequenceError if two PLUS transforms land on the same (tracker, tool)."""
    seen: dict[tuple[str, str], str] = {}
    per_tracker: dict[str, int] = {}
    for mapping in mappings:
        key = (mapping.tracker, mapping.tool)
        other = seen.setdefault(key, mapping.plus_name)
        if other != mapping.plus_name:
            raise PlusSequenceError(
                f"PLUS transforms {other} and {mapping.plus_name} both map to tool "
                f"{mapping.tool!r} of tracker {mapping.tracker!r}"
            )
        per_tracker[mapping.tracker] = per_tracker.get(mapping.tracker, 0) + 1
        if per_tracker[mapping.tracker] > MAX_TOOLS_PER_FRAME:
            raise PlusSequenceError(
                f"more than {MAX_TOOLS_PER_FRAME} tools for tracker {mapping.tracker!r}"
            )


def tool_status(plus_status: str) -> ToolStatus:
    """A PLUS status string -> ornav's vocabulary; anything unknown is INVALID (not drawn)."""
    status = plus_status.strip().upper()
    if status.startswith("TOOL_"):  # written by PLUS before 2.6
        status = status[len("TOOL_") :]
    return _STATUS_BY_PLUS.get(status, ToolStatus.INVALID)


# --- timestamps ----------------------------------------------------------------------


def parse_seconds_ns(text: str) -> int:
    """PLUS seconds text (``345.627957``) -> integer ns, exactly (beyond 9 decimals: rounded).

    Raises ValueError for text that is not a finite decimal number, or one whose magnitude
    exceeds ``MAX_TIMESTAMP_S`` (it would not fit int64 ns).
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text[:40]!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text[:40]!r} is not finite")
    if abs(value) > MAX_TIMESTAMP_S:  # checked first: scaling 1e999999 overflows Decimal
        raise ValueError(f"{text[:40]!r} is out of range (over {MAX_TIMESTAMP_S:.0f} s)")
    return int((value * 1_000_000_000).to_integral_value())


def format_seconds(ns: int) -> str:
    """Integer ns -> PLUS seconds text: at least 6 decimals as PLUS writes, up to 9 when needed."""
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0").ljust(6, "0")
    return f"{sign}{whole}.{digits}"


# --- the data ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PlusFrame:
    """One frame of a PLUS sequence (the tracking part; pixels are never read).

    ``transforms`` maps the PLUS name (``StylusToTracker``, no ``Transform`` suffix) to its
    (4, 4) matrix, mm, in file order; ``statuses`` has the same keys, PLUS status text as
    written (``OK``, ``INVALID``, ...). ``timestamp_ns`` is PLUS's ``Timestamp`` on the PLUS
    clock; ``unfiltered_timestamp_ns`` and ``frame_number`` are None when the file has none.
    ``index`` is the NNNN of ``Seq_FrameNNNN_`` (writing renumbers from 0). ``fields`` holds
    every other per-frame field verbatim; ``image_status`` the frame's image status if any.
    """

    index: int
    timestamp_ns: int
    transforms: Mapping[str, FloatArray]
    statuses: Mapping[str, str]
    unfiltered_timestamp_ns: int | None = None
    frame_number: int | None = None
    image_status: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def timestamp_s(self) -> float:
        return self.timestamp_ns / 1e9


@dataclass(frozen=True)
class PlusHeader:
    """The global fields of a sequence file, in file order, and what they say about it.

    ``declared_frames`` is the frame count of ``DimSize`` (mha) or ``sizes`` (nrrd), if any;
    ``image_size`` the pixel dimensions of one frame (width, height[, depth]); pixels are
    present only if every one of them is > 0 (PLUS writes ``0 0 N`` for tracking only).
    """

    format: str
    fields: Mapping[str, str]

    @property
    def _sizes(self) -> tuple[list[int], int | None]:
        """The sizes of every axis, and which axis counts frames (None: a single image)."""
        key = "DimSize" if self.format == "mha" else "sizes"
        try:
            sizes = [int(v) for v in self.fields.get(key, "").split()]
        except ValueError:
            return [], None
        if not sizes:
            return [], None
        if self.format == "mha":
            # A sequence is NDims = 3 (2D frames) or 4 (3D frames): the last axis.
            return sizes, len(sizes) - 1 if len(sizes) >= 3 else None
        kinds = self.fields.get("kinds", "").split()
        if not kinds:
            return sizes, len(sizes) - 1
        frames_at = [i for i, kind in enumerate(kinds) if kind in ("list", "time")]
        return sizes, frames_at[-1] if frames_at and frames_at[-1] < len(sizes) else None

    @property
    def declared_frames(self) -> int | None:
        sizes, at = self._sizes
        if not sizes:
            return None
        return 1 if at is None else sizes[at]

    @property
    def image_size(self) -> tuple[int, ...]:
        sizes, at = self._sizes
        kinds = self.fields.get("kinds", "").split() if self.format == "nrrd" else []
        return tuple(
            n
            for i, n in enumerate(sizes)
            if i != at and (i >= len(kinds) or kinds[i] in ("domain", "space"))
        )

    @property
    def has_pixels(self) -> bool:
        size = self.image_size
        return bool(size) and all(n > 0 for n in size)


# --- reading -------------------------------------------------------------------------


class _BadFrameError(Exception):
    """One frame's own fields are broken; the frame is skipped, reading goes on."""


class _BadTimestampError(_BadFrameError):
    """The frame's Timestamp is unusable: skipped and reported in one line per file."""


def _transform_of(field_name: str) -> str | None:
    """``StylusToTrackerTransform[Status]`` -> ``StylusToTracker``; None for other fields."""
    for suffix in (STATUS_SUFFIX, TRANSFORM_SUFFIX):
        if field_name.endswith(suffix) and len(field_name) > len(suffix):
            return field_name[: -len(suffix)]
    return None


def _is_transform_name(text: str) -> bool:
    try:
        TransformName.parse(text)
    except PlusSequenceError:
        return False
    return True


def _parse_matrix(text: str) -> FloatArray:
    values = text.split()
    if len(values) != 16:
        raise _BadFrameError(f"{len(values)} numbers where a 4x4 matrix has 16")
    try:
        matrix = np.array([float(v) for v in values], dtype=np.float64).reshape(4, 4)
    except ValueError:
        raise _BadFrameError(f"matrix {text[:60]!r} has a value that is not a number") from None
    return matrix


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _BadFrameError(f"{what} {text[:40]!r} is not an integer") from None


def _parse_time(text: str, what: str) -> int:
    try:
        return parse_seconds_ns(text)
    except ValueError as error:
        raise _BadFrameError(f"{what}: {error}") from None


class PlusSequenceReader(Iterator[PlusFrame]):
    """Streams the frames of a PLUS sequence file; see ``open_plus_sequence``.

    ``header`` holds the global fields read so far (all of them once iteration ends).
    After iteration: ``frames_read``, ``skipped`` (broken frames left out, those with a bad
    timestamp included), ``bad_timestamps`` (those), ``first_bad_timestamp`` ((frame index,
    why) of the first), ``problems``
    (distinct one-line notes, e.g. a transform without status), ``header_bytes`` (where the
    header ends: nothing after it was read).
    """

    def __init__(
        self,
        source: str | Path | BinaryIO,
        *,
        name: str | None = None,
        log_problems: bool = True,
    ) -> None:
        self._owns_file = isinstance(source, str | Path)
        if isinstance(source, str | Path):
            self.path = Path(source)
            self._file: BinaryIO = _open_for_reading(self.path)
        else:
            self.path = Path(name or str(getattr(source, "name", "<stream>")))
            self._file = source
        self.log_problems = log_problems
        self.frames_read = 0
        self.skipped = 0
        self.bad_timestamps = 0
        self.first_bad_timestamp: tuple[int, str] | None = None
        self._last_timestamp_ns: int | None = None
        self.problems: list[str] = []
        self.header_bytes: int | None = None
        self._offset = 0
        self._line_no = 0
        self._closed = False
        try:
            self.format, first_line = self._sniff()
            self._fields: dict[str, str] = {}
            self.header = PlusHeader(self.format, self._fields)
            if first_line is not None:
                key, value, _is_frame = self._split(first_line)
                self._fields[key] = value
            self._pending = self._read_globals()
        except BaseException:
            self.close()
            raise
        self._frames = self._generate()

    # -- plumbing --

    def __next__(self) -> PlusFrame:
        return next(self._frames)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if hasattr(self, "_frames"):
                self._frames.close()
            if self._owns_file:
                self._file.close()

    def __enter__(self) -> PlusSequenceReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, detail: str) -> PlusSequenceError:
        return PlusSequenceError(f"{self.path}: {detail}")

    def _note(self, problem: str) -> None:
        if problem not in self.problems and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
            if self.log_problems:
                log.warning("%s: %s", self.path, problem)

    def _readline(self) -> tuple[str, bool] | None:
        """The next header line without its end of line, and whether it is blank."""
        at = self._offset
        raw = self._file.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return None
        self._offset += len(raw)
        self._line_no += 1
        if len(raw) > MAX_LINE_BYTES:
            raise self._error(
                f"line {self._line_no} (byte {at}) is longer than {MAX_LINE_BYTES} bytes: "
                "not a sequence header, or a corrupt one"
            )
        if not raw.endswith(b"\n"):
            # Every header line ends in a newline, the last one included.
            raise self._error(
                f"the header is cut off at byte {self._offset} inside line {self._line_no}: "
                "the file is truncated"
            )
        body = raw.rstrip(b"\r\n")
        if not _TEXT_LINE.fullmatch(body):
            raise self._error(
                f"line {self._line_no} (byte {at}) is not header text: the header is corrupt"
            )
        text = body.decode("ascii")
        return text, not text.strip()

    def _sniff(self) -> tuple[str, str | None]:
        """The format, and (for mha) the first line, which is already a field."""
        not_plus = "not a PLUS sequence file (no MetaImage 'ObjectType =' or NRRD magic first)"
        try:
            first = self._readline()
        except PlusSequenceError:
            raise self._error(not_plus) from None
        if first is None:
            raise self._error("empty file, not a PLUS sequence")
        text = first[0]
        if re.fullmatch(r"NRRD000\d", text.strip()):
            return "nrrd", None
        if re.match(r"\s*(ObjectType|NDims)\s*=", text):
            return "mha", text
        raise self._error(not_plus)

    def _split(self, text: str) -> tuple[str, str, bool]:
        """(key, value, is_frame_field) of one header line; raises for a malformed line."""
        if self.format == "mha":
            key, sep, value = text.partition("=")
        else:
            # NRRD: "field: value", and "key:=value" for key/value pairs (IGSIO's reading).
            key, sep, value = text.partition(":")
            if value.startswith("="):
                value = value[1:]
        key = key.strip()
        if not sep or not key:
            raise self._error(f"line {self._line_no} is not a header field: {text[:60]!r}")
        return key, value.strip(), key.startswith(FRAME_PREFIX)

    def _read_globals(self) -> tuple[str, str] | None:
        """Global fields up to the first frame field; returns that line split, or None."""
        while True:
            line = self._next_field()
            if line is None:
                return None
            key, value, is_frame = line
            if is_frame:
                return key, value
            self._fields[key] = value

    def _next_field(self) -> tuple[str, str, bool] | None:
        """The next field of the header; None at its end (and the end is recorded)."""
        while True:
            line = self._readline()
            if line is None:
                self._end_of_file()
                return None
            text, blank = line
            if self.format == "nrrd":
                if blank:
                    self.header_bytes = self._offset
                    return None
                if text.lstrip().startswith("#"):
                    continue
            elif blank:
                continue  # MetaIO ignores blank lines
            key, value, is_frame = self._split(text)
            if self.format == "mha" and key == "ElementDataFile":
                self._fields[key] = value
                self.header_bytes = self._offset
                return None
            return key, value, is_frame

    def _end_of_file(self) -> None:
        if self.format == "nrrd" and ("data file" in self._fields or "datafile" in self._fields):
            self.header_bytes = self._offset  # a detached header (.nhdr) ends with the file
            return
        end = "the 'ElementDataFile' line" if self.format == "mha" else "the empty line"
        raise self._error(
            f"the header ends at byte {self._offset} before {end} that closes it: "
            "the file is truncated"
        )

    def _generate(self) -> Generator[PlusFrame, None, None]:
        try:
            index: int | None = None
            fields: dict[str, str] = {}
            broken = ""
            last_index = -1
            line: tuple[str, str] | None = self._pending
            while line is not None:
                key, value = line
                match = _FRAME_KEY.fullmatch(key)
                if match is None:
                    raise self._error(
                        f"line {self._line_no}: frame field {key[:60]!r} is not "
                        "Seq_FrameNNNN_<Name>"
                    )
                this_index, name = int(match.group(1)), match.group(2)
                if this_index != index:
                    if index is not None:
                        frame = self._frame(index, fields, broken)
                        if frame is not None:
                            yield frame
                    if this_index <= last_index:
                        raise self._error(
                            f"line {self._line_no}: fields of frame {this_index} come after "
                            f"frame {last_index}: frames out of order, the header is corrupt"
                        )
                    index, last_index, fields, broken = this_index, this_index, {}, ""
                if name in fields:
                    broken = broken or f"field {name} given twice"
                fields[name] = value
                line = self._next_frame_field()
            if index is not None:
                frame = self._frame(index, fields, broken)
                if frame is not None:
                    yield frame
            self._finish()
        finally:
            if self._owns_file:
                self._file.close()

    def _next_frame_field(self) -> tuple[str, str] | None:
        while (line := self._next_field()) is not None:
            key, value, is_frame = line
            if is_frame:
                return key, value
            self._fields[key] = value  # a global field among the frames
        return None

    def _finish(self) -> None:
        declared = self.header.declared_frames
        seen = self.frames_read + self.skipped
        if declared is not None and declared != seen:
            self._note(f"the header declares {declared} frames, it holds {seen}")
        if self.first_bad_timestamp is not None:
            index, why = self.first_bad_timestamp
            report = (
                f"{self.bad_timestamps} frame(s) skipped for an unusable Timestamp (not "
                "finite, out of range, negative, going back or jumping over "
                f"{MAX_FRAME_GAP_S:.0f} s); the first is frame {index}: {why}"
            )
            if self.frames_read == 0:
                raise self._error(f"no frame has a usable Timestamp: {report}")
            self._note(report)
        broken = self.skipped - self.bad_timestamps
        if broken and self.log_problems:
            log.warning("%s: %d broken frame(s) skipped", self.path, broken)

    def _bad_timestamp(self, index: int, why: str) -> None:
        self.skipped += 1
        self.bad_timestamps += 1
        if self.first_bad_timestamp is None:
            self.first_bad_timestamp = (index, why)

    def _check_time(self, frame: PlusFrame) -> None:
        """Raise _BadTimestampError unless ``frame`` moves the clock forward plausibly."""
        t = frame.timestamp_ns
        last = self._last_timestamp_ns
        if t < 0:
            raise _BadTimestampError(f"Timestamp {format_seconds(t)} s is negative")
        if last is not None and t < last:
            raise _BadTimestampError(
                f"Timestamp {format_seconds(t)} s comes before the previous frame's "
                f"{format_seconds(last)} s"
            )
        if last is not None and t - last > MAX_FRAME_GAP_S * 1e9:
            raise _BadTimestampError(
                f"Timestamp {format_seconds(t)} s is {(t - last) / 1e9:.0f} s after the "
                "previous frame's"
            )

    def _frame(self, index: int, fields: Mapping[str, str], broken: str) -> PlusFrame | None:
        try:
            if broken:
                raise _BadFrameError(broken)
            frame = self._build(index, fields)
            self._check_time(frame)
        except _BadTimestampError as error:
            self._bad_timestamp(index, str(error))
            return None
        except _BadFrameError as error:
            self.skipped += 1
            if self.log_problems and self.skipped <= MAX_SKIP_LOGS:
                log.warning("%s: frame %d skipped: %s", self.path, index, error)
                if self.skipped == MAX_SKIP_LOGS:
                    log.warning("%s: further skipped frames are only counted", self.path)
            return None
        self.frames_read += 1
        self._last_timestamp_ns = frame.timestamp_ns
        return frame

    def _build(self, index: int, fields: Mapping[str, str]) -> PlusFrame:
        transforms: dict[str, FloatArray] = {}
        statuses: dict[str, str] = {}
        timestamp_ns: int | None = None
        unfiltered_ns: int | None = None
        frame_number: int | None = None
        image_status: str | None = None
        extra: dict[str, str] = {}
        image_status_key = IMAGE_STATUS[self.format]
        for name, value in fields.items():
            transform = _transform_of(name)
            if transform is not None and _is_transform_name(transform):
                if name.endswith(STATUS_SUFFIX):
                    statuses[transform] = value
                else:
                    transforms[transform] = _parse_matrix(value)
                continue
            if transform is not None:
                self._note(f"{name}: not a <From>To<To> transform, kept as a plain field")
            if name == TIMESTAMP:
                try:
                    timestamp_ns = _parse_time(value, TIMESTAMP)
                except _BadFrameError as error:
                    raise _BadTimestampError(str(error)) from None
            elif name == UNFILTERED_TIMESTAMP:
                unfiltered_ns = _parse_time(value, UNFILTERED_TIMESTAMP)
            elif name == FRAME_NUMBER:
                frame_number = _parse_int(value, FRAME_NUMBER)
            elif name == image_status_key:
                image_status = value
            else:
                extra[name] = value
        if timestamp_ns is None:
            raise _BadFrameError("no Timestamp")
        orphans = sorted(set(statuses) - set(transforms))
        if orphans:
            raise _BadFrameError(f"status of {orphans[0]} without its matrix")
        for plus_name in transforms:
            if plus_name not in statuses:
                self._note(f"{plus_name} has no status field: read as INVALID, as PLUS does")
                statuses[plus_name] = ToolStatus.INVALID.value
        return PlusFrame(
            index=index,
            timestamp_ns=timestamp_ns,
            transforms=transforms,
            statuses={name: statuses[name] for name in transforms},
            unfiltered_timestamp_ns=unfiltered_ns,
            frame_number=frame_number,
            image_status=image_status,
            fields=extra,
        )


def _open_for_reading(path: Path) -> BinaryIO:
    try:
        return cast(BinaryIO, open(path, "rb"))
    except FileNotFoundError:
        raise PlusSequenceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PlusSequenceError(f"{path}: is a directory, not a sequence file") from None
    except OSError as error:
        raise PlusSequenceError(f"{path}: cannot read: {error.strerror}") from None


def open_plus_sequence(
    source: str | Path | BinaryIO, *, name: str | None = None, log_problems: bool = True
) -> PlusSequenceReader:
    """Stream the frames of a PLUS sequence file (mha or nrrd, told apart by content).

    Reads the header one line at a time and stops where it ends: the pixels are never read.
    ``source`` may be an open binary file (``name`` then labels messages). Raises
    PlusSequenceError at once for a file that is not a sequence header, and during iteration
    for a header that is cut off or corrupt (after yielding the frames before the damage,
    but never the frame that was being read when it was found).
    """
    return PlusSequenceReader(source, name=name, log_problems=log_problems)


def read_plus_sequence(path: str | Path) -> tuple[PlusHeader, list[PlusFrame]]:
    """Every frame of a (small) sequence file, and its header. See ``open_plus_sequence``."""
    with open_plus_sequence(path) as reader:
        frames = list(reader)
        return reader.header, frames


def is_plus_path(path: str | Path) -> bool:
    """True for a file name PLUS sequences use (``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``)."""
    return Path(path).suffix.lower() in READ_SUFFIXES


# --- writing -------------------------------------------------------------------------

_COUNT_WIDTH = 12  # room for the frame count, written last over this many spaces


def _format_float(value: float) -> str:
    text = repr(float(value))  # shortest text that reads back bit for bit
    return text[:-2] if text.endswith(".0") else text


def _check_field(name: str, value: str) -> None:
    if not _FIELD_NAME.fullmatch(name):
        raise PlusSequenceError(f"frame field name {name[:60]!r} cannot be written")
    if "\n" in value or "\r" in value or not value.isprintable():
        raise PlusSequenceError(f"frame field {name} has a value that cannot be written")


def _frame_lines(frame: PlusFrame, position: int, separator: str) -> list[str]:
    prefix = f"{FRAME_PREFIX}{position:04d}_"
    lines: list[str] = []
    for plus_name, matrix in frame.transforms.items():
        TransformName.parse(plus_name)
        values = np.asarray(matrix, dtype=np.float64)
        if values.shape != (4, 4):
            raise PlusSequenceError(f"{plus_name}: matrix of shape {values.shape}, not (4, 4)")
        status = frame.statuses.get(plus_name, ToolStatus.INVALID.value)
        _check_field(plus_name, status)
        text = " ".join(_format_float(v) for v in values.reshape(-1))
        lines.append(f"{prefix}{plus_name}{TRANSFORM_SUFFIX}{separator}{text}")
        lines.append(f"{prefix}{plus_name}{STATUS_SUFFIX}{separator}{status}")
    lines.append(f"{prefix}{TIMESTAMP}{separator}{format_seconds(frame.timestamp_ns)}")
    if frame.unfiltered_timestamp_ns is not None:
        text = format_seconds(frame.unfiltered_timestamp_ns)
        lines.append(f"{prefix}{UNFILTERED_TIMESTAMP}{separator}{text}")
    if frame.frame_number is not None:
        lines.append(f"{prefix}{FRAME_NUMBER}{separator}{int(frame.frame_number)}")
    for name, value in frame.fields.items():
        _check_field(name, value)
        lines.append(f"{prefix}{name}{separator}{value}")
    return lines


def _mha_head() -> list[str]:
    # As PLUS writes a tracker buffer: no pixels (DimSize 0 0 N), the frame count padded.
    return [
        "ObjectType = Image",
        "NDims = 3",
        "AnatomicalOrientation = RAI",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CenterOfRotation = 0 0 0",
        "CompressedData = False",
        "DimSize = 0 0 ",  # + count
        "Kinds = domain domain list",
        "ElementSpacing = 1 1 1",
        "ElementType = MET_UCHAR",
        "Offset = 0 0 0",
        "TransformMatrix = 1 0 0 0 1 0 0 0 1",
    ]


def _nrrd_head() -> list[str]:
    # NRRD needs sizes >= 1, so the frames are 1x1 blank pixels (N bytes after the header).
    return [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        "dimension: 3",
        "encoding: raw",
        "endian: little",
        "kinds: domain domain list",
        "sizes: 1 1 ",  # + count, right-aligned: the padding sits between the numbers
        "space dimension: 2",
        "space directions: (1,0) (0,1) none",
        "space origin: (0,0)",
        "type: uint8",
    ]


def write_plus_sequence(
    path: str | Path, frames: Iterable[PlusFrame], *, overwrite: bool = False
) -> int:
    """Write ``frames`` as a tracking-only PLUS sequence; returns the frame count.

    The format follows the suffix (``.mha`` or ``.nrrd``, so ``.igs.mha``, ``.seq.nrrd``).
    Frames are numbered from 0 in the order given; ``image_status`` is not written (there
    are no pixels). ``frames`` is consumed once, as a stream; the file is written under a
    temporary name and renamed when complete. Raises PlusSequenceError if ``path`` exists
    (unless ``overwrite``), has another suffix, or a frame cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise PlusSequenceError(f"{path}: write .mha or .nrrd, not {suffix or 'no suffix'!r}")
    if path.exists() and not overwrite:
        raise PlusSequenceError(f"{path}: already exists")
    fmt = suffix[1:]
    separator = " = " if fmt == "mha" else ":="
    partial = path.with_name(path.name + ".partial")
    count = 0
    try:
        with open(partial, "wb") as out:
            count_at = 0
            for line in _mha_head() if fmt == "mha" else _nrrd_head():
                if line.startswith(("DimSize", "sizes")):
                    count_at = out.tell() + len(line)
                    line += " " * _COUNT_WIDTH
                out.write(line.encode("ascii") + b"\n")
            for frame in frames:
                text = "\n".join(_frame_lines(frame, count, separator)) + "\n"
                out.write(text.encode("ascii"))
                count += 1
            if fmt == "mha":
                out.write(b"ElementDataFile = LOCAL\n")
            else:
                out.write(b"\n" + bytes(count))  # the 1x1 blank pixel of each frame
            # Padding as PLUS does: trailing in mha, between the numbers in nrrd.
            digits = str(count)
            out.seek(count_at)
            out.write((digits.ljust if fmt == "mha" else digits.rjust)(_COUNT_WIDTH).encode())
        os.replace(partial, path)
    except OSError as error:
        raise PlusSequenceError(f"{path}: cannot write: {error.strerror or error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return count


# --- onto the bus --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BusFrames:
    """The ``TrackerFrame``s of one PLUS frame (first: the tracker's own, ``pose/<tracker>``).

    ``downgraded`` names the PLUS transforms whose OK status was published as INVALID
    (a non-finite matrix or not a pose); ``projected`` those published OK after projection
    onto the nearest rigid transform, ``max_deviation`` the largest such deviation (0 if none;
    ``nav.transforms.nearest_rigid``).
    """

    frames: tuple[TrackerFrame, ...]
    downgraded: tuple[str, ...]
    projected: tuple[str, ...] = ()
    max_deviation: float = 0.0


def _project_ok_poses(
    Ts: FloatArray, ok: npt.NDArray[np.bool_]
) -> tuple[FloatArray, npt.NDArray[np.bool_], FloatArray]:
    """The poses a tracker reports OK, as the bus will carry them.

    ``Ts`` (N, 4, 4) and ``ok`` (N,): returns ``(Ts, refused, deviations)``, where the OK
    matrices within ``MAX_PROJECTED_DEVIATION`` of rigid are projected onto the nearest rigid
    transform, ``refused`` (N,) marks the OK ones that are not (non-finite, scaled, sheared),
    and ``deviations`` (N,) is each OK matrix's deviation (0 for the others). Non-OK
    matrices come back as they were.
    """
    out = np.array(Ts, dtype=np.float64)
    deviations = np.zeros(len(out))
    refused = np.zeros(len(out), dtype=bool)
    if ok.any():
        rigid, deviations[ok] = nearest_rigids(out[ok])
        refused[ok] = ~(deviations[ok] <= MAX_PROJECTED_DEVIATION)
        keep = ok & ~refused
        out[keep] = rigid[~refused[ok]]
    return out, refused, deviations


def to_tracker_frames(
    frame: PlusFrame,
    *,
    t_sensor_ns: int,
    frame_number: int,
    tracker: str = DEFAULT_TRACKER,
    tracker_frame: str = DEFAULT_TRACKER_FRAME,
) -> BusFrames:
    """One PLUS frame -> its ``TrackerFrame``s, grouped by target frame (module docstring).

    ``t_sensor_ns`` (>= 0, host clock) and ``frame_number`` (>= 0) are the caller's mapping
    of the PLUS timestamp and counter. Raises PlusSequenceError for a name that does not map.
    """
    groups: dict[str, list[tuple[str, str, FloatArray, ToolStatus]]] = {tracker: []}
    for plus_name, matrix in frame.transforms.items():
        mapping = tool_mapping(plus_name, tracker=tracker, tracker_frame=tracker_frame)
        status = tool_status(frame.statuses.get(plus_name, ToolStatus.INVALID.value))
        groups.setdefault(mapping.tracker, []).append((plus_name, mapping.tool, matrix, status))
    downgraded: list[str] = []
    projected: list[str] = []
    max_deviation = 0.0
    out: list[TrackerFrame] = []
    for name, tools in groups.items():
        n = len(tools)
        if n > MAX_TOOLS_PER_FRAME:
            raise PlusSequenceError(f"frame {frame.index}: {n} tools for tracker {name!r}")
        Ts = np.empty((n, 4, 4))
        for i, (_plus, _tool, matrix, _status) in enumerate(tools):
            Ts[i] = matrix
        ok = np.array([status is ToolStatus.OK for _p, _t, _m, status in tools], dtype=bool)
        Ts, refused, deviations = _project_ok_poses(Ts, ok)
        Ts[~np.isfinite(Ts).all(axis=(1, 2))] = _IDENTITY  # the bus refuses non-finite numbers
        statuses: list[ToolStatus] = []
        for i, (plus_name, _tool, _matrix, status) in enumerate(tools):
            if refused[i]:
                status = ToolStatus.INVALID
                downgraded.append(plus_name)
            elif deviations[i] > 0.0:
                projected.append(plus_name)
                max_deviation = max(max_deviation, float(deviations[i]))
            statuses.append(status)
        out.append(
            TrackerFrame(
                tracker=name,
                t_sensor_ns=t_sensor_ns,
                frame_number=frame_number,
                tools=tuple(tool for _plus, tool, _m, _s in tools),
                T_tracker_from_tools=Ts,
                statuses=tuple(statuses),
                fit_errors_mm=np.full(len(statuses), math.nan),  # PLUS records no fit error
            )
        )
    return BusFrames(tuple(out), tuple(downgraded), tuple(projected), max_deviation)


# --- summary -------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformSummary:
    """One PLUS transform over a file: where it goes, in how many frames, with what status.

    ``statuses`` counts the file's own status texts; ``ok_frames`` and ``not_ok_fraction``
    are what the bus carries: an OK matrix that is not a pose (``refused``) is published
    INVALID. ``projected`` counts the OK matrices published after projection onto the
    nearest rigid transform, ``max_deviation`` their largest deviation
    (``nav.transforms.nearest_rigid``).
    """

    mapping: ToolMapping
    frames: int
    statuses: Mapping[str, int]  # PLUS status text -> frames
    projected: int = 0
    refused: int = 0
    max_deviation: float = 0.0

    @property
    def ok_frames(self) -> int:
        ok = sum(n for s, n in self.statuses.items() if tool_status(s) is ToolStatus.OK)
        return ok - self.refused

    @property
    def not_ok_fraction(self) -> float:
        return 1.0 - self.ok_frames / self.frames if self.frames else 0.0


@dataclass(frozen=True)
class PlusSummary:
    """What a PLUS sequence holds, from one pass over its header (``summarize_plus_sequence``).

    ``frame_count`` counts readable frames; ``skipped`` the broken ones. Times are PLUS
    clock ns; ``rate_hz`` is the mean frame rate. ``transforms`` in first-seen order.
    """

    path: Path
    format: str
    header: PlusHeader
    frame_count: int
    skipped: int
    first_timestamp_ns: int | None
    last_timestamp_ns: int | None
    min_timestamp_ns: int | None
    transforms: tuple[TransformSummary, ...]
    has_unfiltered_timestamps: bool
    has_frame_numbers: bool
    header_bytes: int
    file_bytes: int
    problems: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        if self.first_timestamp_ns is None or self.last_timestamp_ns is None:
            return 0.0
        return (self.last_timestamp_ns - self.first_timestamp_ns) / 1e9

    @property
    def rate_hz(self) -> float:
        return (self.frame_count - 1) / self.duration_s if self.duration_s > 0 else 0.0

    def mappings(self) -> list[ToolMapping]:
        return [t.mapping for t in self.transforms]


def summarize_plus_sequence(
    path: str | Path,
    *,
    tracker: str = DEFAULT_TRACKER,
    tracker_frame: str = DEFAULT_TRACKER_FRAME,
    log_problems: bool = True,
) -> PlusSummary:
    """Read a whole sequence header once: counts, times, transforms and their mapping.

    Raises PlusSequenceError for a file that cannot be read to its end, or whose transform
    names do not map onto ornav tools (so a node or a conversion fails before it starts).
    ``log_problems=False``: the problems are only in the summary (a caller that reads the
    file again, and logs then).
    """
    path = Path(path)
    counts: dict[str, dict[str, int]] = {}
    projected: dict[str, int] = {}
    refused: dict[str, int] = {}
    max_deviation: dict[str, float] = {}
    first = last = lowest = None
    unfiltered = numbers = False
    with open_plus_sequence(path, log_problems=log_problems) as reader:
        for frame in reader:
            t = frame.timestamp_ns
            first = t if first is None else first
            last = t
            lowest = t if lowest is None else min(lowest, t)
            unfiltered = unfiltered or frame.unfiltered_timestamp_ns is not None
            numbers = numbers or frame.frame_number is not None
            ok_names: list[str] = []
            for plus_name in frame.transforms:
                per_status = counts.setdefault(plus_name, {})
                status = frame.statuses[plus_name]
                per_status[status] = per_status.get(status, 0) + 1
                if tool_status(status) is ToolStatus.OK:
                    ok_names.append(plus_name)
            if ok_names:  # what the bus will carry: the same rule as to_tracker_frames
                Ts = np.stack([frame.transforms[n] for n in ok_names])
                _Ts, bad, deviations = _project_ok_poses(Ts, np.ones(len(Ts), dtype=bool))
                for plus_name, is_bad, deviation in zip(ok_names, bad, deviations, strict=True):
                    if is_bad:
                        refused[plus_name] = refused.get(plus_name, 0) + 1
                    elif deviation > 0.0:
                        projected[plus_name] = projected.get(plus_name, 0) + 1
                        max_deviation[plus_name] = max(
                            max_deviation.get(plus_name, 0.0), float(deviation)
                        )
        header_bytes = reader.header_bytes or 0
        transforms = tuple(
            TransformSummary(
                tool_mapping(name, tracker=tracker, tracker_frame=tracker_frame),
                sum(per_status.values()),
                per_status,
                projected=projected.get(name, 0),
                refused=refused.get(name, 0),
                max_deviation=max_deviation.get(name, 0.0),
            )
            for name, per_status in counts.items()
        )
        check_mappings(t.mapping for t in transforms)
        return PlusSummary(
            path=path,
            format=reader.format,
            header=reader.header,
            frame_count=reader.frames_read,
            skipped=reader.skipped,
            first_timestamp_ns=first,
            last_timestamp_ns=last,
            min_timestamp_ns=lowest,
            transforms=transforms,
            has_unfiltered_timestamps=unfiltered,
            has_frame_numbers=numbers,
            header_bytes=header_bytes,
            file_bytes=path.stat().st_size,
            problems=tuple(reader.problems),
        )


def frames_equal(a: PlusFrame, b: PlusFrame) -> bool:
    """Same transforms (bit for bit), statuses, timestamps, frame number and fields."""
    return (
        a.timestamp_ns == b.timestamp_ns
        and a.unfiltered_timestamp_ns == b.unfiltered_timestamp_ns
        and a.frame_number == b.frame_number
        and dict(a.statuses) == dict(b.statuses)
        and dict(a.fields) == dict(b.fields)
        and a.transforms.keys() == b.transforms.keys()
        and all(
            np.array_equal(a.transforms[k], b.transforms[k], equal_nan=True) for k in a.transforms
        )
    )


__all__ = [
    "BusFrames",
    "PlusFrame",
    "PlusHeader",
    "PlusSequenceError",
    "PlusSequenceReader",
    "PlusSummary",
    "ToolMapping",
    "TransformName",
    "TransformSummary",
    "check_mappings",
    "format_seconds",
    "frames_equal",
    "is_plus_path",
    "open_plus_sequence",
    "parse_seconds_ns",
    "plus_tool_name",
    "read_plus_sequence",
    "summarize_plus_sequence",
    "to_tracker_frames",
    "tool_mapping",
    "tool_status",
    "write_plus_sequence",
]

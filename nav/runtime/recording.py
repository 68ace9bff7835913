"""Session recordings: MCAP files that hold exactly the payloads that crossed the bus.

No sockets here: the recorder node feeds ``RecordingWriter`` and the replay node reads with
``iter_recording``; ``inspect_recording`` serves the CLI.

File layout (MCAP, https://mcap.dev/spec), profile ``ornav``:

- Header: profile ``ornav``, library ``ornav/<version> mcap-python/<version>``.
- Metadata ``ornav.recording``: ``wall_ns_at_open``, ``monotonic_ns_at_open``, ``hostname``,
  ``ornav_version``, ``schema_version`` (all strings, as MCAP metadata is), plus whatever
  the caller adds (the recorder adds its node name and pid).
- One schema per message type, named ``ornav.<Type>`` (e.g. ``ornav.TrackerFrame``), encoding
  ``ornav-msgpack``, data a one-paragraph text description with ``SCHEMA_VERSION``. The
  authoritative schema is ``nav/messages/``; ``decode`` validates a replayed payload.
- One channel per (topic, type), registered when first seen, message encoding ``msgpack``.
- Messages: ``data`` is frame 1 (the payload) byte for byte, so replay republishes exactly
  what was received; ``log_time`` is the receive time (below); ``publish_time`` is the
  envelope's ``t_pub_ns`` (the publisher's monotonic clock); ``sequence`` is the envelope's
  ``seq`` modulo 2**32 (MCAP's field is 32 bits; the payload keeps the full number).

Clocks: ``log_time = wall_ns_at_open + (t_recv_ns - monotonic_ns_at_open)``. It advances with
the monotonic clock (an NTP step during a session does not reorder or stretch it) and still
reads as a date. ``log_time - wall_ns_at_open + monotonic_ns_at_open`` gives back the host
monotonic receive time, comparable with ``t_sensor_ns`` and ``t_pub_ns``.

Crash safety: messages are gathered in MCAP chunks (default 64 KiB, zstd). A chunk is closed
and written when it is full or, on ``tick``, when its oldest message has waited
``flush_period_s`` (default 0.5 s); after every closed chunk the file is flushed to the OS.
A recorder killed with SIGKILL therefore leaves a file whose every complete chunk is
readable, so it loses at most the last ``flush_period_s`` of data. (Flushed data survives the
death of the process, not of the machine: ``close`` fsyncs, the chunks in between do not.)
The summary and indexes are written only by ``close``; ``iter_recording`` and
``inspect_recording`` read a file without them by streaming from the start.

Recovery: a file cut off by a crash reads here, but the standard ``mcap`` reader refuses it
(no summary). ``recover_recording`` rewrites it as a complete file (every readable message
unchanged, an ``ornav.recovery`` metadata record with the counts and the gap to when
recording resumed), verified with the ``mcap`` reader before it replaces the original. The
recorder node does this for the earlier parts of its session when it restarts, and notes
the gap in its new file (``ornav.restart``).

Corruption: every chunk is CRC-checked when read. A corrupt chunk is skipped and counted
with the messages it held (from its message indexes, or the summary's statistics), and
reading goes on: in a closed file from the summary's chunk index, in a crashed one from the
next record (a corrupt record length there ends reading: nothing says where the next record
starts). ``inspect_recording`` reads every chunk rather than trusting the summary.

Files are created mode 0600 (a recording is patient session data); ``make_private_dir``
makes missing directories 0700.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, cast

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.reader import make_reader
from mcap.records import (
    Channel,
    Chunk,
    ChunkIndex,
    Header,
    Message,
    MessageIndex,
    Metadata,
    Schema,
    Statistics,
)
from mcap.stream_reader import breakup_chunk
from mcap.writer import LIBRARY_IDENTIFIER, CompressionType, IndexType, Writer

from nav.messages import MESSAGE_TYPES, SCHEMA_VERSION
from nav.runtime.private_files import make_private_dir

log = logging.getLogger(__name__)

PROFILE = "ornav"
METADATA_NAME = "ornav.recording"
SCHEMA_PREFIX = "ornav."
SCHEMA_ENCODING = "ornav-msgpack"
MESSAGE_ENCODING = "msgpack"
DEFAULT_CHUNK_SIZE_BYTES = 64 * 1024
DEFAULT_FLUSH_PERIOD_S = 0.5
COMPRESSIONS = {
    "zstd": CompressionType.ZSTD,
    "lz4": CompressionType.LZ4,
    "none": CompressionType.NONE,
}

_MAGIC = b"\x89MCAP0\r\n"
_RECORD_HEAD = struct.Struct("<BQ")  # opcode, body length
_FOOTER_BODY = struct.Struct("<QQI")  # summary_start, summary_offset_start, summary_crc
# A chunk is at most chunk_size plus one payload (<= 1 MiB); anything far beyond that is a
# corrupt length field, and reading it would only allocate garbage.
_MAX_RECORD_BYTES = 256 << 20
MAX_PROBLEMS = 20  # problems remembered per file


class RecordingError(ValueError):
    """A file that cannot be read or written as a recording; the message is one line."""


def ornav_version() -> str:
    try:
        return importlib_metadata.version("ornav")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"  # running from a source tree that was never installed


def unused_path(path: str | Path) -> Path:
    """``path`` if no file is there, else the first free ``<stem>-<n><suffix>`` beside it.

    A recorder restarted by the supervisor must not overwrite what it recorded before it
    crashed.
    """
    path = Path(path)
    n = 0
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _matches(topic: str, prefixes: tuple[str, ...]) -> bool:
    return any(topic.startswith(prefix) for prefix in prefixes)


# --- writing ---------------------------------------------------------------------------


def _create_private(path: Path, *, overwrite: bool) -> BinaryIO:
    """Create ``path`` for writing, mode 0600: a recording is patient session data."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # an overwritten file keeps its old mode otherwise
        return cast(BinaryIO, os.fdopen(fd, "wb"))
    except BaseException:
        os.close(fd)
        raise


def session_files(path: str | Path) -> list[Path]:
    """The files of one session in order: ``path``, ``<stem>-1<suffix>``, ... while they exist
    (what ``unused_path`` skipped: the parts a restarted recorder wrote before)."""
    path = Path(path)
    files: list[Path] = []
    candidate = path
    while candidate.exists():
        files.append(candidate)
        candidate = path.with_name(f"{path.stem}-{len(files)}{path.suffix}")
    return files


class _CountingSink:
    """The file as mcap's Writer sees it; counts bytes so that a completed chunk is noticed.

    With chunking on, mcap's Writer writes to its stream only when it closes a chunk (or at
    start and finish), so the byte count moving during ``add_message`` means a chunk
    completed and should be flushed to the OS now rather than when Python's buffer fills.
    """

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.position = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self.file.flush()


class RecordingWriter:
    """Writes bus messages to a new MCAP file; see the module docstring for the layout.

    Times are integer ns of the host monotonic clock, passed in (``t_recv_ns``, ``now_ns``);
    the clocks are read here only once, at open, unless given.
    Raises ``RecordingError`` if the file exists (unless ``overwrite``) or cannot be created.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_size_bytes: int = DEFAULT_CHUNK_SIZE_BYTES,
        flush_period_s: float = DEFAULT_FLUSH_PERIOD_S,
        compression: str = "zstd",
        overwrite: bool = False,
        metadata: Mapping[str, str] | None = None,
        wall_ns_at_open: int | None = None,
        monotonic_ns_at_open: int | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression {compression!r} is not one of {sorted(COMPRESSIONS)}")
        if chunk_size_bytes < 1:
            raise ValueError("chunk_size_bytes must be >= 1")
        if not flush_period_s > 0:
            raise ValueError("flush_period_s must be > 0")
        self.path = Path(path)
        try:
            self._file = _create_private(self.path, overwrite=overwrite)
        except FileExistsError:
            raise RecordingError(f"{self.path}: already exists") from None
        except OSError as error:
            raise RecordingError(f"{self.path}: cannot create: {error.strerror}") from None
        self.wall_ns_at_open = time.time_ns() if wall_ns_at_open is None else wall_ns_at_open
        self.monotonic_ns_at_open = (
            time.monotonic_ns() if monotonic_ns_at_open is None else monotonic_ns_at_open
        )
        self._flush_period_ns = int(flush_period_s * 1e9)
        self._sink = _CountingSink(self._file)
        self._writer = Writer(
            cast(IO[Any], self._sink),
            chunk_size=chunk_size_bytes,
            compression=COMPRESSIONS[compression],
            index_types=IndexType.ALL,
        )
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str], int] = {}
        self._pending_since_ns: int | None = None  # receive time of the oldest unflushed one
        self.pending_count = 0  # messages in the open chunk: not in the file yet
        self._closed = False
        self.message_count = 0
        self.chunk_count = 0
        self.topic_counts: dict[str, int] = {}
        self._writer.start(profile=PROFILE, library=f"ornav/{ornav_version()} {LIBRARY_IDENTIFIER}")
        self._writer.add_metadata(
            METADATA_NAME,
            {
                "wall_ns_at_open": str(self.wall_ns_at_open),
                "monotonic_ns_at_open": str(self.monotonic_ns_at_open),
                "hostname": socket.gethostname(),
                "ornav_version": ornav_version(),
                "schema_version": str(SCHEMA_VERSION),
                **(metadata or {}),
            },
        )
        self._file.flush()

    def log_time_ns(self, t_recv_ns: int) -> int:
        """Monotonic receive time -> the file's wall-anchored ``log_time``."""
        return max(0, self.wall_ns_at_open + (t_recv_ns - self.monotonic_ns_at_open))

    def write(
        self, topic: str, payload: bytes, *, type_name: str, seq: int, t_pub_ns: int, t_recv_ns: int
    ) -> None:
        """Append one message; ``payload`` is stored unchanged.

        ``type_name`` is the envelope's type (a key of ``messages.MESSAGE_TYPES``); ``seq`` and
        ``t_pub_ns`` come from the envelope, ``t_recv_ns`` is the monotonic receive time.
        """
        if self._closed:
            raise ValueError("write to a closed RecordingWriter")
        channel_id = self._channels.get((topic, type_name))
        if channel_id is None:
            channel_id = self._register(topic, type_name)
        before = self._sink.position
        self._writer.add_message(
            channel_id,
            log_time=self.log_time_ns(t_recv_ns),
            data=payload,
            publish_time=max(0, t_pub_ns),
            sequence=seq & 0xFFFF_FFFF,
        )
        self.message_count += 1
        self.topic_counts[topic] = self.topic_counts.get(topic, 0) + 1
        if self._sink.position != before:
            # The chunk filled up and was written, this message included.
            self.chunk_count += 1
            self._pending_since_ns = None
            self.pending_count = 0
            self._file.flush()
        else:
            self.pending_count += 1
            if self._pending_since_ns is None:
                self._pending_since_ns = t_recv_ns
        self.tick(t_recv_ns)

    def add_metadata(self, name: str, values: Mapping[str, str]) -> None:
        """Append a metadata record ``name`` (e.g. ``ornav.restart``) and flush it."""
        if self._closed:
            raise ValueError("metadata for a closed RecordingWriter")
        self._writer.add_metadata(name, dict(values))
        self._file.flush()

    def tick(self, now_ns: int) -> bool:
        """Close and write the open chunk if its oldest message is ``flush_period_s`` old.

        Call this from the loop even when nothing arrives. True if a chunk was written.
        """
        if (
            self._pending_since_ns is None
            or now_ns - self._pending_since_ns < self._flush_period_ns
        ):
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Close the open chunk (if it holds a message) and hand everything to the OS."""
        if self._closed:
            return
        if self._pending_since_ns is not None:
            self.chunk_count += 1
            self._pending_since_ns = None
            self.pending_count = 0
        self._writer.flush()  # finalises the chunk and flushes the sink -> the file

    def close(self) -> None:
        """Write the last chunk, the summary and the indexes; fsync and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending_since_ns is not None:
                self.chunk_count += 1
                self._pending_since_ns = None
                self.pending_count = 0
            self._writer.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def _register(self, topic: str, type_name: str) -> int:
        if type_name not in MESSAGE_TYPES:
            raise ValueError(f"unknown message type {type_name[:40]!r}")
        schema_id = self._schemas.get(type_name)
        if schema_id is None:
            description = (
                f"ornav {type_name}, wire schema version {SCHEMA_VERSION}: a msgpack map "
                '{"v", "type", "seq", "t_pub_ns", "body"}; the body fields and their '
                "validation are defined in nav/messages/."
            )
            schema_id = self._writer.register_schema(
                name=SCHEMA_PREFIX + type_name, encoding=SCHEMA_ENCODING, data=description.encode()
            )
            self._schemas[type_name] = schema_id
        channel_id = self._writer.register_channel(
            topic=topic, message_encoding=MESSAGE_ENCODING, schema_id=schema_id
        )
        self._channels[(topic, type_name)] = channel_id
        return channel_id

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedMessage:
    """One recorded message. ``payload`` is the wire payload; ``seq`` is modulo 2**32.

    ``log_time_ns`` is the wall-anchored receive time, ``publish_time_ns`` the publisher's
    monotonic ``t_pub_ns``; ``schema_name`` is e.g. ``ornav.TrackerFrame``.
    """

    topic: str
    payload: bytes
    log_time_ns: int
    publish_time_ns: int
    seq: int
    schema_name: str


class _StopReadingError(Exception):
    """Reading ends here: the file is cut off or corrupt from this point (``str`` says where)."""


def _open(path: str | Path) -> BinaryIO:
    """Open a recording and check its magic; RecordingError with one line if it is not one."""
    path = Path(path)
    try:
        file = cast(BinaryIO, open(path, "rb"))
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a recording") from None
    except OSError as error:
        raise RecordingError(f"{path}: cannot read: {error.strerror}") from None
    if file.read(len(_MAGIC)) != _MAGIC:
        file.close()
        raise RecordingError(f"{path}: not an MCAP recording (bad magic bytes)")
    return file


def _read_record(file: BinaryIO) -> tuple[int, bytes] | None:
    """The next (opcode, body) from the current position; None at a clean end of file."""
    offset = file.tell()
    head = file.read(_RECORD_HEAD.size)
    if not head:
        return None
    if len(head) < _RECORD_HEAD.size:
        raise _StopReadingError(f"record header cut off at byte {offset}")
    opcode, length = _RECORD_HEAD.unpack(head)
    if length > _MAX_RECORD_BYTES:
        raise _StopReadingError(f"implausible record length {length} at byte {offset}")
    body = file.read(length)
    if len(body) < length:
        raise _StopReadingError(f"record cut off at byte {offset} ({len(body)} of {length} bytes)")
    return opcode, body


def _body_stream(body: bytes) -> ReadDataStream:
    return ReadDataStream(io.BytesIO(body))


@dataclass
class _SummaryIndex:
    """What the summary section says: where the chunks are, and the names they use."""

    schemas: dict[int, str]
    channels: dict[int, tuple[str, int]]
    chunks: list[ChunkIndex]  # in file order
    metadata_offsets: list[int]
    message_count: int | None  # from the Statistics record, if any


def _footer(file: BinaryIO) -> tuple[int, int, int, int] | None:
    """(summary_start, summary_offset_start, summary_crc, footer offset), or None when the
    file does not end with a footer and the closing magic (a recorder that never closed it)."""
    size = file.seek(0, io.SEEK_END)
    footer_at = size - len(_MAGIC) - _RECORD_HEAD.size - _FOOTER_BODY.size
    if footer_at < len(_MAGIC):
        return None
    file.seek(footer_at)
    tail = file.read()
    opcode, length = _RECORD_HEAD.unpack_from(tail)
    if tail[-len(_MAGIC) :] != _MAGIC or opcode != Opcode.FOOTER or length != _FOOTER_BODY.size:
        return None
    return (*_FOOTER_BODY.unpack_from(tail, _RECORD_HEAD.size), footer_at)


def is_complete(path: str | Path) -> bool:
    """True if ``path`` is an MCAP file that was closed (it ends with a footer): no crash.

    Raises ``RecordingError`` if it is missing or not MCAP.
    """
    file = _open(path)
    try:
        return _footer(file) is not None
    finally:
        file.close()


def _read_summary_index(file: BinaryIO) -> _SummaryIndex | None:
    """The summary section, if the file has a complete one whose CRC holds; else None.

    The index only says where to look: every chunk it points at is still checked (CRC)
    when read, so a corrupt chunk is found whatever the summary claims.
    """
    footer = _footer(file)
    if footer is None:
        return None
    summary_start, _offset_start, summary_crc, footer_at = footer
    if summary_start == 0 or not len(_MAGIC) <= summary_start < footer_at:
        return None
    file.seek(summary_start)
    # The CRC covers the summary section and the footer up to its own crc field.
    covered = file.read(footer_at + _RECORD_HEAD.size + 16 - summary_start)
    if summary_crc != 0 and zlib.crc32(covered) != summary_crc:
        log.debug("summary CRC mismatch: reading the data section from the start")
        return None
    index = _SummaryIndex({0: ""}, {}, [], [], None)
    stream = io.BytesIO(covered[: footer_at - summary_start])
    try:
        while (record := _read_record(cast(BinaryIO, stream))) is not None:
            opcode, body = record
            records = _body_stream(body)
            if opcode == Opcode.SCHEMA:
                schema = Schema.read(records)
                index.schemas[schema.id] = schema.name
            elif opcode == Opcode.CHANNEL:
                channel = Channel.read(records)
                index.channels[channel.id] = (channel.topic, channel.schema_id)
            elif opcode == Opcode.CHUNK_INDEX:
                index.chunks.append(ChunkIndex.read(records))
            elif opcode == Opcode.METADATA_INDEX:
                (offset,) = struct.unpack_from("<Q", body)
                index.metadata_offsets.append(offset)
            elif opcode == Opcode.STATISTICS:
                index.message_count = Statistics.read(records).message_count
    except Exception as error:  # mcap raises many types on bad bytes: no usable index
        log.debug(
            "unreadable summary (%s: %s): reading from the start", type(error).__name__, error
        )
        return None
    index.chunks.sort(key=lambda chunk: chunk.chunk_start_offset)
    return index


class RecordingReader(Iterator[RecordedMessage]):
    """Streams a recording's messages in file order (= receive order); see ``iter_recording``.

    A closed file is read chunk by chunk from its summary's chunk index (``indexed``); a file
    without a summary (a recorder that was killed) record by record from the start. Either
    way every chunk is CRC-checked, and a corrupt one is skipped, not the end of reading:
    ``corrupt_chunks`` counts them and ``lost_messages`` the messages they held (from the
    message indexes and the summary's statistics; a lower bound without them).

    After iteration ``truncated`` tells whether the file ended before its data section did
    (a recorder that was killed; also a corrupt record length in a file without summary,
    which nothing can read past), ``problem`` says where reading stopped or the first
    corruption, ``problems`` lists them (at most ``MAX_PROBLEMS``), ``messages_read`` counts
    every readable message (whatever ``topics`` selects). ``metadata`` holds the
    ``ornav.recording`` metadata once read (it comes first in the file); ``notes`` any other
    metadata by name (``ornav.recovery``, ``ornav.restart``).
    """

    def __init__(self, path: str | Path, *, topics: Iterable[str] = ("",)) -> None:
        self.path = Path(path)
        self.topics = tuple(topics)
        self.truncated = False
        self.problem = ""
        self.problems: list[str] = []
        self.profile = ""
        self.indexed = False
        self.corrupt_chunks = 0
        self.lost_messages = 0
        self.messages_read = 0
        self.metadata: dict[str, str] = {}
        self.notes: dict[str, dict[str, str]] = {}
        self._file: BinaryIO | None = _open(self.path)
        self._schemas: dict[int, str] = {0: ""}
        self._channels: dict[int, tuple[str, int]] = {}
        self._messages = self._generate()

    def __next__(self) -> RecordedMessage:
        return next(self._messages)

    def close(self) -> None:
        self._messages.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _note(self, problem: str) -> None:
        self.problem = self.problem or problem
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        log.debug("%s: %s", self.path, problem)

    def _generate(self) -> Generator[RecordedMessage, None, None]:
        file = self._file
        assert file is not None
        try:
            index = _read_summary_index(file)
            file.seek(len(_MAGIC))
            if index is None:
                yield from self._generate_streaming(file)
            else:
                self.indexed = True
                yield from self._generate_indexed(file, index)
        finally:
            file.close()
            self._file = None

    def _generate_indexed(
        self, file: BinaryIO, index: _SummaryIndex
    ) -> Generator[RecordedMessage, None, None]:
        self._schemas.update(index.schemas)
        self._channels.update(index.channels)
        header = self._record_at(file, len(_MAGIC))
        if header is not None and header[0] == Opcode.HEADER:
            self._absorb(header[0], header[1])
        for offset in index.metadata_offsets:
            record = self._record_at(file, offset)
            if record is not None and record[0] == Opcode.METADATA:
                self._absorb(record[0], record[1])
        for chunk in index.chunks:
            offset = chunk.chunk_start_offset
            try:
                record = self._record_at(file, offset, strict=True)
                if record is None or record[0] != Opcode.CHUNK:
                    raise ValueError("no chunk record where the index says")
                if _RECORD_HEAD.size + len(record[1]) != chunk.chunk_length:
                    raise ValueError("chunk length differs from the index")
                messages = self._parse(Opcode.CHUNK, record[1])
            except Exception as error:  # see _generate_streaming for the broad catch
                lost = self._indexed_count(file, chunk)
                self._lost_chunk(offset, error, lost or 0)
                continue
            for message in messages:
                out = self._message(message, offset)
                if out is not None:
                    yield out
        if index.message_count is not None and self.corrupt_chunks:
            # The statistics are covered by the summary CRC: the exact total.
            self.lost_messages = max(self.lost_messages, index.message_count - self.messages_read)

    def _generate_streaming(self, file: BinaryIO) -> Generator[RecordedMessage, None, None]:
        lost_at: int | None = None  # offset of an unreadable chunk whose indexes may follow
        try:
            while True:
                offset = file.tell()
                record = _read_record(file)
                if record is None:
                    raise _StopReadingError(
                        f"file ends at byte {offset} before its data-end record"
                    )
                opcode, body = record
                if opcode in (Opcode.DATA_END, Opcode.FOOTER):
                    return  # the data section is complete; the summary is not needed here
                if opcode == Opcode.MESSAGE_INDEX:
                    if lost_at is not None:  # the index of a chunk that could not be read
                        try:
                            self.lost_messages += len(MessageIndex.read(_body_stream(body)).records)
                        except Exception:
                            pass  # the count is a lower bound then
                    continue
                if opcode not in _DATA_OPCODES:
                    # A flipped opcode byte turns a chunk into an unknown record: if message
                    # indexes follow it, its messages are counted as lost.
                    self._note(f"unknown record (opcode {opcode:#x}) at byte {offset}: skipped")
                    lost_at = offset
                    continue
                try:
                    # The record's framing holds (its length was read), so reading can go on
                    # after it even when its body does not parse. mcap, zstandard and lz4
                    # raise many exception types on bad bytes, hence the broad catch.
                    parsed = self._parse(opcode, body)
                except Exception as error:
                    if opcode != Opcode.CHUNK:
                        raise _StopReadingError(
                            f"corrupt record (opcode {opcode:#x}) at byte {offset}: "
                            f"{type(error).__name__}: {error}"
                        ) from None
                    self._lost_chunk(offset, error, 0)
                    lost_at = offset
                    continue
                if opcode == Opcode.CHUNK:
                    lost_at = None
                for message in parsed:
                    out = self._message(message, offset)
                    if out is not None:
                        yield out
        except _StopReadingError as stop:
            self.truncated = True
            self.problem = str(stop)  # where reading stopped is the headline
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(self.problem)
            log.debug("%s: %s", self.path, stop)

    def _record_at(
        self, file: BinaryIO, offset: int, *, strict: bool = False
    ) -> tuple[int, bytes] | None:
        file.seek(offset)
        try:
            return _read_record(file)
        except _StopReadingError as error:
            if strict:
                raise ValueError(str(error)) from None
            self._note(str(error))
            return None

    def _indexed_count(self, file: BinaryIO, chunk: ChunkIndex) -> int | None:
        """How many messages the message indexes of ``chunk`` list; None if unreadable."""
        total = 0
        try:
            for offset in chunk.message_index_offsets.values():
                record = self._record_at(file, offset, strict=True)
                if record is None or record[0] != Opcode.MESSAGE_INDEX:
                    return None
                total += len(MessageIndex.read(_body_stream(record[1])).records)
        except Exception:
            return None
        return total

    def _lost_chunk(self, offset: int, error: BaseException, lost: int) -> None:
        self.corrupt_chunks += 1
        self.lost_messages += lost
        self._note(
            f"corrupt chunk at byte {offset} skipped ({type(error).__name__}: {str(error)[:120]})"
        )

    def _absorb(self, opcode: int, body: bytes) -> None:
        """Header and metadata records."""
        if opcode == Opcode.HEADER:
            self.profile = Header.read(_body_stream(body)).profile
        elif opcode == Opcode.METADATA:
            record = Metadata.read(_body_stream(body))
            if record.name == METADATA_NAME:
                self.metadata.update(record.metadata)
            else:
                self.notes.setdefault(record.name, {}).update(record.metadata)

    def _parse(self, opcode: int, body: bytes) -> list[Message]:
        """Schemas, channels and metadata are absorbed; messages are returned, in order."""
        records: Sequence[object]
        if opcode == Opcode.CHUNK:
            chunk = Chunk.read(_body_stream(body))
            records = breakup_chunk(chunk, validate_crc=True)
        elif opcode == Opcode.MESSAGE:
            return [Message.read(_body_stream(body), len(body))]
        elif opcode == Opcode.SCHEMA:
            records = [Schema.read(_body_stream(body))]
        elif opcode == Opcode.CHANNEL:
            records = [Channel.read(_body_stream(body))]
        elif opcode in (Opcode.HEADER, Opcode.METADATA):
            self._absorb(opcode, body)
            return []
        else:
            return []  # indexes, attachments: nothing to replay
        messages: list[Message] = []
        for item in records:
            if isinstance(item, Schema):
                self._schemas[item.id] = item.name
            elif isinstance(item, Channel):
                self._channels[item.id] = (item.topic, item.schema_id)
            elif isinstance(item, Message):
                messages.append(item)
        return messages

    def _message(self, message: Message, offset: int) -> RecordedMessage | None:
        channel = self._channels.get(message.channel_id)
        if channel is None:
            # Its channel record was in a chunk that could not be read: no topic to give it.
            self.lost_messages += 1
            if self.lost_messages == 1 or not self.corrupt_chunks:
                self._note(f"message on unknown channel {message.channel_id} at byte {offset}")
            return None
        self.messages_read += 1
        topic, schema_id = channel
        if not _matches(topic, self.topics):
            return None
        return RecordedMessage(
            topic=topic,
            payload=message.data,
            log_time_ns=message.log_time,
            publish_time_ns=message.publish_time,
            seq=message.sequence,
            schema_name=self._schemas.get(schema_id, ""),
        )


_DATA_OPCODES = frozenset(
    {
        Opcode.HEADER,
        Opcode.SCHEMA,
        Opcode.CHANNEL,
        Opcode.MESSAGE,
        Opcode.CHUNK,
        Opcode.ATTACHMENT,
        Opcode.METADATA,
        Opcode.CHUNK_INDEX,
        Opcode.ATTACHMENT_INDEX,
        Opcode.METADATA_INDEX,
        Opcode.STATISTICS,
        Opcode.SUMMARY_OFFSET,
    }
)


def iter_recording(path: str | Path, *, topics: Iterable[str] = ("",)) -> RecordingReader:
    """Stream the messages of ``path`` whose topic starts with one of ``topics``.

    Reads one record (at most one chunk) at a time, so memory stays flat however long the
    file. A corrupt chunk is skipped and reading goes on with the next one; a cut-off tail
    ends the iteration quietly after the last complete chunk. The returned reader's
    ``truncated``, ``corrupt_chunks``, ``lost_messages`` and ``problem`` say so afterwards.
    Raises ``RecordingError`` at once if the file is missing or not MCAP.
    """
    return RecordingReader(path, topics=topics)


def damage_report(reader: RecordingReader) -> str:
    """One line on what could not be read (empty when nothing): for logs and the CLI."""
    parts = []
    if reader.corrupt_chunks:
        parts.append(
            f"{reader.corrupt_chunks} corrupt chunk(s) skipped, "
            f"{reader.lost_messages} message(s) lost"
        )
    elif reader.lost_messages:
        parts.append(f"{reader.lost_messages} message(s) lost")
    if reader.truncated:
        parts.append(f"cut off: {reader.problem}")
    return "; ".join(parts)


# --- inspecting ------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSummary:
    """One (topic, type) of a recording; ``rate_hz`` is its mean over the whole recording."""

    topic: str
    schema_name: str
    message_count: int
    rate_hz: float


@dataclass(frozen=True)
class RecordingSummary:
    """What a recording holds. Times: ``log_time`` ns (wall-anchored, see module docstring).

    Every figure comes from reading every chunk (CRC-checked), never from the summary
    section alone. ``truncated``: the file ends before its data section does (a killed
    recorder); ``corrupt_chunks`` were skipped with ``lost_messages`` in them; the counts
    cover what is readable. ``indexed``: the chunks were found through the summary's chunk
    index. ``notes``: metadata other than ``ornav.recording`` (``ornav.recovery`` in a file
    recovered after a crash, ``ornav.restart`` in the file recorded after it).
    """

    path: Path
    topics: tuple[TopicSummary, ...]
    message_count: int
    start_log_time_ns: int | None
    end_log_time_ns: int | None
    truncated: bool
    indexed: bool
    problem: str = ""
    profile: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    corrupt_chunks: int = 0
    lost_messages: int = 0
    damage: str = ""
    notes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        if self.start_log_time_ns is None or self.end_log_time_ns is None:
            return 0.0
        return (self.end_log_time_ns - self.start_log_time_ns) / 1e9

    @property
    def start_wall(self) -> datetime | None:
        """Receive time of the first message, UTC."""
        return None if self.start_log_time_ns is None else _wall(self.start_log_time_ns)

    @property
    def end_wall(self) -> datetime | None:
        return None if self.end_log_time_ns is None else _wall(self.end_log_time_ns)


def _wall(log_time_ns: int) -> datetime:
    return datetime.fromtimestamp(log_time_ns / 1e9, tz=UTC)


def _topic_summaries(
    counts: Mapping[tuple[str, str], int], duration_s: float
) -> tuple[TopicSummary, ...]:
    return tuple(
        TopicSummary(topic, schema, n, n / duration_s if duration_s > 0 else 0.0)
        for (topic, schema), n in sorted(counts.items())
    )


def inspect_recording(path: str | Path) -> RecordingSummary:
    """Topics, counts, rates and times of a recording, and what in it is damaged.

    Reads every chunk and checks its CRC (a summary section can claim messages that a
    corrupt chunk no longer holds). Raises ``RecordingError`` if the file is missing or
    not MCAP.
    """
    path = Path(path)
    counts: dict[tuple[str, str], int] = {}
    start: int | None = None
    end: int | None = None
    with iter_recording(path) as reader:
        for message in reader:
            key = (message.topic, message.schema_name)
            counts[key] = counts.get(key, 0) + 1
            start = message.log_time_ns if start is None else min(start, message.log_time_ns)
            end = message.log_time_ns if end is None else max(end, message.log_time_ns)
    duration_s = 0.0 if start is None or end is None else (end - start) / 1e9
    return RecordingSummary(
        path=path,
        topics=_topic_summaries(counts, duration_s),
        message_count=sum(counts.values()),
        start_log_time_ns=start,
        end_log_time_ns=end,
        truncated=reader.truncated,
        indexed=reader.indexed,
        problem=reader.problem,
        profile=reader.profile,
        metadata=dict(reader.metadata),
        corrupt_chunks=reader.corrupt_chunks,
        lost_messages=reader.lost_messages,
        damage=damage_report(reader),
        notes={name: dict(values) for name, values in reader.notes.items()},
    )


# --- recovering a crashed recording ----------------------------------------------------

RECOVERY_METADATA = "ornav.recovery"  # in a file recovered after a crash
RESTART_METADATA = "ornav.restart"  # in the file a restarted recorder wrote next


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover_recording`` did to one file cut off by a crash.

    ``messages``: recovered (every readable one); ``lost_messages`` in ``corrupt_chunks``
    that could not be read; ``last_log_time_ns``: the receive time of the last recovered
    message; ``gap_ns``: from it to ``resumed_wall_ns`` (when recording resumed; None
    without messages). ``kept_original``: the crashed bytes, kept beside it when something
    in them was unreadable (else they were replaced once the recovered file was verified).
    """

    path: Path
    messages: int
    corrupt_chunks: int
    lost_messages: int
    last_log_time_ns: int | None
    resumed_wall_ns: int
    gap_ns: int | None
    problem: str
    kept_original: Path | None = None

    @property
    def gap_s(self) -> float | None:
        return None if self.gap_ns is None else self.gap_ns / 1e9


class RecoveryAbortedError(Exception):
    """``should_stop`` said stop: the original file is untouched."""


def opened_wall_ns(path: str | Path) -> int | None:
    """``wall_ns_at_open`` of a recording (when its recorder started), None if unknown."""
    with iter_recording(path) as reader:
        next(reader, None)  # the metadata comes before the first chunk
        text = reader.metadata.get("wall_ns_at_open", "")
    return int(text) if text.isdigit() else None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(path: Path, expected: int) -> None:
    """The standard ``mcap`` reader opens ``path`` with its summary and reads every message."""
    with open(path, "rb") as file:
        reader = make_reader(file, validate_crcs=True)
        summary = reader.get_summary()
        count = sum(1 for _ in reader.iter_messages())
    if summary is None or summary.statistics is None or count != expected:
        raise RecordingError(
            f"{path}: the recovered file does not verify ({count} of {expected} messages)"
        )


def recover_recording(
    path: str | Path,
    *,
    resumed_wall_ns: int,
    continued_in: str = "",
    should_stop: Callable[[], bool] = lambda: False,
) -> RecoveryReport:
    """Rewrite a recording cut off by a crash as a complete MCAP file, in place.

    Every readable message is copied unchanged (payload, log and publish times, seq), with
    the original ``ornav.recording`` metadata and an ``ornav.recovery`` record: counts, the
    receive time of the last message, ``resumed_wall_ns`` and the gap to it, and
    ``continued_in`` (the file recording went on in). The new file is written beside the
    original (``.recovering``), fsynced, read back with the standard ``mcap`` reader, and
    only then renamed over it; unless reading reached a clean end of the file, the
    original bytes stay as ``<name>.partial`` (a crash cuts the last record, so that is
    the usual case: nothing that could not be read is ever deleted). Notes the file held
    (``ornav.restart``) are copied too. Raises ``RecordingError`` (one line; the original
    untouched) if the file is not MCAP, is already complete, or cannot be rewritten;
    ``RecoveryAbortedError`` when ``should_stop`` turns true.
    """
    path = Path(path)
    if is_complete(path):
        raise RecordingError(f"{path}: complete already, nothing to recover")
    scratch = path.with_name(path.name + ".recovering")
    scratch.unlink(missing_ok=True)  # left by a recovery that was itself interrupted
    count = 0
    last: int | None = None
    try:
        with iter_recording(path) as reader:
            first = next(reader, None)
            meta = dict(reader.metadata)
            wall = int(meta["wall_ns_at_open"]) if meta.get("wall_ns_at_open", "").isdigit() else 0
            mono = (
                int(meta["monotonic_ns_at_open"])
                if meta.get("monotonic_ns_at_open", "").isdigit()
                else 0
            )
            with RecordingWriter(
                scratch,
                overwrite=True,
                metadata=meta,
                wall_ns_at_open=wall,
                monotonic_ns_at_open=mono,
            ) as writer:
                message = first
                while message is not None:
                    if count % 1000 == 0 and should_stop():
                        raise RecoveryAbortedError(str(path))
                    type_name = message.schema_name.removeprefix(SCHEMA_PREFIX)
                    writer.write(
                        message.topic,
                        message.payload,
                        type_name=type_name,
                        seq=message.seq,
                        t_pub_ns=message.publish_time_ns,
                        # log_time = wall + (t_recv - mono): the recorded log_time exactly
                        t_recv_ns=message.log_time_ns - wall + mono,
                    )
                    count += 1
                    last = message.log_time_ns if last is None else max(last, message.log_time_ns)
                    message = next(reader, None)
                gap_ns = None if last is None else resumed_wall_ns - last
                for name, values in reader.notes.items():  # e.g. its own ornav.restart note
                    writer.add_metadata(name, values)
                writer.add_metadata(
                    RECOVERY_METADATA,
                    {
                        "recovered_messages": str(count),
                        "corrupt_chunks": str(reader.corrupt_chunks),
                        "lost_messages": str(reader.lost_messages),
                        "cut_off": reader.problem,
                        "last_log_time_ns": "" if last is None else str(last),
                        "resumed_wall_ns": str(resumed_wall_ns),
                        "gap_ns": "" if gap_ns is None else str(gap_ns),
                        "continued_in": continued_in,
                        "recovered_wall_ns": str(time.time_ns()),
                    },
                )
        _verify(scratch, count)
        kept: Path | None = None
        # Unless reading reached a clean end of file, bytes may follow that it could not
        # read (a bad record length mid-file stops it without counting anything lost):
        # the crashed file is kept whole under another name, never replaced and gone.
        if reader.truncated or reader.problems or reader.corrupt_chunks or reader.lost_messages:
            kept = path.with_name(path.name + ".partial")
            kept.unlink(missing_ok=True)
            os.link(path, kept)  # the crashed bytes stay, under another name
        os.replace(scratch, path)
        _fsync_dir(path.parent)
    except (OSError, ValueError) as error:
        raise RecordingError(f"{path}: cannot recover: {error}") from None
    finally:
        scratch.unlink(missing_ok=True)
    return RecoveryReport(
        path=path,
        messages=count,
        corrupt_chunks=reader.corrupt_chunks,
        lost_messages=reader.lost_messages,
        last_log_time_ns=last,
        resumed_wall_ns=resumed_wall_ns,
        gap_ns=gap_ns,
        problem=reader.problem,
        kept_original=kept,
    )


__all__ = [
    "RECOVERY_METADATA",
    "RESTART_METADATA",
    "RecordedMessage",
    "RecoveryAbortedError",
    "RecoveryReport",
    "RecordingError",
    "RecordingReader",
    "RecordingSummary",
    "RecordingWriter",
    "TopicSummary",
    "damage_report",
    "inspect_recording",
    "is_complete",
    "iter_recording",
    "make_private_dir",
    "opened_wall_ns",
    "recover_recording",
    "session_files",
    "unused_path",
]

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
  authoritative schema is ``nav/messages.py``; ``decode`` validates a replayed payload.
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
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, cast

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Header, Message, Metadata, Schema, Statistics
from mcap.stream_reader import breakup_chunk
from mcap.writer import LIBRARY_IDENTIFIER, CompressionType, IndexType, Writer

from nav.messages import MESSAGE_TYPES, SCHEMA_VERSION

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
            self._file = cast(BinaryIO, open(self.path, "wb" if overwrite else "xb"))
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
                "validation are defined in nav/messages.py."
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


class RecordingReader(Iterator[RecordedMessage]):
    """Streams a recording's messages in file order (= receive order); see ``iter_recording``.

    After iteration ``truncated`` tells whether the file ended before its data section did
    (a recorder that was killed), and ``problem`` says where reading stopped. ``metadata``
    holds the ``ornav.recording`` metadata once read (it comes first in the file).
    """

    def __init__(self, path: str | Path, *, topics: Iterable[str] = ("",)) -> None:
        self.path = Path(path)
        self.topics = tuple(topics)
        self.truncated = False
        self.problem = ""
        self.profile = ""
        self.metadata: dict[str, str] = {}
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

    def _generate(self) -> Generator[RecordedMessage, None, None]:
        file = self._file
        assert file is not None
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
                try:
                    # A complete record that does not parse is corruption, not truncation;
                    # either way nothing after it can be trusted. mcap, zstandard and lz4
                    # raise many exception types on bad bytes, hence the broad catch.
                    parsed = self._parse(opcode, body)
                except Exception as error:
                    raise _StopReadingError(
                        f"corrupt record (opcode {opcode:#x}) at byte {offset}: "
                        f"{type(error).__name__}: {error}"
                    ) from None
                for message in parsed:
                    out = self._message(message, offset)
                    if out is not None:
                        yield out
        except _StopReadingError as stop:
            self.truncated = True
            self.problem = str(stop)
            log.debug("%s: %s", self.path, stop)
        finally:
            file.close()
            self._file = None

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
        elif opcode == Opcode.HEADER:
            self.profile = Header.read(_body_stream(body)).profile
            return []
        elif opcode == Opcode.METADATA:
            record = Metadata.read(_body_stream(body))
            if record.name == METADATA_NAME:
                self.metadata.update(record.metadata)
            return []
        else:
            return []  # indexes, attachments, unknown records: nothing to replay
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
            raise _StopReadingError(
                f"message on unknown channel {message.channel_id} at byte {offset}"
            )
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


def iter_recording(path: str | Path, *, topics: Iterable[str] = ("",)) -> RecordingReader:
    """Stream the messages of ``path`` whose topic starts with one of ``topics``.

    Reads one record (at most one chunk) at a time, so memory stays flat however long the
    file. A cut-off or corrupt tail ends the iteration quietly after the last complete chunk;
    the returned reader's ``truncated`` and ``problem`` say so afterwards. Raises
    ``RecordingError`` at once if the file is missing or not MCAP.
    """
    return RecordingReader(path, topics=topics)


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

    ``truncated``: the file ends before its data section does (a killed recorder); the counts
    then cover what is readable. ``indexed``: the figures came from the MCAP summary section
    rather than from reading every message.
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
    """Topics, counts, rates and times of a recording.

    Uses the summary section when the file was closed cleanly, else reads every message
    (a file cut off by a crash). Raises ``RecordingError`` if the file is missing or not MCAP.
    """
    path = Path(path)
    file = _open(path)
    try:
        indexed = _inspect_indexed(path, file)
    except _StopReadingError as stop:
        log.debug("%s: no usable summary (%s); reading every message", path, stop)
        indexed = None
    finally:
        file.close()
    return indexed if indexed is not None else _inspect_streaming(path)


def _inspect_indexed(path: Path, file: BinaryIO) -> RecordingSummary | None:
    """From the summary section; None when the file has no (complete) summary."""
    try:
        file.seek(-(_RECORD_HEAD.size + _FOOTER_BODY.size + len(_MAGIC)), io.SEEK_END)
    except OSError:
        return None  # shorter than a footer
    tail = file.read()
    opcode, length = _RECORD_HEAD.unpack_from(tail)
    if tail[-len(_MAGIC) :] != _MAGIC or opcode != Opcode.FOOTER or length != _FOOTER_BODY.size:
        return None
    summary_start, _offsets, _crc = _FOOTER_BODY.unpack_from(tail, _RECORD_HEAD.size)
    if summary_start == 0:
        return None
    schemas: dict[int, str] = {0: ""}
    channels: dict[int, Channel] = {}
    statistics: Statistics | None = None
    metadata_offsets: list[int] = []
    file.seek(summary_start)
    try:
        while (record := _read_record(file)) is not None:
            opcode, body = record
            if opcode == Opcode.FOOTER:
                break
            stream = _body_stream(body)
            if opcode == Opcode.SCHEMA:
                schema = Schema.read(stream)
                schemas[schema.id] = schema.name
            elif opcode == Opcode.CHANNEL:
                channel = Channel.read(stream)
                channels[channel.id] = channel
            elif opcode == Opcode.STATISTICS:
                statistics = Statistics.read(stream)
            elif opcode == Opcode.METADATA_INDEX:
                (offset,) = struct.unpack_from("<Q", body)
                metadata_offsets.append(offset)
        if statistics is None:
            return None
        metadata: dict[str, str] = {}
        profile = ""
        file.seek(len(_MAGIC))
        header = _read_record(file)
        if header is not None and header[0] == Opcode.HEADER:
            profile = Header.read(_body_stream(header[1])).profile
        for offset in metadata_offsets:
            file.seek(offset)
            record = _read_record(file)
            if record is not None and record[0] == Opcode.METADATA:
                meta = Metadata.read(_body_stream(record[1]))
                if meta.name == METADATA_NAME:
                    metadata.update(meta.metadata)
    except _StopReadingError:
        raise
    except Exception as error:  # a corrupt summary: fall back to reading the data
        raise _StopReadingError(f"corrupt summary: {type(error).__name__}: {error}") from None

    counts: dict[tuple[str, str], int] = {}
    for channel_id, n in statistics.channel_message_counts.items():
        channel = channels.get(channel_id)
        if channel is None:
            return None
        key = (channel.topic, schemas.get(channel.schema_id, ""))
        counts[key] = counts.get(key, 0) + n
    empty = statistics.message_count == 0
    start = None if empty else statistics.message_start_time
    end = None if empty else statistics.message_end_time
    duration_s = 0.0 if start is None or end is None else (end - start) / 1e9
    return RecordingSummary(
        path=path,
        topics=_topic_summaries(counts, duration_s),
        message_count=statistics.message_count,
        start_log_time_ns=start,
        end_log_time_ns=end,
        truncated=False,
        indexed=True,
        profile=profile,
        metadata=metadata,
    )


def _inspect_streaming(path: Path) -> RecordingSummary:
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
        indexed=False,
        problem=reader.problem,
        profile=reader.profile,
        metadata=dict(reader.metadata),
    )


__all__ = [
    "RecordedMessage",
    "RecordingError",
    "RecordingReader",
    "RecordingSummary",
    "RecordingWriter",
    "TopicSummary",
    "inspect_recording",
    "iter_recording",
    "unused_path",
]

"""Recording and replay: the MCAP helpers in-process, the recorder and replay nodes as real
processes on ipc sockets.

Sockets live in a short directory under /tmp (a Unix socket path is at most 107 bytes, and
pytest's tmp_path can be longer); recordings go in tmp_path. Nothing sleeps to wait out a
slow joiner: a test publishes a warm-up topic until the recorder reports it recorded, or
waits for the replay node's own heartbeat before sending ``play``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader

from nav.messages import Heartbeat, Message, ToolPose, ToolStatus, TrackerFrame, decode, encode
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.process import ChildProcess, NotReadyError
from nav.runtime.recording import (
    RESTART_METADATA,
    RecordingError,
    RecordingWriter,
    inspect_recording,
    iter_recording,
    recover_recording,
)
from nav.runtime.replay_node import replay_payload

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 20.0
T0_WALL_NS = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
T0_MONO_NS = 5_000_000_000

Sent = list[tuple[str, bytes]]


# --- helpers -------------------------------------------------------------------------


def tracker_frame(i: int, t_sensor_ns: int | None = None) -> TrackerFrame:
    T = np.eye(4)
    T[:3, 3] = [i, 2.0 * i, -3.0 * i]
    return TrackerFrame(
        tracker="sim",
        t_sensor_ns=time.monotonic_ns() if t_sensor_ns is None else t_sensor_ns,
        frame_number=i,
        tools=("pointer", "reference"),
        T_tracker_from_tools=np.stack([T, np.eye(4)]),
        statuses=(ToolStatus.OK, ToolStatus.OUT_OF_VIEW),
        fit_errors_mm=np.array([0.1 + i * 1e-3, np.nan]),
    )


def tool_pose(i: int) -> ToolPose:
    T = np.eye(4)
    T[:3, 3] = [0.0, i, 0.0]
    return ToolPose("pointer", T, time.monotonic_ns(), ToolStatus.OK, 0.2)


def heartbeat(i: int) -> Heartbeat:
    return Heartbeat("source", 1, "running", float(i), {"published": i}, {"published": 1.0})


class Source:
    """The test's own publisher: remembers every (topic, payload) it sent, with a per-topic seq."""

    def __init__(self, endpoint: str) -> None:
        self.pub = bus.Publisher(endpoint)
        self.endpoint = self.pub.endpoint
        self.sent: Sent = []
        self._seq: dict[str, int] = {}

    def send(self, topic: str, message: Message) -> bytes:
        seq = self._seq.get(topic, 0)
        self._seq[topic] = seq + 1
        payload = encode(message, seq=seq, t_pub_ns=time.monotonic_ns())
        self.pub.publish_raw(topic, payload)
        self.sent.append((topic, payload))
        return payload

    def close(self) -> None:
        self.pub.close()


class NodeProcess:
    """A node as a real process (``nav.runtime.process.ChildProcess``), stderr to a log."""

    def __init__(self, spec: NodeSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.stderr.log"
        self.child = ChildProcess(
            name=spec.name,
            argv=[sys.executable, "-m", spec.module, "--spec-json", spec.to_json()],
            cwd=REPO,
            env={**os.environ, "ORNAV_LOG_LEVEL": "INFO"},
            stderr=self.log_path,
        )
        self.child.start()

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        try:
            return self.child.wait_ready(f"READY {self.spec.name} ", timeout_s)
        except NotReadyError as error:
            pytest.fail(f"{error}\n{self.stderr()}")

    def wait(self, timeout_s: float = 10.0) -> int:
        code = self.child.wait(timeout_s)
        if code is None:
            pytest.fail(f"{self.spec.name} did not exit within {timeout_s} s\n{self.stderr()}")
        return code

    def terminate(self, timeout_s: float = 10.0) -> int:
        self.child.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        if self.child.poll() is None:
            self.child.kill()


@pytest.fixture
def sock_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ornav-rec-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[[NodeSpec], NodeProcess]]:
    started: list[NodeProcess] = []

    def start(spec: NodeSpec) -> NodeProcess:
        node = NodeProcess(spec, tmp_path)
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Register sockets (anything with ``close``) to close at the end of the test."""
    things: list[Any] = []

    def register(thing: Any) -> Any:
        things.append(thing)
        return thing

    yield register
    for thing in reversed(things):
        thing.close()


def recorder_spec(sock_dir: str, source: str, **params: Any) -> NodeSpec:
    return NodeSpec(
        name="recorder",
        module="nav.runtime.recorder_node",
        pub=f"ipc://{sock_dir}/recorder.pub",
        control=f"ipc://{sock_dir}/recorder.ctl",
        subscribe=("source",),
        subscribe_endpoints=(source,),
        params=params,
    )


def replay_spec(sock_dir: str, **params: Any) -> NodeSpec:
    return NodeSpec(
        name="replay",
        module="nav.runtime.replay_node",
        pub=f"ipc://{sock_dir}/replay.pub",
        control=f"ipc://{sock_dir}/replay.ctl",
        params=params,
    )


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)  # poll interval of a condition with a deadline


def recording_status(client: bus.CommandClient) -> dict[str, Any]:
    reply = client.call("recording", timeout_s=5.0)
    assert reply.ok, reply.error
    return reply.result


def recorded_on(client: bus.CommandClient, topic: str) -> int:
    topics = recording_status(client)["topics"]
    assert isinstance(topics, dict)
    count = topics.get(topic, 0)
    assert isinstance(count, int)
    return count


def warm_up(source: Source, client: bus.CommandClient) -> None:
    """Publish on ``warmup`` until the recorder has recorded one: its subscription is live."""
    deadline = time.monotonic() + 10.0
    i = 0
    while recorded_on(client, "warmup") == 0:
        assert time.monotonic() < deadline, "the recorder never received the warm-up topic"
        source.send("warmup", heartbeat(i))
        i += 1


def replayed_until_exit(
    node: NodeProcess, sub: bus.QueueSubscriber, expected: int, *, own: str = "heartbeat/replay"
) -> tuple[list[bus.Received], int]:
    """Everything the replay node publishes (but its own heartbeats) until it exits 0."""
    got: list[bus.Received] = []
    deadline = time.monotonic() + 30.0
    while node.child.poll() is None or len(got) < expected:
        assert time.monotonic() < deadline, f"replayed {len(got)} of {expected}"
        got.extend(r for r in sub.poll(0.05) if r.topic != own)
        if node.child.poll() is not None and not sub.fileno_socket().poll(0):
            break  # exited and nothing is left in our queue
    return got, node.wait()


def play_when_joined(sub: bus.QueueSubscriber, ctl: str, closing: Callable[[Any], Any]) -> None:
    """Wait for the replay node's heartbeat (our subscription has joined), then ``play``."""
    deadline = time.monotonic() + 10.0
    while not any(r.topic == "heartbeat/replay" for r in sub.poll(0.05)):
        assert time.monotonic() < deadline, "no heartbeat from the replay node"
    client = closing(bus.CommandClient(ctl))
    reply = client.call("play", timeout_s=5.0)
    assert reply.ok, reply.error


def as_replayed(recorded: bytes, epoch: int) -> bytes:
    """The recorded payload as the replay node republishes it: the same, under its epoch."""
    envelope = decode(recorded)
    return encode(envelope.message, seq=envelope.seq, t_pub_ns=envelope.t_pub_ns, epoch=epoch)


def assert_replayed(got: list[bus.Received], recorded: Sent) -> None:
    """Every recorded message, in order, re-stamped only with the replay's own epoch."""
    assert len(got) == len(recorded)
    epochs = {r.envelope.epoch for r in got}
    assert len(epochs) == 1 and 0 not in epochs  # one publisher, not the recorded epoch 0
    (epoch,) = epochs
    assert [(r.topic, r.payload) for r in got] == [(t, as_replayed(p, epoch)) for t, p in recorded]


def write_synthetic(
    path: Path,
    messages: list[tuple[str, Message, int]],
    *,
    notes: Mapping[str, Mapping[str, str]] | None = None,
    **writer_args: Any,
) -> Sent:
    """Write (topic, message, t_recv offset ns) with fixed clocks; returns what was written.

    ``notes``: metadata records written first (e.g. ``ornav.restart``)."""
    written: Sent = []
    seqs: dict[str, int] = {}
    with RecordingWriter(
        path, wall_ns_at_open=T0_WALL_NS, monotonic_ns_at_open=T0_MONO_NS, **writer_args
    ) as writer:
        for name, values in (notes or {}).items():
            writer.add_metadata(name, values)
        for topic, message, dt_ns in messages:
            seq = seqs.get(topic, 0)
            seqs[topic] = seq + 1
            payload = encode(message, seq=seq, t_pub_ns=T0_MONO_NS + dt_ns)
            writer.write(
                topic,
                payload,
                type_name=message.TYPE,
                seq=seq,
                t_pub_ns=T0_MONO_NS + dt_ns,
                t_recv_ns=T0_MONO_NS + dt_ns,
            )
            written.append((topic, payload))
    return written


def one_second_session() -> list[tuple[str, Message, int]]:
    """100 Hz tracker frames for 1 s (101 frames, 0..1 s) and 10 Hz heartbeats."""
    messages: list[tuple[str, Message, int]] = []
    for i in range(101):
        messages.append(("pose/sim", tracker_frame(i, t_sensor_ns=i), i * 10_000_000))
        if i % 10 == 0 and i < 100:
            messages.append(("heartbeat/sim", heartbeat(i), i * 10_000_000))
    return messages


# --- the MCAP helpers, in-process ----------------------------------------------------


def test_written_recording_reads_back_byte_for_byte_with_its_stamps(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session(), chunk_size_bytes=4096)

    with iter_recording(path) as reader:
        got = list(reader)
    assert [(m.topic, m.payload) for m in got] == written
    assert not reader.truncated and reader.problem == ""
    assert reader.profile == "ornav"
    assert reader.metadata["wall_ns_at_open"] == str(T0_WALL_NS)
    assert reader.metadata["monotonic_ns_at_open"] == str(T0_MONO_NS)
    assert reader.metadata["hostname"] and reader.metadata["ornav_version"]
    first, last = got[0], got[-1]
    assert first.log_time_ns == T0_WALL_NS  # received at monotonic_ns_at_open
    assert last.log_time_ns == T0_WALL_NS + 1_000_000_000
    for message in got:
        envelope = decode(message.payload)
        assert message.seq == envelope.seq
        assert message.publish_time_ns == envelope.t_pub_ns
        assert message.schema_name == "ornav." + envelope.type_name

    with iter_recording(path, topics=("heartbeat/",)) as reader:
        assert [m.topic for m in reader] == ["heartbeat/sim"] * 10


def test_inspect_gives_counts_rates_and_times_from_the_index(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    write_synthetic(path, one_second_session())

    summary = inspect_recording(path)
    assert summary.indexed and not summary.truncated
    assert summary.message_count == 111
    assert summary.duration_s == pytest.approx(1.0)
    assert summary.start_wall is not None and summary.start_wall.year == 2023
    assert summary.profile == "ornav"
    assert summary.metadata["monotonic_ns_at_open"] == str(T0_MONO_NS)
    topics = {t.topic: t for t in summary.topics}
    assert set(topics) == {"pose/sim", "heartbeat/sim"}
    assert topics["pose/sim"].message_count == 101
    assert topics["pose/sim"].schema_name == "ornav.TrackerFrame"
    assert topics["pose/sim"].rate_hz == pytest.approx(100, rel=0.05)
    assert topics["heartbeat/sim"].message_count == 10
    assert topics["heartbeat/sim"].rate_hz == pytest.approx(10, rel=0.05)


def test_every_truncation_of_a_recording_reads_as_a_prefix_without_raising(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session(), chunk_size_bytes=2048)
    data = path.read_bytes()
    cut_path = tmp_path / "cut.mcap"
    # Every cut inside the data section, then a few inside the summary section.
    first_complete: int | None = None
    for cut in range(8, len(data), 31):
        cut_path.write_bytes(data[:cut])
        with iter_recording(cut_path) as reader:
            got = [(m.topic, m.payload) for m in reader]
        assert got == written[: len(got)], cut
        summary = inspect_recording(cut_path)
        assert summary.message_count == len(got)
        assert summary.truncated == reader.truncated
        assert not summary.indexed
        if not reader.truncated and first_complete is None:
            first_complete = cut
        if first_complete is not None:
            assert got == written and not reader.truncated, cut
        else:
            assert reader.problem, cut
    assert first_complete is not None  # the data section ends before the summary


def chunk_offsets(path: Path) -> list[tuple[int, int]]:
    """(start, length) of every chunk, from the summary's chunk index (a clean file)."""
    with open(path, "rb") as file:
        summary = make_reader(file).get_summary()
    assert summary is not None
    return [(c.chunk_start_offset, c.chunk_length) for c in summary.chunk_indexes]


def flip_middle_chunk(path: Path) -> None:
    """Flip 16 bytes in the middle of the middle chunk: its CRC (or zstd frame) fails."""
    chunks = chunk_offsets(path)
    assert len(chunks) >= 3
    start, length = chunks[len(chunks) // 2]
    data = bytearray(path.read_bytes())
    middle = start + length // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def assert_one_gap(got: Sent, written: Sent) -> int:
    """``got`` is ``written`` with one run of messages missing; returns how many."""
    head = 0
    while head < len(got) and got[head] == written[head]:
        head += 1
    lost = len(written) - len(got)
    assert lost > 0 and got[head:] == written[head + lost :]
    return lost


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_corrupt_chunk_is_skipped_counted_and_reading_goes_on(
    tmp_path: Path, compression: str
) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(
        path, one_second_session(), chunk_size_bytes=2048, compression=compression
    )
    flip_middle_chunk(path)
    with iter_recording(path) as reader:
        got = [(m.topic, m.payload) for m in reader]
    lost = assert_one_gap(got, written)
    assert reader.indexed and not reader.truncated
    assert reader.corrupt_chunks == 1 and reader.lost_messages == lost
    assert "corrupt chunk at byte" in reader.problem
    # inspect reads the chunks rather than the summary's statistics (which still say 111).
    summary = inspect_recording(path)
    assert summary.message_count == len(written) - lost == len(got)
    assert (summary.corrupt_chunks, summary.lost_messages) == (1, lost)
    assert f"1 corrupt chunk(s) skipped, {lost} message(s) lost" in summary.damage


def test_a_corrupt_chunk_in_a_crashed_file_is_skipped_and_its_indexed_messages_counted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session(), chunk_size_bytes=2048)
    chunks = chunk_offsets(path)
    flip_middle_chunk(path)
    data = path.read_bytes()
    last_start, last_length = chunks[-1]
    path.write_bytes(data[: last_start + last_length])  # no summary: a recorder killed here
    with iter_recording(path) as reader:
        got = [(m.topic, m.payload) for m in reader]
    lost = assert_one_gap(got, written[: len(got) + reader.lost_messages])
    assert not reader.indexed and reader.truncated
    assert reader.corrupt_chunks == 1 and reader.lost_messages == lost


def test_recovery_keeps_the_crashed_bytes_when_a_bad_record_length_stops_it_midway(
    tmp_path: Path,
) -> None:
    """A length field broken mid-file stops reading without counting anything lost: the
    recovered file holds only what came before, so the crashed bytes must stay (they were
    replaced and gone), and the file's own notes travel into the recovered one."""
    path = tmp_path / "s.mcap"
    restart_note = {"previous": "session-0.mcap", "gap_ns": "123"}
    written = write_synthetic(
        path, one_second_session(), chunk_size_bytes=2048, notes={RESTART_METADATA: restart_note}
    )
    chunks = chunk_offsets(path)
    data = bytearray(path.read_bytes())
    last_start, last_length = chunks[-1]
    del data[last_start + last_length :]  # no summary: a recorder killed here
    start, _ = chunks[2]
    data[start + 1 : start + 9] = (1 << 40).to_bytes(8, "little")  # the chunk record's length
    crashed = bytes(data)
    path.write_bytes(crashed)

    report = recover_recording(path, resumed_wall_ns=T0_WALL_NS + 2_000_000_000)

    assert 0 < report.messages < len(written)
    assert report.kept_original is not None and report.kept_original.read_bytes() == crashed
    recovered = inspect_recording(path)
    assert recovered.message_count == report.messages and not recovered.truncated
    assert recovered.notes[RESTART_METADATA] == restart_note


def test_a_recording_with_every_chunk_corrupt_reads_nothing_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session(), chunk_size_bytes=2048)
    data = bytearray(path.read_bytes())
    for start, length in chunk_offsets(path):
        data[start + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    summary = inspect_recording(path)
    assert summary.message_count == 0
    assert summary.lost_messages == len(written) and summary.corrupt_chunks > 1


def test_completed_chunks_reach_the_file_before_close(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    writer = RecordingWriter(
        path,
        chunk_size_bytes=4096,
        flush_period_s=0.5,
        wall_ns_at_open=T0_WALL_NS,
        monotonic_ns_at_open=T0_MONO_NS,
    )
    try:
        i = 0
        # Several full chunks (~500 bytes a frame), and stop while one is open.
        while writer.chunk_count < 3 or writer.pending_count == 0:
            payload = encode(tracker_frame(i), seq=i, t_pub_ns=T0_MONO_NS)
            writer.write(
                "pose/sim",
                payload,
                type_name="TrackerFrame",
                seq=i,
                t_pub_ns=T0_MONO_NS,
                t_recv_ns=T0_MONO_NS + i,
            )
            i += 1
        n = writer.message_count
        # Read the file as a crash would leave it: open, no summary.
        with iter_recording(path) as reader:
            on_disk = len(list(reader))
        assert reader.truncated
        assert on_disk == n - writer.pending_count > 0

        assert not writer.tick(T0_MONO_NS + 100_000_000)  # the open chunk is young
        assert writer.tick(T0_MONO_NS + 600_000_000)  # ... and now older than 0.5 s
        assert writer.pending_count == 0
        with iter_recording(path) as reader:
            assert len(list(reader)) == n
        assert reader.truncated  # still no summary: the writer is open
    finally:
        writer.close()
    assert not inspect_recording(path).truncated


def test_a_file_that_is_not_mcap_or_missing_gives_one_line_recording_error(
    tmp_path: Path,
) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not an mcap file at all")
    for bad, words in (
        (junk, "not an MCAP recording"),
        (tmp_path / "missing.mcap", "no such file"),
        (tmp_path, "is a directory"),
    ):
        with pytest.raises(RecordingError, match=words) as info:
            inspect_recording(bad)
        assert "\n" not in str(info.value)
        with pytest.raises(RecordingError, match=words):
            iter_recording(bad)
    with pytest.raises(RecordingError, match="already exists"):
        RecordingWriter(junk)
    assert junk.read_bytes().startswith(b"this is not")


# --- the recorder and replay nodes, as processes -------------------------------------


@pytest.mark.slow
def test_record_then_replay_reproduces_every_message_under_the_replays_epoch(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    source = closing(Source(f"ipc://{sock_dir}/source.pub"))
    path = tmp_path / "session.mcap"
    spec = recorder_spec(sock_dir, source.endpoint, path=str(path))
    recorder = start_node(spec)
    recorder.wait_ready()
    assert spec.control is not None
    client = closing(bus.CommandClient(spec.control))
    warm_up(source, client)

    n = 300
    for i in range(n):
        source.send("pose/sim", tracker_frame(i))
        if i % 3 == 0:
            source.send("pose/pointer", tool_pose(i))
        if i % 50 == 0:
            source.send("heartbeat/source", heartbeat(i))
    expected = [(t, p) for t, p in source.sent if t != "warmup"]
    wait_until(
        lambda: recorded_on(client, "pose/sim") == n and recorded_on(client, "pose/pointer") == 100,
        "the recorder to record every message",
    )
    status = client.call("status", timeout_s=5.0).result
    assert status["rejected"] == 0 and status["lost"] == 0
    assert recorder.terminate() == 0, recorder.stderr()

    with iter_recording(path) as reader:
        recorded = [(m.topic, m.payload) for m in reader]
    assert not reader.truncated, reader.problem
    assert [(t, p) for t, p in recorded if t != "warmup"] == expected
    assert recorded[0][0] == "warmup"
    summary = inspect_recording(path)
    assert summary.indexed and summary.message_count == len(recorded)

    rspec = replay_spec(sock_dir, path=str(path), wait_for_play=True, exclude=[], speed=4.0)
    replay = start_node(rspec)
    replay.wait_ready()
    assert rspec.pub is not None and rspec.control is not None
    sub = closing(bus.QueueSubscriber([rspec.pub]))
    play_when_joined(sub, rspec.control, closing)
    got, code = replayed_until_exit(replay, sub, len(recorded))
    assert code == 0, replay.stderr()
    assert_replayed(got, recorded)
    assert sub.counters["rejected"] == 0


def record_then_kill(
    source: Source,
    path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
    *,
    frames: int,
    unflushed_frames: int = 0,
) -> tuple[NodeSpec, bus.CommandClient]:
    """Record ``frames`` tracker frames until the flush timer has written them all, send
    ``unflushed_frames`` more (they may or may not reach the file), then SIGKILL the
    recorder. Returns its spec (to restart it) and its closed-on-exit control client."""
    # Chunks far larger than the data: only the flush timer can write these messages.
    spec = recorder_spec(
        sock_dir, source.endpoint, path=str(path), chunk_size_bytes=1 << 20, flush_period_s=0.2
    )
    recorder = start_node(spec)
    recorder.wait_ready()
    assert spec.control is not None
    client = closing(bus.CommandClient(spec.control))
    warm_up(source, client)
    for i in range(frames):
        source.send("pose/sim", tracker_frame(i))
    wait_until(lambda: recorded_on(client, "pose/sim") == frames, "the recorder to get them")

    def on_disk() -> int:
        with iter_recording(path, topics=("pose/",)) as reader:
            return sum(1 for _ in reader)

    wait_until(lambda: on_disk() == frames, "the flush timer to write them", timeout_s=10.0)
    for i in range(frames, frames + unflushed_frames):
        source.send("pose/sim", tracker_frame(i))
    recorder.child.send_signal(signal.SIGKILL)
    assert recorder.wait() == -signal.SIGKILL
    return spec, client


def test_recorder_killed_with_sigkill_leaves_a_file_readable_to_its_last_chunk(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    source = closing(Source(f"ipc://{sock_dir}/source.pub"))
    path = tmp_path / "session.mcap"
    n = 50
    record_then_kill(source, path, sock_dir, start_node, closing, frames=n, unflushed_frames=20)

    with iter_recording(path) as reader:
        recorded = [(m.topic, m.payload) for m in reader]
    assert reader.truncated and reader.problem
    frames = [(t, p) for t, p in recorded if t != "warmup"]
    sent = [(t, p) for t, p in source.sent if t != "warmup"]
    assert frames == sent[: len(frames)]  # the same bytes, in order, no gaps
    assert sum(1 for t, _ in recorded if t == "pose/sim") >= n
    summary = inspect_recording(path)
    assert summary.truncated and not summary.indexed
    assert summary.message_count == len(recorded)


def test_recorder_counts_a_malformed_message_keeps_running_and_never_overwrites(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    source = closing(Source(f"ipc://{sock_dir}/source.pub"))
    path = tmp_path / "session.mcap"
    path.write_bytes(b"an earlier session")
    spec = recorder_spec(sock_dir, source.endpoint, path=str(path))
    recorder = start_node(spec)
    recorder.wait_ready()
    assert spec.control is not None
    client = closing(bus.CommandClient(spec.control))
    warm_up(source, client)

    source.pub.publish_raw("pose/sim", b"\xc1 not msgpack")
    source.pub.publish_raw("pose/sim", b"\x81\xa1v\x07")  # msgpack, wrong schema version
    good = source.send("pose/sim", tracker_frame(1))
    wait_until(lambda: recorded_on(client, "pose/sim") == 1, "the valid frame to be recorded")
    status = client.call("status", timeout_s=5.0).result
    assert status["rejected"] == 2
    assert status["rejected_malformed"] == 1 and status["rejected_version"] == 1
    assert recorder.child.poll() is None

    actual = Path(str(recording_status(client)["path"]))
    assert actual == tmp_path / "session-1.mcap"
    assert recorder.terminate() == 0, recorder.stderr()
    assert path.read_bytes() == b"an earlier session"
    with iter_recording(actual, topics=("pose/",)) as reader:
        assert [m.payload for m in reader] == [good]


def test_replay_at_double_speed_plays_a_one_second_recording_in_about_half_a_second(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    path = tmp_path / "s.mcap"
    written = write_synthetic(path, one_second_session())
    poses = [(t, p) for t, p in written if t.startswith("pose/")]

    rspec = replay_spec(sock_dir, path=str(path), wait_for_play=True, speed=2.0)
    replay = start_node(rspec)
    replay.wait_ready()
    assert rspec.pub is not None and rspec.control is not None
    sub = closing(bus.QueueSubscriber([rspec.pub]))
    play_when_joined(sub, rspec.control, closing)
    got, code = replayed_until_exit(replay, sub, len(poses))
    assert code == 0, replay.stderr()
    # Recorded heartbeats are not replayed by default; poses are, in order, unchanged.
    assert_replayed(got, poses)
    span_s = (got[-1].t_recv_ns - got[0].t_recv_ns) / 1e9
    assert 0.3 < span_s < 1.5, span_s


def test_replay_payload_moves_sample_time_onto_now_keeping_the_recorded_delay_and_seq() -> None:
    payload = encode(tracker_frame(3, t_sensor_ns=1_000), seq=41, t_pub_ns=1_700, epoch=5)
    moved = replay_payload(payload, epoch=77, now_ns=5_000_000)
    assert moved is not None
    envelope = decode(moved)
    assert isinstance(envelope.message, TrackerFrame)
    assert (envelope.seq, envelope.t_pub_ns, envelope.epoch) == (41, 5_000_000, 77)
    assert envelope.message.t_sensor_ns == 5_000_000 - 700
    original = decode(payload).message
    assert isinstance(original, TrackerFrame)
    np.testing.assert_array_equal(
        envelope.message.T_tracker_from_tools, original.T_tracker_from_tools
    )
    # No sample time: only the epoch changes. Undecodable: refused, never republished.
    beat = encode(heartbeat(1), seq=3, t_pub_ns=5, epoch=5)
    assert replay_payload(beat, epoch=77, now_ns=9) == encode(
        heartbeat(1), seq=3, t_pub_ns=5, epoch=77
    )
    assert replay_payload(b"\xc1 garbage", epoch=77, now_ns=9) is None


def test_replay_payload_without_live_clock_changes_only_the_epoch() -> None:
    payload = encode(tracker_frame(3, t_sensor_ns=1_000), seq=41, t_pub_ns=1_700, epoch=5)
    assert replay_payload(payload, epoch=77) == encode(
        tracker_frame(3, t_sensor_ns=1_000), seq=41, t_pub_ns=1_700, epoch=77
    )


def test_replay_with_live_clock_delivers_samples_that_are_fresh_now(
    tmp_path: Path,
    sock_dir: str,
    start_node: Callable[[NodeSpec], NodeProcess],
    closing: Callable[[Any], Any],
) -> None:
    path = tmp_path / "s.mcap"
    # 100 Hz frames, each published 1.5 ms after its sample, as a tracker node would.
    session: list[tuple[str, Message, int]] = [
        (
            "pose/sim",
            tracker_frame(i, t_sensor_ns=T0_MONO_NS + i * 10_000_000 - 1_500_000),
            i * 10_000_000,
        )
        for i in range(101)
    ]
    poses = write_synthetic(path, session)
    rspec = replay_spec(sock_dir, path=str(path), wait_for_play=True, speed=4.0, live_clock=True)
    replay = start_node(rspec)
    replay.wait_ready()
    assert rspec.pub is not None and rspec.control is not None
    sub = closing(bus.QueueSubscriber([rspec.pub]))
    play_when_joined(sub, rspec.control, closing)
    got, code = replayed_until_exit(replay, sub, len(poses))
    assert code == 0, replay.stderr()
    assert len(got) == len(poses)
    for received, (_, recorded) in zip(got, poses, strict=True):
        now = decode(received.payload)
        before = decode(recorded)
        assert isinstance(now.message, TrackerFrame) and isinstance(before.message, TrackerFrame)
        assert now.seq == before.seq
        assert now.message.frame_number == before.message.frame_number
        # Fresh on arrival (a few ms of transport), where the recorded stamp is hours old.
        age_ms = (received.t_recv_ns - now.message.t_sensor_ns) / 1e6
        assert 0 <= age_ms < 250, age_ms
        assert (
            now.t_pub_ns - now.message.t_sensor_ns == before.t_pub_ns - before.message.t_sensor_ns
        )


def test_replay_of_a_file_that_is_not_a_recording_exits_2_with_one_line(
    tmp_path: Path, sock_dir: str, start_node: Callable[[NodeSpec], NodeProcess]
) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not a recording")
    replay = start_node(replay_spec(sock_dir, path=str(junk)))
    assert replay.wait() == 2
    assert "not an MCAP recording" in replay.stderr()
    assert "Traceback" not in replay.stderr()

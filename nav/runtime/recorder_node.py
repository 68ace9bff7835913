"""The recorder: writes every message it receives to an MCAP session file.

Subscribes: every topic starting with one of ``topics`` (default: all) on the pub sockets of
the nodes named in the launch file's ``subscribe`` list, reliably (``QueueSubscriber``: in
order, nothing skipped; a malformed message is counted in the heartbeat and not recorded).
Publishes: ``heartbeat/<name>`` with counters ``recorded`` and ``chunks`` and, for
``TrackerFrame`` and ``ToolPose``, the ``t_sensor_ns`` -> receive latency.
Control: ``ping``, ``status``, and ``recording`` -> ``{"path", "messages", "chunks",
"topics": {topic: count}, "recovery": {"state", "files": [...]}}`` (state ``none``,
``running``, ``done`` or ``failed``; one entry per recovered file: ``path``, ``messages``,
``lost``, ``gap_s``).

The file layout, clocks and crash safety are described in ``nav/runtime/recording.py``: a recorder
killed outright loses at most the last ``flush_period_s`` of data. An existing file at
``path`` is never overwritten: the recorder writes beside it (``session-1.mcap``, ...) and
says so in the log, so a restart after a crash keeps the first part of the session.

Restart after a crash: the earlier parts of the session that were never closed (no
summary: the standard ``mcap`` reader refuses them) are recovered in a background thread
once this recorder records (so recovery never widens the gap): each is rewritten as a
complete file with ``nav.runtime.recording.recover_recording``, and the log says how many messages
it kept and how long the gap was between its last message and the moment recording
resumed. The gap also goes into the recovered file (``ornav.recovery``) and into the new
one (``ornav.restart``), where ``ornav inspect`` shows it; the ``recording`` command
reports it under ``recovery``. A file that is not MCAP is left alone.

Provenance: under a supervisor (``ORNAV_LAUNCH_FILE``) the launch file the stack ran goes
into the recording as metadata ``ornav.launch`` (``path``, ``sha256``, ``toml``; at most
``MAX_LAUNCH_BYTES``), so a recording says which stack made it, and a simulated session
carries its ground truth (the nav node's ``truth_T_reference_from_image``) for
``ornav validate``.

Files are created 0600 and missing directories 0700: a recording is patient session data.

ZeroMQ joins subscriptions asynchronously, so messages published in the first milliseconds
after READY may be missed; a recorder starts before the nodes it records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nav.messages import Command, JsonValue, Reply, ToolPose, TrackerFrame
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.runtime.recording import (
    COMPRESSIONS,
    DEFAULT_CHUNK_SIZE_BYTES,
    DEFAULT_FLUSH_PERIOD_S,
    RESTART_METADATA,
    RecordingError,
    RecordingWriter,
    RecoveryAbortedError,
    RecoveryReport,
    is_complete,
    make_private_dir,
    opened_wall_ns,
    recover_recording,
    session_files,
    unused_path,
)

log = logging.getLogger(__name__)

LAUNCH_METADATA = "ornav.launch"
LAUNCH_FILE_ENV = "ORNAV_LAUNCH_FILE"
MAX_LAUNCH_BYTES = 256 << 10  # a launch file is a few KiB; never copy a stray large file
STOP_DRAIN_S = 1.0  # on stop, keep writing what is already queued for at most this long
RECOVERY_JOIN_S = 5.0  # on stop, how long a recovery in progress may take to abort


@dataclass(frozen=True)
class Config:
    """``path``: the session file (a launch file gives e.g. ``{run_dir}/session.mcap``).

    ``topics``: prefixes to record (``""`` = all). ``chunk_size_bytes`` and
    ``flush_period_s`` bound how much a crash can lose (see ``nav/runtime/recording.py``).
    """

    path: str
    topics: tuple[str, ...] = ("",)
    chunk_size_bytes: int = DEFAULT_CHUNK_SIZE_BYTES
    flush_period_s: float = DEFAULT_FLUSH_PERIOD_S
    compression: str = "zstd"

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("key 'path': must not be empty")
        if not self.topics:
            raise ValueError("key 'topics': give at least one prefix ('' records everything)")
        if self.chunk_size_bytes < 1024:
            raise ValueError("key 'chunk_size_bytes': must be >= 1024")
        if not 0 < self.flush_period_s <= 60:
            raise ValueError("key 'flush_period_s': must be in (0, 60]")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"key 'compression': one of {', '.join(sorted(COMPRESSIONS))}")


def _record(batch: list[bus.Received], writer: RecordingWriter, runtime: NodeRuntime) -> None:
    for received in batch:
        envelope = received.envelope
        writer.write(
            received.topic,
            received.payload,
            type_name=envelope.type_name,
            seq=envelope.seq,
            t_pub_ns=envelope.t_pub_ns,
            t_recv_ns=received.t_recv_ns,
        )
        message = envelope.message
        if isinstance(message, TrackerFrame | ToolPose):
            runtime.latency.add(received.t_recv_ns - message.t_sensor_ns)


class _Recovery:
    """Recovers the unfinished earlier parts of the session in a thread (module docstring).

    The thread only reads and replaces the old files; the gap note for the new file is
    written by the recording loop (``take_finished``), which owns the writer.
    """

    def __init__(self, previous: list[Path], *, new_path: Path, resumed_wall_ns: int) -> None:
        self.previous = previous
        self.new_path = new_path
        self.resumed_wall_ns = resumed_wall_ns
        self.state = "none"
        self.reports: list[RecoveryReport] = []
        self._unreported: list[RecoveryReport] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.previous:
            self.state = "running"
            self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failed = False
        for i, path in enumerate(self.previous):
            try:
                if is_complete(path):
                    continue
                # Recording resumed in the next file: its opening, or this recorder's.
                later = self.previous[i + 1] if i + 1 < len(self.previous) else None
                resumed = opened_wall_ns(later) if later is not None else None
                report = recover_recording(
                    path,
                    resumed_wall_ns=resumed or self.resumed_wall_ns,
                    continued_in=(later or self.new_path).name,
                    should_stop=self._stop.is_set,
                )
            except RecoveryAbortedError:
                log.warning("%s: recovery stopped; the file is left as it was", path)
                failed = True
                break
            except RecordingError as error:
                log.warning("%s", error)  # not MCAP, or unwritable: left as it was
                failed = True
                continue
            except Exception:  # a bug must not take the recording down with it
                log.exception("%s: recovery failed; the file is left as it was", path)
                failed = True
                continue
            gap = "no message" if report.gap_s is None else f"{report.gap_s:.2f} s"
            lost = (
                f", {report.corrupt_chunks} corrupt chunk(s) with {report.lost_messages} "
                f"message(s) skipped (original kept as {report.kept_original})"
                if report.kept_original
                else ""
            )
            log.warning(
                "%s was cut off by a crash: recovered %d messages into a complete file%s; "
                "gap between its last message and the restart: %s",
                path,
                report.messages,
                lost,
                gap,
            )
            with self._lock:
                self.reports.append(report)
                self._unreported.append(report)
        self.state = "failed" if failed else "done"

    def take_finished(self) -> list[RecoveryReport]:
        with self._lock:
            done, self._unreported = self._unreported, []
        return done

    def status(self) -> dict[str, JsonValue]:
        with self._lock:
            files: list[JsonValue] = [
                {
                    "path": str(r.path),
                    "messages": r.messages,
                    "lost": r.lost_messages,
                    "gap_s": r.gap_s,
                }
                for r in self.reports
            ]
        return {"state": self.state, "files": files}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(RECOVERY_JOIN_S)


def _note_restart(writer: RecordingWriter, report: RecoveryReport) -> None:
    """Tell the new file which crashed part came before it, and the gap between them."""
    writer.add_metadata(
        RESTART_METADATA,
        {
            "previous": report.path.name,
            "previous_messages": str(report.messages),
            "gap_ns": "" if report.gap_ns is None else str(report.gap_ns),
        },
    )


def _note_launch(writer: RecordingWriter) -> None:
    """Copy the supervisor's launch file into the recording (``ornav.launch``), if readable."""
    path = os.environ.get(LAUNCH_FILE_ENV, "")
    if not path:
        return
    try:
        data = Path(path).read_bytes()
        if len(data) > MAX_LAUNCH_BYTES:
            raise ValueError(f"{len(data)} bytes > {MAX_LAUNCH_BYTES}")
        text = data.decode("utf-8")
    except (OSError, ValueError) as error:
        log.warning("launch file %s not noted in the recording: %s", path, error)
        return
    digest = hashlib.sha256(data).hexdigest()
    writer.add_metadata(LAUNCH_METADATA, {"path": path, "sha256": digest, "toml": text})


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    """Record until ``stop``; returns 0 after closing the file cleanly, 2 if it cannot open."""
    requested = Path(cfg.path)
    previous = session_files(requested)
    path = unused_path(requested)
    if path != requested:
        log.warning("%s exists; recording to %s instead", requested, path)
    if not spec.subscribe_endpoints:
        log.warning("%s subscribes to no node: the recording will hold nothing", spec.name)
    try:
        make_private_dir(path.parent)
        writer = RecordingWriter(
            path,
            chunk_size_bytes=cfg.chunk_size_bytes,
            flush_period_s=cfg.flush_period_s,
            compression=cfg.compression,
            metadata={"recorder": spec.name, "recorder_pid": str(os.getpid())},
        )
    except (RecordingError, OSError) as error:
        log.error("%s: %s", spec.name, error)
        return 2

    _note_launch(writer)
    recovery = _Recovery(previous, new_path=path, resumed_wall_ns=writer.wall_ns_at_open)
    with writer, NodeRuntime(spec, stop) as runtime:
        sub = bus.QueueSubscriber(spec.subscribe_endpoints, cfg.topics)
        try:
            runtime.watch(sub.counters)

            def recording(_command: Command) -> Reply:
                return Reply(
                    ok=True,
                    result={
                        "path": str(path),
                        "messages": writer.message_count,
                        "chunks": writer.chunk_count,
                        "topics": dict(writer.topic_counts),
                        "recovery": recovery.status(),
                    },
                )

            runtime.on("recording", recording)
            runtime.ready()
            log.info("%s: recording %s to %s", spec.name, ", ".join(spec.subscribe) or "-", path)
            recovery.start()
            while not stop.is_set():
                _record(sub.poll(POLL_TIMEOUT_S), writer, runtime)
                writer.tick(time.monotonic_ns())
                for report in recovery.take_finished():
                    if report.path == previous[-1]:
                        _note_restart(writer, report)
                runtime.counters["recorded"] = writer.message_count
                runtime.counters["chunks"] = writer.chunk_count
                runtime.service({"recorded": writer.message_count})
            # What has already arrived is part of the session: write it before closing.
            deadline_ns = time.monotonic_ns() + int(STOP_DRAIN_S * 1e9)
            while time.monotonic_ns() < deadline_ns and (batch := sub.poll(0.0)):
                _record(batch, writer, runtime)
        finally:
            sub.close()
            recovery.stop()
            for report in recovery.take_finished():
                if report.path == previous[-1]:
                    _note_restart(writer, report)
    log.info(
        "%s: closed %s (%d messages, %d chunks)",
        spec.name,
        path,
        writer.message_count,
        writer.chunk_count,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description="Record bus traffic to an MCAP file.")


if __name__ == "__main__":
    raise SystemExit(main())

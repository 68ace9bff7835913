"""The recorder: writes every message it receives to an MCAP session file.

Subscribes: every topic starting with one of ``topics`` (default: all) on the pub sockets of
the nodes named in the launch file's ``subscribe`` list, reliably (``QueueSubscriber``: in
order, nothing skipped; a malformed message is counted in the heartbeat and not recorded).
Publishes: ``heartbeat/<name>`` with counters ``recorded`` and ``chunks`` and, for
``TrackerFrame`` and ``ToolPose``, the ``t_sensor_ns`` -> receive latency.
Control: ``ping``, ``status``, and ``recording`` -> ``{"path", "messages", "chunks",
"topics": {topic: count}}``.

The file layout, clocks and crash safety are described in ``nav/recording.py``: a recorder
killed outright loses at most the last ``flush_period_s`` of data. An existing file at
``path`` is never overwritten: the recorder writes beside it (``session-1.mcap``, ...) and
says so in the log, so a restart after a crash keeps the first part of the session.

ZeroMQ joins subscriptions asynchronously, so messages published in the first milliseconds
after READY may be missed; a recorder starts before the nodes it records.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nav import bus
from nav.launchfile import NodeSpec
from nav.messages import Command, Reply, ToolPose, TrackerFrame
from nav.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.recording import (
    COMPRESSIONS,
    DEFAULT_CHUNK_SIZE_BYTES,
    DEFAULT_FLUSH_PERIOD_S,
    RecordingError,
    RecordingWriter,
    unused_path,
)

log = logging.getLogger(__name__)

STOP_DRAIN_S = 1.0  # on stop, keep writing what is already queued for at most this long


@dataclass(frozen=True)
class Config:
    """``path``: the session file (a launch file gives e.g. ``{run_dir}/session.mcap``).

    ``topics``: prefixes to record (``""`` = all). ``chunk_size_bytes`` and
    ``flush_period_s`` bound how much a crash can lose (see ``nav/recording.py``).
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


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    """Record until ``stop``; returns 0 after closing the file cleanly, 2 if it cannot open."""
    requested = Path(cfg.path)
    path = unused_path(requested)
    if path != requested:
        log.warning("%s exists; recording to %s instead", requested, path)
    if not spec.subscribe_endpoints:
        log.warning("%s subscribes to no node: the recording will hold nothing", spec.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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
                    },
                )

            runtime.on("recording", recording)
            runtime.ready()
            log.info("%s: recording %s to %s", spec.name, ", ".join(spec.subscribe) or "-", path)
            while not stop.is_set():
                _record(sub.poll(POLL_TIMEOUT_S), writer, runtime)
                writer.tick(time.monotonic_ns())
                runtime.counters["recorded"] = writer.message_count
                runtime.counters["chunks"] = writer.chunk_count
                runtime.service({"recorded": writer.message_count})
            # What has already arrived is part of the session: write it before closing.
            deadline_ns = time.monotonic_ns() + int(STOP_DRAIN_S * 1e9)
            while time.monotonic_ns() < deadline_ns and (batch := sub.poll(0.0)):
                _record(batch, writer, runtime)
        finally:
            sub.close()
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

"""Safety under faults (issue 10): the overlay must not vanish or be forged.

Real processes and sockets: a tracker restart must not hide the headset's overlay for as
long as the tracker ran before; idle squatters cannot lock a headset or Slicer out; a
flood of requests cannot grow the OpenIGTLink server without bound; telemetry is accepted
only under the name its session announced.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nav.messages import OverlayState
from render.headset_client import ClientConfig, HeadsetClient
from tests.conftest import NodeProcess, start_node
from tests.test_headset_client import (
    RATE_HZ,
    nav_spec,
    render_spec,
    step_until,
    tracker_spec,
)

MS = 1_000_000


@pytest.fixture
def ipc(ipc_dir: Path) -> Path:
    return ipc_dir


# --- item 1: a tracker restart ---------------------------------------------------------


@pytest.mark.slow
def test_after_a_tracker_restart_the_client_shows_current_updates_again_within_a_second(
    ipc: Path, node_processes: list[NodeProcess]
) -> None:
    """The restarted tracker counts frames from 0 again; the client must not wait until
    they pass the old run's count (that took as long as the old run: 6.9 s measured)."""
    tracker = start_node(tracker_spec(ipc))
    node_processes.append(tracker)
    node_processes.append(start_node(nav_spec(ipc)))
    node_processes.append(start_node(render_spec(ipc)))
    client = HeadsetClient(ClientConfig(endpoint=f"ipc://{ipc}/render.headset", name="restart"))
    old_run_frames = int(3 * RATE_HZ)  # 3 s of tracking before the restart
    try:
        step_until(client, lambda: client.events.state is OverlayState.CURRENT, timeout_s=20)
        step_until(
            client,
            lambda: client.latest is not None and client.latest.frame_number >= old_run_frames,
            timeout_s=20,
        )
        tracker.process.kill()
        tracker.process.wait()
        step_until(client, lambda: client.events.state is OverlayState.HIDDEN, timeout_s=5)
        assert client.latest is not None
        frames_before = client.latest.frame_number
        restarted = start_node(tracker_spec(ipc))
        node_processes.append(restarted)
        t_ready = time.monotonic_ns()
        # Generous timeout so the old behaviour is measured rather than cut short.
        step_until(
            client,
            lambda: client.events.state is OverlayState.CURRENT,
            timeout_s=frames_before / RATE_HZ + 10,
        )
        current = client.events.history[-1]
    finally:
        client.close()
    gap_ms = (current.t_ns - t_ready) / MS
    print(f"tracker restart -> client CURRENT: {gap_ms:.0f} ms (old run: {frames_before} frames)")
    # ~100 ms on an idle machine (ZeroMQ reconnect, nav, render); the old run lasted >= 3 s.
    assert gap_ms < 1000, gap_ms
    assert client.latest is not None and client.latest.frame_number < frames_before
    assert client.reconnects == 0  # the render node never went away
    assert restarted.terminate() == 0

"""The simulated tracker as a real process: READY, decodable frames at rate, control, SIGTERM."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from nav.messages import (
    Command,
    Heartbeat,
    OccludeTool,
    PointerTouch,
    PointerTrace,
    Reply,
    ScriptStarted,
    ToolOccluded,
    ToolStatus,
    TrackerFrame,
)
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.transforms import apply, invert_rigid
from tests.conftest import NodeProcess, start_node
from tracking.sim_model import SimConfig


def _send(client: bus.CommandClient, request: PointerTouch | PointerTrace | OccludeTool) -> Reply:
    """A typed request as its Command (the refusal tests send loose args on purpose)."""
    return client.request(Command(request.NAME, request.to_args()))


def _spec(ipc_dir: Path, **params: object) -> NodeSpec:
    return NodeSpec(
        name="tracker",
        module="tracking.sim_node",
        pub=f"ipc://{ipc_dir}/tracker.pub",
        control=f"ipc://{ipc_dir}/tracker.ctl",
        rate_hz=250.0,
        params={"seed": 3, **params},
    )


def _frames(sub: bus.QueueSubscriber, n: int, timeout_s: float = 10.0) -> list[bus.Received]:
    out: list[bus.Received] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} frames"
        out += [r for r in sub.poll(0.1) if isinstance(r.message, TrackerFrame)]
    return out


def test_sim_node_publishes_consecutive_frames_at_rate_and_exits_0(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    node = start_node(_spec(ipc_dir))
    node_processes.append(node)
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/sim"])
    try:
        received = _frames(sub, 250)
    finally:
        sub.close()
    frames = [r.message for r in received]
    assert all(isinstance(f, TrackerFrame) for f in frames)
    numbers = [f.frame_number for f in frames]  # type: ignore[union-attr]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    seqs = [r.envelope.seq for r in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    t = np.array([f.t_sensor_ns for f in frames], dtype=np.float64)  # type: ignore[union-attr]
    rate_hz = (len(t) - 1) / ((t[-1] - t[0]) / 1e9)
    assert 200 < rate_hz < 300  # 250 Hz asked; the schedule is absolute, so no drift
    assert frames[0].tools[:3] == ("pointer", "reference", "headset")  # type: ignore[union-attr]
    assert node.terminate() == 0


def test_pointer_touch_command_puts_the_tip_on_the_point_in_reference(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    node = start_node(_spec(ipc_dir, noise_mm_rms=0.0, noise_deg_rms=0.0, dropout_rate_hz=0.0))
    node_processes.append(node)
    client = bus.CommandClient(node.spec.control or "")
    sub = bus.LatestSubscriber([node.spec.pub or ""], ["pose/sim"])
    p_reference = [10.0, -20.0, 5.0]
    try:
        reply = _send(client, PointerTouch(points=[p_reference], dwell_s=5.0, travel_s=0.2))
        assert reply.ok, reply.error
        assert 5.0 < ScriptStarted.from_result(reply.result).duration_s < 6.0
        bad = client.call("pointer.touch", points=[[1.0, 2.0]])  # a loose dict: the wire's check
        assert not bad.ok and "points" in bad.error
        time.sleep(0.5)  # into the dwell (the script's own travel time, not a socket wait)
        tip_errors = []
        deadline = time.monotonic() + 5
        while len(tip_errors) < 20 and time.monotonic() < deadline:
            for r in sub.poll(0.1):
                frame = r.message
                assert isinstance(frame, TrackerFrame)
                pointer, reference = frame.pose("pointer"), frame.pose("reference")
                if pointer.status is ToolStatus.OK and reference.status is ToolStatus.OK:
                    # tip = T_reference_from_tracker @ T_tracker_from_pointer @ p_tip_in_pointer
                    p_tip_tracker = apply(pointer.T_tracker_from_tool, SimConfig().p_tip_in_pointer)
                    p_tip_ref = apply(invert_rigid(reference.T_tracker_from_tool), p_tip_tracker)
                    tip_errors.append(float(np.linalg.norm(p_tip_ref - p_reference)))
        assert len(tip_errors) >= 20
        assert max(tip_errors) < 1e-6  # noise-free: the tip sits on the point
    finally:
        client.close()
        sub.close()
    assert node.terminate() == 0


def test_heartbeat_counts_ok_samples_per_tool(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    node = start_node(_spec(ipc_dir))
    node_processes.append(node)
    sub = bus.LatestSubscriber([node.spec.pub or ""], ["heartbeat/"])
    beats: list[Heartbeat] = []
    deadline = time.monotonic() + 10
    try:
        while len(beats) < 3:  # the first rate is 0 by construction; wait for later ones
            assert time.monotonic() < deadline
            beats += [r.message for r in sub.poll(0.2) if isinstance(r.message, Heartbeat)]
    finally:
        sub.close()
    last = beats[-1]
    assert last.node == "tracker" and last.state == "running"
    assert last.counters["published"] > 100
    for tool in ("pointer", "reference", "headset"):
        assert 150 < last.rates_hz[f"tool/{tool}"] <= 260
    assert node.terminate() == 0


def test_tool_occlude_command_puts_the_reference_out_of_view_for_its_duration(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    node = start_node(_spec(ipc_dir, dropout_rate_hz=0.0))
    node_processes.append(node)
    client = bus.CommandClient(node.spec.control or "")
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/sim"])
    try:
        _frames(sub, 5)  # subscribed and flowing
        bad = _send(client, OccludeTool(tool="nope", duration_s=1.0))
        assert not bad.ok and "tool" in bad.error
        reply = _send(client, OccludeTool(tool="reference", duration_s=0.3))
        assert reply.ok, reply.error
        occluded = ToolOccluded.from_result(reply.result)
        assert occluded.tool == "reference"
        assert occluded.end_s - occluded.start_s == pytest.approx(0.3)
        frames = [r.message for r in _frames(sub, 250)]  # 1 s at 250 Hz
    finally:
        client.close()
        sub.close()
    reference = [f.pose("reference").status for f in frames]  # type: ignore[union-attr]
    pointer = [f.pose("pointer").status for f in frames]  # type: ignore[union-attr]
    out = [s is ToolStatus.OUT_OF_VIEW for s in reference]
    # One contiguous run of about 0.3 s (75 samples), then the reference is back.
    first, last = out.index(True), len(out) - 1 - out[::-1].index(True)
    assert all(out[first : last + 1])
    assert 60 <= last - first + 1 <= 90
    assert not out[-1]
    assert all(s is ToolStatus.OK for s in pointer)
    assert node.terminate() == 0


def test_pointer_and_occlude_commands_refuse_out_of_range_arguments_one_line_each(
    ipc_dir: Path, node_processes: list[NodeProcess]
) -> None:
    """Each bad argument is a Reply error naming it; the node keeps its script and runs on.

    Before: ``travel_s = 1e308`` and an unknown ``duration_s`` were accepted, and a speed of
    1e-320 mm/s made the reply's duration inf, which the client could not even decode.
    """
    node = start_node(_spec(ipc_dir, dropout_rate_hz=0.0))
    node_processes.append(node)
    client = bus.CommandClient(node.spec.control or "")
    sub = bus.QueueSubscriber([node.spec.pub or ""], ["pose/sim"])
    poly = [[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]]
    bad: list[tuple[str, dict[str, object], str]] = [
        ("pointer.trace", {"polyline": poly, "duration_s": 5.0}, "unknown argument 'duration_s'"),
        ("pointer.trace", {"polyline": poly, "duration_s": math.inf}, "not finite"),
        ("pointer.trace", {"polyline": poly, "speed_mm_s": 1e-320}, "'speed_mm_s' must be in"),
        ("pointer.trace", {"polyline": poly, "speed_mm_s": 1e6}, "'speed_mm_s' must be in"),
        ("pointer.trace", {"polyline": poly, "travel_s": 1e308}, "'travel_s' must be in"),
        ("pointer.trace", {"polyline": [[0, 0, 0], [1e300, 0, 0]]}, "1e+300 mm, beyond"),
        ("pointer.trace", {"polyline": [[0, 0, 0], [9000, 0, 0]], "speed_mm_s": 0.1}, "would last"),
        ("pointer.trace", {"polyline": [[0.0, 0.0, float(i)] for i in range(10_001)]}, "at most"),
        ("pointer.touch", {"points": [[0, 0, 0]], "dwell_s": 1e308}, "'dwell_s' must be in"),
        ("pointer.touch", {"points": [[0, 0, 0]], "travel_s": 1e-320}, "'travel_s' must be in"),
        ("pointer.touch", {"points": [[0, 0, "x"]]}, "'points' must be a list of [x, y, z]"),
        ("pointer.rest", {"for_s": 1.0}, "unknown argument 'for_s'; pointer.rest takes no"),
        ("tool.occlude", {"tool": "reference", "duration_s": 1e308}, "'duration_s' must be in"),
        ("tool.occlude", {"tool": "reference", "duration_s": 0.0}, "'duration_s' must be in"),
    ]
    try:
        trace = PointerTrace(polyline=poly, speed_mm_s=25.0, travel_s=0.5)
        good = _send(client, trace)
        assert good.ok, good.error
        assert ScriptStarted.from_result(good.result).duration_s == pytest.approx(2.5)
        for name, args, words in bad:
            reply = client.call(name, **args)  # type: ignore[arg-type]
            assert not reply.ok, (name, args, reply.result)
            assert words in reply.error and "\n" not in reply.error, (name, args, reply.error)
        _frames(sub, 5)  # still publishing
        again = _send(client, trace)
        assert again.ok, again.error
    finally:
        client.close()
        sub.close()
    assert node.terminate() == 0

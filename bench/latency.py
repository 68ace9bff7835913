"""ornav bus latency, side by side with the OpenIGTLink reference (pyigtl), in one run.

    .venv/bin/python bench/latency.py [--quick] [--json out.json]

Sections (each prints one table; a failing section is reported and the others still run):

1. End to end, three processes downstream: ``tracking.sim_node`` (6 tools batched in one
   ``TrackerFrame``, noise on) -> ``nav.runtime.relay_node`` "nav" ->
   ``nav.runtime.relay_node`` "render"
   -> a ``QueueSubscriber`` in this process, over ipc, at 60, 400 and 1000 Hz. Latency is
   ``t_recv_ns - t_sensor_ns`` (host monotonic clock, system-wide on Linux). The client is
   a *queue* subscriber on purpose: a latest-wins client would quietly skip frames it was
   too slow for and measure only the newest, hiding both loss and queueing delay. Loss is
   counted end to end by ``frame_number``: frames the tracker produced in the window that
   never reached the client, whatever hop dropped them (the relays' latest-wins drops are
   counted too, as ``superseded``), plus the seq gaps on the last hop for attribution.
1b. The transport floor: the same topology and payload size with bare pyzmq processes that
   forward bytes without decoding (``bench/_zmq_floor.py``): what ZeroMQ, the OS and Python
   cost before ornav does anything, so section 1 can be read as floor + ornav's own work.
2. The ecosystem reference: the same samples (same simulator and config) sent as six
   OpenIGTLink TRANSFORM messages per sample by a ``pyigtl.OpenIGTLinkServer`` in its own
   process to a ``pyigtl.OpenIGTLinkClient`` here, one hop over TCP loopback. The TRANSFORM
   timestamp carries ``t_sensor_ns`` (monotonic). Arrival is stamped inside pyigtl's own
   receive thread, the moment it stores the message: that is generous to pyigtl (an
   application using ``wait_for_message`` adds its 10 ms sleep-poll on top).
3. Batched vs per-tool: encode + publish + receive + decode of one 6-tool ``TrackerFrame``
   vs six ``ToolPose`` messages, in this process over ipc.
4. Pose age at a 90 Hz consumer of a 1 kHz tracker: ``LatestSubscriber`` vs a naive
   ``QueueSubscriber`` read one message per tick, both on the same stream at once.
5. Section 1's stack at 400 Hz with and without ``nav.runtime.recorder_node`` subscribed to the
   tracker: the "without" window is section 1's 400 Hz window; the recorder is then
   started on the same running stack and the next window is measured.

Run order is 3, 1+5, 1b, 4, 2: the pyigtl reference goes last so that nothing it does can
cost the ornav figures; a failing section is reported with its reason and the rest still run.
``--json`` is rewritten after every section.

Nothing here asserts a timing: figures are printed next to their targets, marked met or
not met. The machine this runs on matters (core count is printed): every process here is
Python, and on a 2-core machine four busy processes share two cores. Every window also
reports "CPU ours/other": cores used by the benchmark's own processes and by everything
else on the machine (from /proc), because on a shared machine foreign load moves p99 most.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from bench._procs import Child, CpuMeter, Processes, StartError  # noqa: E402
from nav.messages import Heartbeat, Message, TrackerFrame, decode, encode  # noqa: E402
from nav.runtime import bus  # noqa: E402
from nav.runtime.launchfile import NodeSpec  # noqa: E402
from tracking.sim_model import SimConfig, SimulatedTracker  # noqa: E402

TARGET_P50_MS = 0.5
TARGET_P99_MS = 4.0
TARGET_LOSS_RATE_HZ = 400.0  # "nothing lost at 400 Hz"
TARGET_SLOW_P99_MS = 2.0
EXTRA_TOOLS = 3  # pointer, reference, headset + 3 dummies = 6 tools
# 1/90 s, not 11 ms: a period that is a whole number of tracker periods (11 x 1 ms) locks the
# reader's phase to the tracker's and the "distribution" collapses to one arbitrary age.
SLOW_READER_PERIOD_S = 1 / 90
SLOW_TRACKER_HZ = 1000.0


@dataclass(frozen=True)
class Settings:
    rates_hz: tuple[float, ...]
    window_s: float  # sections 1, 2, 5
    warmup_s: float
    slow_window_s: float  # section 4
    batch_duration_s: float  # section 3, per variant
    floor_window_s: float  # section 1b


FULL = Settings((60.0, 400.0, 1000.0), 10.0, 0.5, 8.0, 2.0, 4.0)
QUICK = Settings((60.0, 400.0, 1000.0), 2.0, 0.3, 2.0, 0.5, 1.5)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentiles_ms(values_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    values = np.asarray(values_ns, dtype=np.float64) / 1e6
    if values.size == 0:
        return {"n": 0}
    p50, p99, p999 = np.percentile(values, [50, 99, 99.9])
    return {
        "n": int(values.size),
        "p50": float(p50),
        "p99": float(p99),
        "p999": float(p999),
        "max": float(values.max()),
    }


def why(error: BaseException) -> str:
    """An exception as one line (a child's log tail included), for tables and JSON."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(lines) > 1:
        text += " ... " + lines[-1]  # for a child's log tail, its last line is the exception
    return f"{type(error).__name__}: {text}"[:400]


def mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    n = len(header)
    cells = [[str(h) for h in header]]
    cells += [([fmt(c) for c in row] + [""] * n)[:n] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, "  " + "  ".join(h.rjust(w) for h, w in zip(cells[0], widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in cells[1:]:
        lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# --- the ornav stack ----------------------------------------------------------------


class Stack:
    """tracker -> nav -> render, started as real node processes with READY handshakes."""

    def __init__(self, procs: Processes, ipc_dir: Path, tag: str, rate_hz: float) -> None:
        def ep(name: str, kind: str) -> str:
            return f"ipc://{ipc_dir}/{tag}-{name}.{kind}"

        self.procs = procs
        self.ipc_dir = ipc_dir
        self.tag = tag
        self.tracker = NodeSpec(
            name="tracker",
            module="tracking.sim_node",
            pub=ep("tracker", "pub"),
            control=ep("tracker", "ctl"),
            rate_hz=rate_hz,
            params={"extra_tools": EXTRA_TOOLS},
        )
        self.nav = NodeSpec(
            name="nav",
            module="nav.runtime.relay_node",
            pub=ep("nav", "pub"),
            control=ep("nav", "ctl"),
            subscribe=("tracker",),
            subscribe_endpoints=(self.tracker.pub or "",),
        )
        self.render = NodeSpec(
            name="render",
            module="nav.runtime.relay_node",
            pub=ep("render", "pub"),
            control=ep("render", "ctl"),
            subscribe=("nav",),
            subscribe_endpoints=(self.nav.pub or "",),
        )
        self.children: dict[str, Child] = {}
        self._controls: dict[str, bus.CommandClient] = {}

    def start(self, specs: Sequence[NodeSpec] | None = None) -> None:
        for spec in specs or (self.tracker, self.nav, self.render):
            self.children[spec.name] = self.procs.start_node(spec)
            if spec.control:
                self._controls[spec.name] = bus.CommandClient(spec.control)

    def status(self, name: str) -> dict[str, int]:
        """The node's counters (its ``status`` command); {} if it does not answer."""
        client = self._controls.get(name)
        if client is None:
            return {}
        try:
            reply = client.call("status", timeout_s=2.0)
        except (TimeoutError, ValueError) as error:
            progress(f"  warning: {name} did not answer status: {error}")
            return {}
        return {k: int(v) for k, v in reply.result.items() if isinstance(v, int)}

    def statuses(self) -> dict[str, dict[str, int]]:
        return {name: self.status(name) for name in self._controls}

    def stop(self, name: str) -> int:
        client = self._controls.pop(name, None)
        if client is not None:
            client.close()
        child = self.children.pop(name)
        return self.procs.stop(child)

    def close(self) -> None:
        for client in self._controls.values():
            client.close()
        self._controls.clear()
        for name in list(self.children):
            self.stop(name)


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


@dataclass
class ClientWindow:
    latencies_ns: list[int]
    frame_numbers: list[int]
    t_sensor_ns: list[int]
    counters: dict[str, int]


def wait_first(sub: bus.QueueSubscriber | bus.LatestSubscriber, timeout_s: float) -> None:
    """Block until ``sub`` gets a TrackerFrame (the slow-joiner handshake), or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for received in sub.poll(0.1):
            if isinstance(received.message, TrackerFrame):
                return
    raise TimeoutError(f"no TrackerFrame within {timeout_s} s")


def collect(sub: bus.QueueSubscriber, duration_s: float) -> ClientWindow:
    """Receive every TrackerFrame for ``duration_s``; latency is t_recv - t_sensor."""
    before = dict(sub.counters)
    latencies: list[int] = []
    numbers: list[int] = []
    sensors: list[int] = []
    t_end_ns = time.monotonic_ns() + int(duration_s * 1e9)
    while (now_ns := time.monotonic_ns()) < t_end_ns:
        for received in sub.poll(min(0.05, (t_end_ns - now_ns) / 1e9)):
            message = received.message
            if isinstance(message, TrackerFrame):
                latencies.append(received.t_recv_ns - message.t_sensor_ns)
                numbers.append(message.frame_number)
                sensors.append(message.t_sensor_ns)
    return ClientWindow(latencies, numbers, sensors, diff(dict(sub.counters), before))


def drain(sub: bus.QueueSubscriber | bus.LatestSubscriber) -> None:
    while sub.poll(0.0):
        pass


def latest_heartbeats(sub: bus.LatestSubscriber, timeout_s: float = 1.2) -> dict[str, Heartbeat]:
    """The newest heartbeat of each node on ``sub`` (waits up to ``timeout_s`` for them)."""
    out: dict[str, Heartbeat] = {}
    deadline = time.monotonic() + timeout_s
    drain(sub)  # older heartbeats describe an older latency window
    while time.monotonic() < deadline and len(out) < len(sub.endpoints):
        for received in sub.poll(0.1):
            if isinstance(received.message, Heartbeat):
                out[received.message.node] = received.message
    return out


def summarise_window(window: ClientWindow, statuses: dict[str, dict[str, int]]) -> dict[str, Any]:
    numbers = np.asarray(window.frame_numbers, dtype=np.int64)
    out: dict[str, Any] = {"latency_ms": percentiles_ms(window.latencies_ns)}
    if numbers.size:
        first, last = int(numbers.min()), int(numbers.max())
        produced = last - first + 1
        received = int(np.unique(numbers).size)
        span_s = (max(window.t_sensor_ns) - min(window.t_sensor_ns)) / 1e9
        out.update(
            produced=produced,
            received=received,
            lost=produced - received,
            duplicates=int(numbers.size - received),
            achieved_hz=(produced - 1) / span_s if span_s > 0 else None,
        )
    else:
        out.update(produced=0, received=0, lost=None, duplicates=0, achieved_hz=None)
    out["client"] = {k: v for k, v in window.counters.items() if v}
    out["nodes"] = {name: {k: v for k, v in c.items() if v} for name, c in statuses.items()}
    return out


def run_stack_window(
    stack: Stack, client: bus.QueueSubscriber, hb: bus.LatestSubscriber, window_s: float
) -> dict[str, Any]:
    drain(client)
    before = stack.statuses()
    drain(client)  # status calls take a moment; start the window with an empty queue
    meter = CpuMeter(stack.procs.pids())
    window = collect(client, window_s)
    cpu = meter.stop()
    after = stack.statuses()
    result = summarise_window(window, {n: diff(after[n], before.get(n, {})) for n in after})
    result["cpu_cores"] = cpu
    beats = latest_heartbeats(hb)
    result["node_latency_ms"] = {name: beat.latency_ms for name, beat in beats.items()}
    return result


def section_stack(
    procs: Processes,
    ipc_dir: Path,
    settings: Settings,
    results: dict[str, Any],
) -> None:
    """Sections 1 and 5 (5 rides on the 400 Hz stack of section 1)."""
    s1: dict[str, Any] = {}
    s5: dict[str, Any] = {}
    results["1_ornav_three_hops"] = s1
    results["5_recorder"] = s5
    for rate in settings.rates_hz:
        key = f"{rate:g}"
        progress(f"[1] ornav tracker -> nav -> render -> client at {rate:g} Hz: starting nodes")
        stack = Stack(procs, ipc_dir, f"s{rate:g}", rate)
        client: bus.QueueSubscriber | None = None
        hb: bus.LatestSubscriber | None = None
        try:
            stack.start()
            client = bus.QueueSubscriber([stack.render.pub or ""], ["pose/"])
            hb = bus.LatestSubscriber([stack.nav.pub or "", stack.render.pub or ""], ["heartbeat/"])
            wait_first(client, timeout_s=10.0)
            collect(client, settings.warmup_s)
            progress(f"[1]   measuring {settings.window_s:g} s")
            s1[key] = run_stack_window(stack, client, hb, settings.window_s)
            s1[key]["rate_hz"] = rate
            lat = s1[key]["latency_ms"]
            progress(
                f"[1]   p50 {fmt(lat.get('p50'))} ms, p99 {fmt(lat.get('p99'))} ms, "
                f"lost {s1[key]['lost']} of {s1[key]['produced']}"
            )
            if rate == TARGET_LOSS_RATE_HZ:
                s5["without"] = s1[key]
                s5.update(section_recorder(stack, procs, ipc_dir, client, hb, settings))
        except Exception as error:  # report and go on: other rates and sections still count
            s1[key] = {"failed": why(error), "rate_hz": rate}
            progress(f"[1]   FAILED: {s1[key]['failed']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            for sub in (client, hb):
                if sub is not None:
                    sub.close()
            stack.close()
    if "without" not in s5 and "failed" not in s5:
        s5["failed"] = "no 400 Hz stack ran (see section 1)"


def section_recorder(
    stack: Stack,
    procs: Processes,
    ipc_dir: Path,
    client: bus.QueueSubscriber,
    hb: bus.LatestSubscriber,
    settings: Settings,
) -> dict[str, Any]:
    """Start the recorder on the running stack and measure the next window."""
    if importlib.util.find_spec("nav.runtime.recorder_node") is None:
        progress("[5] nav/runtime/recorder_node.py is not there: recorder comparison skipped")
        return {"failed": "nav/runtime/recorder_node.py does not exist (yet)"}
    record_path = ipc_dir / "bench-recording.mcap"
    spec = NodeSpec(
        name="recorder",
        module="nav.runtime.recorder_node",
        pub=f"ipc://{ipc_dir}/{stack.tag}-recorder.pub",
        control=f"ipc://{ipc_dir}/{stack.tag}-recorder.ctl",
        subscribe=("tracker",),
        subscribe_endpoints=(stack.tracker.pub or "",),
        params={"path": str(record_path)},
    )
    progress("[5] starting the recorder on the 400 Hz stack (subscribed to the tracker)")
    try:
        stack.start([spec])
    except StartError as error:
        progress(f"[5]   FAILED to start the recorder: {error}")
        return {"failed": "recorder did not start: " + why(error)}
    try:
        collect(client, max(1.0, settings.warmup_s))  # let it connect and open its file
        progress(f"[5]   measuring {settings.window_s:g} s with the recorder running")
        with_rec = run_stack_window(stack, client, hb, settings.window_s)
    finally:
        code = stack.stop("recorder")
    size = record_path.stat().st_size if record_path.exists() else None
    with_rec["recorder_exit_code"] = code
    with_rec["recording_bytes"] = size
    lat = with_rec["latency_ms"]
    progress(
        f"[5]   with recorder: p50 {fmt(lat.get('p50'))} ms, p99 {fmt(lat.get('p99'))} ms, "
        f"lost {with_rec['lost']}; recorder exit {code}, file {size} bytes"
    )
    return {"with": with_rec}


# --- section 1b: the transport floor -----------------------------------------------------


def floor_once(procs: Processes, ipc_dir: Path, rate: float, settings: Settings) -> dict[str, Any]:
    frame = SimulatedTracker(SimConfig(extra_tools=EXTRA_TOOLS)).sample(
        0.0, frame_number=0, t_sensor_ns=time.monotonic_ns()
    )
    payload_bytes = len(encode(frame, seq=0, t_pub_ns=0))
    ep = [f"ipc://{ipc_dir}/floor{rate:g}-{i}.pub" for i in range(3)]
    py = [sys.executable, "-m", "bench._zmq_floor"]
    source = ["source", "--pub", ep[0], f"--rate-hz={rate}", f"--payload-bytes={payload_bytes}"]
    started = [
        procs.start(
            "floor_render",
            py + ["forward", "--sub", ep[1], "--pub", ep[2]],
            ready_prefix="READY floor",
        ),
        procs.start(
            "floor_nav",
            py + ["forward", "--sub", ep[0], "--pub", ep[1]],
            ready_prefix="READY floor",
        ),
        procs.start("floor_source", py + source, ready_prefix="READY floor"),
    ]
    sub = bus.context().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(ep[2])
    sub.setsockopt(zmq.SUBSCRIBE, b"pose/")

    def receive_for(duration_s: float) -> list[int]:
        latencies: list[int] = []
        t_end = time.monotonic_ns() + int(duration_s * 1e9)
        while time.monotonic_ns() < t_end:
            if sub.poll(50, zmq.POLLIN):
                frames = sub.recv_multipart()
                t_recv_ns = time.monotonic_ns()
                latencies.append(t_recv_ns - struct.unpack_from("<q", frames[1])[0])
        return latencies

    try:
        if not sub.poll(10_000, zmq.POLLIN):
            raise TimeoutError("nothing came through the bare pyzmq chain in 10 s")
        receive_for(settings.warmup_s)
        meter = CpuMeter(procs.pids())
        latencies = receive_for(settings.floor_window_s)
        cpu = meter.stop()
    finally:
        sub.close(linger=0)
        for child in started:
            procs.stop(child)
    return {
        "rate_hz": rate,
        "payload_bytes": payload_bytes,
        "latency_ms": percentiles_ms(latencies),
        "received": len(latencies),
        "cpu_cores": cpu,
    }


def section_floor(
    procs: Processes, ipc_dir: Path, settings: Settings, results: dict[str, Any]
) -> None:
    """1b: what ZeroMQ + OS + pyzmq alone cost over the same three hops (no ornav code)."""
    out: dict[str, Any] = {}
    results["1b_bare_pyzmq_floor"] = out
    for rate in settings.rates_hz:
        key = f"{rate:g}"
        progress(f"[1b] bare pyzmq source -> forward -> forward -> here at {rate:g} Hz")
        try:
            out[key] = floor_once(procs, ipc_dir, rate, settings)
            lat = out[key]["latency_ms"]
            progress(f"[1b]   p50 {fmt(lat.get('p50'))} ms, p99 {fmt(lat.get('p99'))} ms")
        except Exception as error:
            out[key] = {"failed": why(error), "rate_hz": rate}
            progress(f"[1b]   FAILED: {out[key]['failed']}")
            traceback.print_exc(file=sys.stderr)


# --- section 2: pyigtl ------------------------------------------------------------------


class _StampingDict(dict[str, Any]):
    """pyigtl's per-device "latest message" dict, logging each store with its arrival time.

    pyigtl's receive thread stores every message it reads here (under its own lock), so
    this sees every arrival, including those a later one overwrites before anyone reads.
    """

    def __init__(self, log: list[tuple[str, float, int]]) -> None:
        super().__init__()
        self.log = log

    def __setitem__(self, key: str, message: Any) -> None:
        self.log.append((key, message.timestamp, time.monotonic_ns()))
        super().__setitem__(key, message)


def _parse_fields(line: str) -> dict[str, int]:
    out = {}
    for part in line.split()[1:]:
        name, eq, value = part.partition("=")
        if eq:
            out[name] = int(value)
    return out


def pyigtl_once(procs: Processes, rate: float, settings: Settings) -> dict[str, Any]:
    import pyigtl  # the reference is optional: a missing pyigtl fails only this section

    argv = [
        sys.executable,
        "-m",
        "bench._igtl_server",
        f"--rate-hz={rate}",
        f"--duration-s={settings.window_s}",
        f"--warmup-s={settings.warmup_s}",
        f"--extra-tools={EXTRA_TOOLS}",
    ]
    server = procs.start("igtl_server", argv, ready_prefix="READY igtl ")
    port = _parse_fields(server.ready)["port"]
    log: list[tuple[str, float, int]] = []
    igtl_client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port, start_now=False)
    igtl_client.incoming_messages = _StampingDict(log)
    igtl_client.start()
    meter = CpuMeter(procs.pids())
    cpu: dict[str, float] = {}
    try:
        timeout_s = 10.0 + settings.warmup_s + settings.window_s + 10.0
        done = None
        deadline = time.monotonic() + timeout_s
        while done is None and time.monotonic() < deadline:
            line = server.next_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            if line.startswith("FAILED"):
                raise RuntimeError(f"pyigtl server: {line}")
            if line.startswith("DONE"):
                done = _parse_fields(line)
                cpu = meter.stop()
        if done is None:
            raise RuntimeError(f"pyigtl server never finished; log tail:\n{server.log_tail()}")
        time.sleep(0.5)  # pyigtl flushes its send queue every ~10 ms; let the tail arrive
    finally:
        stop_thread = threading.Thread(target=igtl_client.stop, daemon=True)
        stop_thread.start()
        stop_thread.join(timeout=3.0)
        procs.stop(server)
    t0_ns, t1_ns = done["t0_ns"], done["t1_ns"]
    per_message: list[int] = []
    seen: set[tuple[str, int]] = set()
    last_arrival: dict[int, list[int]] = {}
    for device, timestamp_s, t_arrival_ns in list(log):
        t_sensor_ns = round(timestamp_s * 1e9)
        # pyigtl's timestamp round trip (32.32 fixed point) is good to ~1 ns: allow 2 us.
        if not t0_ns - 2000 <= t_sensor_ns <= t1_ns + 2000:
            continue
        if (device, t_sensor_ns) in seen:
            continue
        seen.add((device, t_sensor_ns))
        per_message.append(t_arrival_ns - t_sensor_ns)
        last_arrival.setdefault(t_sensor_ns, []).append(t_arrival_ns)
    n_tools = 3 + EXTRA_TOOLS
    complete = [max(a) - t for t, a in last_arrival.items() if len(a) == n_tools]
    sent = done["messages"]
    return {
        "rate_hz": rate,
        "samples_sent": done["samples"],
        "messages_sent": sent,
        "messages_delivered": len(per_message),
        "delivery": len(per_message) / sent if sent else None,
        "samples_complete": len(complete),
        "achieved_hz": (done["samples"] - 1) / ((t1_ns - t0_ns) / 1e9) if t1_ns > t0_ns else None,
        "queue_full_drops": done["queue_full"],
        "overruns": done["overruns"],
        "latency_ms_per_message": percentiles_ms(per_message),
        "latency_ms_sample_complete": percentiles_ms(complete),
        "cpu_cores": cpu,
    }


def section_pyigtl(procs: Processes, settings: Settings, results: dict[str, Any]) -> None:
    s2: dict[str, Any] = {}
    results["2_pyigtl_one_hop"] = s2
    for rate in settings.rates_hz:
        key = f"{rate:g}"
        progress(f"[2] pyigtl OpenIGTLink server -> client, 6 TRANSFORMs/sample at {rate:g} Hz")
        try:
            s2[key] = pyigtl_once(procs, rate, settings)
            r = s2[key]
            lat = r["latency_ms_sample_complete"]
            progress(
                f"[2]   sample-complete p50 {fmt(lat.get('p50'))} ms, p99 {fmt(lat.get('p99'))}"
                f" ms, delivered {fmt(r['delivery'])}"
            )
        except Exception as error:
            s2[key] = {"failed": why(error), "rate_hz": rate}
            progress(f"[2]   FAILED: {s2[key]['failed']}")
            traceback.print_exc(file=sys.stderr)


# --- section 3: batched vs per-tool ------------------------------------------------------


def per_sample_us(work: Callable[[], object], samples: int, min_s: float = 0.25) -> float:
    """Best of repeated runs of ``work`` (``samples`` samples each), in us per sample."""
    work()  # warm caches and the CPU clock before timing
    best = float("inf")
    t_end = time.perf_counter() + min_s
    while True:
        t = time.perf_counter_ns()
        work()
        best = min(best, (time.perf_counter_ns() - t) / 1e3 / samples)
        if time.perf_counter() > t_end:
            return best


def section_batching(ipc_dir: Path, settings: Settings, results: dict[str, Any]) -> None:
    progress("[3] batched TrackerFrame vs six ToolPose messages, in-process over ipc")
    tracker = SimulatedTracker(SimConfig(extra_tools=EXTRA_TOOLS))
    frames = [
        tracker.sample(k / 400.0, frame_number=k, t_sensor_ns=time.monotonic_ns())
        for k in range(200)
    ]
    variants: dict[str, list[list[tuple[str, Message]]]] = {
        "batched": [[("pose/sim", f)] for f in frames],
        "per_tool": [[(f"pose/sim/{p.tool}", p) for p in f.poses()] for f in frames],
    }
    pub = bus.Publisher(f"ipc://{ipc_dir}/batch.pub")
    sub = bus.QueueSubscriber([pub.endpoint], ["pose/"])
    out: dict[str, Any] = {}
    results["3_batched_vs_per_tool"] = out
    try:
        deadline = time.monotonic() + 5.0
        while not sub.poll(0.01):  # slow joiner: publish probes until the pipe is up
            pub.publish("pose/sim", frames[0])
            if time.monotonic() > deadline:
                raise TimeoutError("subscriber never connected")
        time.sleep(0.05)
        drain(sub)
        batch = 40  # samples per burst: 240 ToolPoses, well under the 1000-message SNDHWM
        for name, samples in variants.items():
            per_sample = len(samples[0])
            # Pure costs first (no socket), for the breakdown.
            payloads = [[encode(m, seq=i, t_pub_ns=1) for _, m in s] for i, s in enumerate(samples)]
            encode_us = per_sample_us(
                lambda samples=samples: [  # type: ignore[misc]
                    [encode(m, seq=1, t_pub_ns=1) for _, m in s] for s in samples
                ],
                len(samples),
            )
            decode_us = per_sample_us(
                lambda payloads=payloads: [  # type: ignore[misc]
                    [decode(p) for p in ps] for ps in payloads
                ],
                len(samples),
            )
            n = missing = 0
            gc.collect()
            meter = CpuMeter([os.getpid()])
            t_start = time.perf_counter_ns()
            t_end = t_start + int(settings.batch_duration_s * 1e9)
            while time.perf_counter_ns() < t_end:
                for i in range(batch):
                    for topic, message in samples[(n + i) % len(samples)]:
                        pub.publish(topic, message)
                expected, got = batch * per_sample, 0
                while got < expected:
                    received = sub.poll(1.0)
                    if not received:
                        missing += expected - got
                        break
                    got += len(received)
                n += batch
            elapsed_ns = time.perf_counter_ns() - t_start
            out[name] = {
                "messages_per_sample": per_sample,
                "samples": n,
                "missing": missing,
                "samples_per_s": n / (elapsed_ns / 1e9),
                "messages_per_s": n * per_sample / (elapsed_ns / 1e9),
                "us_per_sample": elapsed_ns / 1e3 / n,
                "encode_us_per_sample": encode_us,
                "decode_us_per_sample": decode_us,
                "cpu_cores": meter.stop(),
            }
            progress(
                f"[3]   {name}: {out[name]['us_per_sample']:.1f} us/sample, "
                f"{out[name]['messages_per_s']:.0f} msg/s"
            )
    finally:
        sub.close()
        pub.close()


# --- section 4: slow consumer ------------------------------------------------------------


def section_slow_consumer(
    procs: Processes, ipc_dir: Path, settings: Settings, results: dict[str, Any]
) -> None:
    progress(
        f"[4] pose age at a {1 / SLOW_READER_PERIOD_S:.0f} Hz reader of a "
        f"{SLOW_TRACKER_HZ:g} Hz tracker: latest-wins vs queue"
    )
    out: dict[str, Any] = {}
    results["4_slow_consumer"] = out
    stack = Stack(procs, ipc_dir, "slow", SLOW_TRACKER_HZ)
    latest: bus.LatestSubscriber | None = None
    queued: bus.QueueSubscriber | None = None
    try:
        stack.start([stack.tracker])
        latest = bus.LatestSubscriber([stack.tracker.pub or ""], ["pose/"])
        queued = bus.QueueSubscriber([stack.tracker.pub or ""], ["pose/"])
        wait_first(latest, 10.0)
        wait_first(queued, 10.0)
        drain(latest)
        drain(queued)  # both start the window with nothing queued
        ages: dict[str, list[int]] = {"latest": [], "queue": []}
        in_tracker_ns: list[int] = []  # t_pub - t_sensor: the sample's time inside the tracker
        ticks = 0
        meter = CpuMeter(procs.pids())
        t_start = time.monotonic()
        t_end = t_start + settings.slow_window_s
        next_tick = t_start
        while time.monotonic() < t_end:
            # A fixed schedule (not sleep(period) after the work) so the reader runs at 90 Hz.
            next_tick += SLOW_READER_PERIOD_S
            time.sleep(max(0.0, next_tick - time.monotonic()))
            got = latest.poll(0.0)
            now_ns = time.monotonic_ns()
            for received in got:
                if isinstance(received.message, TrackerFrame):
                    ages["latest"].append(now_ns - received.message.t_sensor_ns)
                    in_tracker_ns.append(received.envelope.t_pub_ns - received.message.t_sensor_ns)
            got = queued.poll(0.0, max_messages=1)
            now_ns = time.monotonic_ns()
            for received in got:
                if isinstance(received.message, TrackerFrame):
                    ages["queue"].append(now_ns - received.message.t_sensor_ns)
            ticks += 1
        elapsed = time.monotonic() - t_start
        out["cpu_cores"] = meter.stop()
        out["reader_hz"] = ticks / elapsed
        out["tracker_hz"] = SLOW_TRACKER_HZ
        out["latest"] = {
            "age_ms": percentiles_ms(ages["latest"]),
            "superseded": int(latest.counters["superseded"]),
        }
        out["queue"] = {"age_ms": percentiles_ms(ages["queue"])}
        out["sensor_to_publish_ms"] = percentiles_ms(in_tracker_ns)
        tracker_status = stack.status("tracker")
        out["tracker_overruns"] = tracker_status.get("overruns", 0)
        progress(
            f"[4]   latest-wins p99 {fmt(out['latest']['age_ms'].get('p99'))} ms, "
            f"queue p99 {fmt(out['queue']['age_ms'].get('p99'))} ms"
        )
    except Exception as error:
        out["failed"] = why(error)
        progress(f"[4]   FAILED: {out['failed']}")
        traceback.print_exc(file=sys.stderr)
    finally:
        for sub in (latest, queued):
            if sub is not None:
                sub.close()
        stack.close()


# --- report ------------------------------------------------------------------------------


def cpu_text(r: dict[str, Any]) -> str:
    """CPU cores used by the benchmark's processes / by everything else, over a window."""
    cpu = r.get("cpu_cores") or {}
    if "ours" not in cpu:
        return "-"
    return f"{cpu['ours']:.2f}/{cpu['other']:.2f}"


def report(results: dict[str, Any]) -> str:
    parts: list[str] = []
    s1 = results.get("1_ornav_three_hops", {})
    rows: list[list[Any]] = []
    failures: list[str] = []
    for key, r in s1.items():
        if "failed" in r:
            rows.append([f"{key} Hz", "FAILED (below)"])
            failures.append(f"   {key} Hz FAILED: {r['failed']}")
            continue
        lat = r["latency_ms"]
        p50, p99 = lat.get("p50"), lat.get("p99")
        loss_target = mark(r["lost"] == 0) if r["rate_hz"] == TARGET_LOSS_RATE_HZ else "(no target)"
        nodes = r["nodes"]
        where = (
            f"nav {nodes.get('nav', {}).get('superseded', 0)}+"
            f"{nodes.get('nav', {}).get('lost', 0)}, "
            f"render {nodes.get('render', {}).get('superseded', 0)}+"
            f"{nodes.get('render', {}).get('lost', 0)}, "
            f"last hop {r['client'].get('lost', 0)}, "
            f"overruns {nodes.get('tracker', {}).get('overruns', 0)}"
        )
        rows.append(
            [
                f"{key} Hz",
                r["achieved_hz"],
                p50,
                p99,
                lat.get("p999"),
                lat.get("max"),
                f"{r['lost']}/{r['produced']}",
                f"{mark(p50 is not None and p50 <= TARGET_P50_MS)} / "
                f"{mark(p99 is not None and p99 <= TARGET_P99_MS)} / {loss_target}",
                ratio(p50, TARGET_P50_MS),
                ratio(p99, TARGET_P99_MS),
                where,
                cpu_text(r),
            ]
        )
    parts.append(
        table(
            "1. ornav end to end: sim tracker (6 tools, batched) -> nav relay -> render relay"
            " -> client (QueueSubscriber), ipc; latency t_recv - t_sensor, ms",
            [
                "rate",
                "achieved Hz",
                "p50",
                "p99",
                "p99.9",
                "max",
                "lost/produced",
                f"p50<={TARGET_P50_MS} / p99<={TARGET_P99_MS} / 0 lost@400",
                "p50/target",
                "p99/target",
                "dropped where (superseded+gaps per relay)",
                "CPU cores ours/other",
            ],
            rows,
        )
    )
    if failures:
        parts.append("\n".join(failures))
    hop_rows: list[list[Any]] = []
    for key, r in s1.items():
        if "failed" in r:
            continue
        nl = r.get("node_latency_ms", {})
        hop_rows.append(
            [
                f"{key} Hz",
                nl.get("nav", {}).get("p50"),
                nl.get("nav", {}).get("p99"),
                nl.get("render", {}).get("p50"),
                nl.get("render", {}).get("p99"),
                r["latency_ms"].get("p50"),
                r["latency_ms"].get("p99"),
            ]
        )
    parts.append(
        table(
            "   per hop (t_sensor -> that node's receive; nav/render from their own heartbeat"
            " LatencyWindow, last <=4096 samples), ms",
            ["rate", "nav p50", "nav p99", "render p50", "render p99", "client p50", "client p99"],
            hop_rows,
        )
    )

    floor = results.get("1b_bare_pyzmq_floor", {})
    rows = []
    for key, r in floor.items():
        if "failed" in r:
            rows.append([f"{key} Hz", "FAILED: " + r["failed"]])
            continue
        o = s1.get(key, {})
        o_lat = o.get("latency_ms", {}) if "failed" not in o else {}
        lat = r["latency_ms"]
        rows.append(
            [
                f"{key} Hz",
                lat.get("p50"),
                lat.get("p99"),
                lat.get("p999"),
                o_lat.get("p50"),
                o_lat.get("p99"),
                ratio(o_lat.get("p50"), lat.get("p50")),
                ratio(o_lat.get("p99"), lat.get("p99")),
                cpu_text(r),
            ]
        )
    if rows:
        parts.append(
            table(
                "1b. the transport floor: bare pyzmq, same topology (source -> forward -> forward"
                " -> here), ipc, same payload size, no ornav code; ms",
                [
                    "rate",
                    "floor p50",
                    "floor p99",
                    "floor p99.9",
                    "ornav p50",
                    "ornav p99",
                    "p50 ornav/floor",
                    "p99 ornav/floor",
                    "CPU ours/other",
                ],
                rows,
            )
        )

    s2 = results.get("2_pyigtl_one_hop", {})
    rows = []
    for key, r in s2.items():
        o = s1.get(key, {})
        o_lat = o.get("latency_ms", {}) if "failed" not in o else {}
        o_del = o["received"] / o["produced"] if "failed" not in o and o.get("produced") else None
        o_hop1 = o.get("node_latency_ms", {}).get("nav", {}) if "failed" not in o else {}
        if "failed" in r:
            rows.append(
                [f"{key} Hz", o_lat.get("p50"), o_lat.get("p99"), o_del, "", "igtl FAILED (below)"]
            )
            continue
        lat = r["latency_ms_sample_complete"]
        rows.append(
            [
                f"{key} Hz",
                o_lat.get("p50"),
                o_lat.get("p99"),
                o_del,
                o_hop1.get("p50"),
                lat.get("p50"),
                lat.get("p99"),
                r["latency_ms_per_message"].get("p50"),
                r["delivery"],
                ratio(o_lat.get("p50"), lat.get("p50")),
                ratio(o_hop1.get("p50"), lat.get("p50")),
                ratio(o_del, r["delivery"]),
                cpu_text(r),
            ]
        )
    parts.append(
        table(
            "2. vs OpenIGTLink (pyigtl 0.3, TCP loopback, 6 TRANSFORM/sample, ONE hop; arrival"
            " stamped in pyigtl's receive thread), ms",
            [
                "rate",
                "ornav 3-hop p50",
                "p99",
                "delivered",
                "ornav 1-hop p50",
                "igtl p50",
                "igtl p99",
                "igtl p50/msg",
                "igtl delivered",
                "p50 ornav3/igtl",
                "p50 ornav1/igtl",
                "delivery ornav/igtl",
                "igtl CPU ours/other",
            ],
            rows,
        )
    )
    extra = [
        f"   {key} Hz: pyigtl achieved {fmt(r.get('achieved_hz'), 1)} Hz, "
        f"{r['messages_delivered']}/{r['messages_sent']} messages, "
        f"{r['samples_complete']}/{r['samples_sent']} samples complete, "
        f"send-queue-full events {r['queue_full_drops']}, overruns {r['overruns']}"
        if "failed" not in r
        else f"   {key} Hz: pyigtl FAILED: {r['failed']}"
        for key, r in s2.items()
    ]
    if extra:
        parts.append("\n".join(extra))

    s3 = results.get("3_batched_vs_per_tool", {})
    if "failed" in s3:
        parts.append("3. batched vs per-tool: FAILED: " + s3["failed"])
    elif s3:
        rows = []
        for name in ("batched", "per_tool"):
            r = s3.get(name)
            if r is None:
                continue
            rows.append(
                [
                    name,
                    r["messages_per_sample"],
                    r["samples_per_s"],
                    r["messages_per_s"],
                    r["us_per_sample"],
                    r["encode_us_per_sample"],
                    r["decode_us_per_sample"],
                    r["missing"],
                    cpu_text(r),
                ]
            )
        b, p = s3.get("batched"), s3.get("per_tool")
        if b and p:
            rows.append(
                [
                    "per_tool/batched",
                    "",
                    ratio(p["samples_per_s"], b["samples_per_s"]),
                    ratio(p["messages_per_s"], b["messages_per_s"]),
                    ratio(p["us_per_sample"], b["us_per_sample"]),
                    ratio(p["encode_us_per_sample"], b["encode_us_per_sample"]),
                    ratio(p["decode_us_per_sample"], b["decode_us_per_sample"]),
                    "",
                ]
            )
        parts.append(
            table(
                "3. batched vs per-tool, 6 tools, one process, ipc: publish + receive + decode"
                " (a sample = 6 poses)",
                [
                    "variant",
                    "msgs/sample",
                    "samples/s",
                    "msgs/s",
                    "us/sample",
                    "encode us (best)",
                    "decode us (best)",
                    "missing",
                    "CPU ours/other",
                ],
                rows,
            )
        )

    s4 = results.get("4_slow_consumer", {})
    if "failed" in s4:
        parts.append("4. slow consumer: FAILED: " + s4["failed"])
    elif s4:
        lt, qu = s4["latest"]["age_ms"], s4["queue"]["age_ms"]
        rows = [
            [
                "LatestSubscriber",
                lt.get("n"),
                lt.get("p50"),
                lt.get("p99"),
                lt.get("max"),
                mark(lt.get("p99", float("inf")) <= TARGET_SLOW_P99_MS),
            ],
            [
                "QueueSubscriber (1/tick)",
                qu.get("n"),
                qu.get("p50"),
                qu.get("p99"),
                qu.get("max"),
                mark(qu.get("p99", float("inf")) <= TARGET_SLOW_P99_MS),
            ],
            [
                "queue/latest",
                "",
                ratio(qu.get("p50"), lt.get("p50")),
                ratio(qu.get("p99"), lt.get("p99")),
                ratio(qu.get("max"), lt.get("max")),
                "",
            ],
        ]
        parts.append(
            table(
                f"4. pose age (now - t_sensor) at a {s4['reader_hz']:.1f} Hz reader of a "
                f"{s4['tracker_hz']:g} Hz sim tracker, ms (tracker overruns "
                f"{s4['tracker_overruns']}; CPU cores ours/other {cpu_text(s4)})",
                ["reader", "reads", "p50", "p99", "max", f"p99<={TARGET_SLOW_P99_MS}"],
                rows,
            )
        )
        inside = s4.get("sensor_to_publish_ms", {})
        parts.append(
            f"   of the age, t_pub - t_sensor inside the sim tracker (sample + encode): p50 "
            f"{fmt(inside.get('p50'))} ms, p99 {fmt(inside.get('p99'))} ms"
        )

    s5 = results.get("5_recorder", {})
    if "failed" in s5 and "with" not in s5:
        parts.append("5. recorder on/off at 400 Hz: FAILED: " + s5["failed"])
    elif s5:
        rows = []
        for name in ("without", "with"):
            r = s5.get(name)
            if r is None:
                continue
            lat = r["latency_ms"]
            rows.append(
                [
                    f"{name} recorder",
                    lat.get("p50"),
                    lat.get("p99"),
                    lat.get("p999"),
                    f"{r['lost']}/{r['produced']}",
                    f"{mark(lat.get('p50', 1e9) <= TARGET_P50_MS)} / "
                    f"{mark(lat.get('p99', 1e9) <= TARGET_P99_MS)} / {mark(r['lost'] == 0)}",
                    cpu_text(r),
                ]
            )
        w, wo = s5.get("with"), s5.get("without")
        if w and wo:
            rows.append(
                [
                    "with/without",
                    ratio(w["latency_ms"].get("p50"), wo["latency_ms"].get("p50")),
                    ratio(w["latency_ms"].get("p99"), wo["latency_ms"].get("p99")),
                    ratio(w["latency_ms"].get("p999"), wo["latency_ms"].get("p999")),
                    "",
                    "",
                ]
            )
        title = "5. client latency at 400 Hz with and without the recorder (same stack), ms"
        if w:
            rec = w["nodes"].get("recorder")
            title += (
                f"\n   recorder: received {rec.get('received', 0) if rec is not None else '?'}, "
                f"lost {rec.get('lost', 0) if rec is not None else '?'}, "
                f"exit {w.get('recorder_exit_code')}, "
                f"file {w.get('recording_bytes')} bytes"
            )
        parts.append(
            table(
                title,
                [
                    "",
                    "p50",
                    "p99",
                    "p99.9",
                    "lost/produced",
                    "p50 / p99 / 0 lost",
                    "CPU ours/other",
                ],
                rows,
            )
        )
    return "\n\n".join(parts)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "loadavg_1min_at_start": os.getloadavg()[0],
    }


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (~30 s in all)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    # SIGTERM is handled like Ctrl-C: every child is stopped, what was measured is reported.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t_start = time.monotonic()
    info = machine()
    progress(
        f"ornav latency benchmark ({'quick' if args.quick else 'full'}): "
        f"{info['cpus']} CPUs, Python {info['python']}, libzmq {info['libzmq']}, "
        f"load average {info['loadavg_1min_at_start']:.2f}"
    )
    results: dict[str, Any] = {"machine": info, "settings": vars(settings)}
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-b-", dir="/tmp"))
    interrupted = False
    try:
        with Processes(ipc_dir) as procs:
            # pyigtl last: whatever it does, the ornav figures are in hand before it starts.
            sections: list[tuple[str, str | None, Callable[[], None]]] = [
                (
                    "3",
                    "3_batched_vs_per_tool",
                    lambda: section_batching(ipc_dir, settings, results),
                ),
                (
                    "1+5",
                    "1_ornav_three_hops",
                    lambda: section_stack(procs, ipc_dir, settings, results),
                ),
                (
                    "1b",
                    "1b_bare_pyzmq_floor",
                    lambda: section_floor(procs, ipc_dir, settings, results),
                ),
                (
                    "4",
                    "4_slow_consumer",
                    lambda: section_slow_consumer(procs, ipc_dir, settings, results),
                ),
                ("2", "2_pyigtl_one_hop", lambda: section_pyigtl(procs, settings, results)),
            ]
            for name, key, run in sections:
                try:
                    run()
                except Exception as error:
                    progress(f"section {name} FAILED: {type(error).__name__}: {error}")
                    traceback.print_exc(file=sys.stderr)
                    if key is not None:
                        results.setdefault(key, {})["failed"] = why(error)
                if args.json:
                    write_json(args.json, results)
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: stopping every process, then reporting what was measured")
    finally:
        bus.context().destroy(linger=0)
        shutil.rmtree(ipc_dir, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - t_start
    print()
    print(
        f"RESULTS ({info['cpus']} CPUs, {info['platform']}, Python {info['python']}, "
        f"pyzmq {info['pyzmq']} / libzmq {info['libzmq']}; {results['elapsed_s']:.0f} s)"
    )
    print()
    print(report(results))
    if args.json:
        write_json(args.json, results)
        print(f"\nfigures written to {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())

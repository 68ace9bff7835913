"""OpenIGTLink: ornav's codec (``tracking/igtl_codec.py``) vs pyigtl, side by side in one run.

    .venv/bin/python bench/igtl.py [--quick] [--json out.json]

Sections (each prints one table; a failing section is reported and the others still run):

1. Codec work in this process, no sockets: decode and encode of TRANSFORM messages (header
   v1, and v2 with ``TransformStatus`` metadata), TDATA (6 tools), POLYDATA (a 100k-triangle
   mesh) and CRC-64, per message. ornav decodes through ``StreamDecoder`` (the framing the
   node uses) and verifies every CRC; pyigtl 0.3 (``parse_header`` + ``unpack``, what its
   receive thread runs) verifies no CRC and has no TDATA; its POLYDATA unpack is tried too.
2. Delivery at 400 Hz over TCP loopback, 6 TRANSFORMs per sample (a 6-tool tracker, as PLUS
   sends it), sender x receiver: the sender is this script in a child process with ornav's
   codec on a plain socket, or with ``pyigtl.OpenIGTLinkServer``; the receiver is ornav's
   ``StreamDecoder`` on a plain blocking socket (in a thread here), or
   ``pyigtl.OpenIGTLinkClient`` seen two ways: "pyigtl thread" stamps each message inside
   pyigtl's receive thread as it stores it (what pyigtl reads off the socket), "pyigtl app"
   reads with ``wait_for_message`` per device, the documented API (pyigtl keeps only the
   newest message per device and polls with 10 ms sleeps: what an application gets). Each
   sample carries its number (the x translation) and a wall-clock timestamp; "delivered"
   counts distinct messages of the measured window that arrived, latency is arrival minus
   the header timestamp (one host).
3. The node: ornav's sender -> ``tracking.igtl_client_node`` -> a bus subscriber here, at
   400 Hz: samples published as TrackerFrames, and latency from the sender's timestamp to
   arrival on the bus (``t_recv_ns - t_sensor_ns``, t_sensor mapped from the header).

Nothing here asserts a timing. The machine matters (cores and load are printed): every
process is Python, and senders and receivers share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench._procs import CpuMeter, Processes  # noqa: E402
from nav.messages import TrackerFrame  # noqa: E402
from nav.runtime import bus  # noqa: E402
from nav.runtime.launchfile import NodeSpec  # noqa: E402
from tracking import igtl_codec as igtl  # noqa: E402

N_TOOLS = 6
RATE_HZ = 400.0


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentiles_ms(values_ns: Sequence[int]) -> dict[str, float]:
    if not values_ns:
        return {"n": 0}
    values = np.asarray(values_ns, dtype=np.float64) / 1e6
    p50, p99 = np.percentile(values, [50, 99])
    return {"n": int(values.size), "p50": float(p50), "p99": float(p99), "max": float(values.max())}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = [title]
    for j, row in enumerate(cells):
        lines.append("  " + "  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def tool_matrix(k: int, tool: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = [float(k % (1 << 24)), 10.0 * tool, 0.0]  # x: the sample number (float32-exact)
    return T


# --- section 1: codec work ------------------------------------------------------------------


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def _repeat(fn: Callable[[bytes], Any], data: bytes, reps: int) -> Callable[[], Any]:
    return lambda: [fn(data) for _ in range(reps)]


def section_codec(results: dict[str, Any], quick: bool) -> None:
    import pyigtl
    import pyigtl.messages as pm

    n = 2000 if quick else 20000
    stamp = igtl.timestamp_from_ns(time.time_ns())
    ok = (igtl.MetaItem.of("TransformStatus", "OK"),)
    v1 = [
        igtl.encode(
            igtl.IgtlMessage(f"Tool{i % 6}ToTracker", igtl.Transform(tool_matrix(i, i % 6)), stamp)
        )
        for i in range(n)
    ]
    v2 = [
        igtl.encode(
            igtl.IgtlMessage(
                f"Tool{i % 6}ToTracker",
                igtl.Transform(tool_matrix(i, i % 6)),
                stamp,
                2,
                metadata=ok,
            )
        )
        for i in range(n)
    ]
    rows: list[tuple[Any, ...]] = []
    out: dict[str, Any] = {}

    def ours_stream(wires: list[bytes]) -> Callable[[], Any]:
        stream = b"".join(wires)

        def run() -> None:
            decoder = igtl.StreamDecoder()
            got = 0
            for i in range(0, len(stream), 1 << 16):
                got += len(decoder.feed(stream[i : i + (1 << 16)]))
            assert got == len(wires), got

        return run

    def pyigtl_decode(wires: list[bytes]) -> Callable[[], Any]:
        def run() -> None:
            for wire in wires:
                fields = pm.MessageBase.parse_header(wire[:58])
                message = pm.MessageBase.create_message(fields["message_type"])
                message.unpack(fields, wire[58:])

        return run

    for label, wires in (("TRANSFORM v1", v1), ("TRANSFORM v2+metadata", v2)):
        ours = per_call_us(ours_stream(wires), len(wires))
        theirs = per_call_us(pyigtl_decode(wires), len(wires))
        rows.append(
            (f"decode {label}", ours, theirs, theirs / ours, "ours verifies CRC; pyigtl does not")
        )
        out[f"decode {label}"] = {"ornav_us": ours, "pyigtl_us": theirs}

    matrices = [tool_matrix(i, i % 6) for i in range(n)]
    ours = per_call_us(
        lambda: [
            igtl.encode(igtl.IgtlMessage("Tool0ToTracker", igtl.Transform(T), stamp))
            for T in matrices
        ],
        n,
    )
    theirs = per_call_us(
        lambda: [
            pyigtl.TransformMessage(T, timestamp=1.0, device_name="Tool0ToTracker").pack()
            for T in matrices
        ],
        n,
    )
    rows.append(("encode TRANSFORM v1", ours, theirs, theirs / ours, ""))
    out["encode TRANSFORM v1"] = {"ornav_us": ours, "pyigtl_us": theirs}

    elements = tuple(
        igtl.TrackingElement(f"Tool{t}ToTracker", 2, tool_matrix(1, t)) for t in range(N_TOOLS)
    )
    tdata = [igtl.encode(igtl.IgtlMessage("Tracker", igtl.TrackingData(elements), stamp))] * (
        n // 10
    )
    ours = per_call_us(ours_stream(tdata), len(tdata))
    rows.append(("decode TDATA, 6 tools", ours, None, None, "pyigtl has no TDATA"))
    out["decode TDATA 6 tools"] = {"ornav_us": ours}

    rng = np.random.default_rng(0)
    mesh = igtl.PolyData.from_triangles(
        rng.normal(size=(50_000, 3)), rng.integers(0, 50_000, (100_000, 3))
    )
    wire = igtl.encode(igtl.IgtlMessage("Liver", mesh, stamp))
    ours = per_call_us(lambda: igtl.decode(wire), 1)
    try:
        theirs_poly: float | None = per_call_us(pyigtl_decode([wire]), 1)
        note = ""
    except Exception as error:  # pyigtl 0.3's POLYDATA unpack indexes a Struct object
        theirs_poly, note = None, f"pyigtl fails: {type(error).__name__}"
    rows.append((f"decode POLYDATA {len(wire) / 1e6:.1f} MB", ours, theirs_poly, None, note))
    out["decode POLYDATA"] = {
        "bytes": len(wire),
        "ornav_us": ours,
        "pyigtl_us": theirs_poly,
        "note": note,
    }

    reference = pm.CRC64
    body48 = v1[0][58:]
    big = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    for label, data, reps in (
        ("CRC-64 of 48 B", body48, 20000 // (10 if quick else 1)),
        ("CRC-64 of 1 MiB", big, 3),
    ):
        ours = per_call_us(_repeat(igtl.crc64, data, reps), reps)
        theirs = per_call_us(_repeat(reference, data, reps), reps)
        rows.append((label, ours, theirs, theirs / ours, "crcmod's C extension (pyigtl's CRC)"))
        out[label] = {"ornav_us": ours, "crcmod_us": theirs}

    results["1_codec"] = out
    header = ["operation", "ornav", "pyigtl", "pyigtl/ornav", "note"]
    print(
        table("1. codec work per message, us (best of 3), this process", header, rows), flush=True
    )


# --- section 2: delivery at 400 Hz ----------------------------------------------------------


def serve(argv: Sequence[str]) -> int:
    """Child process: stream N_TOOLS TRANSFORMs per sample to the first client."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sender", choices=("ornav", "pyigtl"), required=True)
    parser.add_argument("--rate-hz", type=float, default=RATE_HZ)
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    queue_full = 0
    if args.sender == "pyigtl":
        import pyigtl

        server = pyigtl.OpenIGTLinkServer(port=0, local_server=True)
        print(f"READY port={server.server_address[1]}", flush=True)
        while not server.is_connected():
            time.sleep(0.005)
        queue = server.outgoing_messages

        def send(k: int, stamp_ns: int) -> None:
            nonlocal queue_full
            for t in range(N_TOOLS):
                if len(queue) >= (queue.maxlen or 0):
                    queue_full += 1  # a deque(maxlen=100): pyigtl drops its oldest silently
                message = pyigtl.TransformMessage(
                    tool_matrix(k, t), timestamp=stamp_ns / 1e9, device_name=f"Tool{t}ToTracker"
                )
                server.send_message(message, wait=False)
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        print(f"READY port={listener.getsockname()[1]}", flush=True)
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send(k: int, stamp_ns: int) -> None:
            stamp = igtl.timestamp_from_ns(stamp_ns)
            conn.sendall(
                b"".join(
                    igtl.encode(
                        igtl.IgtlMessage(
                            f"Tool{t}ToTracker", igtl.Transform(tool_matrix(k, t)), stamp
                        )
                    )
                    for t in range(N_TOOLS)
                )
            )

    period_ns = int(1e9 / args.rate_hz)
    t_start = time.monotonic_ns()
    t_window = t_start + int(args.warmup_s * 1e9)
    t_end = t_window + int(args.duration_s * 1e9)
    k, k0, overruns, next_ns = 0, -1, 0, t_start
    while (now := time.monotonic_ns()) < t_end:
        if next_ns > now:
            time.sleep((next_ns - now) / 1e9)
        if k0 < 0 and time.monotonic_ns() >= t_window:
            k0 = k
        send(k, time.time_ns())
        k += 1
        next_ns += period_ns
        if time.monotonic_ns() - next_ns > 5 * period_ns:
            overruns += 1
            next_ns = time.monotonic_ns()
    print(f"DONE k0={k0} k1={k - 1} queue_full={queue_full} overruns={overruns}", flush=True)
    time.sleep(60)
    return 0


def _fields(line: str) -> dict[str, int]:
    return {a: int(b) for a, _, b in (part.partition("=") for part in line.split()[1:])}


class OursReceiver:
    """Blocking socket + StreamDecoder in a thread; logs (sample, tool, arrival, stamp)."""

    def __init__(self, port: int) -> None:
        self.log: list[tuple[int, str, int, int]] = []
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        decoder = igtl.StreamDecoder()
        while True:
            try:
                data = self.sock.recv(1 << 18)
            except OSError:
                return
            if not data:
                return
            t_ns = time.time_ns()
            for m in decoder.feed(data):
                if isinstance(m, igtl.IgtlMessage) and isinstance(m.body, igtl.Transform):
                    self.log.append((int(m.body.matrix[0, 3]), m.device_name, t_ns, m.t_ns))

    def stop(self) -> None:
        self.sock.close()


class PyigtlReceiver:
    """pyigtl's client. ``thread``: every store into its per-device dict is logged with its
    arrival time, inside pyigtl's receive thread (what pyigtl reads off the socket).
    ``app``: an application thread reads with ``wait_for_message`` per device, the
    documented API (what an application gets: the newest message per device, polled)."""

    def __init__(self, port: int, mode: str) -> None:
        import pyigtl

        receiver = self

        class Stamping(dict[str, Any]):
            def __setitem__(self, key: str, message: Any) -> None:
                receiver.log.append(_entry(message, time.time_ns()))
                super().__setitem__(key, message)

        self.log: list[tuple[int, str, int, int]] = []
        self.client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port, start_now=False)
        self.running = True
        if mode == "thread":
            self.client.incoming_messages = Stamping()
        else:
            threading.Thread(target=self._app, daemon=True).start()
        self.client.start()

    def _app(self) -> None:
        devices = [f"Tool{t}ToTracker" for t in range(N_TOOLS)]
        while self.running:
            for device in devices:
                message = self.client.wait_for_message(device, timeout=0.05)
                if message is not None:
                    self.log.append(_entry(message, time.time_ns()))

    def stop(self) -> None:
        self.running = False
        stopper = threading.Thread(target=self.client.stop, daemon=True)
        stopper.start()
        stopper.join(timeout=3.0)


def _entry(message: Any, t_arrival_ns: int) -> tuple[int, str, int, int]:
    k = int(message.matrix[0][3])
    return k, message.device_name, t_arrival_ns, round(message.timestamp * 1e9)


def delivery(procs: Processes, sender: str, receiver: str, duration_s: float) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", f"--sender={sender}",
            f"--duration-s={duration_s}"]  # fmt: skip
    child = procs.start(f"send_{sender}", argv, ready_prefix="READY ")
    port = _fields(child.ready)["port"]
    recv: OursReceiver | PyigtlReceiver = (
        OursReceiver(port) if receiver == "ornav" else PyigtlReceiver(port, receiver.split()[1])
    )
    meter = CpuMeter(procs.pids())
    try:
        done = None
        deadline = time.monotonic() + duration_s + 20
        while done is None and time.monotonic() < deadline:
            line = child.next_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            if line.startswith("DONE"):
                done = _fields(line)
        cpu = meter.stop()
        if done is None:
            raise RuntimeError(f"sender never finished; log tail:\n{child.log_tail()}")
        time.sleep(0.5)  # the tail of the stream (pyigtl flushes every ~10 ms)
    finally:
        recv.stop()
        procs.stop(child)
    k0, k1 = done["k0"], done["k1"]
    seen: dict[tuple[int, str], int] = {}
    for k, device, t_arrival, t_stamp in list(recv.log):
        if k0 <= k <= k1 and (k, device) not in seen:
            seen[(k, device)] = t_arrival - t_stamp
    per_sample: dict[int, int] = {}
    for (k, _device), _latency in seen.items():
        per_sample[k] = per_sample.get(k, 0) + 1
    sent = (k1 - k0 + 1) * N_TOOLS
    return {
        "sender": sender,
        "receiver": receiver,
        "samples_sent": k1 - k0 + 1,
        "messages_sent": sent,
        "messages_delivered": len(seen),
        "delivery": len(seen) / sent if sent else None,
        "samples_complete": sum(1 for c in per_sample.values() if c == N_TOOLS),
        "latency_ms": percentiles_ms(list(seen.values())),
        "sender_queue_full": done["queue_full"],
        "sender_overruns": done["overruns"],
        "cpu_cores": cpu,
    }


def section_delivery(procs: Processes, results: dict[str, Any], duration_s: float) -> None:
    out: dict[str, Any] = {}
    rows = []
    for sender in ("ornav", "pyigtl"):
        for receiver in ("ornav", "pyigtl thread", "pyigtl app"):
            key = f"{sender}->{receiver}"
            progress(
                f"[2] {RATE_HZ:g} Hz x {N_TOOLS} TRANSFORMs: sender {sender}, receiver {receiver}"
            )
            try:
                r = delivery(procs, sender, receiver, duration_s)
            except Exception as error:
                out[key] = {"failed": f"{type(error).__name__}: {error}"}
                rows.append((sender, receiver, "FAILED", None, None, None, None, None))
                traceback.print_exc(file=sys.stderr)
                continue
            out[key] = r
            lat = r["latency_ms"]
            rows.append(
                (sender, receiver, f"{r['messages_delivered']}/{r['messages_sent']}", r["delivery"],
                 r["samples_complete"], lat.get("p50"), lat.get("p99"), r["sender_queue_full"])
            )  # fmt: skip
    results["2_delivery_400hz"] = out
    title = (
        f"2. delivery at {RATE_HZ:g} Hz, {N_TOOLS} TRANSFORMs/sample, loopback, {duration_s:g} s"
    )
    header = ["sender", "receiver", "delivered", "fraction", "complete samples", "p50 ms", "p99 ms"]
    print(table(title, [*header, "sender drops"], rows), flush=True)


# --- section 3: the client node -------------------------------------------------------------


def section_node(
    procs: Processes, ipc_dir: Path, results: dict[str, Any], duration_s: float
) -> None:
    progress(f"[3] ornav sender -> tracking.igtl_client_node -> bus, {RATE_HZ:g} Hz")
    argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--sender=ornav",
            f"--duration-s={duration_s}"]  # fmt: skip
    child = procs.start("send_node", argv, ready_prefix="READY ")
    spec = NodeSpec(
        name="plus",
        module="tracking.igtl_client_node",
        pub=f"ipc://{ipc_dir}/plus.pub",
        control=f"ipc://{ipc_dir}/plus.ctl",
        params={"port": _fields(child.ready)["port"], "reconnect_s": 0.05},
    )
    sub = bus.QueueSubscriber([spec.pub or ""], ["pose/plus"])
    node = procs.start_node(spec)
    frames: list[tuple[int, int]] = []
    done = None
    try:
        deadline = time.monotonic() + duration_s + 20
        while done is None and time.monotonic() < deadline:
            for received in sub.poll(0.05):
                message = received.message
                if isinstance(message, TrackerFrame):
                    k = int(message.T_tracker_from_tools[0, 0, 3])
                    frames.append((k, received.t_recv_ns - message.t_sensor_ns))
            line = child.next_line(0.0)
            if line is not None and line.startswith("DONE"):
                done = _fields(line)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            for received in sub.poll(0.05):
                if isinstance(received.message, TrackerFrame):
                    m = received.message
                    frames.append(
                        (int(m.T_tracker_from_tools[0, 0, 3]), received.t_recv_ns - m.t_sensor_ns)
                    )
        if done is None:
            raise RuntimeError("sender never finished")
        status = bus.CommandClient(spec.control or "")
        counters = status.call("status", timeout_s=3.0).result
        status.close()
    finally:
        sub.close()
        procs.stop(node)
        procs.stop(child)
    k0, k1 = done["k0"], done["k1"]
    window = {k: lat for k, lat in frames if k0 <= k <= k1}
    r = {
        "samples_sent": k1 - k0 + 1,
        "frames_received": len(window),
        "delivery": len(window) / (k1 - k0 + 1),
        "latency_ms": percentiles_ms(list(window.values())),
        "node_counters": counters,
    }
    results["3_client_node"] = r
    lat = percentiles_ms(list(window.values()))
    title = f"3. tracking.igtl_client_node at {RATE_HZ:g} Hz, {N_TOOLS} tools: sender stamp -> bus"
    header = ["samples sent", "frames on the bus", "fraction", "p50 ms", "p99 ms"]
    row = (r["samples_sent"], r["frames_received"], r["delivery"], lat.get("p50"), lat.get("p99"))
    print(table(title, header, [row]), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (~30 s in all)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    duration_s = 2.0 if args.quick else 8.0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    info = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1min_at_start": os.getloadavg()[0],
    }
    load = info["loadavg_1min_at_start"]
    progress(
        f"OpenIGTLink benchmark: {info['cpus']} CPUs, Python {info['python']}, load {load:.2f}"
    )
    results: dict[str, Any] = {"machine": info}
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-b-", dir="/tmp"))
    try:
        with Processes(ipc_dir) as procs:
            for name, run in (
                ("1", lambda: section_codec(results, args.quick)),
                ("2", lambda: section_delivery(procs, results, duration_s)),
                ("3", lambda: section_node(procs, ipc_dir, results, duration_s)),
            ):
                try:
                    run()
                except Exception as error:
                    progress(f"section {name} FAILED: {type(error).__name__}: {error}")
                    traceback.print_exc(file=sys.stderr)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2, default=str))
    except KeyboardInterrupt:
        progress("interrupted: children stopped")
    finally:
        bus.context().destroy(linger=0)
        shutil.rmtree(ipc_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

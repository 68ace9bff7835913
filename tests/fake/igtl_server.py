"""A small OpenIGTLink server that streams a two-tool tracker, with faults on request.

Run by ``tests/process/test_igtl_nodes.py`` as its own process::

    python -m tests.fake.igtl_server --port 0 --rate-hz 100 --kind transform --fault garbage

stdout, one line each: ``READY port=<port>`` once listening; ``CONNECTED <n>`` when the n-th
client is accepted (clients are served one after another); ``FAULT <name>`` when the fault
was sent. It runs until killed or SIGTERM.

Each sample k sends, with the same header timestamp (wall clock, as PLUS does):
``StylusToTracker`` (translation (k mod 1000, 0, 0) mm plus ``--offset-mm`` on y; metadata
``TransformStatus`` INVALID on every ``--invalid-every``-th sample, else OK) and
``ReferenceToTracker`` (translation (0, 100, 0) mm; its rotation block scaled by
diag(1 + e, 1 - e, 1) with ``--scale-error e``, a real tracker's rounding or a fault), as
TRANSFORMs (header version
``--header-version``), POSITIONs, or one TDATA (``--kind``). ``--fault`` acts on the first
connection only, after ``--fault-after`` samples:
- ``bad_version``: one TRANSFORM with header version 99, then streaming goes on;
- ``bad_crc``: one TRANSFORM with a wrong CRC, then streaming goes on;
- ``garbage``: 64 bytes that are no OpenIGTLink header, then streaming goes on;
- ``partial``: the first half of a message, then the connection is closed;
- ``status``: STATUS DISABLED for ReferenceToTracker, and STATUS OK 20 samples later.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np  # noqa: E402

from tracking import igtl_codec as igtl  # noqa: E402


def sample_messages(k: int, args: argparse.Namespace, stamp: int) -> list[igtl.IgtlMessage]:
    stylus = np.eye(4)
    stylus[:3, 3] = [k % 1000, args.offset_mm, 0.0]
    reference = np.eye(4)
    reference[:3, 3] = [0.0, 100.0, 0.0]
    reference[:3, :3] = np.diag([1.0 + args.scale_error, 1.0 - args.scale_error, 1.0])
    invalid = args.invalid_every > 0 and k % args.invalid_every == 0
    version = args.header_version
    if args.kind == "tdata":
        elements = (
            igtl.TrackingElement("StylusToTracker", 2, stylus),
            igtl.TrackingElement("ReferenceToTracker", 2, reference),
        )
        return [igtl.IgtlMessage("Tracker", igtl.TrackingData(elements), stamp, version)]
    out = []
    for name, T, status in (
        ("StylusToTracker", stylus, "INVALID" if invalid else "OK"),
        ("ReferenceToTracker", reference, "OK"),
    ):
        meta = (igtl.MetaItem.of("TransformStatus", status),) if version > 1 else ()
        if args.kind == "position":
            body: igtl.Body = igtl.Position(T[:3, 3], np.array([0.0, 0.0, 0.0, 1.0]))
        else:
            body = igtl.Transform(T)
        out.append(igtl.IgtlMessage(name, body, stamp, version, metadata=meta))
    return out


def fault_bytes(name: str, stamp: int) -> bytes:
    wire = igtl.encode(igtl.IgtlMessage("StylusToTracker", igtl.Transform(np.eye(4)), stamp))
    if name == "bad_version":
        return b"\x00\x63" + wire[2:]
    if name == "bad_crc":
        return wire[:50] + bytes(8) + wire[58:]
    if name == "garbage":
        return bytes(range(200, 256)) + bytes(8)
    if name == "partial":
        return wire[: len(wire) // 2]
    raise ValueError(name)


def serve(conn: socket.socket, args: argparse.Namespace, first: bool) -> None:
    period_s = 1.0 / args.rate_hz
    next_s = time.monotonic()
    k = 0
    status_ok_at = -1
    while True:
        stamp = igtl.timestamp_from_ns(time.time_ns())
        wire = b"".join(igtl.encode(m) for m in sample_messages(k, args, stamp))
        if first and k == args.fault_after and args.fault != "none":
            print(f"FAULT {args.fault}", flush=True)
            if args.fault == "status":
                down = igtl.Status(igtl.StatusCode.DISABLED, 0, "DISABLED", "reference covered")
                wire += igtl.encode(igtl.IgtlMessage("ReferenceToTracker", down, stamp))
                status_ok_at = k + 20
            else:
                conn.sendall(wire + fault_bytes(args.fault, stamp))
                if args.fault == "partial":
                    conn.close()
                    return
                wire = b""
        if k == status_ok_at:
            up = igtl.Status(igtl.StatusCode.OK, 0, "OK", "")
            wire += igtl.encode(igtl.IgtlMessage("ReferenceToTracker", up, stamp))
        if wire:
            conn.sendall(wire)
        k += 1
        next_s += period_s
        time.sleep(max(0.0, next_s - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate-hz", type=float, default=100.0)
    parser.add_argument("--kind", choices=("transform", "position", "tdata"), default="transform")
    parser.add_argument("--header-version", type=int, default=2)
    parser.add_argument("--invalid-every", type=int, default=10)
    parser.add_argument("--offset-mm", type=float, default=0.0)
    parser.add_argument("--scale-error", type=float, default=0.0)
    parser.add_argument(
        "--fault",
        choices=("none", "bad_version", "bad_crc", "garbage", "partial", "status"),
        default="none",
    )
    parser.add_argument("--fault-after", type=int, default=20)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    listener = socket.create_server(("127.0.0.1", args.port))
    print(f"READY port={listener.getsockname()[1]}", flush=True)
    n = 0
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        n += 1
        print(f"CONNECTED {n}", flush=True)
        try:
            serve(conn, args, first=n == 1)
        except OSError:
            pass  # the client went away: wait for the next one
        finally:
            conn.close()


if __name__ == "__main__":
    raise SystemExit(main())

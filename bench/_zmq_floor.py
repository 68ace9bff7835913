"""The transport floor for ``bench/latency.py``: bare pyzmq, no ornav code at all.

Run by the benchmark as one of

    python -m bench._zmq_floor source --pub EP --rate-hz R --payload-bytes N
    python -m bench._zmq_floor forward --sub EP --pub EP

``source`` binds a PUB socket and sends ``[b"pose/floor", <int64 t_send_ns> + padding]`` at
``rate_hz`` on the host monotonic clock (the same schedule as ``tracking.sim_node``);
``forward`` relays every message from its SUB to its own PUB unchanged (no decode, no
validation, no re-encode). Chained like the ornav stack, they measure what ZeroMQ, the OS
and Python's pyzmq calls cost per hop before ornav does any work. Each prints
``READY floor`` once bound and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import struct
import time

import zmq

MAX_LAG_PERIODS = 5


def source(pub_endpoint: str, rate_hz: float, payload_bytes: int) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.bind(pub_endpoint)
    print("READY floor", flush=True)
    padding = b"\0" * max(0, payload_bytes - 8)
    period_ns = int(round(1e9 / rate_hz))
    next_ns = time.monotonic_ns()
    while True:
        wait_ns = next_ns - time.monotonic_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        payload = struct.pack("<q", time.monotonic_ns()) + padding
        try:
            sock.send_multipart([b"pose/floor", payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass
        next_ns += period_ns
        lag_ns = time.monotonic_ns() - next_ns
        if lag_ns > MAX_LAG_PERIODS * period_ns:
            next_ns += (lag_ns // period_ns) * period_ns


def forward(sub_endpoint: str, pub_endpoint: str) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 1000)
    pub.bind(pub_endpoint)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(sub_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"pose/")
    print("READY floor", flush=True)
    while True:
        if sub.poll(50, zmq.POLLIN):
            while True:
                try:
                    frames = sub.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    pub.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("source", "forward"))
    parser.add_argument("--pub", required=True)
    parser.add_argument("--sub")
    parser.add_argument("--rate-hz", type=float, default=400.0)
    parser.add_argument("--payload-bytes", type=int, default=1079)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        if args.mode == "source":
            source(args.pub, args.rate_hz, args.payload_bytes)
        else:
            if not args.sub:
                parser.error("forward needs --sub")
            forward(args.sub, args.pub)
    except (SystemExit, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

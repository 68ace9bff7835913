"""The OpenIGTLink reference for ``bench/latency.py``: a pyigtl server streaming TRANSFORMs.

Run by the benchmark as ``python -m bench._igtl_server --rate-hz R --duration-s D``. It
samples the same simulated tracker as ``tracking.sim_node`` (same ``SimConfig``: seed 0,
noise on, ``extra_tools`` dummies) at ``rate_hz`` and sends one ``pyigtl.TransformMessage``
per tool per sample, device name = tool name, as a PLUS server would.

The TRANSFORM header's timestamp carries the sample's ``t_sensor_ns`` on the host
monotonic clock (seconds, float), not wall time: the client runs on the same host, and
Linux's monotonic clock is system-wide, so ``arrival - timestamp`` is the latency.

stdout protocol (one line each):
  ``READY igtl port=<port>``                   after binding 127.0.0.1:<OS-chosen port>
  ``DONE samples=.. messages=.. t0_ns=.. t1_ns=.. queue_full=.. overruns=..``
      after the measured window; messages with t0_ns <= timestamp <= t1_ns were sent in it.
Then it idles until SIGTERM (pyigtl's own handler closes the server) or ``--linger-s``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyigtl  # noqa: E402

from tracking.sim_model import SimConfig, SimulatedTracker  # noqa: E402

MAX_LAG_PERIODS = 5  # as tracking.sim_node: skip ahead rather than burst stale samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate-hz", type=float, required=True)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--warmup-s", type=float, default=0.5)
    parser.add_argument("--extra-tools", type=int, default=3)
    parser.add_argument("--connect-timeout-s", type=float, default=10.0)
    parser.add_argument("--linger-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    tracker = SimulatedTracker(SimConfig(extra_tools=args.extra_tools))
    server = pyigtl.OpenIGTLinkServer(port=0, local_server=True)
    port = server.server_address[1]
    print(f"READY igtl port={port}", flush=True)

    deadline = time.monotonic() + args.connect_timeout_s
    while not server.is_connected():
        if time.monotonic() > deadline:
            print("FAILED no client connected", flush=True)
            server.stop()
            return 1
        time.sleep(0.005)

    period_ns = int(round(1e9 / args.rate_hz))
    t_start_ns = time.monotonic_ns()
    t_window_ns = t_start_ns + int(args.warmup_s * 1e9)
    t_end_ns = t_window_ns + int(args.duration_s * 1e9)
    queue = server.outgoing_messages
    samples = messages = queue_full = overruns = 0
    t0_ns = t1_ns = 0
    frame_number = 0
    next_ns = t_start_ns
    while True:
        wait_ns = next_ns - time.monotonic_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        t_sensor_ns = time.monotonic_ns()
        if t_sensor_ns > t_end_ns:
            break
        frame = tracker.sample(
            (t_sensor_ns - t_start_ns) / 1e9, frame_number=frame_number, t_sensor_ns=t_sensor_ns
        )
        in_window = t_sensor_ns >= t_window_ns
        for tool, T in zip(frame.tools, frame.T_tracker_from_tools, strict=True):
            # pyigtl's send queue is a deque(maxlen=100): a full one silently drops its oldest.
            if in_window and len(queue) >= (queue.maxlen or 0):
                queue_full += 1
            server.send_message(
                pyigtl.TransformMessage(T, timestamp=t_sensor_ns / 1e9, device_name=tool),
                wait=False,
            )
        if in_window:
            if samples == 0:
                t0_ns = t_sensor_ns
            t1_ns = t_sensor_ns
            samples += 1
            messages += len(frame.tools)
        frame_number += 1
        next_ns += period_ns
        lag_ns = time.monotonic_ns() - next_ns
        if lag_ns > MAX_LAG_PERIODS * period_ns:
            overruns += int(in_window)
            next_ns += (lag_ns // period_ns) * period_ns
    print(
        f"DONE samples={samples} messages={messages} t0_ns={t0_ns} t1_ns={t1_ns} "
        f"queue_full={queue_full} overruns={overruns}",
        flush=True,
    )
    time.sleep(args.linger_s)
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

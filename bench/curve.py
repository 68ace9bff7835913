"""What CurveZMQ costs on the pose path, what a flood of strangers costs, and a soak.

    python bench/curve.py [--seconds 6] [--rounds 2] [--soak-s 600] [--json out.json]

1. Pose path: a 400 Hz simulated tracker -> relay node -> this process (two hops, each a
   real decode, validate and encode), run under the supervisor three ways: ipc, tcp in
   the clear (``insecure = true``), tcp with CurveZMQ + ZAP (this host's keys). Rounds
   alternate the three so load from other processes falls on each alike. Latency is
   sensor time -> receive here (monotonic clocks of one host): p50 / p99 / max, and the
   ratio of CURVE to clear tcp.
2. Flood: the CURVE stack again, with and without a stranger hammering both tcp
   endpoints (new connections with unknown keys, no keys, and garbage bytes, as fast as
   one process can): the pose p99 next to the quiet run's, and how many were refused.
3. Handshakes: connect + one request/reply over CURVE, with our ZAP handler
   (``nav.runtime.bus_auth``) and with pyzmq's ``zmq.auth.ThreadAuthenticator``, same
   process, alternating: connections per second each.
4. Soak (``--soak-s``, 0 to skip): the CURVE stack (tracker 400 Hz -> nav -> render) with a
   headset session and scene subscriber here for that long: node memory (RSS) at start and
   end, samples lost at the client (seq gaps), latency p50/p99 in the first and the last
   minute (drift), and every minute's p50/p99 with its frame count.

Figures only, no pass/fail: the numbers go in the notes (docs/security.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth.thread

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cli.demo.sim_registration import write_true_registration  # noqa: E402
from nav.messages import (  # noqa: E402
    HEADSET_PROTOCOL_VERSION,
    Hello,
    SceneUpdate,
    TrackerFrame,
    Welcome,
    decode,
    encode,
)
from nav.runtime import bus  # noqa: E402
from nav.runtime.bus_auth import AllowList, ZapHandler  # noqa: E402
from nav.runtime.keys import KeyPair, KeyStore  # noqa: E402
from nav.runtime.launchfile import load  # noqa: E402
from nav.runtime.supervisor import Supervisor  # noqa: E402

RATE_HZ = 400

PATH_STACK = """
[stack]
name = "curve-{mode}"
stop_grace_s = 2.0
{insecure}
[nodes.tracker]
module = "tracking.sim_node"
pub = "{tracker}"
control = "ipc://{{ipc_dir}}/tracker.ctl"
rate_hz = {rate}
[nodes.tracker.params]
seed = 1
dropout_rate_hz = 0.0

[nodes.relay]
module = "nav.runtime.relay_node"
pub = "{relay}"
control = "ipc://{{ipc_dir}}/relay.ctl"
subscribe = ["tracker"]
"""

SOAK_STACK = """
[stack]
name = "curve-soak"
stop_grace_s = 2.0
# A shared 2-core machine (load 10 seen) starves a node for 2 s now and then; restarts
# are counted in the figures either way.
heartbeat_timeout_s = 5.0

[nodes.tracker]
restart = "on-failure"
restart_limit = 10
module = "tracking.sim_node"
pub = "tcp://127.0.0.1:{tracker}"
control = "ipc://{{ipc_dir}}/tracker.ctl"
rate_hz = {rate}
[nodes.tracker.params]
seed = 1

[nodes.nav]
restart = "on-failure"
restart_limit = 10
module = "nav.nav_node"
pub = "tcp://127.0.0.1:{nav}"
control = "ipc://{{ipc_dir}}/nav.ctl"
subscribe = ["tracker"]
[nodes.nav.params]
registration_file = "{registration}"

[nodes.render]
restart = "on-failure"
restart_limit = 10
module = "render.render_node"
pub = "tcp://127.0.0.1:{render}"
control = "ipc://{{ipc_dir}}/render.ctl"
subscribe = ["tracker", "nav"]
[nodes.render.params]
headset_endpoint = "tcp://127.0.0.1:{headset}"
scene_endpoint = "tcp://127.0.0.1:{render}"
"""

# A stranger: unknown CURVE keys, no keys, and raw garbage, at both endpoints, until killed.
_FLOODER = r"""
import socket, sys, zmq
endpoints = sys.argv[1:]
ctx = zmq.Context()
n = 0
while True:
    for ep in endpoints:
        for kind in ("curve", "null", "garbage"):
            if kind == "garbage":
                host, port = ep[len("tcp://"):].rsplit(":", 1)
                try:
                    with socket.create_connection((host, int(port)), timeout=0.2) as s:
                        s.sendall(b"\xff" + bytes(9) + b"\x7f" * 64)
                except OSError:
                    pass
                continue
            s = ctx.socket(zmq.SUB)
            s.setsockopt(zmq.LINGER, 0)
            if kind == "curve":
                public, secret = zmq.curve_keypair()
                s.curve_publickey, s.curve_secretkey = public, secret
                s.curve_serverkey = SERVER
            s.connect(ep)
            s.poll(5)
            s.close()
            n += 1
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pct(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"n": 0}
    a = np.asarray(values_ms)
    p50, p99 = np.percentile(a, [50, 99])
    return {
        "p50": round(float(p50), 3),
        "p99": round(float(p99), 3),
        "max": round(float(a.max()), 3),
        "n": len(a),
    }


def _new_pair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


class _Stack:
    """A supervised stack of ``text`` in a temp dir; ``keys`` the host's keys dir."""

    def __init__(self, text: str, work: Path, keys: Path) -> None:
        self.ipc = Path(tempfile.mkdtemp(prefix="ornav-b-", dir="/tmp"))
        path = work / "stack.toml"
        path.write_text(text)
        self.launch = load(path, run_dir=work / "run", ipc_dir=self.ipc)
        self.sup = Supervisor(self.launch, keys_dir=keys)
        self._stop = threading.Event()

    def __enter__(self) -> _Stack:
        self.sup.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sup.stop()

    def tick_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sup.tick(0.05)

    def counter(self, node: str, key: str) -> int:
        hb = self.sup.nodes[node].heartbeat
        return 0 if hb is None else int(hb.counters.get(key, 0))


def _client_keys(keys: Path) -> bus.Security | None:
    from nav.runtime.security import StackSecurity

    return StackSecurity("curve", keys_dir=str(keys)).bus_security()


def _measure_path(stack: _Stack, keys: Path, seconds: float, secured: bool) -> list[float]:
    sub = bus.LatestSubscriber(
        [stack.launch.node("relay").pub or ""],
        ["pose/"],
        keys=_client_keys(keys) if secured else None,
        trust=lambda _e: True,
    )
    latencies: list[float] = []
    try:
        stack.tick_for(1.0)  # joined, warm
        for _old in sub.poll(0.0):  # joined before here: not measured
            pass
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for received in sub.poll(0.05):
                message = received.message
                if isinstance(message, TrackerFrame):
                    latencies.append((received.t_recv_ns - message.t_sensor_ns) / 1e6)
            stack.sup.tick(0.0)
    finally:
        sub.close()
    return latencies


def bench_path(work: Path, keys: Path, *, seconds: float, rounds: int) -> dict[str, Any]:
    by_mode: dict[str, list[float]] = {"ipc": [], "tcp_clear": [], "tcp_curve": []}
    for r in range(rounds):
        for mode in by_mode:
            if mode == "ipc":
                tracker, relay = "ipc://{ipc_dir}/tracker.pub", "ipc://{ipc_dir}/relay.pub"
            else:
                tracker, relay = (
                    f"tcp://127.0.0.1:{_free_port()}",
                    f"tcp://127.0.0.1:{_free_port()}",
                )
            text = PATH_STACK.format(
                mode=mode,
                insecure="insecure = true" if mode == "tcp_clear" else "",
                tracker=tracker,
                relay=relay,
                rate=RATE_HZ,
            )
            d = work / f"path-{mode}-{r}"
            d.mkdir()
            with _Stack(text, d, keys) as stack:
                by_mode[mode] += _measure_path(stack, keys, seconds, mode == "tcp_curve")
            print(f"  round {r + 1}/{rounds} {mode}: {_pct(by_mode[mode])}", flush=True)
    out: dict[str, Any] = {mode: _pct(v) for mode, v in by_mode.items()}
    clear, curve = out["tcp_clear"], out["tcp_curve"]
    if clear.get("n") and curve.get("n"):
        out["curve_over_clear_p50"] = round(curve["p50"] / clear["p50"], 3)
        out["curve_over_clear_p99"] = round(curve["p99"] / clear["p99"], 3)
    return out


def bench_flood(work: Path, keys: Path, *, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    server = KeyStore(keys).load().public.decode()
    for flooded in (False, True, False):
        d = work / f"flood-{int(flooded)}-{len(out)}"
        d.mkdir()
        text = PATH_STACK.format(
            mode="flood",
            insecure="",
            tracker=f"tcp://127.0.0.1:{_free_port()}",
            relay=f"tcp://127.0.0.1:{_free_port()}",
            rate=RATE_HZ,
        )
        with _Stack(text, d, keys) as stack:
            flooder = None
            if flooded:
                script = _FLOODER.replace("SERVER", repr(server.encode()))
                endpoints = [
                    stack.launch.node("tracker").pub or "",
                    stack.launch.node("relay").pub or "",
                ]
                flooder = subprocess.Popen([sys.executable, "-c", script, *endpoints])
            try:
                latencies = _measure_path(stack, keys, seconds, True)
                stack.tick_for(0.6)  # a heartbeat after the flood
            finally:
                if flooder is not None:
                    flooder.kill()
                    flooder.wait()
            refused = stack.counter("tracker", "auth_refused") + stack.counter(
                "relay", "auth_refused"
            )
        key = (
            "flooded"
            if flooded
            else ("quiet_before" if "quiet_before" not in out else "quiet_after")
        )
        out[key] = {**_pct(latencies), "auth_refused": refused}
        print(f"  {key}: {out[key]}", flush=True)
    quiet_p99 = max(out["quiet_before"].get("p99", 0), out["quiet_after"].get("p99", 0))
    if quiet_p99 and out["flooded"].get("n"):
        out["flooded_over_quiet_p99"] = round(out["flooded"]["p99"] / quiet_p99, 3)
    return out


def _handshakes(
    ctx: zmq.Context[zmq.Socket[bytes]], server: KeyPair, client: KeyPair, n: int
) -> float:
    rep = ctx.socket(zmq.ROUTER)
    rep.setsockopt(zmq.LINGER, 0)
    rep.curve_server = True
    rep.curve_publickey, rep.curve_secretkey = server.public, server.secret
    rep.zap_domain = b"ornav"
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    t0 = time.perf_counter()
    for _ in range(n):
        req = ctx.socket(zmq.DEALER)
        req.setsockopt(zmq.LINGER, 0)
        req.curve_publickey, req.curve_secretkey = client.public, client.secret
        req.curve_serverkey = server.public
        req.connect(f"tcp://127.0.0.1:{port}")
        req.send(b"x")
        if not rep.poll(2000):
            raise RuntimeError("handshake never finished")
        identity, _ = rep.recv_multipart()
        rep.send_multipart([identity, b"y"])
        req.recv()
        req.close()
    rate = n / (time.perf_counter() - t0)
    rep.close()
    return rate


def bench_handshakes(work: Path, *, n: int = 200, rounds: int = 3) -> dict[str, Any]:
    server, client = _new_pair(), _new_pair()
    certs = work / "certs"
    certs.mkdir()
    store = KeyStore(certs)
    store.authorize("client", client.public)
    ours: list[float] = []
    pyzmq: list[float] = []
    for _ in range(rounds):
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        zap = ZapHandler(ctx, AllowList(store))
        zap.start()
        ours.append(_handshakes(ctx, server, client, n))
        zap.stop()
        ctx.term()
        ctx = zmq.Context()
        auth = zmq.auth.thread.ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="ornav", location=str(store.authorized_dir))
        pyzmq.append(_handshakes(ctx, server, client, n))
        auth.stop()
        ctx.term()
    out = {
        "ours_per_s": round(float(np.median(ours)), 1),
        "pyzmq_threadauthenticator_per_s": round(float(np.median(pyzmq)), 1),
    }
    out["ours_over_pyzmq"] = round(out["ours_per_s"] / out["pyzmq_threadauthenticator_per_s"], 3)
    return out


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def bench_soak(work: Path, keys: Path, *, seconds: float) -> dict[str, Any]:
    registration = work / "registration.json"
    write_true_registration(registration)
    ports = {k: _free_port() for k in ("tracker", "nav", "render", "headset")}
    text = SOAK_STACK.format(rate=RATE_HZ, registration=registration, **ports)
    d = work / "soak"
    d.mkdir()
    client = _new_pair()
    KeyStore(keys).authorize(f"soak-headset-{os.getpid()}", client.public)
    host = KeyStore(keys).load().public
    curve = bus.CurveKeys(client.public, client.secret, host)
    with _Stack(text, d, keys) as stack:
        stack.tick_for(3.0)
        rss0 = {name: _rss_mb(node.pid) for name, node in stack.sup.nodes.items()}
        session = bus.context().socket(zmq.DEALER)
        session.setsockopt(zmq.LINGER, 0)
        bus.secure_client(session, f"tcp://127.0.0.1:{ports['headset']}", curve)
        session.connect(f"tcp://127.0.0.1:{ports['headset']}")
        session.send(
            encode(Hello(HEADSET_PROTOCOL_VERSION, "soak"), seq=0, t_pub_ns=time.monotonic_ns())
        )
        welcomed = False
        scene = bus.QueueSubscriber(
            [f"tcp://127.0.0.1:{ports['render']}"],
            ["scene/update"],
            keys=curve,
            trust=lambda _e: True,
        )
        minutes: list[list[float]] = [[]]
        t_start = time.monotonic()
        t_minute = t_start + 60
        frames = 0
        last_frame = -1
        end = t_start + seconds
        last_report = t_start
        try:
            while time.monotonic() < end:
                stack.sup.tick(0.0)
                if session.poll(0, zmq.POLLIN):
                    welcomed = welcomed or isinstance(
                        decode(session.recv(), max_bytes=64 << 20).message, Welcome
                    )
                # Small batches: a backlog decoded 10 000 at a time kept this loop from
                # ticking the supervisor for seconds, whose watchdog then killed a healthy
                # tracker (its heartbeats lost behind the monitor's full queue).
                for received in scene.poll(0.02, max_messages=100):
                    update = received.message
                    # Render repeats the last sample when inputs stop: count each one once.
                    if isinstance(update, SceneUpdate) and update.frame_number != last_frame:
                        last_frame = update.frame_number
                        frames += 1
                        minutes[-1].append((received.t_recv_ns - update.t_sensor_ns) / 1e6)
                now = time.monotonic()
                if now >= t_minute:
                    minutes.append([])
                    t_minute += 60
                if now - last_report >= 60:
                    last_report = now
                    lost_now = scene.counters["lost"]
                    print(
                        f"  soak {now - t_start:5.0f}/{seconds:.0f} s: {frames} frames, "
                        f"lost {lost_now}",
                        flush=True,
                    )
            rss1 = {name: _rss_mb(node.pid) for name, node in stack.sup.nodes.items()}
            restarts = sum(node.restarts for node in stack.sup.nodes.values())
            lost = scene.counters["lost"]
        finally:
            scene.close()
            session.close()
    first, last = minutes[0], [m for m in minutes if m][-1] if any(minutes) else []
    return {
        "seconds": seconds,
        "welcomed": welcomed,
        "scene_frames": frames,
        "lost_at_client": lost,
        "restarts": restarts,
        "rss_mb_start": {k: round(v, 1) for k, v in rss0.items()},
        "rss_mb_end": {k: round(v, 1) for k, v in rss1.items()},
        "rss_growth_mb": {k: round(rss1[k] - rss0[k], 1) for k in rss0},
        "latency_first_minute_ms": _pct(first),
        "latency_last_minute_ms": _pct(last),
        # Every minute's p50/p99 and frame count: drift rises minute after minute, a busy
        # machine shows as a dip in frames with it.
        "latency_by_minute_ms": [
            {"p50": p["p50"], "p99": p["p99"], "frames": p["n"]}
            for p in (_pct(m) for m in minutes if m)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--soak-s", type=float, default=600.0, help="0: no soak; 3600 for the hour")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--only", choices=("path", "flood", "handshakes", "soak"))
    parser.add_argument("--keep", help="work here (logs kept) instead of a temp dir")
    args = parser.parse_args(argv)
    os.environ.setdefault("ORNAV_LOG_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="ornav-curve-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        keys = work / "keys"
        KeyStore(keys).init(_new_pair)
        figures: dict[str, Any] = {}
        run = {args.only} if args.only else {"path", "flood", "handshakes", "soak"}
        if "path" in run:
            print(f"1. pose path, {RATE_HZ} Hz tracker -> relay -> here, latency ms", flush=True)
            figures["pose_path_ms"] = bench_path(
                work, keys, seconds=args.seconds, rounds=args.rounds
            )
            print(json.dumps(figures["pose_path_ms"]), flush=True)
        if "flood" in run:
            print("2. a stranger flooding both tcp endpoints (CURVE stack), latency ms", flush=True)
            figures["flood_ms"] = bench_flood(work, keys, seconds=args.seconds)
        if "handshakes" in run:
            print("3. CURVE handshakes (connect + one round trip) per second", flush=True)
            figures["handshakes"] = bench_handshakes(work)
            print(json.dumps(figures["handshakes"]), flush=True)
        if "soak" in run and args.soak_s > 0:
            print(f"4. soak, {args.soak_s:.0f} s, CURVE stack with a headset session", flush=True)
            figures["soak"] = bench_soak(work, keys, seconds=args.soak_s)
            print(json.dumps(figures["soak"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

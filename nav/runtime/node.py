"""What every node process shares: start-up, the READY line, control, heartbeats, shutdown.

A node module (``*_node.py``) provides a frozen ``Config``, ``run(cfg, spec, stop) -> int``
and ``main(argv) -> int`` that calls ``node_main``. The supervisor starts it as

    python -m <module> --spec-json '<NodeSpec as JSON>'

and for a hand run ``--launch FILE --node NAME [--run-dir DIR]`` does the same from a file.

Contract with the supervisor:
- After binding its sockets the node prints exactly one line to stdout,
  ``READY <name> pid=<pid> pub=<endpoint|-> control=<endpoint|->``, and nothing else there.
  Logs go to stderr.
- SIGINT or SIGTERM sets ``stop``; the loop notices within one poll timeout and the node
  exits 0. An unexpected exception is logged once and the node exits 1.
- Heartbeats on ``heartbeat/<name>`` every ``HEARTBEAT_PERIOD_S``; built-in control
  commands ``ping`` and ``status``.
- Security: the supervisor's ``ORNAV_SECURITY`` (``nav.runtime.security``) is applied
  before any socket opens; the heartbeat carries the ZAP handler's ``auth_accepted`` and
  ``auth_refused``. A run from a launch file by hand resolves it from the file and this
  host's keys. A setting it cannot apply (no key pair) is one line and exit 2.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from nav.messages import Command, Heartbeat, Reply
from nav.runtime import bus, security
from nav.runtime.config import ConfigError
from nav.runtime.launchfile import LaunchError, NodeSpec, load, node_config
from nav.runtime.stats import LatencyWindow, RateMeter

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S = 0.5
POLL_TIMEOUT_S = 0.05  # a stop request is honoured within this
# Control requests read per loop pass, bad ones included: the pose path comes first.
CONTROL_REQUESTS_PER_PASS = 16
EXIT_BIND_FAILED = 3  # an endpoint this node must own is taken: the supervisor says so loudly
HEARTBEAT_TOPIC_PREFIX = "heartbeat/"

CommandHandler = Callable[[Command], Reply]


class NodeRuntime:
    """The sockets and bookkeeping of one node; use as a context manager inside ``run``."""

    def __init__(self, spec: NodeSpec, stop: threading.Event) -> None:
        self.spec = spec
        self.stop = stop
        self.pub: bus.Publisher | None = None
        self.control: bus.CommandServer | None = None
        self.counters = bus.Counters()  # node-specific counts, added to the heartbeat
        self.latency = LatencyWindow()  # t_sensor -> this node's receive, for poses
        self._watched: list[bus.Counters] = []
        self._rates: dict[str, RateMeter] = {}
        self._handlers: dict[str, CommandHandler] = {
            "ping": lambda _cmd: Reply(ok=True, result={"node": spec.name, "pid": os.getpid()}),
            "status": lambda _cmd: Reply(ok=True, result=dict(self.totals())),
        }
        self._t_start_ns = time.monotonic_ns()
        self._next_heartbeat_ns = 0
        # Set by node_main when a supervisor started us: its death stops this node.
        self._parent_pid: int | None = _supervisor_pid()

    def __enter__(self) -> NodeRuntime:
        if self.spec.pub:
            self.pub = bus.Publisher(self.spec.pub)
        if self.spec.control:
            self.control = bus.CommandServer(self.spec.control)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sock in (self.pub, self.control):
            if sock is not None:
                sock.close()

    def ready(self) -> None:
        """Print the READY line the supervisor waits for (call once, after all binds)."""
        pub = self.pub.endpoint if self.pub else "-"
        control = self.control.endpoint if self.control else "-"
        print(f"READY {self.spec.name} pid={os.getpid()} pub={pub} control={control}", flush=True)
        log.info("%s ready (pub=%s control=%s)", self.spec.name, pub, control)

    def watch(self, counters: bus.Counters) -> None:
        """Add a subscriber's counters to this node's heartbeat totals."""
        self._watched.append(counters)

    def on(self, name: str, handler: CommandHandler) -> None:
        """Serve control command ``name`` with ``handler``."""
        self._handlers[name] = handler

    def totals(self) -> dict[str, int]:
        total = bus.Counters(self.counters)
        if self.pub is not None:
            total["published"] += self.pub.counters["sent"]
            total["dropped"] += self.pub.counters["dropped"]
        if self.control is not None:
            total.update({k: v for k, v in self.control.counters.items() if k.startswith("rej")})
        total.update(bus.auth_counters())
        for counters in self._watched:
            for key in ("received", "rejected", "superseded", "lost", "producer_restarts"):
                total[key] += counters[key]
            for key, count in counters.items():
                if key.startswith("rejected_"):
                    total[key] += count
        total.setdefault("rejected", 0)
        total.setdefault("published", 0)
        return dict(total)

    def service(self, extra_rates: Mapping[str, int] | None = None) -> None:
        """Answer pending control requests and publish a heartbeat when one is due.

        ``extra_rates`` maps a rate name to a running total (e.g. OK samples per tool);
        the heartbeat carries its rate in Hz.
        """
        if self.control is not None:
            budget_end = self.control.counters["received"] + CONTROL_REQUESTS_PER_PASS
            while (left := budget_end - self.control.counters["received"]) > 0 and (
                command := self.control.receive(0.0, max_requests=left)
            ) is not None:
                self.control.reply(self._handle(command))
        if self._parent_pid is not None and os.getppid() != self._parent_pid:
            # The supervisor died without stopping us (SIGKILL): an orphan must not keep
            # publishing poses nobody vouches for. (Linux also sends PDEATHSIG.)
            if not self.stop.is_set():
                log.error("%s: parent %d is gone: stopping", self.spec.name, self._parent_pid)
            self.stop.set()
        now_ns = time.monotonic_ns()
        if self.pub is not None and now_ns >= self._next_heartbeat_ns:
            self._next_heartbeat_ns = now_ns + int(HEARTBEAT_PERIOD_S * 1e9)
            self.pub.publish(
                HEARTBEAT_TOPIC_PREFIX + self.spec.name, self.heartbeat(now_ns, extra_rates)
            )

    def heartbeat(self, now_ns: int, extra_rates: Mapping[str, int] | None = None) -> Heartbeat:
        totals = self.totals()
        running = {"published": totals["published"], **(extra_rates or {})}
        rates = {
            name: self._rates.setdefault(name, RateMeter()).update(count, now_ns)
            for name, count in running.items()
        }
        return Heartbeat(
            node=self.spec.name,
            pid=os.getpid(),
            state="stopping" if self.stop.is_set() else "running",
            uptime_s=(now_ns - self._t_start_ns) / 1e9,
            counters=totals,
            rates_hz=rates,
            latency_ms=self.latency.percentiles_ms(),
        )

    def _handle(self, command: Command) -> Reply:
        handler = self._handlers.get(command.name)
        if handler is None:
            return Reply(ok=False, error=f"unknown command {command.name!r}")
        try:
            return handler(command)
        except (ValueError, KeyError, TypeError) as error:
            # A bad argument is the caller's problem, not a reason to die.
            return Reply(ok=False, error=f"{command.name}: {error}")


SUPERVISOR_PID_ENV = "ORNAV_SUPERVISOR_PID"


def _supervisor_pid() -> int | None:
    """The pid of the supervisor that started this process (``ORNAV_SUPERVISOR_PID``), if any.

    Not checked against our parent here: a supervisor that died before we looked must
    still stop us (``_die_with_supervisor``, ``NodeRuntime.service``).
    """
    try:
        return int(os.environ.get(SUPERVISOR_PID_ENV, ""))
    except ValueError:
        return None


def _die_with_supervisor() -> bool:
    """Tie this node's life to its supervisor's; False if the supervisor is already gone.

    Linux: ask the kernel for SIGTERM when our parent dies (``prctl(PR_SET_PDEATHSIG)``),
    then check the parent once more, since it may have died before the call. The
    parent-pid check in ``NodeRuntime.service`` covers other systems. Without a
    supervisor (a node run by hand) there is nothing to tie and this returns True.
    """
    supervisor = _supervisor_pid()
    if supervisor is None:
        return True
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError) as error:  # not glibc/musl: the pid check remains
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", error)
    return os.getppid() == supervisor


def stop_on_signal(stop: threading.Event, name: str) -> Callable[[int, object], None]:
    """A signal handler that sets ``stop`` without ever blocking the main thread."""

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s: %s received, stopping", name, signal.Signals(signum).name)
        # Not stop.set() here: the handler runs in the main thread between two bytecodes,
        # possibly while that thread holds the Event's own lock (leaving stop.wait), and
        # set() would then wait for it forever (seen: a node "ignored" SIGTERM in CI).
        threading.Thread(target=stop.set, name="stop", daemon=True).start()

    return request_stop


def _parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--spec-json", help="the node's resolved NodeSpec (from the supervisor)")
    parser.add_argument("--launch", help="a launch file, with --node")
    parser.add_argument("--node", help="which node of the launch file to run")
    parser.add_argument("--run-dir", help="directory for {run_dir} (default: a new temp dir)")
    parser.add_argument("--log-level", default=os.environ.get("ORNAV_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.spec_json and not (args.launch and args.node):
        parser.error("give --spec-json, or --launch FILE --node NAME")
    return args


def node_main(
    argv: Sequence[str] | None,
    *,
    run: Callable[[Any, NodeSpec, threading.Event], int],
    description: str,
) -> int:
    """Parse arguments, build the config, install signal handlers, run, map errors to codes."""
    args = _parse_args(argv, description)
    made_run_dir: Path | None = None
    try:
        try:
            if args.spec_json:
                spec = NodeSpec.from_json(args.spec_json)
            else:
                if not args.run_dir:
                    made_run_dir = Path(tempfile.mkdtemp(prefix="ornav-"))
                run_dir = args.run_dir or str(made_run_dir)
                launch = load(args.launch, run_dir=run_dir, check_modules=False)
                spec = launch.node(args.node)
                if security.SECURITY_ENV not in os.environ:
                    setting = security.resolve(launch, host=spec.host)
                    os.environ[security.SECURITY_ENV] = setting.to_env()
            cfg = node_config(spec)
            security.apply_environment()
        except (LaunchError, ConfigError, KeyError, ValueError) as error:
            print(f"ornav: {error}", file=sys.stderr)
            return 2
        return _run_node(run, cfg, spec, args.log_level)
    finally:
        if made_run_dir is not None:
            _remove_if_empty(made_run_dir)


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run directory this process made, unless it holds outputs (kept, and said).

    Its ipc socket files are this node's own endpoints, dead once it stops: removed first.
    """
    for entry in run_dir.iterdir():
        if entry.is_socket():
            entry.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        print(f"ornav: outputs kept in {run_dir}", file=sys.stderr)


def _run_node(
    run: Callable[[Any, NodeSpec, threading.Event], int],
    cfg: Any,
    spec: NodeSpec,
    log_level: str,
) -> int:
    # Under `python -m` a node module's logger is "__main__": name the node instead.
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level.upper(),
        format=f"%(asctime)s %(levelname)s {spec.name}[%(process)d] %(name)s: %(message)s",
    )

    stop = threading.Event()

    signal.signal(signal.SIGINT, stop_on_signal(stop, spec.name))
    signal.signal(signal.SIGTERM, stop_on_signal(stop, spec.name))
    if not _die_with_supervisor():
        log.error(
            "%s: supervisor %s is gone before start: not starting", spec.name, _supervisor_pid()
        )
        return 1
    try:
        return run(cfg, spec, stop)
    except bus.BindError as error:
        log.error("%s: %s", spec.name, error)
        print(f"ornav: {spec.name}: {error}", file=sys.stderr)
        return EXIT_BIND_FAILED
    except Exception:
        log.exception("node %s failed", spec.name)
        return 1

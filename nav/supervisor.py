"""The supervisor: starts a stack's nodes, watches them, restarts by policy, stops them.

- Start: each node is its own OS process (``python -m <module> --spec-json ...``) in its
  own session, so a Ctrl-C at the terminal reaches only the supervisor, which then stops
  the nodes in order. Nodes start in launch-file order; each must print its READY line
  within its ``ready_timeout_s`` before the next one starts.
- Watch: a latest-wins subscriber on every node's ``heartbeat/`` and ``pose/`` topics feeds
  the status table; process exit is checked on every tick.
- A node that dies is never hidden: it is logged with its exit code, shown as dead, and
  restarted only if its policy is ``on-failure``, the exit code is non-zero and the limit
  is not reached (after ``delay_s``). Each restart is counted.
- Stop: reverse order; SIGINT, then SIGTERM, then SIGKILL, ``stop_grace_s`` apart.

Node output: stdout carries only the READY line; stderr goes to ``<run_dir>/logs/<node>.log``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from nav import bus
from nav.launchfile import LaunchSpec, NodeSpec
from nav.messages import Heartbeat, NavState, ToolStatus, TrackerFrame
from nav.node import HEARTBEAT_TOPIC_PREFIX

log = logging.getLogger(__name__)

TICK_S = 0.1
# Nodes multiply small matrices: BLAS worker threads only contend for the cores with the
# other nodes (measured: a pivot solve 10x slower with them on a busy 2-core machine).
# A user's own setting wins.
_NODE_ENV_DEFAULTS = {"OPENBLAS_NUM_THREADS": "1"}  # not OMP: torch solvers may want cores


class StartupError(RuntimeError):
    """A node could not be started; the message is one line for the user."""


@dataclass
class NodeState:
    """What the supervisor knows of one node (a row of the status table)."""

    spec: NodeSpec
    state: str = "pending"  # pending, starting, running, restarting, dead, exited, stopped
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    t_started_ns: int | None = None
    restart_at_ns: int | None = None
    heartbeat: Heartbeat | None = None
    t_heartbeat_ns: int | None = None
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    stdout_lines: queue.Queue[str | None] = field(default_factory=queue.Queue, repr=False)

    @property
    def log_path_name(self) -> str:
        return f"{self.spec.name}.log"


@dataclass
class ToolState:
    """The newest sample of one tool seen on the bus."""

    tool: str
    source: str  # the node whose pub carried it
    status: ToolStatus
    t_sensor_ns: int
    t_recv_ns: int


def _pump_stdout(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # Keep reading after READY so a chatty node can never block on a full pipe.
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


class Supervisor:
    """Runs one stack. Not thread-safe: drive it from one thread (``tick`` in a loop)."""

    def __init__(self, launch: LaunchSpec, *, python: str = sys.executable) -> None:
        self.launch = launch
        self.python = python
        self.nodes = {spec.name: NodeState(spec) for spec in launch.nodes}
        self.tools: dict[str, ToolState] = {}
        self.nav_state: NavState | None = None  # the newest, if a nav node runs
        self.t_nav_state_ns = 0  # when it arrived (monotonic)
        self.log_dir = launch.run_dir / "logs"
        self._monitor: bus.LatestSubscriber | None = None
        self.t_start_ns = time.monotonic_ns()
        # Called with every state-change line after it is logged (tests collect them).
        self.on_event: Callable[[str], None] = lambda line: None

    def _event(self, line: str, *, level: int = logging.INFO) -> None:
        """Log a state change (a death or failed restart at WARNING) and pass it on."""
        log.log(level, "%s", line)
        self.on_event(line)

    # --- start --------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node in file order; StartupError (nodes already started are stopped)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.launch.ipc_dir.mkdir(parents=True, exist_ok=True)
        pubs = [spec.pub for spec in self.launch.nodes if spec.pub]
        self._monitor = bus.LatestSubscriber(pubs, (HEARTBEAT_TOPIC_PREFIX, "pose/", "nav/state"))
        try:
            for node in self.nodes.values():
                self._start_node(node)
        except StartupError:
            self.stop()
            raise

    def _start_node(self, node: NodeState) -> None:
        spec = node.spec
        node.state = "starting"
        node.stdout_lines = queue.Queue()
        log_file = open(self.log_dir / node.log_path_name, "ab")  # noqa: SIM115 (child owns it)
        try:
            node.process = subprocess.Popen(
                [self.python, "-m", spec.module, "--spec-json", spec.to_json()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                start_new_session=True,
                env={**_NODE_ENV_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log_file.close()
        assert node.process.stdout is not None
        threading.Thread(
            target=_pump_stdout, args=(node.process.stdout, node.stdout_lines), daemon=True
        ).start()
        node.pid = node.process.pid
        node.exit_code = None
        node.heartbeat = None
        node.t_heartbeat_ns = None
        self._wait_ready(node)
        node.state = "running"
        node.t_started_ns = time.monotonic_ns()
        self._event(f"{spec.name} ready (pid {node.pid})")

    def _wait_ready(self, node: NodeState) -> None:
        spec = node.spec
        assert node.process is not None
        deadline = time.monotonic() + spec.ready_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartupError(
                    f"{self.launch.path}: node {spec.name!r} did not become ready within "
                    f"{spec.ready_timeout_s:g} s (log: {self.log_dir / node.log_path_name})"
                )
            try:
                line = node.stdout_lines.get(timeout=min(remaining, TICK_S))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process is gone
                code = node.process.wait()
                node.exit_code = code
                node.state = "dead"
                raise StartupError(
                    f"{self.launch.path}: node {spec.name!r} exited with code {code} before "
                    f"READY: {self.last_log_line(node)}"
                )
            if line.startswith(f"READY {spec.name} "):
                return
            log.warning("%s wrote to stdout before READY: %s", spec.name, line[:200])

    def last_log_line(self, node: NodeState) -> str:
        """The last non-empty line of a node's log (why it died, usually)."""
        try:
            lines = (self.log_dir / node.log_path_name).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        lines = [line for line in lines if line.strip()]
        return lines[-1][-300:] if lines else "(empty log)"

    # --- watch --------------------------------------------------------------------------

    def tick(self, timeout_s: float = TICK_S) -> None:
        """Read the bus for up to ``timeout_s``, then check processes and due restarts."""
        if self._monitor is not None:
            for received in self._monitor.poll(timeout_s):
                self._observe(received)
        else:
            time.sleep(timeout_s)
        now_ns = time.monotonic_ns()
        for node in self.nodes.values():
            self._check_process(node, now_ns)

    def _observe(self, received: bus.Received) -> None:
        message = received.message
        if isinstance(message, Heartbeat) and message.node in self.nodes:
            node = self.nodes[message.node]
            if node.pid == message.pid:  # ignore a late heartbeat from a previous process
                node.heartbeat = message
                node.t_heartbeat_ns = received.t_recv_ns
        elif isinstance(message, NavState):
            self.nav_state = message
            self.t_nav_state_ns = received.t_recv_ns
        elif isinstance(message, TrackerFrame):
            for pose in message.poses():
                self.tools[pose.tool] = ToolState(
                    pose.tool, message.tracker, pose.status, pose.t_sensor_ns, received.t_recv_ns
                )

    def _check_process(self, node: NodeState, now_ns: int) -> None:
        if node.state == "restarting" and node.restart_at_ns is not None:
            if now_ns >= node.restart_at_ns:
                node.restarts += 1
                node.restart_at_ns = None
                self._event(f"{node.spec.name} restart {node.restarts}/{node.spec.restart.limit}")
                try:
                    self._start_node(node)
                except StartupError as error:
                    self._event(f"{node.spec.name} restart failed: {error}", level=logging.WARNING)
                    self._after_exit(node, node.exit_code if node.exit_code is not None else 1)
            return
        if node.state != "running" or node.process is None:
            return
        code = node.process.poll()
        if code is None:
            return
        self._after_exit(node, code)

    def _after_exit(self, node: NodeState, code: int) -> None:
        spec = node.spec
        node.exit_code = code
        if code == 0:
            node.state = "exited"
            self._event(f"{spec.name} exited with code 0")
            return
        node.state = "dead"
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else self.last_log_line(node)
        self._event(f"{spec.name} died with exit code {code}: {why}", level=logging.WARNING)
        policy = spec.restart
        if policy.policy == "on-failure" and node.restarts < policy.limit:
            node.state = "restarting"
            node.restart_at_ns = time.monotonic_ns() + int(policy.delay_s * 1e9)

    # --- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every live node in reverse order: SIGINT, SIGTERM, SIGKILL, grace apart."""
        grace_s = self.launch.stop_grace_s
        for node in reversed(list(self.nodes.values())):
            process = node.process
            if process is None or process.poll() is not None:
                if node.state == "restarting":
                    node.state = "dead"
                continue
            code: int | None = None
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                try:
                    process.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    code = process.wait(timeout=grace_s)
                    break
                except subprocess.TimeoutExpired:
                    if sig != signal.SIGKILL:
                        log.warning("%s ignored %s; escalating", node.spec.name, sig.name)
            node.exit_code = code if code is not None else process.wait()
            node.state = "stopped"
            self._event(f"{node.spec.name} stopped (exit code {node.exit_code})")
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def all_running(self) -> bool:
        return all(node.state == "running" for node in self.nodes.values())

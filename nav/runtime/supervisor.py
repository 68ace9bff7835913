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
- A node that exits with ``EXIT_BIND_FAILED`` could not bind an endpoint it must own
  (another process holds it): one ERROR line names the node and the endpoint, and the
  status table and summary keep it.
- Watchdog: once a node has sent a heartbeat, one older than its ``heartbeat_timeout_s``
  means it is wedged; the supervisor says why, stops it (the escalation below) and
  restarts it under its policy.
- Trust: every start of a node gets a fresh publisher epoch (``nav.runtime.roster``), listed in
  ``<ipc_dir>/roster.json`` before the child starts and removed the moment it exits, so
  subscribers drop a stranger on its port (or the dead process's queued messages) until
  the supervisor's own restart. Children get ``ORNAV_EPOCH``, ``ORNAV_ROSTER`` and
  ``ORNAV_SUPERVISOR_PID``: they stop when the supervisor dies (``nav.runtime.node``). Start and
  tick the supervisor from the main thread: Linux's parent-death signal fires when the
  thread that forked a child exits.
- Stop: reverse order; SIGINT, then SIGTERM, then SIGKILL, ``stop_grace_s`` apart (the
  one child lifetime, ``nav.runtime.process.ChildProcess``, as for a node never ready).

- Security: before any node starts, the stack's security is resolved
  (``nav.runtime.security``): a stack with tcp endpoints needs this host's CURVE key pair
  (else one StartupError line) unless the launch file says ``insecure = true``. Children
  get the decision in ``ORNAV_SECURITY``; the supervisor's own subscriber uses it too.

- Several hosts: with ``host`` given, only that host's nodes are started; the others are
  *remote*: shown by their heartbeats (state ``remote``), never restarted from here. A
  remote node's epoch, learned from its heartbeat over the CURVE connection pinned to its
  host's key, goes on this host's roster, so local nodes trust its stream; a remote node
  silent past its ``heartbeat_timeout_s`` is shown ``stale`` and leaves the roster (its
  readers drop anything more until it is heard again), so a host that goes silent turns
  its nodes STALE everywhere, and its poses with them.

Files: the ipc directory must not be writable by others (it holds the roster); a dead
node's ipc socket files in it are removed. Node output: stdout carries only the READY line;
stderr goes to ``<run_dir>/logs/<node>.log`` (mode 0600; directories created 0700).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nav.messages import Heartbeat, NavState, ToolStatus, TrackerFrame
from nav.runtime import bus, roster, security
from nav.runtime.keys import KeysError
from nav.runtime.launchfile import LaunchSpec, NodeSpec, bound_endpoints
from nav.runtime.node import EXIT_BIND_FAILED, HEARTBEAT_TOPIC_PREFIX, SUPERVISOR_PID_ENV
from nav.runtime.private_files import make_private_dir
from nav.runtime.process import ChildProcess, NotReadyError

log = logging.getLogger(__name__)

ROSTER_NAME = "roster.json"
# What nav.runtime.node writes to stderr when a bind fails ("ornav: tracker: cannot bind X: why").
_CANNOT_BIND = re.compile(r"cannot bind (\S+): (.+?)\s*$")
_ADDR_SUFFIX = re.compile(r"\s*\(addr='[^']*'\)$")

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
    # pending, starting, running, restarting, dead, exited, stopped; on another host:
    # unheard (no heartbeat yet), remote (heard within its limit), stale (silent since)
    state: str = "pending"
    pid: int | None = None
    exit_code: int | None = None
    restarts: int = 0
    epoch: int | None = None  # on the roster while this process runs
    reason: str = ""  # why it last died or was restarted, for the table and summary
    bind_failure: str = ""  # the last "cannot bind" line, kept for the summary
    watchdog_restarts: int = 0  # times the heartbeat watchdog stopped it
    t_started_ns: int | None = None
    restart_at_ns: int | None = None
    heartbeat: Heartbeat | None = None
    t_heartbeat_ns: int | None = None
    child: ChildProcess | None = field(default=None, repr=False)  # its newest process

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


class Supervisor:
    """Runs one stack. Not thread-safe: drive it from one thread (``tick`` in a loop)."""

    def __init__(
        self,
        launch: LaunchSpec,
        *,
        python: str = sys.executable,
        keys_dir: Path | None = None,
        host: str | None = None,
    ) -> None:
        if launch.hosts and host not in launch.hosts:
            raise StartupError(
                f"{launch.path}: this stack runs on hosts {', '.join(sorted(launch.hosts))}: "
                f"say which one this is (--host), not {host!r}"
            )
        if host is not None and not launch.hosts:
            raise StartupError(f"{launch.path}: no [hosts] in this launch file, yet --host {host}")
        self.host = host
        self.local = {spec.name for spec in launch.nodes_on(host)}
        self.launch = launch
        self.python = python
        self.keys_dir = keys_dir  # None: ORNAV_KEYS or the user's data dir
        self.security = security.StackSecurity("none")  # resolved by start()
        self.nodes = {
            spec.name: NodeState(spec, state="pending" if spec.name in self.local else "unheard")
            for spec in launch.nodes
        }
        self.tools: dict[str, ToolState] = {}
        self.nav_state: NavState | None = None  # the newest, if a nav node runs
        self.t_nav_state_ns = 0  # when it arrived (monotonic)
        self.log_dir = launch.run_dir / "logs"
        self.roster_path = (launch.ipc_dir / ROSTER_NAME).absolute()
        self.epochs: dict[str, int] = {}  # node -> epoch of the process running now
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
        make_private_dir(self.log_dir)
        ipc_dir = self.launch.ipc_dir
        make_private_dir(ipc_dir)
        mode = ipc_dir.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StartupError(
                f"{self.launch.path}: ipc directory {ipc_dir} is writable by other users "
                f"(mode {stat.S_IMODE(mode):o}): the roster of trusted publishers lives there"
            )
        try:
            self.security = security.resolve(self.launch, host=self.host, keys_dir=self.keys_dir)
            keys = self.security.bus_security()
        except KeysError as error:
            raise StartupError(str(error)) from None
        if self.security.mode == "insecure":
            self._event(
                f"{self.launch.path}: insecure = true: tcp endpoints run in the clear, "
                "unauthenticated",
                level=logging.WARNING,
            )
        self._write_roster()
        # Another host's ipc pub is a path on that host, not here: only tcp crosses.
        pubs = [
            spec.pub
            for spec in self.launch.nodes
            if spec.pub and (spec.name in self.local or spec.pub.startswith("tcp://"))
        ]
        self._monitor = bus.LatestSubscriber(
            pubs,
            (HEARTBEAT_TOPIC_PREFIX, "pose/", "nav/state"),
            keys=keys,
            trust=self._trust_factory(),
        )
        try:
            for node in self.nodes.values():
                if node.spec.name in self.local:
                    self._start_node(node)
        except StartupError:
            self.stop()
            raise

    def _start_node(self, node: NodeState) -> None:
        """Start one node and wait for READY; StartupError leaves it dead and off the roster."""
        spec = node.spec
        if threading.current_thread() is not threading.main_thread():
            log.warning("%s started off the main thread: PDEATHSIG may fire early", spec.name)
        node.state = "starting"
        node.bind_failure = ""
        # The epoch is on the roster before the child can publish its first message.
        node.epoch = roster.new_epoch()
        self.epochs[spec.name] = node.epoch
        self._write_roster()
        env = {
            **_NODE_ENV_DEFAULTS,
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            roster.EPOCH_ENV: str(node.epoch),
            roster.ROSTER_ENV: str(self.roster_path),
            # Trust only the epochs of the nodes it reads (nav.runtime.roster.RosterTrust).
            roster.TRUSTED_NODES_ENV: ",".join(spec.subscribe),
            SUPERVISOR_PID_ENV: str(os.getpid()),
            security.SECURITY_ENV: self.security.to_env(),
            # The recorder copies it into the recording (provenance, a sim's ground truth).
            "ORNAV_LAUNCH_FILE": str(Path(self.launch.path).resolve()),
        }
        child = node.child = ChildProcess(
            name=spec.name,
            argv=[self.python, "-m", spec.module, "--spec-json", spec.to_json()],
            env=env,
            stdout="pipe",  # the READY line only
            stderr=self.log_dir / node.log_path_name,
            new_session=True,
            sigint_timeout_s=self.launch.stop_grace_s,
            sigterm_timeout_s=self.launch.stop_grace_s,
        )
        try:
            child.start()
        except OSError as error:
            node.child = None  # nothing to stop or wait for
            self._forget(node)
            node.state = "dead"
            raise StartupError(f"{self.launch.path}: node {spec.name!r}: {error}") from None
        node.pid = child.pid
        node.exit_code = None
        node.heartbeat = None
        node.t_heartbeat_ns = None
        try:
            child.wait_ready(f"READY {spec.name} ", spec.ready_timeout_s)
        except NotReadyError as error:  # a child never ready has been stopped
            node.exit_code = error.returncode
            self._forget(node)
            node.state = "dead"
            raise StartupError(f"{self.launch.path}: {self._not_ready(node, error)}") from None
        node.state = "running"
        node.t_started_ns = time.monotonic_ns()
        self._event(f"{spec.name} ready (pid {node.pid})")

    def _not_ready(self, node: NodeState, error: NotReadyError) -> str:
        """Why a node did not become ready, in one line (without the launch file)."""
        spec = node.spec
        if error.timed_out:
            return (
                f"node {spec.name!r} did not become ready within {spec.ready_timeout_s:g} s "
                f"(log: {self.log_dir / node.log_path_name})"
            )
        if error.returncode == EXIT_BIND_FAILED:
            node.bind_failure = self._bind_failure(node)
            return node.bind_failure
        return (
            f"node {spec.name!r} exited with code {error.returncode} before READY: "
            f"{error.last_line}"
        )

    def _log_lines(self, node: NodeState) -> list[str] | None:
        """The non-empty lines the node's current process wrote to its log; None: no log."""
        return None if node.child is None else node.child.log_lines()

    def last_log_line(self, node: NodeState) -> str:
        """The last non-empty line of a node's log (why it died, usually)."""
        return "(no log)" if node.child is None else node.child.last_log_line()

    def _bind_failure(self, node: NodeState) -> str:
        """The one line for a node that exited with EXIT_BIND_FAILED, naming the endpoint."""
        name = node.spec.name
        for line in reversed(self._log_lines(node) or []):
            match = _CANNOT_BIND.search(line)
            if match:
                endpoint = match.group(1)
                # pyzmq's strerror repeats the endpoint: "... in use (addr='tcp://...')"
                why = _ADDR_SUFFIX.sub("", match.group(2))[:200]
                holder = " — another process holds it" if "in use" in why.lower() else ""
                return f"{name}: cannot bind {endpoint}: {why}{holder}"
        endpoints = ", ".join(bound_endpoints(node.spec).values()) or "its endpoints"
        return f"{name}: cannot bind one of {endpoints} (exit code {EXIT_BIND_FAILED})"

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
            if node.spec.name in self.local:
                self._check_process(node, now_ns)
            else:
                self._check_remote(node, now_ns)

    def _trust_factory(self) -> roster.EpochTrust:
        local = roster.RosterTrust(self.roster_path)
        if len(self.local) == len(self.nodes):
            return local
        # Remote streams arrive over CURVE connections pinned to their host's key (or in the
        # clear, bannered, with insecure = true); _observe vouches for a remote epoch only
        # through a heartbeat naming a remote node, and local names stay roster-checked.
        return lambda epoch: True

    def _observe_remote(self, node: NodeState, message: Heartbeat, received: bus.Received) -> None:
        epoch = received.envelope.epoch
        if node.epoch != epoch or node.state != "remote":
            first = node.epoch is None
            node.epoch = epoch
            node.pid = message.pid
            self.epochs[node.spec.name] = epoch
            self._write_roster()
            restarted = "" if first else " (new process)"
            was_stale = node.state == "stale"
            node.state = "remote"
            self._event(
                f"{node.spec.name} on {node.spec.host}: heard again{restarted}"
                if was_stale
                else f"{node.spec.name} on {node.spec.host}: heard (pid {message.pid}){restarted}"
            )
        node.heartbeat = message
        node.t_heartbeat_ns = received.t_recv_ns

    def _check_remote(self, node: NodeState, now_ns: int) -> None:
        """A remote node silent past its limit is stale: off the roster until heard again."""
        if node.state != "remote" or node.t_heartbeat_ns is None:
            return
        age_s = (now_ns - node.t_heartbeat_ns) / 1e9
        if age_s <= node.spec.heartbeat_timeout_s:
            return
        node.state = "stale"
        node.reason = f"host {node.spec.host} silent for {age_s:.1f} s"
        if self.epochs.pop(node.spec.name, None) is not None:
            self._write_roster()
        self._event(f"{node.spec.name} on {node.spec.host}: {node.reason}", level=logging.WARNING)

    def _observe(self, received: bus.Received) -> None:
        message = received.message
        if isinstance(message, Heartbeat) and message.node in self.nodes:
            node = self.nodes[message.node]
            if message.node not in self.local:
                self._observe_remote(node, message, received)
                return
            if received.envelope.epoch != node.epoch:
                return  # a local name is vouched for by our own roster only
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
                    if node.bind_failure:
                        node.reason = node.bind_failure
                        self._event(node.bind_failure, level=logging.ERROR)
                    else:
                        node.reason = f"restart failed: {error}"
                        self._event(
                            f"{node.spec.name} restart failed: {error}", level=logging.WARNING
                        )
                    failed = node.exit_code if node.exit_code is not None else 1
                    self._after_exit(node, failed, explained=True)
            return
        if node.state != "running" or node.child is None:
            return
        code = node.child.poll()
        if code is not None:
            self._after_exit(node, code)
            return
        self._watchdog(node, now_ns)

    def _watchdog(self, node: NodeState, now_ns: int) -> None:
        """Stop and restart (by policy) a node whose last heartbeat is older than its limit."""
        if node.t_heartbeat_ns is None:  # none yet: a node may take a while to its first
            return
        spec = node.spec
        age_s = (now_ns - node.t_heartbeat_ns) / 1e9
        if age_s <= spec.heartbeat_timeout_s:
            return
        limit_s = spec.heartbeat_timeout_s
        limit = f"{limit_s:.1f}" if round(limit_s, 1) == limit_s else f"{limit_s:g}"
        reason = f"no heartbeat for {age_s:.1f} s (limit {limit} s)"
        action = "restarting" if self._may_restart(node) else "stopping it, no restart left"
        self._event(f"{spec.name}: {reason}: {action}", level=logging.WARNING)
        node.reason = reason
        node.watchdog_restarts += 1
        # Wedged: nothing it sends now can be vouched for, and a stopped or deadlocked
        # process ignores SIGINT and SIGTERM (4 s of grace would blind this loop): its
        # epoch leaves the roster now, then SIGKILL.
        if self.epochs.pop(spec.name, None) is not None:
            self._write_roster()
        assert node.child is not None
        self._after_exit(node, node.child.kill(), explained=True)

    def _may_restart(self, node: NodeState) -> bool:
        policy = node.spec.restart
        return policy.policy == "on-failure" and node.restarts < policy.limit

    def _after_exit(self, node: NodeState, code: int, *, explained: bool = False) -> None:
        """Record an exit; ``explained``: the reason is already logged, and it is a failure."""
        spec = node.spec
        node.exit_code = code
        self._forget(node)
        if code == 0 and not explained:
            node.state = "exited"
            self._event(f"{spec.name} exited with code 0")
            return
        node.state = "dead"
        if explained:
            pass
        elif code == EXIT_BIND_FAILED:
            node.bind_failure = node.reason = self._bind_failure(node)
            self._event(node.bind_failure, level=logging.ERROR)
        else:
            why = (
                f"killed by {signal.Signals(-code).name}" if code < 0 else self.last_log_line(node)
            )
            node.reason = f"died with exit code {code}: {why}"
            self._event(f"{spec.name} died with exit code {code}: {why}", level=logging.WARNING)
        if self._may_restart(node):
            node.state = "restarting"
            node.restart_at_ns = time.monotonic_ns() + int(spec.restart.delay_s * 1e9)

    def _forget(self, node: NodeState) -> None:
        """Its process is gone: take its epoch off the roster and remove its ipc sockets."""
        if self.epochs.pop(node.spec.name, None) is not None:
            self._write_roster()
        node.epoch = None
        ipc_dir = self.launch.ipc_dir.resolve()
        for endpoint in bound_endpoints(node.spec).values():
            if not endpoint.startswith("ipc://"):
                continue
            path = Path(endpoint[len("ipc://") :])
            try:
                # Only sockets in this run's own directory: a path elsewhere may be another's.
                if path.resolve().parent == ipc_dir and path.is_socket():
                    path.unlink()
            except OSError as error:
                log.debug("cannot remove %s: %s", path, error)

    def _write_roster(self) -> None:
        roster.write_roster(self.roster_path, self.epochs)

    # --- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every live node in reverse order: SIGINT, SIGTERM, SIGKILL, grace apart."""
        for node in reversed(list(self.nodes.values())):
            child = node.child
            if child is None or child.poll() is not None:
                if node.state == "restarting":
                    node.state = "dead"
                if child is not None:
                    self._forget(node)
                continue
            node.exit_code = self._terminate(node)
            node.state = "stopped"
            self._forget(node)
            self._event(f"{node.spec.name} stopped (exit code {node.exit_code})")
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def _terminate(self, node: NodeState) -> int:
        """SIGINT, then SIGTERM, then SIGKILL, ``stop_grace_s`` apart; the exit code."""
        assert node.child is not None
        return node.child.stop()

    def all_running(self) -> bool:
        """Every local node running (remote ones are their own supervisor's to run)."""
        return all(
            node.state == "running" for node in self.nodes.values() if node.spec.name in self.local
        )

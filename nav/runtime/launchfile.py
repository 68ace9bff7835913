"""Launch files: which nodes a stack runs, in which order, wired how.

A launch file is TOML (read with the standard library). Example, annotated::

    [stack]
    name = "sim"
    ready_timeout_s = 15.0          # default per node; a node may override it
    stop_grace_s = 2.0              # per escalation step: SIGINT -> SIGTERM -> SIGKILL
    heartbeat_timeout_s = 2.0       # default per node: a silent node is restarted

    [nodes.tracker]                 # nodes start in file order, stop in reverse
    module = "tracking.sim_node"    # an ornav node module: `python -m tracking.sim_node`
    pub = "ipc://{ipc_dir}/tracker.pub"
    control = "ipc://{ipc_dir}/tracker.ctl"
    rate_hz = 400
    subscribe = []                  # names of nodes whose pub socket this node reads
    restart = "on-failure"          # or "never"
    restart_limit = 3
    restart_delay_s = 1.0
    [nodes.tracker.params]          # checked against the module's Config dataclass
    seed = 1

``{run_dir}`` is replaced by the stack's run directory (logs, recordings), ``{ipc_dir}`` by a
short directory for ipc sockets (a Unix socket path is limited to 107 bytes, so it lives
under /tmp, not next to a deep working copy).

Security (``docs/security.md``): every ``tcp://`` endpoint is CurveZMQ-encrypted and
authenticated with this host's keys (``ornav keys``); a stack with a tcp endpoint and no
keys refuses to start unless ``[stack]`` says ``insecure = true`` (then every status table
carries a red banner). The OpenIGTLink server's plain TCP port is not ZeroMQ: it is not
covered (bind it to a trusted interface).

Several hosts: ``[hosts.<name>]`` tables give each host's ``address`` and CURVE
``public_key`` (``ornav keys show`` on that host), or ``hosts_file = "hosts.toml"`` in
``[stack]`` names a TOML file of such tables (relative to the launch file). A node says
``host = "<name>"``; ``{host}`` in its endpoints is that host's address, so
``pub = "tcp://{host}:5601"``. ``ornav launch FILE --host NAME`` runs that host's nodes;
the others are remote (watched by their heartbeats). A launch file with hosts puts every
node on one.
Every error is one ``LaunchError`` line naming the file, the node and the key.

What is refused, beyond malformed values:
- a module outside ornav's node modules (``nav.*_node``, ``tracking.*_node``,
  ``render.*_node``): it is located without being imported, so ``module = "this"`` never
  runs; only a ``*_node`` module inside ornav's own packages is imported (for its Config);
- two binds of one endpoint anywhere in the file: every node's ``pub``, ``control`` and
  the params it binds (``*_endpoint`` params such as render's ``headset_endpoint``, any
  ``ipc://``/``tcp://`` value, the OpenIGTLink server's ``host``/``port``);
- a node subscribing to itself; non-finite numbers (``ready_timeout_s = inf``);
  ``heartbeat_timeout_s`` at or under the 0.5 s heartbeat period.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os.path
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nav.runtime.config import ConfigError, from_table
from nav.runtime.keys import KeysError, parse_public_key

NODE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_TCP = re.compile(r"tcp://(\*|[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})")
IPC_PATH_MAX = 107  # sun_path is 108 bytes on Linux, including the NUL
RESTART_POLICIES = ("never", "on-failure")

# The packages whose ``*_node`` modules a launch file may run (see ``load``).
NODE_PACKAGES = ("nav", "tracking", "render")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds nav/, tracking/, render/
_NODE_MODULE = re.compile(r"([a-z_][a-z0-9_]*\.)+[a-z_][a-z0-9_]*_node")
# nav.runtime.node.HEARTBEAT_PERIOD_S (not imported: nav.runtime.node imports this module).
# A timeout at or under one period would restart a healthy node between two heartbeats.
HEARTBEAT_PERIOD_S = 0.5
DEFAULT_HEARTBEAT_TIMEOUT_S = 2.0
# Params a node binds besides pub and control, where the name does not say so (read from
# the node Configs): the OpenIGTLink server listens on plain TCP host:port.
_BOUND_HOST_PORT = {"tracking.igtl_server_node": ("host", "port")}
# Params that only name an address and are never bound: render's scene_endpoint is what it
# tells headsets to subscribe to (its own pub, usually); the web bridge's render_endpoint
# is the render node's session socket, which it connects to.
_ADVERTISED_PARAMS = frozenset({"scene_endpoint", "render_endpoint"})
_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]"})

_STACK_KEYS = frozenset(
    {"name", "ready_timeout_s", "stop_grace_s", "heartbeat_timeout_s", "insecure", "hosts_file"}
)
_HOST_KEYS = frozenset({"address", "public_key"})
_HOST_ADDRESS = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:]+\]")
_NODE_KEYS = frozenset(
    {
        "module",
        "pub",
        "control",
        "rate_hz",
        "subscribe",
        "restart",
        "restart_limit",
        "restart_delay_s",
        "ready_timeout_s",
        "heartbeat_timeout_s",
        "params",
        "host",
    }
)


class LaunchError(ValueError):
    """A launch file that must not start; the message is the one line shown to the user."""


@dataclass(frozen=True)
class RestartPolicy:
    policy: str = "never"
    limit: int = 3
    delay_s: float = 1.0


@dataclass(frozen=True)
class NodeSpec:
    """One node, fully resolved: endpoints have ``{run_dir}`` substituted."""

    name: str
    module: str
    pub: str | None = None
    control: str | None = None
    rate_hz: float | None = None
    subscribe: tuple[str, ...] = ()
    subscribe_endpoints: tuple[str, ...] = ()
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    ready_timeout_s: float = 15.0
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    params: Mapping[str, Any] = field(default_factory=dict)
    host: str | None = None  # the [hosts] entry it runs on; None: a single-host stack

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "module": self.module,
                "pub": self.pub,
                "control": self.control,
                "rate_hz": self.rate_hz,
                "subscribe": list(self.subscribe),
                "subscribe_endpoints": list(self.subscribe_endpoints),
                "restart": vars(self.restart),
                "ready_timeout_s": self.ready_timeout_s,
                "heartbeat_timeout_s": self.heartbeat_timeout_s,
                "params": dict(self.params),
                "host": self.host,
            }
        )

    @staticmethod
    def from_json(text: str) -> NodeSpec:
        raw = json.loads(text)
        return NodeSpec(
            name=raw["name"],
            module=raw["module"],
            pub=raw["pub"],
            control=raw["control"],
            rate_hz=raw["rate_hz"],
            subscribe=tuple(raw["subscribe"]),
            subscribe_endpoints=tuple(raw["subscribe_endpoints"]),
            restart=RestartPolicy(**raw["restart"]),
            ready_timeout_s=raw["ready_timeout_s"],
            heartbeat_timeout_s=raw.get("heartbeat_timeout_s", DEFAULT_HEARTBEAT_TIMEOUT_S),
            params=raw["params"],
            host=raw.get("host"),
        )


@dataclass(frozen=True)
class HostSpec:
    """One machine of a multi-host stack: where its nodes bind, and its CURVE public key."""

    name: str
    address: str
    public_key: str  # Z85, 40 characters (``ornav keys show`` on that host)


@dataclass(frozen=True)
class LaunchSpec:
    path: Path
    name: str
    stop_grace_s: float
    nodes: tuple[NodeSpec, ...]
    run_dir: Path
    ipc_dir: Path
    insecure: bool = False  # tcp in the clear allowed ([stack] insecure = true)
    hosts: Mapping[str, HostSpec] = field(default_factory=dict)

    def nodes_on(self, host: str | None) -> tuple[NodeSpec, ...]:
        """The nodes ``host`` runs (None: all of them, a single-host run)."""
        return tuple(s for s in self.nodes if host is None or s.host == host)

    def uses_tcp(self) -> bool:
        """Whether any ZeroMQ socket of the stack is tcp (the OpenIGTLink port is not one)."""
        for spec in self.nodes:
            endpoints = [*spec.subscribe_endpoints, spec.pub or "", spec.control or ""]
            endpoints += [
                value
                for key, value in bound_endpoints(spec).items()
                if key.startswith("params.") and "/" not in key
            ]
            if any(e.startswith("tcp://") for e in endpoints):
                return True
        return False

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise KeyError(name)


def check_endpoint(endpoint: str) -> str | None:
    """None if ``endpoint`` is a usable ipc/tcp endpoint, else what is wrong with it."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if not path.startswith("/"):
            return "an ipc path must be absolute"
        if len(path.encode()) > IPC_PATH_MAX:
            return f"ipc path longer than {IPC_PATH_MAX} bytes (a Unix socket limit)"
        return None
    match = _TCP.fullmatch(endpoint)
    if match is None:
        return "expected ipc:///absolute/path or tcp://host:port"
    if not 1 <= int(match.group(2)) <= 65535:
        return "tcp port must be 1..65535"
    return None


def _number(value: Any, where: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LaunchError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):  # TOML has inf and nan: a timeout of inf never fires
        raise LaunchError(f"{where}: must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise LaunchError(f"{where}: must be > 0, got {value!r}")
    if not positive and value < 0:
        raise LaunchError(f"{where}: must be >= 0, got {value!r}")
    return float(value)


def node_module_problem(module: str, packages: Sequence[str] = NODE_PACKAGES) -> str | None:
    """None if ``module`` may be run as a node, else why not. Imports nothing.

    A node module is ``<package>.<name>_node`` for one of ``packages``; with ``locate`` it
    must also be found (``importlib.util.find_spec``, which imports only its parent
    packages) inside that package's directory of this ornav installation.
    """
    allowed = ", ".join(f"{package}.*_node" for package in packages)
    if not _NODE_MODULE.fullmatch(module) or not any(
        module.startswith(f"{package}.") for package in packages
    ):
        return f"{module!r} is not a node: a launch file runs only ornav node modules ({allowed})"
    return None


def _locate_node_module(module: str) -> str | None:
    """None if ``module`` exists inside ornav's own package directory, else the problem."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package is missing
        found = None
    if found is None or found.origin is None:
        return f"no module named {module!r}"
    package_dir = _PACKAGE_ROOT / module.split(".")[0]
    origin = Path(found.origin).resolve()
    if not origin.is_relative_to(package_dir):
        return f"{module!r} resolves to {origin}, outside ornav's {package_dir}"
    return None


def node_config_type(module: str) -> Any:
    """Import a node module (imports do nothing by house rule) and return its Config."""
    node_module = importlib.import_module(module)
    config_type = getattr(node_module, "Config", None)
    if config_type is None or not callable(getattr(node_module, "main", None)):
        raise AttributeError(f"module {module!r} is not a node (needs Config and main)")
    return config_type


def node_config(spec: NodeSpec) -> Any:
    """The node's Config built from its params (and ``rate_hz`` if Config has that field)."""
    config_type = node_config_type(spec.module)
    table = dict(spec.params)
    if spec.rate_hz is not None and "rate_hz" in getattr(config_type, "__dataclass_fields__", {}):
        table.setdefault("rate_hz", spec.rate_hz)
    return from_table(config_type, table)


def load(
    path: str | Path,
    *,
    run_dir: str | Path,
    ipc_dir: str | Path | None = None,
    check_modules: bool = True,
    node_packages: Sequence[str] = NODE_PACKAGES,
) -> LaunchSpec:
    """Read and validate a launch file; LaunchError (one line) on the first problem.

    ``ipc_dir`` defaults to ``run_dir``. Every node module must be a ``*_node`` module of
    ``node_packages`` (tests add their fakes' package). With ``check_modules`` it is
    located without importing it, and only then imported and its params checked against
    its Config, so nothing starts (and no other module runs) with a bad file.
    """
    path = Path(path)
    run_dir = Path(run_dir)
    ipc_dir = Path(ipc_dir) if ipc_dir is not None else run_dir
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LaunchError(f"{path}: no such launch file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise LaunchError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise LaunchError(f"{path}: not valid TOML: {error}") from None

    unknown = sorted(set(raw) - {"stack", "nodes", "hosts"})
    if unknown:
        raise LaunchError(f"{path}: unknown top-level key {unknown[0]!r}")
    stack = raw.get("stack", {})
    if not isinstance(stack, dict):
        raise LaunchError(f"{path}: [stack] must be a table")
    unknown = sorted(set(stack) - _STACK_KEYS)
    if unknown:
        raise LaunchError(f"{path}: [stack]: unknown key {unknown[0]!r}")
    name = stack.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise LaunchError(f"{path}: [stack]: key 'name' must be a non-empty string")
    ready_default = _number(
        stack.get("ready_timeout_s", 15.0), f"{path}: [stack]: key 'ready_timeout_s'", positive=True
    )
    heartbeat_default = _heartbeat_timeout(
        stack.get("heartbeat_timeout_s", DEFAULT_HEARTBEAT_TIMEOUT_S),
        f"{path}: [stack]: key 'heartbeat_timeout_s'",
    )
    stop_grace_s = _number(
        stack.get("stop_grace_s", 2.0), f"{path}: [stack]: key 'stop_grace_s'", positive=True
    )
    insecure = stack.get("insecure", False)
    if not isinstance(insecure, bool):
        raise LaunchError(f"{path}: [stack]: key 'insecure': expected true or false")
    hosts = _hosts(path, raw.get("hosts"), stack.get("hosts_file"))

    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise LaunchError(f"{path}: no [nodes.<name>] tables")
    for node_name in nodes_raw:
        if not NODE_NAME.fullmatch(node_name):
            raise LaunchError(
                f"{path}: node {node_name!r}: a name is lowercase letters, digits and _"
            )

    partial: list[NodeSpec] = []
    for node_name, table in nodes_raw.items():
        where = f"{path}: node {node_name!r}"
        if not isinstance(table, dict):
            raise LaunchError(f"{where}: must be a table")
        unknown = sorted(set(table) - _NODE_KEYS)
        if unknown:
            raise LaunchError(f"{where}: unknown key {unknown[0]!r}")
        host = table.get("host")
        if hosts and host is None:
            raise LaunchError(f"{where}: key 'host': this stack has [hosts]: name one")
        if host is not None and (not isinstance(host, str) or host not in hosts):
            raise LaunchError(
                f"{where}: key 'host': {host!r} is not one of [hosts] "
                f"({', '.join(sorted(hosts)) or 'none'})"
            )
        address = hosts[host].address if host is not None else None

        def substitute(value: str, address: str | None = address, where: str = where) -> str:
            if "{host}" in value and address is None:
                raise LaunchError(f"{where}: {{host}} in {value!r}, but the node has no host")
            value = value.replace("{host}", address or "")
            return value.replace("{run_dir}", str(run_dir)).replace("{ipc_dir}", str(ipc_dir))

        module = table.get("module")
        if not isinstance(module, str) or not MODULE_NAME.fullmatch(module):
            raise LaunchError(f"{where}: key 'module': expected a Python module name")
        problem = node_module_problem(module, node_packages)
        if problem is None and check_modules:
            problem = _locate_node_module(module)
        if problem:
            raise LaunchError(f"{where}: key 'module': {problem}")

        sockets: dict[str, str | None] = {}
        for key in ("pub", "control"):
            value = table.get(key)
            if value is None:
                sockets[key] = None
                continue
            if not isinstance(value, str):
                raise LaunchError(f"{where}: key {key!r}: expected an endpoint string")
            endpoint = substitute(value)
            problem = check_endpoint(endpoint)
            if problem:
                raise LaunchError(f"{where}: key {key!r}: malformed endpoint {value!r}: {problem}")
            sockets[key] = endpoint

        rate_hz = table.get("rate_hz")
        if rate_hz is not None:
            rate_hz = _number(rate_hz, f"{where}: key 'rate_hz'", positive=True)
        subscribe = table.get("subscribe", [])
        if not isinstance(subscribe, list) or not all(isinstance(s, str) for s in subscribe):
            raise LaunchError(f"{where}: key 'subscribe': expected a list of node names")
        restart = table.get("restart", "never")
        if restart not in RESTART_POLICIES:
            raise LaunchError(
                f"{where}: key 'restart': {restart!r} is not one of {', '.join(RESTART_POLICIES)}"
            )
        limit = table.get("restart_limit", 3)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise LaunchError(f"{where}: key 'restart_limit': expected an integer >= 0")
        delay_s = _number(
            table.get("restart_delay_s", 1.0), f"{where}: key 'restart_delay_s'", positive=False
        )
        ready_s = _number(
            table.get("ready_timeout_s", ready_default),
            f"{where}: key 'ready_timeout_s'",
            positive=True,
        )
        heartbeat_s = _heartbeat_timeout(
            table.get("heartbeat_timeout_s", heartbeat_default),
            f"{where}: key 'heartbeat_timeout_s'",
        )
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise LaunchError(f"{where}: key 'params': must be a table")
        params = _substitute_params(params, substitute)
        partial.append(
            NodeSpec(
                name=node_name,
                module=module,
                pub=sockets["pub"],
                control=sockets["control"],
                rate_hz=rate_hz,
                subscribe=tuple(subscribe),
                restart=RestartPolicy(restart, limit, delay_s),
                ready_timeout_s=ready_s,
                heartbeat_timeout_s=heartbeat_s,
                params=params,
                host=host,
            )
        )

    by_name = {spec.name: spec for spec in partial}
    nodes: list[NodeSpec] = []
    bound: list[tuple[str, str, str]] = []  # (node, key, endpoint), in file order
    for spec in partial:
        where = f"{path}: node {spec.name!r}: key 'subscribe'"
        endpoints = []
        for other in spec.subscribe:
            if other == spec.name:
                raise LaunchError(f"{where}: a node cannot subscribe to itself ({other!r})")
            if other not in by_name:
                raise LaunchError(f"{where}: no node named {other!r}")
            other_pub = by_name[other].pub
            if other_pub is None:
                raise LaunchError(f"{where}: node {other!r} has no pub endpoint")
            if by_name[other].host != spec.host and not other_pub.startswith("tcp://"):
                raise LaunchError(
                    f"{where}: node {other!r} is on host {by_name[other].host!r}, this one on "
                    f"{spec.host!r}: its pub {other_pub!r} must be tcp to cross hosts"
                )
            endpoints.append(other_pub)
        resolved = NodeSpec(**{**vars(spec), "subscribe_endpoints": tuple(endpoints)})
        config = (
            _check_node_module(resolved, f"{path}: node {spec.name!r}") if check_modules else None
        )
        for key, endpoint in bound_endpoints(resolved, config).items():
            if key.startswith("params."):
                problem = check_endpoint(endpoint)
                if problem:
                    raise LaunchError(
                        f"{path}: node {spec.name!r}: key {key!r}: malformed endpoint "
                        f"{endpoint!r}: {problem}"
                    )
            bound.append((spec.name, key, endpoint))
        nodes.append(resolved)
    _refuse_shared_binds(path, bound)
    return LaunchSpec(
        path, name, stop_grace_s, tuple(nodes), run_dir, ipc_dir, insecure=insecure, hosts=hosts
    )


def _hosts(path: Path, tables: Any, hosts_file: Any) -> dict[str, HostSpec]:
    """The [hosts] tables of the launch file and of its ``hosts_file``; LaunchError."""
    merged: dict[str, tuple[str, Any]] = {}
    if tables is not None:
        if not isinstance(tables, dict):
            raise LaunchError(f"{path}: [hosts] must be a table of [hosts.<name>] tables")
        merged.update({name: (str(path), table) for name, table in tables.items()})
    if hosts_file is not None:
        if not isinstance(hosts_file, str) or not hosts_file:
            raise LaunchError(f"{path}: [stack]: key 'hosts_file': expected a file name")
        file = path.parent / hosts_file
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise LaunchError(f"{path}: [stack]: hosts_file {str(file)!r}: {error}") from None
        unknown = sorted(set(raw) - {"hosts"})
        if unknown or not isinstance(raw.get("hosts"), dict):
            raise LaunchError(f"{file}: expected only [hosts.<name>] tables")
        for name, table in raw["hosts"].items():
            if name in merged:
                raise LaunchError(f"{file}: host {name!r} is also in {merged[name][0]}")
            merged[name] = (str(file), table)
    hosts: dict[str, HostSpec] = {}
    addresses: dict[str, str] = {}
    for name, (source, table) in merged.items():
        where = f"{source}: host {name!r}"
        if not NODE_NAME.fullmatch(name.replace("-", "_")):
            raise LaunchError(f"{where}: a host name is lowercase letters, digits, '-' and '_'")
        if not isinstance(table, dict):
            raise LaunchError(f"{where}: must be a table")
        unknown = sorted(set(table) - _HOST_KEYS)
        if unknown:
            raise LaunchError(f"{where}: unknown key {unknown[0]!r}")
        address = table.get("address")
        if not isinstance(address, str) or not _HOST_ADDRESS.fullmatch(address):
            raise LaunchError(f"{where}: key 'address': expected an IP address or host name")
        if address in addresses:
            raise LaunchError(f"{where}: address {address} is also host {addresses[address]!r}")
        addresses[address] = name
        key = table.get("public_key")
        try:
            if not isinstance(key, str):
                raise KeysError("missing")
            public = parse_public_key(key).decode("ascii")
        except KeysError as error:
            raise LaunchError(
                f"{where}: key 'public_key': expected the host's CURVE public key, 40 Z85 "
                f"characters (`ornav keys show` on it): {error}"
            ) from None
        hosts[name] = HostSpec(name, address, public)
    return hosts


def _heartbeat_timeout(value: Any, where: str) -> float:
    seconds = _number(value, where, positive=True)
    if seconds <= HEARTBEAT_PERIOD_S:
        raise LaunchError(
            f"{where}: must be more than the {HEARTBEAT_PERIOD_S:g} s heartbeat period, "
            f"got {value!r}"
        )
    return seconds


def bound_endpoints(spec: NodeSpec, config: Any = None) -> dict[str, str]:
    """Every endpoint ``spec``'s node binds, by launch-file key.

    Keys: ``pub``, ``control``, ``params.<name>`` for a ``*_endpoint`` param or any
    ``ipc://``/``tcp://`` value (except addresses it only advertises), and
    ``params.<host>/<port>`` for a node that listens on plain TCP (read from ``config``,
    the node's built Config, when given, so its defaults count too).
    """
    bound: dict[str, str] = {}
    if spec.pub:
        bound["pub"] = spec.pub
    if spec.control:
        bound["control"] = spec.control
    for key, value in spec.params.items():
        if key in _ADVERTISED_PARAMS or not isinstance(value, str) or not value:
            continue
        if key.endswith("_endpoint") or value.startswith(("ipc://", "tcp://")):
            bound[f"params.{key}"] = value
    host_port = _BOUND_HOST_PORT.get(spec.module)
    if host_port is not None:
        host_key, port_key = host_port
        host = getattr(config, host_key, spec.params.get(host_key))
        port = getattr(config, port_key, spec.params.get(port_key))
        if isinstance(host, str) and host and type(port) is int and port != 0:
            host = f"[{host}]" if ":" in host and not host.startswith("[") else host
            bound[f"params.{host_key}/{port_key}"] = f"tcp://{host}:{port}"
    return bound


def _bind_address(endpoint: str) -> tuple[str, str, int]:
    """(transport, path or host, port) with equal spellings made equal; port 0 for ipc."""
    if endpoint.startswith("ipc://"):
        return ("ipc", os.path.normpath(endpoint[len("ipc://") :]), 0)
    match = _TCP.fullmatch(endpoint)
    if match is None:  # malformed: refused elsewhere; compare it as text
        return ("?", endpoint, 0)
    host = match.group(1).lower()
    host = "*" if host in _WILDCARD_HOSTS else "127.0.0.1" if host == "localhost" else host
    return ("tcp", host, int(match.group(2)))


def _same_bind(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] != "tcp":
        return a[1] == b[1]
    # A wildcard bind takes the port on every interface.
    return a[2] == b[2] and (a[1] == b[1] or "*" in (a[1], b[1]))


def _refuse_shared_binds(path: Path, bound: list[tuple[str, str, str]]) -> None:
    """LaunchError naming both nodes and keys when two binds would take one endpoint."""
    seen: list[tuple[str, str, tuple[str, str, int]]] = []
    for node, key, endpoint in bound:
        address = _bind_address(endpoint)
        for other_node, other_key, other_address in seen:
            if _same_bind(address, other_address):
                raise LaunchError(
                    f"{path}: node {node!r}: key {key!r}: duplicate endpoint {endpoint!r} "
                    f"(already bound by node {other_node!r}, key {other_key!r})"
                )
        seen.append((node, key, address))


def _substitute_params(params: dict[str, Any], substitute: Any) -> dict[str, Any]:
    return {
        key: substitute(value) if isinstance(value, str) else value for key, value in params.items()
    }


def _check_node_module(spec: NodeSpec, where: str) -> Any:
    """The node's built Config; LaunchError naming the module or the param."""
    try:
        return node_config(spec)
    except ModuleNotFoundError:
        raise LaunchError(f"{where}: key 'module': no module named {spec.module!r}") from None
    except AttributeError as error:
        raise LaunchError(f"{where}: key 'module': {error}") from None
    except ConfigError as error:
        raise LaunchError(f"{where}: params: {error}") from None

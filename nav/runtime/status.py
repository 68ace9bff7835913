"""The stack's status: one snapshot, shown as a rich table and written as the JSON summary.

The table and ``--summary`` come from the same ``StackStatus`` so a script reads exactly
what the OR engineer saw. Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.markup import escape
from rich.table import Table

from nav.runtime.supervisor import NodeState, Supervisor, ToolState

HEARTBEAT_LATE_S = 2.0  # a running node silent this long is shown as late (its own limit wins)
POSE_STALE_MS = 100.0  # the overlay's stale threshold (ARCHITECTURE: flagged at 100 ms)
NAV_SILENT_MS = 500.0  # the nav node publishes at least every 50 ms, even without frames
INSECURE_BANNER = "INSECURE: tcp streams unencrypted and unauthenticated (insecure = true)"


@dataclass(frozen=True)
class NodeRow:
    name: str
    state: str
    pid: int | None
    uptime_s: float | None
    publish_hz: float | None
    rejected: int
    restarts: int
    exit_code: int | None
    heartbeat_age_s: float | None
    latency_ms: dict[str, float]
    counters: dict[str, int]
    reason: str = ""  # why it last died or was restarted ("no heartbeat for 2.1 s ...")
    bind_failure: str = ""  # "tracker: cannot bind tcp://...: Address already in use ..."
    watchdog_restarts: int = 0
    heartbeat_timeout_s: float = HEARTBEAT_LATE_S
    auth_refused: int = 0  # tcp connections its ZAP handler refused (unknown or no key)
    host: str = ""  # the [hosts] entry it runs on, in a multi-host stack


@dataclass(frozen=True)
class ToolRow:
    tool: str
    source: str
    status: str
    rate_hz: float | None
    pose_age_ms: float


@dataclass(frozen=True)
class StackStatus:
    stack: str
    launch_file: str
    run_dir: str
    elapsed_s: float
    nodes: tuple[NodeRow, ...]
    tools: tuple[ToolRow, ...]
    navigation: str = ""  # e.g. "OK", "STALE", "UNREGISTERED"; "" without a nav node
    security: str = "none"  # none (no tcp), insecure (tcp in the clear), curve

    @property
    def end_to_end_latency_ms(self) -> dict[str, float]:
        """The latency reported by the most downstream node that measures one."""
        for row in reversed(self.nodes):
            if row.latency_ms:
                return {**row.latency_ms, "measured_at": row.name}  # type: ignore[dict-item]
        return {}


def _node_row(node: NodeState, now_ns: int) -> NodeRow:
    hb = node.heartbeat
    age = (now_ns - node.t_heartbeat_ns) / 1e9 if node.t_heartbeat_ns is not None else None
    uptime = (now_ns - node.t_started_ns) / 1e9 if node.t_started_ns is not None else None
    alive = node.state in ("running", "remote")  # remote: heard from its own host
    return NodeRow(
        name=node.spec.name,
        state=node.state,
        pid=node.pid,
        uptime_s=uptime if alive else None,
        publish_hz=hb.rates_hz.get("published") if hb and alive else None,
        rejected=hb.counters.get("rejected", 0) if hb else 0,
        restarts=node.restarts,
        exit_code=node.exit_code,
        heartbeat_age_s=age,
        latency_ms=dict(hb.latency_ms) if hb else {},
        counters=dict(hb.counters) if hb else {},
        reason=node.reason,
        bind_failure=node.bind_failure,
        watchdog_restarts=node.watchdog_restarts,
        heartbeat_timeout_s=node.spec.heartbeat_timeout_s,
        auth_refused=hb.counters.get("auth_refused", 0) if hb else 0,
        host=node.spec.host or "",
    )


def _tool_row(tool: ToolState, nodes: dict[str, NodeState], now_ns: int) -> ToolRow:
    rate = None
    for node in nodes.values():
        hb = node.heartbeat
        if hb is not None and f"tool/{tool.tool}" in hb.rates_hz:
            rate = hb.rates_hz[f"tool/{tool.tool}"]
    return ToolRow(
        tool=tool.tool,
        source=tool.source,
        status=tool.status.value,
        rate_hz=rate,
        pose_age_ms=(now_ns - tool.t_sensor_ns) / 1e6,
    )


def snapshot(supervisor: Supervisor, now_ns: int) -> StackStatus:
    launch = supervisor.launch
    return StackStatus(
        stack=launch.name,
        launch_file=str(launch.path),
        run_dir=str(launch.run_dir),
        elapsed_s=(now_ns - supervisor.t_start_ns) / 1e9,
        nodes=tuple(_node_row(node, now_ns) for node in supervisor.nodes.values()),
        tools=tuple(
            _tool_row(tool, supervisor.nodes, now_ns)
            for tool in sorted(supervisor.tools.values(), key=lambda t: t.tool)
        ),
        navigation=_navigation(supervisor, now_ns),
        security=supervisor.security.mode,
    )


def _navigation(supervisor: Supervisor, now_ns: int) -> str:
    state = supervisor.nav_state
    if state is None:
        return ""
    # The nav node reports STALE itself while it runs; a silent nav node is stale too.
    if (now_ns - supervisor.t_nav_state_ns) / 1e6 > NAV_SILENT_MS:
        return "STALE (nav node silent)"
    text = state.status.value
    if state.needs_verification:
        text += ", registration needs verification"
    return text


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


_STATE_STYLE = {
    "running": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "dead": "bold red",
    "exited": "dim",
    "stopped": "dim",
    "remote": "cyan",  # on another host, heard from by its heartbeats
    "stale": "bold red",  # on another host that went silent
    "unheard": "yellow",  # on another host, no heartbeat yet
}


def render(status: StackStatus) -> Table:
    """The live table: nodes, then tools."""
    title = f"ornav {status.stack}  {status.elapsed_s:6.1f} s  ({status.launch_file})"
    if status.security == "insecure":
        title = f"[bold white on red] {INSECURE_BANNER} [/]\n{title}"
    table = Table(
        title=title,
        title_justify="left",
        expand=False,
    )
    for column in (
        "node",
        "state",
        "pid",
        "uptime s",
        "pub Hz",
        "rejected",
        "restarts",
        "hb age s",
        "auth refused",
    ):
        table.add_column(column, justify="left" if column in ("node", "state") else "right")
    for row in status.nodes:
        state = row.state if row.exit_code is None else f"{row.state} ({row.exit_code})"
        late = row.state == "running" and (
            row.heartbeat_age_s is None or row.heartbeat_age_s > row.heartbeat_timeout_s
        )
        table.add_row(
            f"{row.name}@{row.host}" if row.host else row.name,
            f"[{_STATE_STYLE.get(row.state, '')}]{state}[/]",
            _fmt(row.pid, "d"),
            _fmt(row.uptime_s, ".1f"),
            _fmt(row.publish_hz, ".0f"),
            f"[red]{row.rejected}[/]" if row.rejected else "0",
            f"[yellow]{row.restarts}[/]" if row.restarts else "0",
            f"[red]{_fmt(row.heartbeat_age_s, '.1f', 'none')}[/]"
            if late
            else _fmt(row.heartbeat_age_s, ".1f"),
            f"[red]{row.auth_refused}[/]" if row.auth_refused else "0",
        )
    if status.tools:
        table.add_section()
        table.add_row("[bold]tool", "[bold]status", "", "", "[bold]Hz", "", "", "[bold]age ms", "")
        for tool in status.tools:
            # An old sample is never shown as current, whatever status it had.
            stale = tool.pose_age_ms > POSE_STALE_MS
            ok = tool.status == "OK" and not stale
            shown = f"STALE ({tool.status})" if stale else tool.status
            table.add_row(
                f"  {tool.tool}",
                f"[{'green' if ok else 'red'}]{shown}[/]",
                "",
                "",
                _fmt(tool.rate_hz, ".0f"),
                "",
                "",
                _fmt(tool.pose_age_ms, ".1f"),
                "",
            )
    caption = problem_lines(status)
    if status.navigation:
        colour = "green" if status.navigation == "OK" else "red"
        caption.append(f"navigation: [{colour}]{status.navigation}[/]")
    e2e = status.end_to_end_latency_ms
    if e2e:
        caption.append(
            f"latency sensor -> {e2e['measured_at']}: p50 {e2e['p50']:.2f} ms, "
            f"p99 {e2e['p99']:.2f} ms, p99.9 {e2e['p999']:.2f} ms"
        )
    if caption:
        table.caption = "\n".join(caption)
    return table


def problem_lines(status: StackStatus) -> list[str]:
    """One marked-up line per node with a problem: bold red while it is not running."""
    lines = []
    for row in status.nodes:
        if row.bind_failure and row.state != "running":
            lines.append(f"[bold red]{escape(row.bind_failure)}[/]")
        elif row.reason:
            colour = "yellow" if row.state == "running" else "bold red"
            restarted = f" (restarted {row.restarts}x)" if row.restarts else ""
            lines.append(f"[{colour}]{row.name}: {escape(row.reason)}{restarted}[/]")
    return lines


def summary(status: StackStatus) -> dict[str, Any]:
    """The JSON summary (``--summary``): what the table showed at the end, and totals."""
    return {
        "stack": status.stack,
        "launch_file": status.launch_file,
        "run_dir": status.run_dir,
        "duration_s": round(status.elapsed_s, 3),
        "nodes": {
            row.name: {k: v for k, v in asdict(row).items() if k != "name"} for row in status.nodes
        },
        "tools": {
            row.tool: {k: v for k, v in asdict(row).items() if k != "tool"} for row in status.tools
        },
        "restarts": sum(row.restarts for row in status.nodes),
        "watchdog_restarts": sum(row.watchdog_restarts for row in status.nodes),
        "bind_failures": [row.bind_failure for row in status.nodes if row.bind_failure],
        "rejected": sum(row.rejected for row in status.nodes),
        "latency_ms": status.end_to_end_latency_ms,
        "navigation": status.navigation,
        "security": status.security,
        "auth_refused": sum(row.auth_refused for row in status.nodes),
    }

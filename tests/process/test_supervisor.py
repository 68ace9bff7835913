"""Supervisor: start order, READY timeout, stop escalation, crash visibility, restart policy.

Real processes: each node is ``tests.fake.behaving_node`` (misbehaves on request) or a
shipped node; journals written by the nodes show the order things happened in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nav.runtime.launchfile import NODE_PACKAGES, load
from nav.runtime.supervisor import StartupError, Supervisor

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.fake.behaving_node"
WITH_FAKES = (*NODE_PACKAGES, "tests.fake")  # the misbehaving node is not shipped


def _stack(
    tmp_path: Path, ipc_dir: Path, nodes: dict[str, dict[str, object]], **stack: object
) -> Supervisor:
    lines = ["[stack]", 'name = "test"', "ready_timeout_s = 10.0"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in stack.items()]
    for name, table in nodes.items():
        params = table.pop("params", {})
        lines += [f"[nodes.{name}]", f'module = "{table.pop("module", FAKE)}"']
        lines.append(f'pub = "ipc://{{ipc_dir}}/{name}.pub"')
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        lines.append(f"[nodes.{name}.params]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in params.items()]  # type: ignore[attr-defined]
    path = tmp_path / "stack.toml"
    path.write_text("\n".join(lines) + "\n")
    supervisor = Supervisor(
        load(path, run_dir=tmp_path / "run", ipc_dir=ipc_dir, node_packages=WITH_FAKES)
    )
    supervisor.events = []  # type: ignore[attr-defined]
    supervisor.on_event = supervisor.events.append  # type: ignore[attr-defined]
    return supervisor


def _journal(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _tick_until(supervisor: Supervisor, condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        supervisor.tick(0.05)


def test_nodes_start_in_file_order_and_stop_in_reverse(tmp_path: Path, ipc_dir: Path) -> None:
    journal = tmp_path / "journal"
    sup = _stack(
        tmp_path,
        ipc_dir,
        {name: {"params": {"journal": str(journal)}} for name in ("first", "second", "third")},
    )
    sup.start()
    try:
        assert sup.all_running()
        pids = [node.pid for node in sup.nodes.values()]
        assert all(pid is not None and _alive(pid) for pid in pids)
    finally:
        sup.stop()
    events = [line.split()[:2] for line in _journal(journal)]
    assert events == [
        ["start", "first"],
        ["start", "second"],
        ["start", "third"],
        ["stop", "third"],
        ["stop", "second"],
        ["stop", "first"],
    ]
    assert [node.exit_code for node in sup.nodes.values()] == [0, 0, 0]
    assert not any(_alive(pid) for pid in pids if pid)


def test_node_that_never_becomes_ready_is_named_and_nothing_is_left_running(
    tmp_path: Path, ipc_dir: Path
) -> None:
    sup = _stack(
        tmp_path,
        ipc_dir,
        {
            "fine": {},
            "stuck": {"params": {"ready_delay_s": -1.0}, "ready_timeout_s": 1.0},
            "never_started": {},
        },
    )
    with pytest.raises(StartupError) as caught:
        sup.start()
    message = str(caught.value)
    assert "node 'stuck' did not become ready within 1 s" in message
    assert "\n" not in message
    assert sup.nodes["never_started"].pid is None
    for name in ("fine", "stuck"):
        pid = sup.nodes[name].pid
        assert pid is not None and not _alive(pid), name


def test_node_that_dies_before_ready_is_reported_with_its_exit_code_and_log(
    tmp_path: Path, ipc_dir: Path
) -> None:
    sup = _stack(tmp_path, ipc_dir, {"broken": {"params": {"fail_before_ready": True}}})
    with pytest.raises(StartupError) as caught:
        sup.start()
    message = str(caught.value)
    assert "node 'broken' exited with code 1 before READY" in message
    assert "deliberate failure before READY" in message


@pytest.mark.parametrize(
    ("ignored", "expected_exit"),
    [
        ([], 0),  # SIGINT is enough
        (["SIGINT"], 0),  # SIGTERM stops it cleanly
        (["SIGINT", "SIGTERM"], -signal.SIGKILL),  # only SIGKILL works
    ],
)
def test_stop_escalates_sigint_sigterm_sigkill(
    tmp_path: Path, ipc_dir: Path, ignored: list[str], expected_exit: int
) -> None:
    sup = _stack(
        tmp_path, ipc_dir, {"stubborn": {"params": {"ignore_signals": ignored}}}, stop_grace_s=0.5
    )
    sup.start()
    t0 = time.monotonic()
    sup.stop()
    node = sup.nodes["stubborn"]
    assert node.exit_code == expected_exit
    assert node.state == "stopped"
    # one grace period per ignored signal, give or take start-up noise
    assert time.monotonic() - t0 >= 0.5 * len(ignored)


def test_crash_is_visible_and_restarted_up_to_the_limit(tmp_path: Path, ipc_dir: Path) -> None:
    journal = tmp_path / "journal"
    sup = _stack(
        tmp_path,
        ipc_dir,
        {
            "crashy": {
                "params": {"exit_after_s": 0.2, "exit_code": 5, "journal": str(journal)},
                "restart": "on-failure",
                "restart_limit": 2,
                "restart_delay_s": 0.1,
            }
        },
    )
    sup.start()
    try:
        node = sup.nodes["crashy"]
        _tick_until(sup, lambda: node.restarts == 2 and node.state == "dead")
        # after the limit it stays dead: no third restart
        for _ in range(10):
            sup.tick(0.05)
        assert node.restarts == 2 and node.state == "dead" and node.exit_code == 5
    finally:
        sup.stop()
    starts = [line for line in _journal(journal) if line.startswith("start")]
    assert len(starts) == 3
    assert len({line.split()[2] for line in starts}) == 3  # three different pids
    died = [e for e in sup.events if "died with exit code 5" in e]  # type: ignore[attr-defined]
    assert len(died) == 3
    assert any("restart 2/2" in e for e in sup.events)  # type: ignore[attr-defined]


def test_policy_never_leaves_a_dead_node_dead(tmp_path: Path, ipc_dir: Path) -> None:
    sup = _stack(
        tmp_path,
        ipc_dir,
        {"once": {"params": {"exit_after_s": 0.1, "exit_code": 4}, "restart": "never"}},
    )
    sup.start()
    try:
        node = sup.nodes["once"]
        _tick_until(sup, lambda: node.state == "dead")
        assert node.exit_code == 4 and node.restarts == 0
        assert not sup.all_running()
    finally:
        sup.stop()


def test_clean_exit_is_not_restarted(tmp_path: Path, ipc_dir: Path) -> None:
    sup = _stack(
        tmp_path,
        ipc_dir,
        {"done": {"params": {"exit_after_s": 0.1, "exit_code": 0}, "restart": "on-failure"}},
    )
    sup.start()
    try:
        node = sup.nodes["done"]
        _tick_until(sup, lambda: node.state == "exited")
        assert node.restarts == 0
    finally:
        sup.stop()


def test_heartbeats_reach_the_status_of_each_node(tmp_path: Path, ipc_dir: Path) -> None:
    sup = _stack(tmp_path, ipc_dir, {"a": {}, "b": {}})
    sup.start()
    try:
        _tick_until(sup, lambda: all(n.heartbeat is not None for n in sup.nodes.values()))
        for node in sup.nodes.values():
            assert node.heartbeat is not None and node.heartbeat.pid == node.pid
    finally:
        sup.stop()


SIM_STACK = """
[stack]
name = "clitest"
stop_grace_s = 2.0

[nodes.tracker]
module = "tracking.sim_node"
pub = "ipc://{ipc_dir}/tracker.pub"
control = "ipc://{ipc_dir}/tracker.ctl"
rate_hz = 200

[nodes.relay]
module = "nav.runtime.relay_node"
pub = "ipc://{ipc_dir}/relay.pub"
subscribe = ["tracker"]
"""


def _ornav(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def test_launch_for_a_duration_exits_0_and_writes_the_summary(tmp_path: Path) -> None:
    launch = tmp_path / "stack.toml"
    launch.write_text(SIM_STACK)
    summary_path = tmp_path / "summary.json"
    result = subprocess.run(
        _ornav(
            "launch",
            str(launch),
            "--duration",
            "3",
            "--summary",
            str(summary_path),
            "--run-dir",
            str(tmp_path / "run"),
        ),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["healthy"] is True
    assert set(summary["nodes"]) == {"tracker", "relay"}
    tracker = summary["nodes"]["tracker"]
    assert tracker["restarts"] == 0 and tracker["rejected"] == 0
    assert tracker["publish_hz"] == pytest.approx(202, rel=0.2)  # 200 Hz poses + heartbeats
    assert {n["final_state"] for n in summary["nodes"].values()} == {"stopped"}
    assert {n["exit_code"] for n in summary["nodes"].values()} == {0}
    assert set(summary["tools"]) == {"pointer", "reference", "headset"}
    for tool in summary["tools"].values():
        assert tool["rate_hz"] > 150  # OK samples only; dropouts are rare
        assert tool["pose_age_ms"] < 1000
    latency = summary["latency_ms"]
    assert latency["measured_at"] == "relay"
    assert 0 < latency["p50"] <= latency["p99"]


def test_sigterm_stops_the_stack_and_exits_0(tmp_path: Path) -> None:
    launch = tmp_path / "stack.toml"
    launch.write_text(SIM_STACK)
    process = subprocess.Popen(
        _ornav(
            "launch",
            str(launch),
            "--run-dir",
            str(tmp_path / "run"),
            "--summary",
            str(tmp_path / "s.json"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        ready = 0
        while ready < 2:  # both nodes report ready on the supervisor's log
            assert time.monotonic() < deadline
            line = process.stderr.readline()
            assert line, "supervisor exited early"
            ready += " ready (pid " in line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    summary = json.loads((tmp_path / "s.json").read_text())
    pids = [n["pid"] for n in summary["nodes"].values()]
    assert all(not _alive(pid) for pid in pids)


def test_stop_signal_handler_never_blocks_on_the_stop_events_lock() -> None:
    """Regression: a node hung after SIGTERM when the handler ran while its main thread
    held the Event's lock (on the way out of stop.wait) and called stop.set() itself."""
    import threading

    from nav.runtime.node import stop_on_signal

    stop = threading.Event()
    handler = stop_on_signal(stop, "test")
    returned = threading.Event()
    with stop._cond:  # type: ignore[attr-defined]  # the lock stop.wait re-takes
        caller = threading.Thread(target=lambda: (handler(signal.SIGTERM, None), returned.set()))
        caller.start()
        # The old handler (stop.set() inline) blocks here until the lock is released.
        assert returned.wait(2.0), "the handler blocked on the Event's lock"
        assert not stop.is_set()  # set() is still waiting for the lock, in its own thread
    assert stop.wait(2.0)
    caller.join()

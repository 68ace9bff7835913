"""Launch files: a bad one stops start-up with one line naming the file, the node and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nav.launchfile import LaunchError, check_endpoint, load

REPO = Path(__file__).resolve().parent.parent

GOOD = """
[stack]
name = "t"

[nodes.tracker]
module = "tracking.sim_node"
pub = "ipc://{ipc_dir}/tracker.pub"
control = "ipc://{ipc_dir}/tracker.ctl"
rate_hz = 100

[nodes.relay]
module = "nav.relay_node"
pub = "ipc://{ipc_dir}/relay.pub"
subscribe = ["tracker"]
restart = "on-failure"
restart_limit = 2
restart_delay_s = 0.5
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.toml"
    path.write_text(text)
    return path


def test_good_launch_file_resolves_endpoints_order_and_subscriptions(tmp_path: Path) -> None:
    spec = load(_write(tmp_path, GOOD), run_dir=tmp_path / "run", ipc_dir="/tmp/x")
    assert [n.name for n in spec.nodes] == ["tracker", "relay"]
    tracker, relay = spec.nodes
    assert tracker.pub == "ipc:///tmp/x/tracker.pub"
    assert tracker.rate_hz == 100.0
    assert relay.subscribe_endpoints == ("ipc:///tmp/x/tracker.pub",)
    assert relay.restart.policy == "on-failure" and relay.restart.limit == 2
    assert relay.restart.delay_s == 0.5


def test_node_spec_survives_json_round_trip(tmp_path: Path) -> None:
    spec = load(_write(tmp_path, GOOD), run_dir=tmp_path, ipc_dir="/tmp/x").node("relay")
    assert type(spec).from_json(spec.to_json()) == spec


def test_shipped_launch_files_are_valid(tmp_path: Path) -> None:
    for path in sorted((REPO / "launch").glob("*.toml")):
        load(path, run_dir=tmp_path, ipc_dir="/tmp/ornav-check")


# Each case: an edit of GOOD, and the words its one-line error must contain.
BAD_CASES = {
    "unknown node key": (
        ("rate_hz = 100", "rate_hz = 100\nrat_hz = 5"),
        ["node 'tracker'", "unknown key 'rat_hz'"],
    ),
    "unknown stack key": (('name = "t"', 'name = "t"\ncolour = 1'), ["[stack]", "'colour'"]),
    "missing module": (
        ('module = "nav.relay_node"', 'module = "nav.no_such_node"'),
        ["node 'relay'", "key 'module'", "nav.no_such_node"],
    ),
    "module that is not a node": (
        ('module = "nav.relay_node"', 'module = "nav.transforms"'),
        ["node 'relay'", "key 'module'", "not a node"],
    ),
    "malformed endpoint": (
        ('pub = "ipc://{ipc_dir}/relay.pub"', 'pub = "tcp://localhost"'),
        ["node 'relay'", "key 'pub'", "malformed endpoint"],
    ),
    "relative ipc path": (
        ('pub = "ipc://{ipc_dir}/relay.pub"', 'pub = "ipc://relay.pub"'),
        ["node 'relay'", "key 'pub'", "absolute"],
    ),
    "port out of range": (
        ('pub = "ipc://{ipc_dir}/relay.pub"', 'pub = "tcp://127.0.0.1:70000"'),
        ["node 'relay'", "key 'pub'", "1..65535"],
    ),
    "non-positive rate": (
        ("rate_hz = 100", "rate_hz = 0"),
        ["node 'tracker'", "key 'rate_hz'", "> 0"],
    ),
    "rate outside the node's range": (
        ("rate_hz = 100", "rate_hz = 5000"),
        ["node 'tracker'", "rate_hz", "outside"],
    ),
    "duplicate endpoint": (
        ('pub = "ipc://{ipc_dir}/relay.pub"', 'pub = "ipc://{ipc_dir}/tracker.pub"'),
        ["node 'relay'", "key 'pub'", "duplicate endpoint", "tracker.pub"],
    ),
    "subscribe to an unknown node": (
        ('subscribe = ["tracker"]', 'subscribe = ["trakcer"]'),
        ["node 'relay'", "key 'subscribe'", "'trakcer'"],
    ),
    "bad restart policy": (
        ('restart = "on-failure"', 'restart = "always"'),
        ["node 'relay'", "key 'restart'", "'always'"],
    ),
    "negative restart limit": (
        ("restart_limit = 2", "restart_limit = -1"),
        ["node 'relay'", "key 'restart_limit'"],
    ),
    "unknown param": (
        ("rate_hz = 100", "rate_hz = 100\nparams = { sede = 3 }"),
        ["node 'tracker'", "params", "unknown key 'sede'"],
    ),
    "param of the wrong type": (
        ("rate_hz = 100", 'rate_hz = 100\nparams = { seed = "one" }'),
        ["node 'tracker'", "params", "key 'seed'", "integer"],
    ),
    "TOML syntax error": (("[stack]", "[stack"), ["not valid TOML"]),
    "bad node name": (("[nodes.relay]", "[nodes.Relay-1]"), ["'Relay-1'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_launch_file_gives_one_line_naming_file_node_and_key(tmp_path: Path, case: str) -> None:
    (old, new), words = BAD_CASES[case]
    assert old in GOOD, case
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(LaunchError) as caught:
        load(path, run_dir=tmp_path, ipc_dir="/tmp/x")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (case, message)


def test_missing_launch_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="no such launch file"):
        load(tmp_path / "absent.toml", run_dir=tmp_path)


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("ipc:///tmp/a.pub", True),
        ("tcp://127.0.0.1:5555", True),
        ("tcp://*:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://host.example:1", True),
        ("tcp://127.0.0.1", False),
        ("tcp://127.0.0.1:0", False),
        ("udp://127.0.0.1:5555", False),
        ("ipc://" + "/x" * 60, False),
    ],
)
def test_endpoint_check(endpoint: str, ok: bool) -> None:
    assert (check_endpoint(endpoint) is None) == ok


def test_cli_with_bad_launch_file_prints_one_line_and_starts_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("rate_hz = 100", "rate_hz = -3"))
    result = subprocess.run(
        [sys.executable, "-m", "nav.cli", "launch", str(path), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"ornav: {path}: node 'tracker': key 'rate_hz'")
    assert not (tmp_path / "run" / "logs").exists()  # nothing was started

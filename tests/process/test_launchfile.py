"""Launch files: a bad one stops start-up with one line naming the file, the node and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nav.runtime.launchfile import LaunchError, check_endpoint, load

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[stack]
name = "t"

[nodes.tracker]
module = "tracking.sim_node"
pub = "ipc://{ipc_dir}/tracker.pub"
control = "ipc://{ipc_dir}/tracker.ctl"
rate_hz = 100

[nodes.relay]
module = "nav.runtime.relay_node"
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
        ('module = "nav.runtime.relay_node"', 'module = "nav.no_such_node"'),
        ["node 'relay'", "key 'module'", "nav.no_such_node"],
    ),
    "module that is not a node": (
        ('module = "nav.runtime.relay_node"', 'module = "nav.transforms"'),
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
        [sys.executable, "-m", "cli.main", "launch", str(path), "--run-dir", str(tmp_path / "run")],
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


# --- issue 10: endpoints bound twice through params, bad timeouts, self-subscription ------

STACK = """
[stack]
name = "t"

[nodes.tracker]
module = "tracking.sim_node"
pub = "ipc://{ipc_dir}/tracker.pub"
control = "ipc://{ipc_dir}/tracker.ctl"
rate_hz = 100
"""

RENDER = """
[nodes.render]
module = "render.render_node"
pub = "ipc://{ipc_dir}/render.pub"
subscribe = ["tracker"]
[nodes.render.params]
headset_endpoint = "%s"
"""

# Each case: a whole launch file, and the words its one line must contain.
REFUSED = {
    # render took the tracker's socket, the recorder recorded no poses, the run exited 0
    "headset_endpoint on the tracker's pub": (
        STACK + RENDER % "ipc://{ipc_dir}/tracker.pub",
        ["node 'render'", "key 'params.headset_endpoint'", "duplicate endpoint",
         "node 'tracker'", "key 'pub'"],
    ),
    "headset_endpoint on the tracker's control, spelled differently": (
        STACK + RENDER % "ipc://{ipc_dir}/sub/../tracker.ctl",
        ["node 'render'", "key 'params.headset_endpoint'", "node 'tracker'", "key 'control'"],
    ),
    "a wildcard tcp bind and a host bind of one port": (
        STACK.replace('pub = "ipc://{ipc_dir}/tracker.pub"', 'pub = "tcp://*:5755"')
        + RENDER % "tcp://127.0.0.1:5755",
        ["node 'render'", "key 'params.headset_endpoint'", "node 'tracker'", "key 'pub'"],
    ),
    "the OpenIGTLink server's default port on the tracker's tcp pub": (
        STACK.replace('pub = "ipc://{ipc_dir}/tracker.pub"', 'pub = "tcp://127.0.0.1:18944"')
        + '[nodes.slicer]\nmodule = "tracking.igtl_server_node"\nsubscribe = ["tracker"]\n',
        ["node 'slicer'", "key 'params.host/port'", "tcp://127.0.0.1:18944", "node 'tracker'"],
    ),
    "an endpoint-valued param that is malformed": (
        STACK + RENDER % "ipc://relative.headset",
        ["node 'render'", "key 'params.headset_endpoint'", "malformed endpoint", "absolute"],
    ),
    "a node subscribing to itself": (
        STACK + '[nodes.relay]\nmodule = "nav.runtime.relay_node"\npub = "ipc://{ipc_dir}/relay.pub"\n'
        'subscribe = ["tracker", "relay"]\n',
        ["node 'relay'", "key 'subscribe'", "itself"],
    ),
    "ready_timeout_s = inf": (
        STACK.replace('name = "t"', 'name = "t"\nready_timeout_s = inf'),
        ["[stack]", "key 'ready_timeout_s'", "finite", "inf"],
    ),
    "a node's ready_timeout_s = nan": (
        STACK.replace("rate_hz = 100", "rate_hz = 100\nready_timeout_s = nan"),
        ["node 'tracker'", "key 'ready_timeout_s'", "finite"],
    ),
    "restart_delay_s = inf": (
        STACK.replace("rate_hz = 100", "rate_hz = 100\nrestart_delay_s = inf"),
        ["node 'tracker'", "key 'restart_delay_s'", "finite"],
    ),
    "heartbeat_timeout_s of one heartbeat period": (
        STACK.replace("rate_hz = 100", "rate_hz = 100\nheartbeat_timeout_s = 0.5"),
        ["node 'tracker'", "key 'heartbeat_timeout_s'", "0.5 s heartbeat period"],
    ),
    "heartbeat_timeout_s = inf": (
        STACK.replace('name = "t"', 'name = "t"\nheartbeat_timeout_s = inf'),
        ["[stack]", "key 'heartbeat_timeout_s'", "finite"],
    ),
    "a module that is not an ornav node": (
        STACK.replace('module = "tracking.sim_node"', 'module = "this"'),
        ["node 'tracker'", "key 'module'", "'this' is not a node", "tracking.*_node"],
    ),
    "a test fake outside ornav's packages": (
        STACK.replace('module = "tracking.sim_node"', 'module = "tests.fake.behaving_node"'),
        ["node 'tracker'", "key 'module'", "not a node"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_launch_file_refused_with_one_line_naming_both_sides(tmp_path: Path, case: str) -> None:
    text, words = REFUSED[case]
    path = _write(tmp_path, text)
    with pytest.raises(LaunchError) as caught:
        load(path, run_dir=tmp_path, ipc_dir="/tmp/x")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, (case, message)


def test_scene_endpoint_may_name_the_render_nodes_own_pub(tmp_path: Path) -> None:
    """Only an address told to headsets, never bound: not a duplicate of ``pub``."""
    text = STACK + RENDER % "ipc://{ipc_dir}/render.headset"
    text += 'scene_endpoint = "ipc://{ipc_dir}/render.pub"\n'
    spec = load(_write(tmp_path, text), run_dir=tmp_path, ipc_dir="/tmp/x")
    assert spec.node("render").params["scene_endpoint"] == "ipc:///tmp/x/render.pub"


def test_heartbeat_timeout_defaults_from_the_stack_and_a_node_may_override_it(
    tmp_path: Path,
) -> None:
    text = STACK.replace('name = "t"', 'name = "t"\nheartbeat_timeout_s = 3.0')
    text += RENDER % "ipc://{ipc_dir}/render.headset"
    text = text.replace("subscribe = [", "heartbeat_timeout_s = 1.5\nsubscribe = [")
    spec = load(_write(tmp_path, text), run_dir=tmp_path, ipc_dir="/tmp/x")
    assert spec.node("tracker").heartbeat_timeout_s == 3.0
    assert spec.node("render").heartbeat_timeout_s == 1.5
    assert type(spec.node("render")).from_json(spec.node("render").to_json()) == spec.node("render")


def test_heartbeat_period_the_timeout_is_checked_against_is_the_nodes() -> None:
    from nav.runtime.launchfile import HEARTBEAT_PERIOD_S
    from nav.runtime.node import HEARTBEAT_PERIOD_S as NODE_PERIOD_S

    assert HEARTBEAT_PERIOD_S == NODE_PERIOD_S


def _cli_launch(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "launch", str(path), "--run-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "case",
    [
        "headset_endpoint on the tracker's pub",
        "a node subscribing to itself",
        "ready_timeout_s = inf",
        "a module that is not an ornav node",
    ],
)
def test_cli_refuses_the_file_with_one_line_and_starts_nothing(tmp_path: Path, case: str) -> None:
    text, words = REFUSED[case]
    path = _write(tmp_path, text)
    result = _cli_launch(path, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"ornav: {path}: "), result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert not (tmp_path / "run" / "logs").exists()  # nothing was started


def test_module_this_is_refused_without_being_imported(tmp_path: Path) -> None:
    """``import this`` prints the Zen of Python: validation must not run the module."""
    path = _write(tmp_path, STACK.replace('module = "tracking.sim_node"', 'module = "this"'))
    result = _cli_launch(path, tmp_path)
    assert result.returncode == 2
    assert "Beautiful is better than ugly" not in result.stdout + result.stderr
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys\nfrom nav.runtime.launchfile import LaunchError, load\n"
         f"try:\n    load({str(path)!r}, run_dir={str(tmp_path)!r})\n"
         "except LaunchError:\n    pass\nprint('this' in sys.modules)"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert probe.stdout.strip().splitlines()[-1] == "False", probe.stdout + probe.stderr

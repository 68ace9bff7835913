"""Launch files with [hosts]: addresses, public keys, hosts_file, {host}, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from nav.runtime.launchfile import LaunchError, LaunchSpec, load

KEY_A = zmq.curve_keypair()[0].decode()
KEY_B = zmq.curve_keypair()[0].decode()

NODES = """
[nodes.tracker]
host = "a"
module = "tracking.sim_node"
pub = "tcp://{host}:5601"
control = "ipc://{ipc_dir}/t.ctl"

[nodes.nav]
host = "b"
module = "nav.nav_node"
pub = "tcp://{host}:5602"
subscribe = ["tracker"]
"""


def _load(tmp_path: Path, text: str) -> LaunchSpec:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load(path, run_dir=tmp_path, ipc_dir="/tmp/x", check_modules=False)


def test_hosts_in_the_file_place_nodes_and_fill_host(tmp_path: Path) -> None:
    hosts = (
        f'[hosts.a]\naddress = "10.0.0.2"\npublic_key = "{KEY_A}"\n'
        f'[hosts.b]\naddress = "10.0.0.3"\npublic_key = "{KEY_B}"\n'
    )
    launch = _load(tmp_path, hosts + NODES)
    assert launch.hosts["b"].public_key == KEY_B
    assert launch.node("tracker").pub == "tcp://10.0.0.2:5601"
    assert launch.node("nav").subscribe_endpoints == ("tcp://10.0.0.2:5601",)
    assert [s.name for s in launch.nodes_on("b")] == ["nav"]
    assert launch.uses_tcp()


def test_a_hosts_file_beside_the_launch_file(tmp_path: Path) -> None:
    (tmp_path / "hosts.toml").write_text(
        f'[hosts.a]\naddress = "10.0.0.2"\npublic_key = "{KEY_A}"\n'
        f'[hosts.b]\naddress = "10.0.0.3"\npublic_key = "{KEY_B}"\n'
    )
    launch = _load(tmp_path, '[stack]\nhosts_file = "hosts.toml"\n' + NODES)
    assert set(launch.hosts) == {"a", "b"}


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (f'[hosts.a]\naddress = "10.0.0.2"\npublic_key = "{KEY_A}"\n', "'b' is not one of"),
        (
            f'[hosts.a]\naddress = "10.0.0.2"\npublic_key = "{KEY_A}"\n'
            f'[hosts.b]\naddress = "10.0.0.2"\npublic_key = "{KEY_B}"\n',
            "also host 'a'",
        ),
        (
            f'[hosts.a]\naddress = "10.0.0.2"\npublic_key = "{KEY_A}"\n'
            '[hosts.b]\naddress = "10.0.0.3"\npublic_key = "short"\n',
            "public_key",
        ),
        (
            f'[hosts.a]\naddress = "10.0.0.2"\npublic_key = "{KEY_A}"\n'
            f'[hosts.b]\naddress = "10.0.0.3"\npublic_key = "{KEY_B}"\nport = 1\n',
            "unknown key 'port'",
        ),
        (
            f'[hosts.a]\naddress = "10.0.0.2; rm"\npublic_key = "{KEY_A}"\n'
            f'[hosts.b]\naddress = "10.0.0.3"\npublic_key = "{KEY_B}"\n',
            "key 'address'",
        ),
    ],
)
def test_bad_hosts_are_refused_in_one_line(tmp_path: Path, hosts: str, message: str) -> None:
    with pytest.raises(LaunchError, match=message) as error:
        _load(tmp_path, hosts + NODES)
    assert "\n" not in str(error.value)


def test_host_placeholder_without_a_host_is_refused(tmp_path: Path) -> None:
    text = '[nodes.t]\nmodule = "tracking.sim_node"\npub = "tcp://{host}:5601"\n'
    with pytest.raises(LaunchError, match="has no host"):
        _load(tmp_path, text)


def test_insecure_must_be_a_boolean(tmp_path: Path) -> None:
    text = '[stack]\ninsecure = "yes"\n[nodes.t]\nmodule = "tracking.sim_node"\n'
    with pytest.raises(LaunchError, match="'insecure': expected true or false"):
        _load(tmp_path, text)

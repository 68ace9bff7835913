"""The ZAP handler's decisions (RFC 27 frames in, reply frames out) and the allow-list's
re-reading, without sockets; stack security resolved from a launch file and keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from nav.runtime.bus_auth import AllowList, ZapHandler, allow_list_for
from nav.runtime.keys import KeyPair, KeysError, KeyStore
from nav.runtime.launchfile import load
from nav.runtime.security import StackSecurity, resolve


def _pair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def _request(mechanism: bytes, *credentials: bytes) -> list[bytes]:
    return [b"1.0", b"req-7", b"ornav", b"10.0.0.9", b"", mechanism, *credentials]


def test_allowed_key_gets_200_with_its_name_others_400_and_are_counted(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    host, peer, stranger = _pair(), _pair(), _pair()
    store.authorize("headset-1", peer.public)
    zap = ZapHandler(zmq.Context.instance(), allow_list_for(tmp_path, [("host", host.public)]))
    assert zap.decide(_request(b"CURVE", z85.decode(peer.public))) == [
        b"1.0",
        b"req-7",
        b"200",
        b"OK",
        b"headset-1",
        b"",
    ]
    assert zap.decide(_request(b"CURVE", z85.decode(host.public)))[2:5] == [b"200", b"OK", b"host"]
    assert zap.decide(_request(b"CURVE", z85.decode(stranger.public)))[1:3] == [b"req-7", b"400"]
    assert zap.decide(_request(b"NULL"))[2] == b"400"  # only CURVE, even if asked
    assert zap.decide(_request(b"PLAIN", b"user", b"pass"))[2] == b"400"
    assert zap.decide(_request(b"CURVE", b"short"))[2] == b"400"
    assert zap.decide([b"1.0", b"x"])[2] == b"500"
    future = [b"2.0", *_request(b"CURVE", z85.decode(peer.public))[1:]]
    assert zap.decide(future)[2] == b"500"  # a ZAP version we do not speak
    assert zap.counters == {"auth_accepted": 2, "auth_refused": 4}


def test_the_allow_list_follows_authorize_and_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    peer = _pair()
    allow = AllowList(store)
    raw = z85.decode(peer.public)
    assert allow.name_of(raw) is None
    store.authorize("tablet", peer.public)
    assert allow.name_of(raw) == "tablet"
    store.revoke("tablet")
    assert allow.name_of(raw) is None


def test_an_unreadable_allow_list_keeps_only_the_fixed_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    host, peer = _pair(), _pair()
    store.authorize("tablet", peer.public)
    (store.authorized_dir / "broken.key").write_text("metadata\ncurve\n")
    allow = AllowList(store, [("host", host.public)])
    assert allow.name_of(z85.decode(peer.public)) is None
    assert allow.name_of(z85.decode(host.public)) == "host"


STACK = """
[stack]
name = "s"
{extra}
[nodes.relay]
module = "nav.runtime.relay_node"
pub = "{pub}"
"""


def _launch(tmp_path: Path, pub: str, extra: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(STACK.format(pub=pub, extra=extra))
    return path


def test_resolve_needs_keys_only_for_tcp_and_not_when_insecure(tmp_path: Path) -> None:
    ipc = load(_launch(tmp_path, "ipc:///tmp/x.pub"), run_dir=tmp_path)
    assert resolve(ipc, keys_dir=tmp_path / "none").mode == "none"
    tcp = load(_launch(tmp_path, "tcp://127.0.0.1:5999"), run_dir=tmp_path)
    with pytest.raises(KeysError, match=r"s\.toml: tcp endpoints need CurveZMQ keys"):
        resolve(tcp, keys_dir=tmp_path / "none")
    clear = load(_launch(tmp_path, "tcp://127.0.0.1:5999", "insecure = true"), run_dir=tmp_path)
    assert resolve(clear, keys_dir=tmp_path / "none").mode == "insecure"
    store = KeyStore(tmp_path / "k")
    store.init(_pair)
    secured = resolve(tcp, keys_dir=store.directory)
    assert secured.mode == "curve" and secured.keys_dir == str(store.directory)
    # Round trip through the environment, and no secret in it.
    text = secured.to_env()
    assert StackSecurity.from_env(text) == secured
    assert store.load().secret.decode() not in text
    with pytest.raises(ValueError, match="ORNAV_SECURITY"):
        StackSecurity.from_env(json.dumps({"mode": "open"}))
    with pytest.raises(ValueError, match="mode"):
        StackSecurity.from_env(
            json.dumps({"mode": "open", "keys_dir": "", "server_keys": {}, "fixed_allowed": {}})
        )


def test_a_flood_of_fresh_keys_is_counted_in_full_but_logged_in_a_few_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zap = ZapHandler(zmq.Context.instance(), allow_list_for(tmp_path, []))
    with caplog.at_level("WARNING", logger="nav.runtime.bus_auth"):
        for _ in range(50):
            zap.decide(_request(b"CURVE", z85.decode(_pair().public)))
    assert zap.counters["auth_refused"] == 50
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert "SHA256:" in lines[0] and "counted, not logged" in lines[-1]

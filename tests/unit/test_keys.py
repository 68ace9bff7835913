"""The keys directory's files: Z85, certificates zmq.auth reads, 0600/0700, allow-list,
pairing codes (pure: files only, the clock is an argument)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import zmq
import zmq.auth
from hypothesis import given
from hypothesis import strategies as st
from zmq.utils import z85

from nav.runtime.keys import (
    KeyPair,
    KeysError,
    KeyStore,
    fingerprint,
    parse_public_key,
    read_certificate,
    z85_decode,
    z85_encode,
)


def _pair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


@given(st.binary(min_size=0, max_size=64).filter(lambda b: len(b) % 4 == 0))
def test_z85_matches_pyzmq_both_ways(raw: bytes) -> None:
    text = z85_encode(raw)
    assert text.encode() == z85.encode(raw)
    assert z85_decode(text) == raw


@pytest.mark.parametrize("bad", ["abcd", "abcd\x00", "#####"[:4] + "~"])
def test_z85_refuses_bad_text(bad: str) -> None:
    with pytest.raises(KeysError):
        z85_decode(bad)


def test_fingerprint_is_sha256_of_the_raw_key() -> None:
    public = _pair().public
    raw = z85.decode(public)
    expected = hashlib.sha256(raw).digest()[:16]
    assert fingerprint(public) == "SHA256:" + ":".join(f"{b:02x}" for b in expected)
    assert fingerprint(raw) == fingerprint(public)


@pytest.mark.parametrize("text", ["", "x" * 39, "x" * 41, "~" * 40, "é" * 40, b"\xff" * 40])
def test_a_public_key_must_be_40_z85_characters(text: str | bytes) -> None:
    with pytest.raises(KeysError):
        parse_public_key(text)


def test_init_writes_certificates_zmq_auth_reads_with_private_modes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    pair = store.init(_pair)
    assert zmq.auth.load_certificate(store.secret_path) == (pair.public, pair.secret)
    assert zmq.auth.load_certificate(store.public_path) == (pair.public, None)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    for path in (store.secret_path, store.public_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.load() == pair


def test_we_read_certificates_zmq_auth_writes(tmp_path: Path) -> None:
    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "peer")
    assert read_certificate(Path(secret_file)) == zmq.auth.load_certificate(secret_file)
    assert read_certificate(Path(public_file))[1] is None


def test_init_refuses_to_overwrite_and_rotate_keeps_the_old_pair(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    first = store.init(_pair)
    with pytest.raises(KeysError, match="already has a key pair"):
        store.init(_pair)
    assert store.load() == first
    second = store.init(_pair, rotate=True)
    assert store.load() == second != first
    assert read_certificate(store.directory / "host.key_secret.1") == (first.public, first.secret)


def test_load_refuses_a_secret_others_can_read(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    with pytest.raises(KeysError, match="ornav keys init"):
        store.load()
    store.init(_pair)
    os.chmod(store.secret_path, 0o644)
    with pytest.raises(KeysError, match="mode 644"):
        store.load()
    os.chmod(store.secret_path, 0o600)
    os.chmod(store.directory, 0o755)
    with pytest.raises(KeysError, match="mode 755"):
        store.load()


def test_authorize_list_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init(_pair)
    a, b = _pair().public, _pair().public
    path = store.authorize("headset-1", a.decode())
    assert zmq.auth.load_certificate(path) == (a, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.authorize("tracker-pc", b)
    assert store.authorized() == {"headset-1": a, "tracker-pc": b}
    with pytest.raises(KeysError, match="already authorized as 'headset-1'"):
        store.authorize("other", a)
    store.revoke("headset-1")
    assert store.authorized() == {"tracker-pc": b}
    with pytest.raises(KeysError, match="not on the allow-list"):
        store.revoke("headset-1")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-x", "x" * 65, "a b"])
def test_authorize_refuses_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeysError, match="name"):
        KeyStore(tmp_path).authorize(name, _pair().public)
    assert not list(tmp_path.rglob("*.key"))


def test_a_pairing_code_authorizes_once_and_only_in_time(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.init(_pair)
    code = store.new_pairing_code(now_s=1000.0, ttl_s=60.0)
    assert code not in (tmp_path / "keys" / "pairing.json").read_text()  # only its hash
    key = _pair().public
    with pytest.raises(KeysError, match="not recognised"):
        store.redeem_pairing_code("WRONGCODE1", "headset", key, now_s=1001.0)
    spaced = f"{code[:5].lower()}-{code[5:]}"
    store.redeem_pairing_code(spaced, "headset", key, now_s=1001.0)
    assert store.authorized() == {"headset": key}
    with pytest.raises(KeysError, match="not recognised"):  # used up
        store.redeem_pairing_code(code, "again", _pair().public, now_s=1002.0)
    late = store.new_pairing_code(now_s=2000.0, ttl_s=60.0)
    with pytest.raises(KeysError, match="expired"):
        store.redeem_pairing_code(late, "late", _pair().public, now_s=2061.0)
    assert set(store.authorized()) == {"headset"}
    assert json.loads((tmp_path / "keys" / "pairing.json").read_text()) == {"pending": {}}

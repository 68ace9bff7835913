"""`ornav keys` end to end: files zmq.auth reads, 0700/0600, one-line errors, exit codes.

Through ``cli.main.main`` in this process (each ``python -m cli.main`` costs seconds of
imports); one test runs the real command for its exit code and stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.auth

from cli.main import main

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _keys(keys: Path, *args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORNAV_KEYS", str(keys))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["keys", *args])
    return Result(code, out.getvalue(), err.getvalue())


def test_the_real_command_refuses_bad_input_in_one_line_with_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "keys", "authorize", "x", "not-a-key"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "ORNAV_KEYS": str(tmp_path / "k")},
    )
    assert done.returncode == 2
    assert done.stderr == "ornav: a public key is 40 Z85 characters, got 9\n"


def test_init_show_authorize_list_revoke(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    made = _keys(keys, "init")
    assert made.returncode == 0, made.stderr
    public, secret = zmq.auth.load_certificate(keys / "host.key_secret")
    assert secret is not None
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "host.key_secret").stat().st_mode) == 0o600
    shown = _keys(keys, "show")
    assert public.decode() in shown.stdout and "SHA256:" in shown.stdout
    again = _keys(keys, "init")
    assert again.returncode == 2
    assert again.stderr.startswith("ornav: ") and again.stderr.count("\n") == 1

    peer, _ = zmq.curve_keypair()
    assert _keys(keys, "authorize", "headset-1", peer.decode()).returncode == 0
    listed = _keys(keys, "list")
    assert re.search(rf"headset-1 +SHA256:[0-9a-f:]+ +{re.escape(peer.decode())}", listed.stdout)
    bad = _keys(keys, "authorize", "x", "not-a-key")
    assert bad.returncode == 2 and "40 Z85 characters" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert _keys(keys, "revoke", "headset-1").returncode == 0
    assert "empty" in _keys(keys, "list").stdout
    assert _keys(keys, "revoke", "headset-1").returncode == 2


def test_pair_prints_a_code_and_qr_that_enrol_redeems_once(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    assert _keys(keys, "pair").returncode == 2  # no host key yet: one line
    assert _keys(keys, "init").returncode == 0
    paired = _keys(keys, "pair", "--qr", "--ttl", "30")
    assert paired.returncode == 0, paired.stderr
    code = re.search(r"pairing code ([A-Z0-9]{5}-[A-Z0-9]{5})", paired.stdout)
    assert code is not None, paired.stdout
    assert "█" in paired.stdout or "▀" in paired.stdout  # the QR's block characters
    client, _ = zmq.curve_keypair()
    enrolled = _keys(keys, "enrol", code.group(1), "tablet", client.decode())
    assert enrolled.returncode == 0, enrolled.stderr
    assert zmq.auth.load_certificate(keys / "authorized" / "tablet.key") == (client, None)
    reused = _keys(keys, "enrol", code.group(1), "other", zmq.curve_keypair()[0].decode())
    assert reused.returncode == 2 and "not recognised" in reused.stderr

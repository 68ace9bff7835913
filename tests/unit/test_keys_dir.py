"""The keys directory: ORNAV_KEYS wins, else the XDG data dir; created 0700."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nav.runtime.keys_dir import keys_dir


def test_ornav_keys_moves_it_and_create_makes_it_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORNAV_KEYS", str(tmp_path / "a" / "keys"))
    path = keys_dir(create=True)
    assert path == tmp_path / "a" / "keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700


def test_default_is_under_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORNAV_KEYS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert keys_dir() == tmp_path / "ornav" / "keys"
    assert not (tmp_path / "ornav").exists()  # looking it up creates nothing
    monkeypatch.delenv("XDG_DATA_HOME")
    assert keys_dir() == Path.home() / ".local" / "share" / "ornav" / "keys"

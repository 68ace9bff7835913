"""The web bridge's pairing tokens and its local CA (render/web/tokens.py, tls.py)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from render.web.tls import TlsError, check_given_tls, ensure_local_tls
from render.web.tokens import TokenError, TokenStore, issue_token, read_tokens, revoke_tokens

NOW = 1_800_000_000.0


def test_a_token_is_valid_until_it_expires_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "web" / "tokens.json"
    token = issue_token(path, ttl_s=60.0, label="quest", now_s=NOW)
    store = TokenStore(path)
    assert store.valid(token, NOW) and store.valid(token, NOW + 59.9)
    assert not store.valid(token, NOW + 60.0)  # expiry is exclusive
    assert store.why_not(token, NOW + 61) == "expired"
    assert token not in path.read_text()  # a stolen file pairs nobody
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("token", "why"), [("", "missing"), ("short", "malformed"), ("A" * 43, "unknown")]
)
def test_anything_else_is_refused_with_a_reason(tmp_path: Path, token: str, why: str) -> None:
    path = tmp_path / "tokens.json"
    issue_token(path, ttl_s=60.0, label="a", now_s=NOW)
    store = TokenStore(path)
    assert not store.valid(token, NOW) and store.why_not(token, NOW) == why


def test_revoking_by_label_takes_effect_for_a_running_store(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    keep = issue_token(path, ttl_s=600.0, label="monitor", now_s=NOW)
    gone = [issue_token(path, ttl_s=600.0, label="quest", now_s=NOW) for _ in range(2)]
    store = TokenStore(path)
    assert all(store.valid(t, NOW) for t in [keep, *gone])
    assert revoke_tokens(path, label="quest") == 2
    assert store.valid(keep, NOW) and not any(store.valid(t, NOW) for t in gone)
    assert revoke_tokens(path, label=None) == 1 and not store.valid(keep, NOW)


def test_expired_records_are_dropped_when_a_new_one_is_issued(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    issue_token(path, ttl_s=1.0, label="old", now_s=NOW)
    issue_token(path, ttl_s=1.0, label="new", now_s=NOW + 10)
    assert [r.label for r in read_tokens(path)] == ["new"]


@pytest.mark.parametrize("ttl", [0.0, -1.0, 31 * 24 * 3600.0])
def test_a_bad_lifetime_or_label_is_one_line(tmp_path: Path, ttl: float) -> None:
    with pytest.raises(TokenError):
        issue_token(tmp_path / "t.json", ttl_s=ttl, label="a", now_s=NOW)
    with pytest.raises(TokenError):
        issue_token(tmp_path / "t.json", ttl_s=60, label="bad label!", now_s=NOW)


def test_a_damaged_store_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    for text in ("{not json", json.dumps({"tokens": [{"sha256": "xyz"}]}), "[]"):
        path.write_text(text)
        with pytest.raises(TokenError) as info:
            TokenStore(path).load()
        assert "\n" not in str(info.value)


def test_the_local_ca_signs_a_server_certificate_for_the_names_asked(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    names = ("localhost", "127.0.0.1", "or-pc.local")
    files = ensure_local_tls(tmp_path / "web", names, now)
    assert files.ca_file is not None
    for key in ("ca.key", "server.key"):
        assert (tmp_path / "web" / key).stat().st_mode & 0o777 == 0o600
    # The chain verifies with the standard library (what a browser does, minus the UI).
    context = ssl.create_default_context(cafile=str(files.ca_file))
    context.load_cert_chain(files.cert_file, files.key_file)  # the pair matches
    server = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "or-pc.local"} <= set(san.get_values_for_type(x509.DNSName))
    assert (server.not_valid_after_utc - now).days <= 398  # what browsers accept
    # Same names later: kept. A new name: a new server certificate from the same CA.
    again = ensure_local_tls(tmp_path / "web", names, now + dt.timedelta(days=10))
    assert again.cert_file.read_bytes() == files.cert_file.read_bytes()
    before = files.cert_file.read_bytes()
    ensure_local_tls(tmp_path / "web", (*names, "10.0.0.7"), now + dt.timedelta(days=10))
    renewed = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    assert files.cert_file.read_bytes() != before
    renewed.verify_directly_issued_by(ca)  # devices that trust the CA still trust it


def test_a_missing_hospital_certificate_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="no such file"):
        check_given_tls(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))

"""Pairing tokens for the web bridge: a browser must present one before it gets anything.

A token is 32 random bytes, URL-safe base64 (43 characters), shown once in the URL the
bridge prints (and as a QR code) for the headset to scan. The store keeps only its
SHA-256, its expiry (wall clock, Unix seconds: a token outlives a reboot but not its
time) and a label, in ``<keys dir>/web/tokens.json`` (0600). ``ornav keys web-token``
issues one, ``ornav keys web-revoke`` revokes by label (or all); the bridge re-reads the
file when it changes, so a revocation also closes the connections that used the token.

Pure apart from the file: the clock is an argument (``now_s``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from nav.runtime.private_files import write_private_text

TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TTL_S = 30 * 24 * 3600.0
MAX_TOKENS = 256


class TokenError(ValueError):
    """A token store that cannot be read or a request that cannot be done: one line."""


@dataclass(frozen=True)
class TokenRecord:
    sha256: str
    label: str
    expires_s: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def read_tokens(path: Path) -> list[TokenRecord]:
    """The records in ``path`` (none if it does not exist); TokenError if unreadable."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise TokenError(f"{path}: unreadable token store ({error})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
        raise TokenError(f"{path}: not a token store (no 'tokens' list)")
    out: list[TokenRecord] = []
    for entry in raw["tokens"]:
        try:
            record = TokenRecord(
                str(entry["sha256"]), str(entry["label"]), float(entry["expires_s"])
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError(f"{path}: a token entry lacks sha256/label/expires_s") from None
        if not re.fullmatch(r"[0-9a-f]{64}", record.sha256):
            raise TokenError(f"{path}: a token entry's sha256 is not 64 hex digits")
        out.append(record)
    return out


def _write(path: Path, records: list[TokenRecord]) -> None:
    body = {
        "tokens": [
            {"sha256": r.sha256, "label": r.label, "expires_s": r.expires_s} for r in records
        ]
    }
    write_private_text(path, json.dumps(body, indent=1) + "\n")


def issue_token(path: Path, *, ttl_s: float, label: str, now_s: float) -> str:
    """A new token valid for ``ttl_s`` seconds; expired records are dropped on the way."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise TokenError(f"token lifetime {ttl_s} s is not in (0, {MAX_TTL_S:.0f}] s")
    if not LABEL_PATTERN.fullmatch(label):
        raise TokenError(f"label {label!r} is not 1-64 of [A-Za-z0-9_.-]")
    records = [r for r in read_tokens(path) if r.expires_s > now_s][-(MAX_TOKENS - 1) :]
    token = secrets.token_urlsafe(32)
    records.append(TokenRecord(_digest(token), label, now_s + ttl_s))
    _write(path, records)
    return token


def revoke_tokens(path: Path, *, label: str | None) -> int:
    """Revoke the tokens labelled ``label`` (None: all); returns how many were revoked."""
    records = read_tokens(path)
    keep = [r for r in records if label is not None and r.label != label]
    _write(path, keep)
    return len(records) - len(keep)


class TokenStore:
    """The bridge's view of the token file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, TokenRecord] = {}

    def load(self) -> None:
        """Read the file now (TokenError if it cannot be used)."""
        self._stamp = None
        self._refresh()

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._records = {r.sha256: r for r in read_tokens(self.path)}
            self._stamp = stamp

    def valid(self, token: str, now_s: float) -> bool:
        """True if ``token`` is issued, not revoked and not expired at ``now_s``."""
        if not TOKEN_PATTERN.fullmatch(token):
            return False
        self._refresh()
        digest = _digest(token)
        for sha, record in self._records.items():
            if hmac.compare_digest(sha, digest):  # constant time: no timing oracle
                return record.expires_s > now_s
        return False

    def why_not(self, token: str, now_s: float) -> str:
        """One word for a refused token: ``missing``, ``malformed``, ``expired``, ``unknown``."""
        if not token:
            return "missing"
        if not TOKEN_PATTERN.fullmatch(token):
            return "malformed"
        self._refresh()
        record = self._records.get(_digest(token))
        if record is None:
            return "unknown"
        return "expired" if record.expires_s <= now_s else "ok"

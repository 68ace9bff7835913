"""This host's CurveZMQ key pair and its allow-list, as files in the keys directory.

Layout of the keys directory (``nav.runtime.keys_dir``: ``ORNAV_KEYS`` or the user's data
dir; mode 0700, every file 0600)::

    host.key            this host's public key   } ZeroMQ certificate files, the format
    host.key_secret     this host's secret key   } zmq.auth.load_certificate reads
    authorized/<name>.key   one public key per allowed peer (host, headset, tool)
    pairing.json        pending one-time pairing codes (only their SHA-256, with expiry)

A key is 32 bytes, written as 40 characters of Z85 (ZeroMQ's base-85, RFC 32/Z85).
Its *fingerprint* is what people compare and what logs show: ``SHA256:`` then the first
16 bytes of the key's SHA-256 in hex pairs (a refused key is logged by its fingerprint,
never by the key).

Pure file handling: no sockets, and the clock is an argument (``now_s``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nav.runtime.private_files import make_private_dir, write_private_text

HOST = "host"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
AUTHORIZED = "authorized"
PAIRING = "pairing.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PAIRING_TTL_S = 300.0  # a code read aloud or scanned is used within minutes, or never
PAIRING_CODE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud in an OR
PAIRING_CODE_LEN = 10  # 50 bits: a guess per ms for the code's 5 minutes has odds ~3e-10

_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {c: i for i, c in enumerate(_Z85)}


class KeysError(ValueError):
    """A key, key file or keys directory that must not be used; one line for the user."""


@dataclass(frozen=True)
class KeyPair:
    """A CurveZMQ key pair as Z85 text (40 ASCII bytes each)."""

    public: bytes
    secret: bytes


def z85_decode(text: str) -> bytes:
    """Decode Z85 (length a multiple of 5); KeysError on a bad length or character."""
    if len(text) % 5:
        raise KeysError(f"Z85 text must be a multiple of 5 characters, got {len(text)}")
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for char in text[i : i + 5]:
            digit = _Z85_VALUE.get(char)
            if digit is None:
                raise KeysError(f"{char!r} is not a Z85 character")
            value = value * 85 + digit
        if value >= 1 << 32:
            raise KeysError(f"{text[i : i + 5]!r} is not valid Z85")
        out += value.to_bytes(4, "big")
    return bytes(out)


def z85_encode(raw: bytes) -> str:
    """Encode ``raw`` (length a multiple of 4) as Z85."""
    if len(raw) % 4:
        raise KeysError(f"Z85 encodes multiples of 4 bytes, got {len(raw)}")
    chars: list[str] = []
    for i in range(0, len(raw), 4):
        value = int.from_bytes(raw[i : i + 4], "big")
        block: list[str] = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            block.append(_Z85[digit])
        chars.extend(reversed(block))
    return "".join(chars)


def parse_public_key(text: str | bytes) -> bytes:
    """A public key as given by a user or a file: 40 Z85 characters for 32 bytes.

    Returns the Z85 text as ASCII bytes (the form pyzmq's CURVE options take).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise KeysError("a public key is 40 ASCII characters (Z85)") from None
    text = text.strip()
    if len(text) != 40:
        raise KeysError(f"a public key is 40 Z85 characters, got {len(text)}")
    z85_decode(text)
    return text.encode("ascii")


def fingerprint(public: bytes) -> str:
    """``SHA256:ab:cd:...`` (16 bytes) of a key, given as Z85 text or 32 raw bytes."""
    raw = public if len(public) == 32 else z85_decode(public.decode("ascii"))
    digest = hashlib.sha256(raw).digest()[:16]
    return "SHA256:" + ":".join(f"{b:02x}" for b in digest)


def _certificate(public: bytes, secret: bytes | None, metadata: dict[str, str]) -> str:
    # The layout zmq.auth.certs writes (ZPL: indentation is structure), so zmq.auth and
    # CZMQ tools read our files and we read theirs.
    lines = [
        "#   ZeroMQ CURVE certificate written by `ornav keys`",
        "#   ** Generated on ornav; edit with `ornav keys`, not by hand **",
        "metadata",
        *(f"    {k} = {json.dumps(v)}" for k, v in metadata.items()),
        "curve",
        f'    public-key = "{public.decode("ascii")}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def read_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) of a ZeroMQ certificate file; KeysError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeysError(f"{path}: cannot read: {error}") from None
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        for field in ("public-key", "secret-key"):
            if line.startswith(field) and "=" in line:
                found[field] = line.split("=", 1)[1].strip(" \t'\"")
    if "public-key" not in found:
        raise KeysError(f"{path}: no public-key in this certificate")
    try:
        public = parse_public_key(found["public-key"])
        secret = parse_public_key(found["secret-key"]) if "secret-key" in found else None
    except KeysError as error:
        raise KeysError(f"{path}: {error}") from None
    return public, secret


class KeyStore:
    """The keys directory: this host's pair, the allow-list, pairing codes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def public_path(self) -> Path:
        return self.directory / (HOST + PUBLIC_SUFFIX)

    @property
    def secret_path(self) -> Path:
        return self.directory / (HOST + SECRET_SUFFIX)

    @property
    def authorized_dir(self) -> Path:
        return self.directory / AUTHORIZED

    # --- this host's pair ---------------------------------------------------------------

    def init(self, generate: Callable[[], KeyPair], *, rotate: bool = False) -> KeyPair:
        """Write a new host pair from ``generate()``; KeysError if one exists (unless
        ``rotate``, which keeps the old pair as ``host.key.<n>``/``host.key_secret.<n>``).
        """
        make_private_dir(self.directory)
        os.chmod(self.directory, 0o700)
        if self.secret_path.exists() or self.public_path.exists():
            if not rotate:
                raise KeysError(
                    f"{self.directory}: this host already has a key pair "
                    f"({fingerprint(self.load().public)}); `ornav keys init --rotate` replaces it"
                )
            n = 1
            while (self.directory / f"{HOST}{PUBLIC_SUFFIX}.{n}").exists():
                n += 1
            for path in (self.public_path, self.secret_path):
                if path.exists():
                    path.rename(path.with_name(f"{path.name}.{n}"))
        pair = generate()
        parse_public_key(pair.public)
        parse_public_key(pair.secret)
        metadata = {"name": HOST, "made_by": "ornav keys init"}
        write_private_text(self.secret_path, _certificate(pair.public, pair.secret, metadata))
        write_private_text(self.public_path, _certificate(pair.public, None, metadata))
        make_private_dir(self.authorized_dir)
        return pair

    def load(self) -> KeyPair:
        """This host's pair; KeysError if missing or if others could read the secret."""
        if not self.secret_path.exists():
            raise KeysError(f"{self.directory}: no host key pair: run `ornav keys init` first")
        self._refuse_exposed(self.directory, 0o077)
        self._refuse_exposed(self.secret_path, 0o077)
        public, secret = read_certificate(self.secret_path)
        if secret is None:
            raise KeysError(f"{self.secret_path}: no secret-key in this certificate")
        return KeyPair(public, secret)

    @staticmethod
    def _refuse_exposed(path: Path, forbidden: int) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & forbidden:
            raise KeysError(
                f"{path}: mode {mode:o} lets other users read this host's secret key "
                f"(chmod {'700' if path.is_dir() else '600'} {path}, then rotate the key)"
            )

    # --- the allow-list -----------------------------------------------------------------

    def authorize(self, name: str, public: str | bytes) -> Path:
        """Allow ``public`` under ``name`` (replacing that name's key); the file written."""
        if not NAME.fullmatch(name):
            raise KeysError(
                f"name {name!r}: letters, digits, '_', '.', '-' (up to 64), not starting "
                "with a symbol"
            )
        key = parse_public_key(public)
        make_private_dir(self.authorized_dir)
        for other, other_key in self.authorized().items():
            if other_key == key and other != name:
                raise KeysError(f"{fingerprint(key)} is already authorized as {other!r}")
        path = self.authorized_dir / f"{name}{PUBLIC_SUFFIX}"
        write_private_text(path, _certificate(key, None, {"name": name}))
        return path

    def revoke(self, name: str) -> None:
        """Remove ``name`` from the allow-list; KeysError if it is not on it."""
        path = self.authorized_dir / f"{name}{PUBLIC_SUFFIX}"
        if not NAME.fullmatch(name) or not path.exists():
            raise KeysError(f"{name!r} is not on the allow-list ({self.authorized_dir})")
        path.unlink()

    def authorized(self) -> dict[str, bytes]:
        """name -> public key (Z85) of every key on the allow-list; a bad file raises."""
        if not self.authorized_dir.is_dir():
            return {}
        out: dict[str, bytes] = {}
        for path in sorted(self.authorized_dir.glob(f"*{PUBLIC_SUFFIX}")):
            out[path.name[: -len(PUBLIC_SUFFIX)]] = read_certificate(path)[0]
        return out

    # --- pairing ------------------------------------------------------------------------

    def new_pairing_code(self, *, now_s: float, ttl_s: float = PAIRING_TTL_S) -> str:
        """A one-time code valid ``ttl_s`` from ``now_s`` (wall clock); only its hash is kept."""
        code = "".join(secrets.choice(PAIRING_CODE_CHARS) for _ in range(PAIRING_CODE_LEN))
        pending = {
            digest: expiry
            for digest, expiry in self._pairings().items()
            if expiry > now_s  # expired codes are forgotten on the next write
        }
        pending[_code_digest(code)] = now_s + ttl_s
        write_private_text(self.directory / PAIRING, json.dumps({"pending": pending}) + "\n")
        return code

    def redeem_pairing_code(
        self, code: str, name: str, public: str | bytes, *, now_s: float
    ) -> Path:
        """Authorize ``public`` as ``name`` if ``code`` is pending and unexpired; the code is
        used up either way once it matched. KeysError otherwise (nothing is authorized)."""
        key = parse_public_key(public)
        normal = code.strip().upper().replace("-", "").replace(" ", "")
        digest = _code_digest(normal)
        pending = self._pairings()
        match = next((d for d in pending if hmac.compare_digest(d, digest)), None)
        if match is None:
            raise KeysError("pairing code not recognised (wrong, already used or never issued)")
        expiry = pending.pop(match)
        write_private_text(self.directory / PAIRING, json.dumps({"pending": pending}) + "\n")
        if expiry <= now_s:
            raise KeysError(f"pairing code expired {now_s - expiry:.0f} s ago: make a new one")
        return self.authorize(name, key)

    def _pairings(self) -> dict[str, float]:
        path = self.directory / PAIRING
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            pending = raw["pending"]
            return {str(k): float(v) for k, v in pending.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise KeysError(f"{path}: not a pairing file: {error}") from None


def _code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def format_code(code: str) -> str:
    """``ABCDE-FGHJK``: a pairing code in two halves, easier to read aloud."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"

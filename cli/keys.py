"""``ornav keys``: this host's CurveZMQ key pair and the allow-list of peers it serves.

    ornav keys init [--rotate]        make this host's key pair (refuses to overwrite one)
    ornav keys show                   this host's public key and fingerprint
    ornav keys authorize NAME PUBKEY  allow a peer (a host, a headset) by its public key
    ornav keys revoke NAME            take it off the allow-list (new connections refused)
    ornav keys list                   the allow-list, with fingerprints
    ornav keys pair [--ttl S] [--qr]  a one-time code (and QR) for a new client to enrol
    ornav keys enrol CODE NAME PUBKEY redeem a pairing code: authorizes the key once
    ornav keys web-token | web-revoke | web-ca   browser pairing tokens and the local CA
                                      of the web bridge (``cli/web_keys.py``)

The keys directory is ``ORNAV_KEYS`` or the user's data dir (``nav.runtime.keys_dir``);
files are in the ZeroMQ certificate format (``nav.runtime.keys``). Bad input is one line
``ornav: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

from cli.errors import UserError
from cli.web_keys import add_web_key_parsers
from nav.runtime import bus
from nav.runtime.keys import (
    PAIRING_TTL_S,
    KeyPair,
    KeysError,
    KeyStore,
    fingerprint,
    format_code,
)
from nav.runtime.keys_dir import keys_dir


def add_keys_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="this host's CURVE keys and allow-list")
    verbs = keys.add_subparsers(dest="keys_command", required=True)
    init = verbs.add_parser("init", help="make this host's key pair")
    init.add_argument(
        "--rotate", action="store_true", help="replace an existing pair (the old one is kept)"
    )
    init.set_defaults(func=cmd_init)
    verbs.add_parser("show", help="this host's public key and fingerprint").set_defaults(
        func=cmd_show
    )
    authorize = verbs.add_parser("authorize", help="allow a peer's public key")
    authorize.add_argument("name", help="who it is: tracker-pc, headset-1, ...")
    authorize.add_argument("pubkey", help="its public key (40 Z85 characters)")
    authorize.set_defaults(func=cmd_authorize)
    revoke = verbs.add_parser("revoke", help="take a peer off the allow-list")
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_revoke)
    verbs.add_parser("list", help="the allow-list").set_defaults(func=cmd_list)
    pair = verbs.add_parser("pair", help="a one-time code for a new client to enrol its key")
    pair.add_argument("--ttl", type=float, default=PAIRING_TTL_S, help="seconds it is valid")
    pair.add_argument("--qr", action="store_true", help="also print it as a QR code")
    pair.set_defaults(func=cmd_pair)
    enrol = verbs.add_parser("enrol", help="redeem a pairing code for a client's key")
    enrol.add_argument("code")
    enrol.add_argument("name")
    enrol.add_argument("pubkey")
    enrol.set_defaults(func=cmd_enrol)
    add_web_key_parsers(verbs)  # web-token, web-revoke, web-ca: the browser bridge's


def _store() -> KeyStore:
    return KeyStore(keys_dir())


def _generate() -> KeyPair:
    keys = bus.CurveKeys.generate()
    return KeyPair(keys.public, keys.secret)


def cmd_init(args: argparse.Namespace) -> int:
    store = _store()
    try:
        pair = store.init(_generate, rotate=args.rotate)
    except KeysError as error:
        raise UserError(str(error)) from None
    print(f"key pair written to {store.directory} (0700; secret 0600)")
    print(f"public key  {pair.public.decode()}")
    print(f"fingerprint {fingerprint(pair.public)}")
    if args.rotate:
        print("peers that know the old public key must be given the new one")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        pair = _store().load()
    except KeysError as error:
        raise UserError(str(error)) from None
    print(f"public key  {pair.public.decode()}")
    print(f"fingerprint {fingerprint(pair.public)}")
    return 0


def cmd_authorize(args: argparse.Namespace) -> int:
    try:
        path = _store().authorize(args.name, args.pubkey)
    except KeysError as error:
        raise UserError(str(error)) from None
    print(f"authorized {args.name} ({fingerprint(args.pubkey.strip().encode())}): {path}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        _store().revoke(args.name)
    except KeysError as error:
        raise UserError(str(error)) from None
    print(f"revoked {args.name}: new connections with its key are refused")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        allowed = _store().authorized()
    except KeysError as error:
        raise UserError(str(error)) from None
    if not allowed:
        print("the allow-list is empty")
    for name, key in allowed.items():
        print(f"{name:24s} {fingerprint(key)}  {key.decode()}")
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    if not 0 < args.ttl <= 3600:
        raise UserError(f"--ttl must be in (0, 3600] seconds, got {args.ttl}")
    store = _store()
    try:
        host = store.load()
        code = store.new_pairing_code(now_s=time.time(), ttl_s=args.ttl)
    except KeysError as error:
        raise UserError(str(error)) from None
    print(f"pairing code {format_code(code)} (one use, valid {args.ttl:g} s)")
    print(f"this host    {host.public.decode()} ({fingerprint(host.public)})")
    print(f"on this host: ornav keys enrol {format_code(code)} NAME CLIENT_PUBKEY")
    if args.qr:
        import qrcode  # only here: the QR is optional output

        qr = qrcode.QRCode(border=1)
        qr.add_data(f"ornav-pair:1:{host.public.decode()}:{code}")
        text = io.StringIO()
        qr.print_ascii(out=text)
        print(text.getvalue(), end="")
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    try:
        path = _store().redeem_pairing_code(args.code, args.name, args.pubkey, now_s=time.time())
    except KeysError as error:
        raise UserError(str(error)) from None
    print(f"enrolled {args.name}: {path}")
    return 0

"""``ornav keys web-token | web-revoke | web-ca``: the web bridge's pairing tokens and CA.

    ornav keys web-token [--hours H] [--label L] [--url https://host:port/]
                                      a browser pairing token (printed once; with --url,
                                      the URL to open and its QR code)
    ornav keys web-revoke (--label L | --all)
                                      revoke tokens: the bridge closes their connections
    ornav keys web-ca                 where the local CA certificate is, to install it on a
                                      headset or a desktop browser (README)

The tokens live in ``<keys dir>/web/tokens.json`` (hashes only, 0600); the bridge
re-reads it when it changes (``render/web/tokens.py``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from cli.errors import UserError
from render.web.bridge_node import token_file, web_keys_dir
from render.web.tokens import TokenError, issue_token, revoke_tokens


def add_web_key_parsers(verbs: Any) -> None:
    """Add the web verbs to ``ornav keys``'s subcommands."""
    token = verbs.add_parser("web-token", help="a pairing token for a browser (the web bridge)")
    token.add_argument("--hours", type=float, default=12.0, help="valid this long (default 12)")
    token.add_argument("--label", default="manual", help="a name to revoke it by")
    token.add_argument("--url", help="the bridge's base URL: print the URL with the token + QR")
    token.set_defaults(func=cmd_web_token)
    revoke = verbs.add_parser("web-revoke", help="revoke browser pairing tokens")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", help="the tokens issued with this label")
    which.add_argument("--all", action="store_true", help="every token")
    revoke.set_defaults(func=cmd_web_revoke)
    verbs.add_parser("web-ca", help="the local CA certificate to install").set_defaults(
        func=cmd_web_ca
    )


def cmd_web_token(args: argparse.Namespace) -> int:
    try:
        token = issue_token(
            token_file(), ttl_s=args.hours * 3600.0, label=args.label, now_s=time.time()
        )
    except TokenError as error:
        raise UserError(str(error)) from None
    if not args.url:
        print(token)
        return 0
    if not args.url.startswith("https://"):
        raise UserError(f"--url {args.url!r}: the bridge serves https:// only")
    url = f"{args.url.rstrip('/')}/#token={token}"
    print(url)
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(url)
    qr.print_ascii(invert=True)
    return 0


def cmd_web_revoke(args: argparse.Namespace) -> int:
    try:
        count = revoke_tokens(token_file(), label=None if args.all else args.label)
    except TokenError as error:
        raise UserError(str(error)) from None
    print(f"{count} token(s) revoked")
    return 0


def cmd_web_ca(args: argparse.Namespace) -> int:
    ca = web_keys_dir() / "ca.pem"
    if not ca.is_file():
        raise UserError(f"{ca}: no local CA yet (the web bridge makes it on its first start)")
    print(ca)
    return 0

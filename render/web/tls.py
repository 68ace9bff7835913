"""The web bridge's TLS certificate: a local CA and a server certificate it signs.

WebXR needs a secure context, so the page is served over HTTPS even on the OR's own
network. Without a hospital certificate (the launch file's ``cert_file`` / ``key_file``),
the bridge makes, on first start, under ``<keys dir>/web/``:

- ``ca.pem`` / ``ca.key``: a local certificate authority (ECDSA P-256, 10 years), the one
  file a person installs once on the Quest and on the desktop browsers (README);
- ``server.pem`` / ``server.key``: the bridge's certificate (ECDSA P-256, 397 days, the
  most browsers accept), signed by that CA, for ``localhost``, ``127.0.0.1``, this host's
  name and the addresses given. A server certificate whose names no longer cover the
  addresses asked for, or that expires within 30 days, is made again with the same CA,
  so the devices that trust the CA keep trusting the bridge.

Private keys are 0600 files in the 0700 keys directory (``nav.runtime.private_files``).
Files only, no sockets; the clock is an argument (``now``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nav.runtime.private_files import make_private_dir, write_private_text

CA_DAYS = 3650
SERVER_DAYS = 397  # browsers refuse server certificates valid longer than 398 days
RENEW_BEFORE_DAYS = 30


class TlsError(ValueError):
    """A certificate or key that cannot be used: one line."""


@dataclass(frozen=True)
class TlsFiles:
    """The certificate chain and key the HTTPS server loads, and the CA to trust (if ours)."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None


def local_names(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names a local server certificate covers: localhost, loopback, this host, its
    outward address (the one a headset on the same network reaches), and ``extra``."""
    names = ["localhost", "127.0.0.1", socket.gethostname()]
    try:  # no packet is sent: connect() on UDP only picks the outward interface
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            names.append(probe.getsockname()[0])
    except OSError:
        pass
    names += list(extra)
    return tuple(dict.fromkeys(n for n in names if n))


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_text(path, pem.decode("ascii"))


def _make_ca(
    directory: Path, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ornav"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ornav local CA ({socket.gethostname()})"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / "ca.key", key)
    write_private_text(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM).decode())
    return cert, key


def _make_server(
    directory: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: tuple[str, ...],
    now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(directory / "server.key", key)
    write_private_text(
        directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM).decode()
    )


def _covers(cert: x509.Certificate, names: tuple[str, ...], now: dt.datetime) -> bool:
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    return set(names) <= have


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise TlsError(f"{path}: not a PEM certificate ({error})") from None


def ensure_local_tls(directory: Path, names: tuple[str, ...], now: dt.datetime) -> TlsFiles:
    """The local CA and a server certificate for ``names`` under ``directory`` (made 0700),
    made or renewed as the module docstring says. TlsError (one line) on unusable files."""
    make_private_dir(directory)
    ca_pem, ca_key_path = directory / "ca.pem", directory / "ca.key"
    if ca_pem.exists() and ca_key_path.exists():
        ca = _load_cert(ca_pem)
        try:
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        except (OSError, ValueError, TypeError) as error:
            raise TlsError(f"{ca_key_path}: not a PEM private key ({error})") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{ca_key_path}: not an EC key")
        ca_key = loaded
    else:
        ca, ca_key = _make_ca(directory, now)
    server_pem = directory / "server.pem"
    if not (
        server_pem.exists()
        and (directory / "server.key").exists()
        and _covers(_load_cert(server_pem), names, now)
    ):
        _make_server(directory, ca, ca_key, names, now)
    return TlsFiles(server_pem, directory / "server.key", ca_pem)


def check_given_tls(cert_file: str, key_file: str) -> TlsFiles:
    """A hospital certificate from the launch file: both files must be readable."""
    cert, key = Path(cert_file), Path(key_file)
    for path in (cert, key):
        if not path.is_file():
            raise TlsError(f"{path}: no such file (cert_file / key_file in the launch file)")
    _load_cert(cert)
    return TlsFiles(cert, key, None)

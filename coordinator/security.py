"""The coordinator's secrets and transport security: TLS material, the operator token, request checks.

- TLS (`tls = true`): gRPC and the dashboard are served with a certificate and key from
  `tls_cert_path`/`tls_key_path`; when neither file exists a self-signed certificate is made on
  first start (valid for the listen hosts, localhost and 127.0.0.1) and kept, so that clients
  pin the same certificate across restarts (`rankswarm status --tls-cert FILE`).
- The operator token (`operator_token_path`, made on first start, mode 0600) authorises the
  write RPCs (admitting and banning peers) and, with `dashboard_token = true`, the dashboard:
  `authorization: Bearer <token>` (gRPC metadata or HTTP header). Compared in constant time.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import logging
import os
import secrets
import socket
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
CERT_DAYS = 3650


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def load_or_create_token(path: str | os.PathLike) -> str:
    """The operator token stored at `path`, made (random, mode 0600) if the file does not exist."""
    path = Path(path)
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(TOKEN_BYTES).encode() + b"\n")
        log.info("created operator token %s", path)
    token = path.read_text().strip()
    if len(token) < 16:
        raise ValueError(f"operator token {path} is shorter than 16 characters; delete it to make a new one")
    return token


def token_matches(presented: str | None, token: str) -> bool:
    """`presented` is `Bearer <token>` (or the bare token) for this token; constant time."""
    if not presented:
        return False
    value = presented[7:] if presented.lower().startswith("bearer ") else presented
    return hmac.compare_digest(value.strip().encode(), token.encode())


def _subject_names(hosts: list[str]) -> list:
    from cryptography import x509

    names, seen = [], set()
    for host in [*hosts, "localhost", "127.0.0.1", "::1", socket.gethostname()]:
        if not host or host in seen or host in ("0.0.0.0", "::"):
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def load_or_create_certificate(cert_path: str | os.PathLike, key_path: str | os.PathLike,
                               hosts: list[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM): read from the files, or a self-signed pair made and kept there."""
    cert_path, key_path = Path(cert_path), Path(key_path)
    if cert_path.exists() != key_path.exists():
        raise ValueError(f"TLS needs both {cert_path} and {key_path}; one is missing (delete the other to "
                         f"make a new self-signed pair)")
    if not cert_path.exists():
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rankswarm coordinator")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
                .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        log.info("created a self-signed TLS certificate %s (clients pass it with --tls-cert)", cert_path)
    return cert_path.read_bytes(), key_path.read_bytes()


def ssl_context(cert_path: str | os.PathLike, key_path: str | os.PathLike):
    """A server-side TLS context for the dashboard's HTTP server."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context

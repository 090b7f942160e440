"""A local certificate authority and one certificate per component, for `rtvol up --tls`.

Every certificate names 127.0.0.1, ::1 and localhost and serves as both server and client
certificate (mTLS); keys are ECDSA P-256, written 0600; valid for 30 days (a local stack).
Production certificates come from cert-manager or your own CA (docs/DEPLOY.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

COMPONENTS = ("feature", "model", "gateway", "redis", "client")  # client: rtvol feed, loadtest, status
VALID = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rtvol local"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def _cert(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
          signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        signing = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
        return builder.add_extension(signing, critical=True)
    return (builder
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False))


def local_pki(folder: Path) -> tuple[str, dict[str, Pair]]:
    """Write ca.pem and <component>.pem/.key for each of COMPONENTS under ``folder``; returns
    (CA path, pairs by component). The CA key is not kept: nothing more can be signed later."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("rtvol local CA")
    ca = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, True).sign(ca_key, hashes.SHA256())
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pairs = {}
    for component in COMPONENTS:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(_name(f"rtvol {component}"), ca_name, key.public_key(), ca_key, False).sign(
            ca_key, hashes.SHA256())
        pair = Pair(str(folder / f"{component}.pem"), str(folder / f"{component}.key"))
        Path(pair.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(Path(pair.key), key)
        pairs[component] = pair
    return str(ca_path), pairs

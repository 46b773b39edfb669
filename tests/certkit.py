"""Test certificates (cryptography): a task force CA, server certificates for 127.0.0.1 and
localhost, client certificates, and a second CA that nobody trusts - written as PEM files in
a test's tmp directory. Keys are unencrypted and 0600, as an operator's would be."""

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

ONE_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CA:
    name: str
    cert: Path
    key: Path
    _certificate: x509.Certificate
    _private: ec.EllipticCurvePrivateKey


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    os.chmod(path, 0o600)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path, name: str = "tfshare-test-ca") -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + 30 * ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key, None)
    return CA(name, cert_path, key_path, cert, key)


def issue(
    ca: CA,
    directory: Path,
    name: str,
    *,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    server: bool = True,
    client: bool = True,
    passphrase: bytes | None = None,
) -> CertFiles:
    """A leaf certificate signed by ``ca`` for ``hosts`` (IP addresses and DNS names in the
    SAN), usable as a TLS server and/or client (nats-server's routes and leaf links are
    both at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca._certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + 30 * ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca._private.public_key()),
            critical=False,
        )
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca._private, hashes.SHA256())
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(files.key, key, passphrase)
    return files


@dataclass(frozen=True)
class CertKit:
    """What a TLS test needs: the task force CA, a server certificate, a client
    certificate, and an unrelated CA with its own server certificate."""

    ca: CA
    server: CertFiles
    client: CertFiles
    other_ca: CA
    other_server: CertFiles


def make_certkit(directory: Path) -> CertKit:
    ca = make_ca(directory / "ca", "tf-ca")
    other = make_ca(directory / "other", "stranger-ca")
    return CertKit(
        ca=ca,
        server=issue(ca, directory / "certs", "server"),
        client=issue(ca, directory / "certs", "agency-client", hosts=(), server=False),
        other_ca=other,
        other_server=issue(other, directory / "other", "stranger-server"),
    )

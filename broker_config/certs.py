"""A private certificate authority for the broker's TLS listener (`framewire broker certs`).

Every certificate made here passes strict X.509 verification, which Python 3.13 turns on by
default (`ssl.VERIFY_X509_STRICT`) and framewire's agents ask for on every Python: the CA has
critical basicConstraints (CA:TRUE) and keyUsage (keyCertSign, cRLSign) and a subject key
id; each leaf has critical keyUsage, an extended key usage (serverAuth or clientAuth), its
host names and addresses as subjectAltNames and the CA's authority key id. An
`openssl req -x509` CA has no keyUsage, and Python 3.13 refuses it ("CA cert does not
include key usage extension").

Running it again is safe: an existing CA is kept unless `new_ca` is asked for (a new CA
means every agent needs the new `ca.pem`), and a certificate that is still valid, signed by
the current CA and (for the broker) names the same hosts is kept too.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from framewire.broker_config.passwords import write_private
from framewire.schemas import check_identifier

CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_WITHIN = dt.timedelta(days=30)  # a certificate this close to expiry is issued again
KEY_BITS = 2048  # RSA: digitalSignature + keyEncipherment, understood by every MQTT client
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

Action = Literal["wrote", "kept"]


class CertificateError(ValueError):
    """A host name, client name or existing file that certificates cannot be made from."""


@dataclass(frozen=True)
class CertFile:
    """One file of the folder and what this run did with it."""

    path: Path
    action: Action
    what: str


@dataclass(frozen=True)
class CertFolder:
    """Where the CA, the broker's and the clients' certificates live."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    def client_cert(self, name: str) -> Path:
        return self.root / f"client-{check_identifier(name, 'client name')}.pem"

    def client_key(self, name: str) -> Path:
        return self.root / f"client-{check_identifier(name, 'client name')}.key"


def host_name(host: str) -> x509.GeneralName:
    """`host` as a subjectAltName: an IP address, or a DNS name checked label by label."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise CertificateError(
            f"host {host!r} is neither an IP address nor a DNS name (letters, digits and '-' "
            "in dot-separated labels)"
        )
    return x509.DNSName(host.rstrip(".").lower())


def write_certificates(
    folder: Path,
    hosts: list[str],
    clients: list[str] | None = None,
    *,
    new_ca: bool = False,
    now: dt.datetime | None = None,
) -> list[CertFile]:
    """Make (or keep) the CA, the broker certificate for `hosts` and one client certificate
    per name in `clients`; returns every file with what was done to it."""
    if not hosts:
        raise CertificateError("the broker certificate needs at least one host (--host)")
    names = list(dict.fromkeys(host_name(h) for h in hosts))
    for name in clients or []:
        check_identifier(name, "client name")
    now = now or dt.datetime.now(dt.UTC)
    f = CertFolder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    done: list[CertFile] = []
    ca, ca_key, action = _certificate_authority(f, new_ca=new_ca, now=now)
    done += [CertFile(f.ca_cert, action, "CA certificate"), CertFile(f.ca_key, action, "CA key")]
    leaves: list[tuple[Path, Path, str, list[x509.GeneralName] | None, str]]
    leaves = [(f.broker_cert, f.broker_key, hosts[0], names, "broker")]
    leaves += [(f.client_cert(c), f.client_key(c), c, None, f"client {c}") for c in clients or []]
    for cert_path, key_path, common_name, sans, what in leaves:
        if _still_good(cert_path, key_path, ca, sans, now):
            action = "kept"
            key_path.chmod(0o600)
        else:
            action = "wrote"
            cert, key = _leaf(ca, ca_key, common_name, sans, now)
            write_private(key_path, _key_pem(key))
            _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())
        done += [
            CertFile(cert_path, action, f"{what} certificate"),
            CertFile(key_path, action, f"{what} key"),
        ]
    return done


def _certificate_authority(
    f: CertFolder, *, new_ca: bool, now: dt.datetime
) -> tuple[x509.Certificate, rsa.RSAPrivateKey, Action]:
    if not new_ca and f.ca_cert.exists() and f.ca_key.exists():
        try:
            ca = x509.load_pem_x509_certificate(f.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(f.ca_key.read_bytes(), password=None)
        except ValueError as err:
            raise CertificateError(
                f"cannot read the CA in {f.root} ({err}); make a new one with --new-ca"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CertificateError(f"{f.ca_key} is not an RSA key; make a new CA with --new-ca")
        f.ca_key.chmod(0o600)
        return ca, key, "kept"
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "framewire private CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_private(f.ca_key, _key_pem(key))
    _write_public(f.ca_cert, ca.public_bytes(serialization.Encoding.PEM).decode())
    return ca, key, "wrote"


def _leaf(
    ca: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    common_name: str,
    sans: list[x509.GeneralName] | None,
    now: dt.datetime,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A server certificate when `sans` is given, else a client certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if sans else ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _still_good(
    cert_path: Path,
    key_path: Path,
    ca: x509.Certificate,
    sans: list[x509.GeneralName] | None,
    now: dt.datetime,
) -> bool:
    """An existing certificate is kept if the current CA signed it, it is not about to
    expire and (for the broker) it names exactly the hosts asked for."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - now < RENEW_WITHIN:
        return False
    if sans is None:
        return True
    try:
        found = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(found) == set(sans)


def _key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _write_public(path: Path, text: str) -> None:
    """Certificates are public: readable by all (the broker may run as another user)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)

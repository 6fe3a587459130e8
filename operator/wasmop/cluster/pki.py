"""The cluster's PKI: one CA, serving and client certificates, the service-account keys.

ECDSA P-256 keys keep generation to milliseconds, so a fresh cluster does not wait on
RSA. Every identity Kubernetes derives from a certificate comes from its subject:
CN is the user, O the groups (``system:masters`` for the admin, ``system:nodes`` for
wasm node agents, as the Node authorizer expects).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca"
VALIDITY = dt.timedelta(days=3650)


class PKIError(Exception):
    """The PKI on disk cannot be used (missing pieces are created, broken ones are not)."""


@dataclass(frozen=True)
class Identity:
    """A certificate to issue: file stem, subject and what it may be used for."""

    name: str
    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = True
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = field(default=())


def apiserver_identities(service_ip: str) -> list[Identity]:
    """Certificates the control plane itself needs."""
    return [
        Identity(
            "apiserver",
            "kube-apiserver",
            server=True,
            client=False,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=("127.0.0.1", service_ip),
        ),
        Identity("admin", "wasmop-admin", ("system:masters",)),
        Identity("controller-manager", "system:kube-controller-manager"),
        Identity("scheduler", "system:kube-scheduler"),
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    ]


def node_identity(node_name: str) -> Identity:
    """A wasm node agent's client certificate, as the Node authorizer requires."""
    return Identity(f"node-{node_name}", f"system:node:{node_name}", ("system:nodes",))


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(data)
    path.chmod(0o600)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc.strerror}") from exc


class PKI:
    """Certificates under ``<state>/pki``, created on first use and reused afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def cert_path(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert_path(CA_NAME)

    @property
    def sa_private_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_public_key(self) -> Path:
        return self.directory / "sa.pub"

    def ensure(self, identities: list[Identity]) -> None:
        """Create what is missing; verify what exists chains to our CA."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = self._ensure_ca()
        for identity in identities:
            self.ensure_identity(identity, ca_key, ca_cert)
        self._ensure_service_account_keys()

    def ensure_identity(
        self,
        identity: Identity,
        ca_key: ec.EllipticCurvePrivateKey | None = None,
        ca_cert: x509.Certificate | None = None,
    ) -> tuple[Path, Path]:
        """Issue ``identity`` unless a valid certificate for it exists; return (cert, key)."""
        if ca_key is None or ca_cert is None:
            ca_key, ca_cert = self._load_ca()
        cert_path, key_path = self.cert_path(identity.name), self.key_path(identity.name)
        if cert_path.exists() and key_path.exists():
            cert = self._load_cert(cert_path)
            try:
                cert.verify_directly_issued_by(ca_cert)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise PKIError(f"{cert_path} was not issued by this cluster's CA") from exc
            return cert_path, key_path
        key = _new_key()
        cert = self._sign(identity, key.public_key(), ca_key, ca_cert)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def _ensure_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self.ca_cert.exists() or self.key_path(CA_NAME).exists():
            return self._load_ca()
        key = _new_key()
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"wasmop-cluster-ca-{os.urandom(4).hex()}")]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.key_path(CA_NAME), key)
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    def _load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        cert = self._load_cert(self.ca_cert)
        try:
            key = serialization.load_pem_private_key(_read(self.key_path(CA_NAME)), None)
        except ValueError as exc:
            raise PKIError(f"{self.key_path(CA_NAME)} is not a PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"{self.key_path(CA_NAME)} is not an ECDSA key")
        return key, cert

    @staticmethod
    def _load_cert(path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(_read(path))
        except ValueError as exc:
            raise PKIError(f"{path} is not a PEM certificate") from exc

    @staticmethod
    def _sign(
        identity: Identity,
        public_key: ec.EllipticCurvePublicKey,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
    ) -> x509.Certificate:
        attributes = [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in identity.organizations
        ]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name))
        usages = []
        if identity.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if identity.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in identity.dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in identity.ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def _ensure_service_account_keys(self) -> None:
        if self.sa_private_key.exists() and self.sa_public_key.exists():
            try:
                serialization.load_pem_private_key(_read(self.sa_private_key), None)
            except ValueError as exc:
                raise PKIError(f"{self.sa_private_key} is not a PEM private key") from exc
            return
        key = _new_key()
        _write_key(self.sa_private_key, key)
        self.sa_public_key.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

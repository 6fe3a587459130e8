"""The cluster's PKI: three CAs, serving and client certificates, the service-account keys.

As in a kubeadm cluster there are three certificate authorities, so that a certificate
is good for one boundary only: the cluster CA (API clients, serving certificates, node
agents), the etcd CA (etcd's serving and peer certificates and its only clients, the API
server and the health probe: a node's or the admin's certificate cannot open etcd), and
the front-proxy CA (the aggregation layer's proxy client, which extension API servers
such as metrics-server trust to assert the user's identity in request headers).

ECDSA P-256 keys keep generation to milliseconds, so a fresh cluster does not wait on
RSA. Every identity Kubernetes derives from a certificate comes from its subject:
CN is the user, O the groups (``system:masters`` for the admin only, ``system:nodes`` for
wasm node agents, as the Node authorizer expects). Private keys are created 0600.
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

from wasmop.private_file import write_private

CA_NAME = "ca"
ETCD_CA_NAME = "etcd-ca"
FRONT_PROXY_CA_NAME = "front-proxy-ca"
# The user the API server presents to kubelets; bound to system:kubelet-api-admin.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
FRONT_PROXY_CLIENT_USER = "front-proxy-client"
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
    issuer: str = CA_NAME


def control_plane_identities(service_ip: str) -> list[Identity]:
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
        # Not system:masters: what the API server may do on a kubelet is what
        # system:kubelet-api-admin grants, no more (bound at bootstrap, as kubeadm does).
        Identity("apiserver-kubelet-client", KUBELET_CLIENT_USER),
        # etcd's own CA: no certificate of the cluster CA (an admin's, a node's) opens etcd.
        # Client use too, as in kubeadm: etcd's gRPC gateway dials etcd's own TLS
        # listener with the server certificate.
        Identity(
            "etcd-server",
            "wasmop-etcd",
            server=True,
            issuer=ETCD_CA_NAME,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
        ),
        Identity(
            "etcd-peer",
            "wasmop-etcd-peer",
            server=True,
            issuer=ETCD_CA_NAME,
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
        ),
        Identity("apiserver-etcd-client", "kube-apiserver-etcd-client", issuer=ETCD_CA_NAME),
        Identity("etcd-healthcheck-client", "kube-etcd-healthcheck-client", issuer=ETCD_CA_NAME),
        Identity("front-proxy-client", FRONT_PROXY_CLIENT_USER, issuer=FRONT_PROXY_CA_NAME),
    ]


def node_identity(node_name: str) -> Identity:
    """A wasm node agent's client certificate, as the Node authorizer requires."""
    return Identity(f"node-{node_name}", f"system:node:{node_name}", ("system:nodes",))


def node_serving_identity(node_name: str, address: str) -> Identity:
    """A node agent's kubelet serving certificate: the API server and metrics-server dial
    the node's InternalIP and verify it against the cluster CA, so it carries that IP."""
    return Identity(
        f"node-{node_name}-serving",
        f"system:node:{node_name}",
        ("system:nodes",),
        server=True,
        client=False,
        dns_names=(node_name,),
        ip_addresses=(address,),
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc.strerror}") from exc


def _subject(identity: Identity) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in identity.organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, identity.common_name))
    return x509.Name(attributes)


def _usages(identity: Identity) -> list[x509.ObjectIdentifier]:
    usages = []
    if identity.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if identity.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return usages


def _sans(identity: Identity) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in identity.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in identity.ip_addresses]
    return sans


def _describes(cert: x509.Certificate, identity: Identity) -> bool:
    """True if ``cert`` grants exactly what ``identity`` asks for (subject, SANs, usages).

    A certificate from an older wasmop (say, a kubelet client still in system:masters)
    is then re-issued instead of silently keeping its wider rights.
    """
    try:
        sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    return (
        cert.subject == _subject(identity)
        and set(sans) == set(_sans(identity))
        and usages == _usages(identity)
    )


class PKI:
    """Certificates under ``<state>/pki``, created on first use and reused afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cas: dict[str, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]] = {}

    def cert_path(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert_path(CA_NAME)

    @property
    def etcd_ca_cert(self) -> Path:
        return self.cert_path(ETCD_CA_NAME)

    @property
    def front_proxy_ca_cert(self) -> Path:
        return self.cert_path(FRONT_PROXY_CA_NAME)

    @property
    def sa_private_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_public_key(self) -> Path:
        return self.directory / "sa.pub"

    def pair(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of an issued identity."""
        return self.cert_path(name), self.key_path(name)

    def ensure(self, identities: list[Identity]) -> None:
        """Create what is missing; verify what exists chains to our CAs."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._cas.clear()  # read the CAs from disk again: verify what is there now
        for ca in dict.fromkeys([CA_NAME, *(i.issuer for i in identities)]):
            self._ensure_ca(ca)
        for identity in identities:
            self.ensure_identity(identity)
        self._ensure_service_account_keys()

    def ensure_identity(self, identity: Identity) -> tuple[Path, Path]:
        """Issue ``identity`` unless a valid certificate for it exists; return (cert, key)."""
        ca_key, ca_cert = self._load_ca(identity.issuer)
        cert_path, key_path = self.pair(identity.name)
        if cert_path.exists() and key_path.exists():
            cert = self._load_cert(cert_path)
            try:
                cert.verify_directly_issued_by(ca_cert)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise PKIError(
                    f"{cert_path} was not issued by this cluster's CA ({identity.issuer}.crt)"
                ) from exc
            if _describes(cert, identity):
                return cert_path, key_path
        key = _new_key()
        cert = self._sign(identity, key.public_key(), ca_key, ca_cert)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def _ensure_ca(self, name: str) -> None:
        if self.cert_path(name).exists() or self.key_path(name).exists():
            self._load_ca(name)
            return
        key = _new_key()
        subject = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, f"wasmop-{name}-{os.urandom(4).hex()}")]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
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
        _write_key(self.key_path(name), key)
        self.cert_path(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._cas[name] = (key, cert)

    def _load_ca(self, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if name in self._cas:
            return self._cas[name]
        cert = self._load_cert(self.cert_path(name))
        try:
            key = serialization.load_pem_private_key(_read(self.key_path(name)), None)
        except ValueError as exc:
            raise PKIError(f"{self.key_path(name)} is not a PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"{self.key_path(name)} is not an ECDSA key")
        self._cas[name] = (key, cert)
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
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_subject(identity))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(_usages(identity)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        sans = _sans(identity)
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

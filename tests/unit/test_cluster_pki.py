"""PKI: identities Kubernetes derives from certificates, and corrupt state detection."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from wasmop.cluster.pki import (
    ETCD_CA_NAME,
    FRONT_PROXY_CA_NAME,
    PKI,
    Identity,
    PKIError,
    control_plane_identities,
    node_identity,
)


def subject(cert_path: Path) -> tuple[str, list[str]]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), [str(o) for o in orgs]


def test_control_plane_identities(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure(control_plane_identities("10.96.0.1"))
    assert subject(pki.cert_path("admin")) == ("wasmop-admin", ["system:masters"])
    assert subject(pki.cert_path("scheduler"))[0] == "system:kube-scheduler"
    assert subject(pki.cert_path("controller-manager"))[0] == "system:kube-controller-manager"
    serving = x509.load_pem_x509_certificate(pki.cert_path("apiserver").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.96.0.1",
    }
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert (pki.key_path("ca").stat().st_mode & 0o777) == 0o600
    assert pki.sa_public_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_node_identity_matches_node_authorizer(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure([])
    cert, _ = pki.ensure_identity(node_identity("wasm-node-1"))
    assert subject(cert) == ("system:node:wasm-node-1", ["system:nodes"])


def test_existing_certificates_are_reused(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure(control_plane_identities("10.96.0.1"))
    before = pki.cert_path("admin").read_bytes()
    pki.ensure(control_plane_identities("10.96.0.1"))
    assert pki.cert_path("admin").read_bytes() == before


def test_corrupt_ca_is_reported_not_replaced(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure([])
    pki.ca_cert.write_text("garbage")
    with pytest.raises(PKIError, match=r"ca\.crt is not a PEM certificate"):
        pki.ensure(control_plane_identities("10.96.0.1"))
    assert pki.ca_cert.read_text() == "garbage"


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    first, second = PKI(tmp_path / "a"), PKI(tmp_path / "b")
    first.ensure([node_identity("n1")])
    second.ensure([])
    (tmp_path / "b" / "node-n1.crt").write_bytes(first.cert_path("node-n1").read_bytes())
    (tmp_path / "b" / "node-n1.key").write_bytes(first.key_path("node-n1").read_bytes())
    with pytest.raises(PKIError, match=r"not issued by this cluster's CA"):
        second.ensure_identity(node_identity("n1"))


def issuer_verifies(pki: PKI, ca: str, name: str) -> bool:
    ca_cert = x509.load_pem_x509_certificate(pki.cert_path(ca).read_bytes())
    cert = x509.load_pem_x509_certificate(pki.cert_path(name).read_bytes())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, InvalidSignature):
        return False
    return True


def test_kubelet_client_is_not_a_cluster_admin(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure(control_plane_identities("10.96.0.1"))
    assert subject(pki.cert_path("apiserver-kubelet-client")) == (
        "kube-apiserver-kubelet-client",
        [],
    )
    masters = [path.stem for path in tmp_path.glob("*.crt") if "system:masters" in subject(path)[1]]
    assert masters == ["admin"]


def test_etcd_has_its_own_ca(tmp_path: Path) -> None:
    """Only etcd-CA certificates open etcd: the admin's or a node's cannot."""
    pki = PKI(tmp_path)
    pki.ensure([*control_plane_identities("10.96.0.1"), node_identity("n1")])
    for name in ("etcd-server", "etcd-peer", "apiserver-etcd-client", "etcd-healthcheck-client"):
        assert issuer_verifies(pki, ETCD_CA_NAME, name), name
        assert not issuer_verifies(pki, "ca", name), name
    for name in ("admin", "node-n1", "apiserver-kubelet-client"):
        assert not issuer_verifies(pki, ETCD_CA_NAME, name), name
    server = x509.load_pem_x509_certificate(pki.cert_path("etcd-server").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_front_proxy_client_has_its_own_ca(tmp_path: Path) -> None:
    """An extension API server trusts X-Remote-User only from the front-proxy CA's client."""
    pki = PKI(tmp_path)
    pki.ensure(control_plane_identities("10.96.0.1"))
    assert issuer_verifies(pki, FRONT_PROXY_CA_NAME, "front-proxy-client")
    assert not issuer_verifies(pki, FRONT_PROXY_CA_NAME, "admin")
    assert subject(pki.cert_path("front-proxy-client")) == ("front-proxy-client", [])


def test_an_outdated_certificate_is_reissued_with_its_current_rights(tmp_path: Path) -> None:
    """A state dir from before kept the kubelet client in system:masters; it is re-issued."""
    pki = PKI(tmp_path)
    pki.ensure([])
    old = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
    pki.ensure_identity(old)
    pki.ensure(control_plane_identities("10.96.0.1"))
    assert subject(pki.cert_path("apiserver-kubelet-client"))[1] == []

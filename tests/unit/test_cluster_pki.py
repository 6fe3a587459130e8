"""PKI: identities Kubernetes derives from certificates, and corrupt state detection."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from wasmop.cluster.pki import PKI, PKIError, apiserver_identities, node_identity


def subject(cert_path: Path) -> tuple[str, list[str]]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), [str(o) for o in orgs]


def test_control_plane_identities(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure(apiserver_identities("10.96.0.1"))
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
    pki.ensure(apiserver_identities("10.96.0.1"))
    before = pki.cert_path("admin").read_bytes()
    pki.ensure(apiserver_identities("10.96.0.1"))
    assert pki.cert_path("admin").read_bytes() == before


def test_corrupt_ca_is_reported_not_replaced(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure([])
    pki.ca_cert.write_text("garbage")
    with pytest.raises(PKIError, match=r"ca\.crt is not a PEM certificate"):
        pki.ensure(apiserver_identities("10.96.0.1"))
    assert pki.ca_cert.read_text() == "garbage"


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    first, second = PKI(tmp_path / "a"), PKI(tmp_path / "b")
    first.ensure([node_identity("n1")])
    second.ensure([])
    (tmp_path / "b" / "node-n1.crt").write_bytes(first.cert_path("node-n1").read_bytes())
    (tmp_path / "b" / "node-n1.key").write_bytes(first.key_path("node-n1").read_bytes())
    with pytest.raises(PKIError, match=r"not issued by this cluster's CA"):
        second.ensure_identity(node_identity("n1"))

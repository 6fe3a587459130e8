"""Kubeconfigs with inline credentials (``*-data``), as kind, k3s and cloud clusters write.

Python's ssl cannot load a client certificate from memory, so the key has to touch a file
while an SSL context is built; nothing of it may stay behind afterwards.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from pathlib import Path

import pytest
import yaml
from wasmop.cluster.pki import PKI, Identity
from wasmop.kube import KubeConfig


def inline_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig carrying a real CA, client certificate and key inline."""
    pki = PKI(tmp_path / "pki")
    pki.ensure([Identity("user", "someone")])

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode("ascii")

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:6443",
                    "certificate-authority-data": data(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": data(pki.cert_path("user")),
                    "client-key-data": data(pki.key_path("user")),
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_inline_keys_leave_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = inline_kubeconfig(tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = KubeConfig.from_file(kubeconfig)
    context = config.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    assert len(context.get_ca_certs()) == 1  # the inline CA, and only it
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert list(scratch.iterdir()) == []  # the key was written for load_cert_chain only
    assert (config.ca_file, config.cert_file, config.key_file) == (None, None, None)
    assert "PRIVATE KEY" not in repr(config)


def test_inline_data_overrides_a_file_named_beside_it(tmp_path: Path) -> None:
    """As in client-go: certificate-authority-data wins over certificate-authority."""
    kubeconfig = inline_kubeconfig(tmp_path)
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["certificate-authority"] = "missing-ca.crt"
    kubeconfig.write_text(yaml.safe_dump(doc))
    config = KubeConfig.from_file(kubeconfig)
    assert config.ca_file is None
    assert len(config.ssl_context().get_ca_certs()) == 1  # type: ignore[union-attr]

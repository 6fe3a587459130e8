"""The EncryptionConfiguration for Secrets: a fresh 256-bit key, 0600, kept across restarts."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml
from wasmop.cluster import encryption
from wasmop.cluster.pki import PKIError


def key_of(path: Path) -> bytes:
    config = yaml.safe_load(path.read_text())
    [resource] = config["resources"]
    assert resource["resources"] == ["secrets"]
    [provider] = resource["providers"]  # no identity fallback: nothing is stored in clear
    [key] = provider["secretbox"]["keys"]
    return base64.b64decode(key["secret"])


def test_created_with_a_random_key_and_owner_only(tmp_path: Path) -> None:
    first = encryption.ensure(tmp_path / "a.yaml")
    second = encryption.ensure(tmp_path / "b.yaml")
    assert len(key_of(first)) == 32
    assert key_of(first) != key_of(second)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert encryption.CIPHERTEXT_PREFIX == b"k8s:enc:secretbox:v1:key1:"


def test_existing_key_is_kept(tmp_path: Path) -> None:
    path = encryption.ensure(tmp_path / "enc.yaml")
    key = key_of(path)
    encryption.ensure(path)
    assert key_of(path) == key


def test_a_broken_config_is_reported_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "enc.yaml"
    path.write_text("resources: [{providers: [{secretbox: {keys: [{secret: c2hvcnQ=}]}}]}]")
    with pytest.raises(PKIError, match=r"not a usable encryption config \(key is not 32 bytes"):
        encryption.ensure(path)
    assert "c2hvcnQ=" in path.read_text()

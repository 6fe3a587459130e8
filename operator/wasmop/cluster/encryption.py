"""Encryption at rest for Secrets: the API server's EncryptionConfiguration and its key.

The API server encrypts each Secret with ``secretbox`` (XSalsa20 + Poly1305, the
provider upstream recommends over ``aescbc``) before it writes it to etcd, so the etcd
data directory, a snapshot or an etcd client holds only ciphertext, stored as
``k8s:enc:secretbox:v1:<key name>:…``. The configuration carries the key itself, so it
lives in the PKI directory and is created 0600. There is deliberately no ``identity``
provider: nothing in a cluster this module created was ever stored in plaintext.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml

from wasmop.cluster.pki import PKIError
from wasmop.private_file import write_private

PROVIDER = "secretbox"
KEY_NAME = "key1"
KEY_BYTES = 32  # secretbox keys are 256 bits
# What every Secret's value in etcd starts with.
CIPHERTEXT_PREFIX = f"k8s:enc:{PROVIDER}:v1:{KEY_NAME}:".encode()


class EncryptionConfigError(PKIError):
    """The configuration on disk exists but is not one this module can use."""


def render(key: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {
                        PROVIDER: {
                            "keys": [{"name": KEY_NAME, "secret": base64.b64encode(key).decode()}]
                        }
                    }
                ],
            }
        ],
    }


def ensure(path: Path) -> Path:
    """Create the configuration with a fresh random key unless it exists; return its path.

    An existing file is kept (its key decrypts every Secret already stored) after a
    check that it still names our provider and key.
    """
    if path.exists():
        try:
            config = yaml.safe_load(path.read_text())
            provider = config["resources"][0]["providers"][0][PROVIDER]["keys"][0]
            if len(base64.b64decode(provider["secret"], validate=True)) != KEY_BYTES:
                raise ValueError("key is not 32 bytes")
        except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError) as exc:
            raise EncryptionConfigError(
                f"{path} is not a usable encryption config ({exc})"
            ) from exc
        return path
    write_private(path, yaml.safe_dump(render(os.urandom(KEY_BYTES)), sort_keys=False))
    return path

"""A node compiles only the module its Pod pins: the digest the operator validated."""

from __future__ import annotations

import gzip
import hashlib

import pytest
from wasmop.node.function_loader import check_pinned_digest
from wasmop.node.podspec import PodSpecError
from wasmop.runtime import ModuleTooLarge, RuntimeConfig

MODULE = b"\0asm\1\0\0\0"
CONFIG = RuntimeConfig()


def test_the_pinned_module_passes_plain_or_gzipped() -> None:
    pin = hashlib.sha256(MODULE).hexdigest()
    check_pinned_digest(MODULE, pin, CONFIG)
    check_pinned_digest(gzip.compress(MODULE), pin, CONFIG)
    check_pinned_digest(MODULE, pin.upper(), CONFIG)
    check_pinned_digest(MODULE, None, CONFIG)  # a Pod not made by the operator pins nothing


def test_other_bytes_under_the_module_s_name_are_refused() -> None:
    """Say a tenant put other bytes under the module ConfigMap's predictable name."""
    pin = hashlib.sha256(MODULE).hexdigest()
    other = MODULE + b"\0"
    for data in (other, gzip.compress(other)):
        with pytest.raises(PodSpecError) as refused:
            check_pinned_digest(data, pin, CONFIG)
        assert refused.value.reason == "ModuleDigestMismatch"


def test_the_check_decodes_under_the_runtime_s_caps() -> None:
    """A gzip bomb under the module's name is refused by the caps, not inflated to hash."""
    bomb = gzip.compress(MODULE + bytes(8 * 2**20))
    small = RuntimeConfig(max_module_bytes=2**20)
    with pytest.raises(ModuleTooLarge):
        check_pinned_digest(bomb, "0" * 64, small)

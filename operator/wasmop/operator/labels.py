"""Kubernetes label syntax, as the API server checks it on a Pod's nodeSelector.

A WasmFunction's placement and a WasmRuntime's node selector end up in the Deployment's
Pod template; the operator checks them here first, so a bad key becomes an ``Invalid``
status naming the field instead of a Deployment the API server refuses on every retry.
The CRDs carry the same rules as CEL, for admission.
"""

from __future__ import annotations

import re

from wasmop.wellknown import DOMAIN

__all__ = ["label_key_problem", "label_value_problem", "reserved_label"]

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_NAME = 63
MAX_PREFIX = 253


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key (``[prefix/]name``), or None when it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "a label key's prefix before '/' must not be empty"
    if "/" in prefix:
        return "a label key has at most one '/'"
    if slash and (len(prefix) > MAX_PREFIX or not _DNS_SUBDOMAIN.match(prefix)):
        return (
            f"a label key's prefix must be a DNS subdomain: at most {MAX_PREFIX} lowercase "
            "letters, digits, '-' and '.'"
        )
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        return (
            f"a label key's name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a label value, or None (the empty value is one)."""
    if value == "" or (len(value) <= MAX_NAME and _NAME.match(value)):
        return None
    return (
        f"a label value must be at most {MAX_NAME} letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit"
    )


def reserved_label(key: str) -> bool:
    """Keys under the platform's own domain: the runtime sets them, never a function."""
    return key.startswith(f"{DOMAIN}/")

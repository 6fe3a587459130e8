"""Kubernetes resource quantities ("250m", "500Mi", "1G", 2) as exact numbers.

The operator compares limits against runtime maxima and feeds CPU and memory figures to the
HPA algorithm, so it needs the API server's quantity grammar without a client library.
Values are parsed into :class:`~decimal.Decimal` so "0.1" cores and "100m" compare equal.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = [
    "QuantityError",
    "cpu_millis",
    "format_bytes",
    "format_cpu",
    "memory_bytes",
    "parse_quantity",
]

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Same grammar as k8s.io/apimachinery resource.Quantity: a signed decimal number followed by
# a binary suffix, a decimal suffix or a decimal exponent.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)


class QuantityError(ValueError):
    """A value is not a valid Kubernetes quantity."""


def parse_quantity(value: str | int | float | Decimal) -> Decimal:
    """Parse a quantity into its exact value in base units (cores, bytes, ...)."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value!r} is not a finite quantity")
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"{value!r} is not a quantity")
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise QuantityError(f"{value!r} is not a valid quantity (examples: 250m, 500Mi, 1G, 2)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex only admits decimals
        raise QuantityError(f"{value!r} is not a valid quantity") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number.scaleb(int(suffix[1:]))


def cpu_millis(value: str | int | float | Decimal) -> int:
    """CPU in millicores, rounded up like the API server rounds sub-milli requests."""
    return math.ceil(parse_quantity(value) * 1000)


def memory_bytes(value: str | int | float | Decimal) -> int:
    """Memory (or any byte size) in bytes, rounded up to a whole byte."""
    return math.ceil(parse_quantity(value))


def format_bytes(n: int | float) -> str:
    """Shortest readable binary quantity for a byte count, e.g. 524288000 -> "500Mi"."""
    n = math.ceil(n)
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    if n >= _BINARY["Mi"]:
        return f"{n / _BINARY['Mi']:.1f}Mi"
    if n >= _BINARY["Ki"]:
        return f"{n / _BINARY['Ki']:.1f}Ki"
    return str(n)


def format_cpu(millis: int | float) -> str:
    """Millicores as a quantity: whole cores as "2", the rest as "250m"."""
    millis = math.ceil(millis)
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"

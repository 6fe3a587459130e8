"""Kubernetes quantity parsing, as the API server reads "250m", "500Mi", "1G", 2."""

from __future__ import annotations

from decimal import Decimal

import pytest
from wasmop.operator.quantity import (
    QuantityError,
    cpu_millis,
    format_bytes,
    format_cpu,
    memory_bytes,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250m", Decimal("0.25")),
        ("0.5", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        ("500Mi", Decimal(500 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("1e3", Decimal(1000)),
        ("1.5E2", Decimal(150)),
        ("100n", Decimal("1e-7")),
        (".5", Decimal("0.5")),
        ("+1M", Decimal(10**6)),
    ],
)
def test_parse_quantity(text: str | int, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "1KiB", "1mi", "1.2.3", "Mi", True, None, float("inf")])
def test_parse_quantity_rejects_garbage(bad: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(bad)  # type: ignore[arg-type]


def test_cpu_and_memory_units() -> None:
    assert cpu_millis("250m") == 250
    assert cpu_millis("0.1") == cpu_millis("100m") == 100
    assert cpu_millis(2) == 2000
    # Sub-millicore requests round up, like the API server does.
    assert cpu_millis("100u") == 1
    assert memory_bytes("500Mi") == 524_288_000
    assert memory_bytes("1G") == 1_000_000_000
    assert memory_bytes(1024) == 1024
    assert memory_bytes("0.5Ki") == 512


def test_formatting_round_trips() -> None:
    assert format_bytes(524_288_000) == "500Mi"
    assert format_bytes(2**30) == "1Gi"
    assert format_bytes(1536) == "1.5Ki"
    assert format_bytes(100) == "100"
    assert memory_bytes(format_bytes(64 * 2**20)) == 64 * 2**20
    assert format_cpu(250) == "250m"
    assert format_cpu(2000) == "2"
    assert cpu_millis(format_cpu(1500)) == 1500

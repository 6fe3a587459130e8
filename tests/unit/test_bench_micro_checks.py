"""The targets block and exit code every micro-benchmark shares."""

from __future__ import annotations

import pytest
from wasmop.bench.micro.checks import Check, measure_and_report, print_checks


def test_a_check_holds_at_its_bound_and_not_beyond() -> None:
    assert Check("x", 2.0, 2.0, "s").holds
    assert not Check("x", 2.01, 2.0, "s").holds
    assert not Check("all Ready", 1.0, 2.0, "s", holds_also=False).holds
    assert Check("x", 1.0, 4.0, "s").ratio == 0.25


def test_print_checks_says_missed_and_returns_false(capsys: pytest.CaptureFixture[str]) -> None:
    assert not print_checks([Check("a", 1.0, 2.0, "ms"), Check("b", 3.0, 2.0, "ms")])
    out = capsys.readouterr().out
    assert "a: 1.00 ms <= 2 ms: met" in out
    assert "b: 3.00 ms <= 2 ms: MISSED (ratio 1.50)" in out


@pytest.mark.parametrize(("holds", "code"), [(True, 0), (False, 1)])
def test_measure_and_report_exit_code_follows_the_targets(
    holds: bool, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[int] = []

    async def measurement() -> int:
        return 7

    def report(result: int) -> bool:
        seen.append(result)
        return holds

    assert measure_and_report(measurement(), report) == code
    assert seen == [7]
    assert "(measured in" in capsys.readouterr().out

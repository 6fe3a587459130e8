"""What every command line shares: one-line errors, also for a missing extra."""

from __future__ import annotations

import subprocess
import sys

from wasmop.console import extra_providing


def test_extra_providing_reads_the_installed_metadata() -> None:
    assert extra_providing("wasmtime") == "runtime"
    assert extra_providing("prometheus_client") == "runtime"
    assert extra_providing("kopf") == "operator"
    assert extra_providing("pandas") == "bench"
    assert extra_providing("kubernetes") == "bench"
    assert extra_providing("aiohttp") is None  # a core dependency
    assert extra_providing("no_such_module") is None


def without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `wasmop argv...` as if ``module`` were not installed."""
    code = (
        "import sys; sys.modules[sys.argv[1]] = None; from wasmop.cli import main; "
        "sys.exit(main(sys.argv[2:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, module, *argv], capture_output=True, text=True, timeout=60
    )


def test_a_command_whose_extra_is_missing_says_which_extra_to_install() -> None:
    result = without("wasmtime", "runtime", "check", "--module", "x.wasm")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "wasmop: error: this command needs wasmtime, not installed: pip install 'wasmop[runtime]'"
    )
    listed = without("wasmtime", "--help")
    assert listed.returncode == 0
    assert "(not installed: needs wasmtime)" in listed.stdout
    assert "run the WasmFunction/WasmRuntime operator" in listed.stdout  # the others stay


def test_a_handler_that_imports_a_missing_extra_fails_in_one_line() -> None:
    result = without("pandas", "experiments", "run", "--plan", "quick")
    assert result.returncode == 1
    expected = "needs pandas, not installed: pip install 'wasmop[bench]'"
    assert result.stderr.strip().endswith(expected)

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


def test_a_host_process_pod_binds_wildcard_addresses_to_loopback(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The system node runs the operator and gateway in the host's network: their
    manifest's 0.0.0.0 must not expose them beyond this machine."""
    from wasmop.console import listen_address
    from wasmop.wellknown import BIND_LOOPBACK_ENV

    monkeypatch.delenv(BIND_LOOPBACK_ENV, raising=False)
    assert listen_address("0.0.0.0") == "0.0.0.0"
    monkeypatch.setenv(BIND_LOOPBACK_ENV, "1")
    assert listen_address("0.0.0.0") == "127.0.0.1"
    assert listen_address("::") == "127.0.0.1"
    assert listen_address("10.0.0.5") == "10.0.0.5"  # an address asked for is kept


def test_the_operator_pod_reads_its_clusters_settings_from_the_environment(
    monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """What the optional ConfigMap wasmop-operator-settings gives the operator's Pod
    (envFrom), and where its gateway is without it: its namespace's Service in a Pod
    (the service-account files in the sandbox of a host-process Pod), else loopback."""
    from wasmop.kube.client import SANDBOX_ENV, SERVICE_ACCOUNT_PATH
    from wasmop.operator.cli import REGISTRY_ALLOW_ENV, default_gateway_url, registry_allow_from_env

    monkeypatch.setenv(REGISTRY_ALLOW_ENV, "127.0.0.1:5000, registry.local ,")
    assert registry_allow_from_env() == ("127.0.0.1:5000", "registry.local")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert default_gateway_url() == "http://127.0.0.1:8000"
    account = tmp_path / SERVICE_ACCOUNT_PATH
    account.mkdir(parents=True)
    (account / "namespace").write_text("wasm-operators\n")
    monkeypatch.setenv(SANDBOX_ENV, str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    assert default_gateway_url() == "http://wasmop-gateway.wasm-operators.svc:8000"

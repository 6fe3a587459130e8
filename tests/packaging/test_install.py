"""The package as the images install it: `pip install .[operator]` and `.[runtime]`.

Builds the package from a copy of what the images copy (pyproject.toml, README.md,
operator/) into fresh virtualenvs, so nothing of this checkout or its editable install
can help. Takes about 25 s with pip's cache warm. No cluster is needed: `--dry-run` lists
what `wasmop operator install` would apply.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wasmop.cluster.layout import repo_root
from wasmop.operator.install import INSTALL_ORDER
from wasmop.runtime.workloads import ensure_built

pytestmark = pytest.mark.timeout(600)


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=540, check=check
    )


def install(work: Path, extra: str) -> Path:
    """A fresh virtualenv with ``wasmop[extra]`` installed from a copy of the sources."""
    source = work / "source"
    source.mkdir()
    root = repo_root()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(
        root / "operator",
        source / "operator",
        symlinks=True,  # as `COPY operator ./operator` keeps wasmop/manifests a link
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    result = run(venv / "bin" / "pip", "install", "--quiet", f"{source}[{extra}]", check=False)
    assert result.returncode == 0, result.stderr
    shutil.rmtree(source)  # the installed package must not need its source any more
    return venv


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(tmp_path_factory.mktemp("operator"), "operator")


def test_the_runtime_extra_serves_functions_and_nothing_more(tmp_path: Path) -> None:
    venv = install(tmp_path, "runtime")
    module = ensure_built()["hello"].wasm_path
    python = venv / "bin" / "python"
    check = run(python, "-m", "wasmop.runtime", "check", "--module", module, check=False)
    assert check.returncode == 0, check.stderr
    invoke = run(python, "-m", "wasmop.runtime", "invoke", "--module", module, check=False)
    assert invoke.returncode == 0, invoke.stderr
    assert invoke.stdout.startswith("Hello, world!")
    for not_needed in ("kopf", "kubernetes", "pandas", "cryptography"):
        assert run(python, "-c", f"import {not_needed}", check=False).returncode != 0


def test_dry_run_lists_every_manifest_from_the_installed_package(operator_venv: Path) -> None:
    result = run(operator_venv / "bin" / "wasmop", "operator", "install", "--dry-run")
    listed = [Path(line) for line in result.stdout.splitlines() if not line.startswith(" ")][:-1]
    site = next((operator_venv / "lib").glob("python3*/site-packages"))
    assert listed == [site / "wasmop" / "manifests" / name for name in INSTALL_ORDER]
    config = repo_root() / "operator" / "config"
    for name in INSTALL_ORDER:  # the same bytes as the one copy in the repository
        assert (site / "wasmop" / "manifests" / name).read_bytes() == (config / name).read_bytes()
    assert "  CustomResourceDefinition wasmfunctions.operators.bits-dissertation.io" in (
        result.stdout.splitlines()
    )
    assert result.stdout.splitlines()[-1] == "would apply 14 objects from 7 manifests (dry run)"


def test_the_operator_extra_leaves_the_harness_out(operator_venv: Path) -> None:
    python = operator_venv / "bin" / "python"
    assert run(python, "-c", "import kopf, wasmtime, aiohttp, yaml").returncode == 0
    for harness_only in ("kubernetes", "pandas", "locust", "papermill"):
        probe = run(python, "-c", f"import {harness_only}", check=False)
        assert probe.returncode != 0, f"{harness_only} was installed with wasmop[operator]"


def test_without_manifests_install_fails_loudly(operator_venv: Path) -> None:
    rbac = next((operator_venv / "lib").glob("python3*/site-packages")) / "wasmop/manifests/rbac"
    rbac.rename(rbac.with_name("rbac-hidden"))
    try:
        for argv in (["--dry-run"], ["--kubeconfig", "/nonexistent"]):
            wasmop = operator_venv / "bin" / "wasmop"
            result = run(wasmop, "operator", "install", *argv, check=False)
            assert result.returncode == 1
            assert "rbac/gateway.yaml, rbac/operator.yaml" in result.stderr
            assert "installed without its manifests" in result.stderr
            assert "applied" not in result.stdout
    finally:
        rbac.with_name("rbac-hidden").rename(rbac)

"""The lab's command line: loopback only, a token, root allowed only as root, nothing
fetched from the internet, kernels encrypted."""

from __future__ import annotations

from pathlib import Path

import pytest
from wasmop.bench import lab


def test_the_lab_binds_loopback_with_a_token_and_never_moves_port() -> None:
    settings = lab.LabSettings("/venv/bin/python", Path("/nb"), port=8899, token="abc")
    command = settings.command()
    assert command[:4] == ["/venv/bin/python", "-m", "jupyter", "lab"]
    assert "--ServerApp.ip=127.0.0.1" in command and "--ServerApp.port=8899" in command
    assert "--ServerApp.port_retries=0" in command
    assert "--IdentityProvider.token=abc" in command
    assert "--ServerApp.root_dir=/nb" in command
    assert "--KernelManager.transport_encryption=auto" in command
    assert "--allow-root" not in command
    assert settings.url() == "http://127.0.0.1:8899/lab?token=abc"
    assert (
        settings.url("lab/tree/a b.ipynb") == "http://127.0.0.1:8899/lab/tree/a%20b.ipynb?token=abc"
    )


def test_root_gets_allow_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
    settings = lab.settings("/py", Path("/nb"))
    assert settings.as_root and "--allow-root" in settings.command()
    assert len(settings.token) == 48, "a fresh token when none is given"
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    assert "--allow-root" not in lab.settings("/py", Path("/nb")).command()


def test_a_given_token_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_TOKEN", "from-env")
    assert lab.settings("/py", Path("/nb")).token == "from-env"
    assert lab.settings("/py", Path("/nb"), token="given").token == "given"


def test_nothing_is_fetched_from_outside() -> None:
    command = lab.LabSettings("/py", Path("/nb"), token="t").command()
    assert "--LabApp.news_url=None" in command
    assert "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate" in command
    assert "--LabApp.extension_manager=readonly" in command

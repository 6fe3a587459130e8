"""Headless Chromium (Debian's chromium and chromedriver, installed by ``make browser``)
driven by Selenium, and the lab as ``wasmop experiments lab`` starts it.

Nothing is downloaded at run time: the driver and the browser are the OS packages'
binaries, named explicitly, and Selenium's manager is told to stay offline. The flags are
the ones that work on these machines (no sandbox as root, no GPU, no background
networking to hosts the machine cannot reach). Screenshots and the lab's log go to
``test-output/browser/`` (or ``$WASMOP_TEST_OUTPUT/browser``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import CHROMEDRIVER, CHROMIUM, FLAGS
from wasmop.cluster.layout import repo_root


@pytest.fixture(scope="session")
def output_dir() -> Path:
    root = Path(os.environ.get("WASMOP_TEST_OUTPUT") or repo_root() / "test-output")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser(output_dir: Path) -> Iterator[object]:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: `make browser` installs it (Debian packages)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium's manager must never fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="wasmop-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER, log_output=str(output_dir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)

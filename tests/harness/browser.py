"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Selenium through
Debian's ``chromedriver`` (both installed by scripts/install-chromium.sh; Selenium is told both
paths, so it never downloads a browser or a driver).

Screenshots go under the test output folder, ``out/test-browser/`` at the repository's root
(or ``$WEBRELEASE_TEST_OUTPUT/test-browser/``), one file per page, named after the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WEBRELEASE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WEBRELEASE_CHROMEDRIVER", "/usr/bin/chromedriver")


def output_folder() -> Path:
    """Where browser tests leave their screenshots (kept after the run)."""
    base = Path(os.environ.get("WEBRELEASE_TEST_OUTPUT") or ROOT / "out")
    folder = base / "test-browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _binary(path: str, name: str) -> str:
    found = path if Path(path).exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run scripts/install-chromium.sh (make tools)")
    return found


def new_browser(width: int = 1280, height: int = 1600) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM, "chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=_binary(CHROMEDRIVER, "chromedriver"))
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    driver = new_browser()
    try:
        yield driver
    finally:
        driver.quit()

"""Debian's chromium, headless, driven by selenium through chromedriver: for the tests that need a real browser.

``./dev test`` installs the browser with ``.ci/install-browser``; without it a browser test fails with
:data:`MISSING` as the reason (``MOONRELAY_SKIP_BROWSER=1`` skips those tests, never silently).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover - the test extra installs it
    selenium = None

MISSING = (
    None
    if CHROMIUM and CHROMEDRIVER and selenium
    else "needs Debian's chromium + chromium-driver (run .ci/install-browser) and selenium (the test extra); "
    "MOONRELAY_SKIP_BROWSER=1 skips this test"
)

# The marks of every browser test: slow, and skipped only when the user says so.
MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MOONRELAY_SKIP_BROWSER") == "1", reason="MOONRELAY_SKIP_BROWSER=1"),
]



def browser_test(test):
    """The :data:`MARKS` on one test of a module whose other tests need no browser."""
    for mark in MARKS:
        test = mark(test)
    return test


FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",  # a container's /dev/shm is 64 MB
    "--window-size=900,720",
)


@contextmanager
def chromium(*, logs: bool = False) -> Iterator[Any]:
    """A headless chromium webdriver with a fresh profile, quit on exit (blocking: run it in a thread).
    ``logs``: keep the browser's console messages for ``driver.get_log("browser")``."""
    if MISSING:
        pytest.fail(MISSING)  # a fresh machine must not pass the suite without the browser tests
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="moonrelay-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(10)
            yield driver
        finally:
            driver.quit()

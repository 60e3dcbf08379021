"""Browser tests: the demo under a real uvicorn, driven by Debian's chromium through Playwright.

Chromium comes from the system (``apt-get install chromium``, which .ci/run does when it is
missing); Playwright never downloads a browser here. Without chromium the tests are skipped with
the reason, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from rw_browser import CHROMIUM_FLAGS, chromium_path, missing

from rw_uvicorn import uvicorn_process


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    """``ratewarden.demo:create_app`` under uvicorn on a free port, in its own process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RATEWARDEN_STORAGE", "RATEWARDEN_PROFILE")}
    with uvicorn_process("ratewarden.demo:create_app", factory=True, env=env, timeout=30) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A fresh headless chromium (its own --user-data-dir) as a Playwright browser context, one
    per test module; each test opens its own page."""
    exe = chromium_path()
    if exe is None:
        missing("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=exe,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new page with no cookies: a new visitor (a new session) for each test."""
    browser.clear_cookies()
    p = browser.new_page()
    try:
        yield p
    finally:
        p.close()

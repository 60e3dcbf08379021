"""Without chromium the browser tests are skipped with the reason, but fail under CI=true."""

from __future__ import annotations

import pytest
from rw_browser import chromium_path, missing


def test_without_ci_a_missing_browser_is_a_skip_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        missing("chromium is not installed")


def test_under_ci_a_missing_browser_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        missing("chromium is not installed")


def test_a_browser_is_not_looked_for_outside_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert chromium_path() is None

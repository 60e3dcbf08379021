"""Scenario tests (S0-S4, stated in docs/scenarios.md): one policy file each, apps in several frameworks."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

with warnings.catch_warnings():  # Starlette 1.x's TestClient on httpx (not httpx2) warns; it works the same
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    import starlette.testclient  # noqa: F401


@pytest.fixture
def policies() -> Path:
    return HERE / "policies"

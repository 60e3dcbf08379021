"""The decision service's tests: real servers on the loopback (see rw_service_helpers)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

pytest.importorskip("grpc")
pytest.importorskip("prometheus_client")
pytest.importorskip("yaml")


@pytest.fixture
def service_policies() -> Path:
    return HERE / "policies"


# schemathesis is in the dev extra; without it the fuzz tests are left out rather than failing to import
collect_ignore = [] if importlib.util.find_spec("schemathesis") else ["test_service_fuzz.py"]

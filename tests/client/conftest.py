"""A real uvicorn serving tests/client/rw_client_app.py, protected by the ASGI middleware."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rw_uvicorn import uvicorn_process

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    with uvicorn_process("rw_client_app:app", app_dir=HERE) as base:
        yield base


@pytest.fixture
def test_id() -> str:
    """This test's own rate-limit key on the server."""
    return uuid.uuid4().hex

"""A real uvicorn serving tests/client/rw_client_app.py, protected by the ASGI middleware."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "rw_client_app:app", "--app-dir", str(HERE)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    _out, err = proc.communicate(timeout=5)
                    raise RuntimeError(f"uvicorn did not start: {err.decode(errors='replace')}") from None
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.communicate()


@pytest.fixture
def test_id() -> str:
    """This test's own rate-limit key on the server."""
    return uuid.uuid4().hex

"""End to end in headless chromium: ``ratewarden serve`` (a real process) with an admin token,
a burst through ``POST /v1/check``, then the service's own dashboard in the browser shows the
denials, the denied key and a reload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rw_uvicorn import free_port

TOKEN = "e2e-dashboard-token"
POLICY = """
[ratewarden]
storage = "memory://"

[[rule]]
name = "save"
key = "ip"
limits = ["2/minute"]
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, int]]:
    policy = tmp_path / "ratewarden.toml"
    policy.write_text(POLICY)
    port = free_port()
    cmd = [sys.executable, "-m", "ratewarden.cli", "serve", "--policy", str(policy), "--port", str(port)]
    cmd += ["--grpc-port", "off"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEWARDEN_")}
    env["RATEWARDEN_ADMIN_TOKEN"] = TOKEN
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    _out, err = proc.communicate(timeout=5)
                    raise RuntimeError(f"the service did not start: {err.decode(errors='replace')}") from None
                time.sleep(0.05)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.communicate()


def test_the_services_dashboard_after_a_burst_shows_the_denials(service: tuple[str, int], page: Any) -> None:
    base, pid = service
    with httpx.Client(base_url=base) as c:
        allowed = [c.post("/v1/check", json={"rule": "save", "key": "mallory"}).json()["allowed"] for _ in range(12)]
    assert allowed.count(True) == 2
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(base + "/dashboard").status_code == 401
    assert httpx.get(base + "/dashboard/state", headers=auth).json()["reloads"] == []
    page.goto(f"{base}/dashboard?token={TOKEN}")  # sets the cookie the page's own requests carry
    page.wait_for_function("document.querySelector('#live').textContent === 'live'", timeout=10_000)
    row = page.locator('tr[data-rule="save"]')
    assert int(row.locator("td.denied").inner_text()) == 10
    assert int(row.locator("td.decisions").inner_text()) == 12
    assert "save: mallory" in page.locator("#keys").inner_text()
    assert page.locator("#store").inner_text() == "store: healthy"
    os.kill(pid, signal.SIGHUP)  # a reload: the live page lists it (the events carry it)
    page.wait_for_function("document.querySelector('#reloads').textContent.includes('reloaded')", timeout=10_000)

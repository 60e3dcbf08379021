"""memory:// under a pre-forking server: each worker counts alone, and says so once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rw_uvicorn import free_port

APP = """
from ratewarden import Limiter

limiter = Limiter("memory://")


def app(environ, start_response):
    d = limiter.hit("login:victim", "5/hour")
    start_response("200 OK" if d.allowed else "429 Too Many Requests", [("Content-Type", "text/plain")])
    return [b"ok" if d.allowed else b"limited"]
"""


@pytest.mark.slow
@pytest.mark.parametrize("preload", [False, True])
def test_gunicorn_with_two_workers_warns_that_memory_is_per_process(tmp_path: Path, preload: bool) -> None:
    pytest.importorskip("gunicorn")
    (tmp_path / "rw_gunicorn_app.py").write_text(textwrap.dedent(APP))
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path)]
    cmd += ["--preload"] if preload else []
    with subprocess.Popen(
        [*cmd, "rw_gunicorn_app:app"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as server:
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                        break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    assert time.monotonic() < deadline, "gunicorn did not start"
                    time.sleep(0.1)
            time.sleep(1.0)  # both workers have booted (and imported the app, without --preload)
        finally:
            server.terminate()
            _, err = server.communicate(timeout=30)
    warnings = [line for line in err.splitlines() if "memory:// store" in line]
    assert warnings, err
    assert len(warnings) <= 2  # at most once per process
    assert "per process" in warnings[0]

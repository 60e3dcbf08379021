"""Real servers for black-box tests: a free port, and an app under uvicorn in its own process
(the one copy of what the client, e2e and adapter tests need)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def uvicorn_process(
    target: str,
    *,
    app_dir: Path | None = None,
    factory: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> Iterator[str]:
    """``uvicorn target`` on a free port until the block ends; yields its base URL once
    ``/healthz`` answers (RuntimeError with uvicorn's stderr if it exits or never answers)."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", target]
    if app_dir is not None:
        cmd += ["--app-dir", str(app_dir)]
    if factory:
        cmd.append("--factory")
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, env=None if env is None else dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    _out, err = proc.communicate(timeout=5)
                    raise RuntimeError(f"{target} did not start: {err.decode(errors='replace')}") from None
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.communicate()

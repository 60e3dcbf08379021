"""Real servers on the loopback for the decision service's tests.

* :class:`LiveServer`: the app under uvicorn in a thread of the test process (so a test can hold
  the FakeClock the engine reads); gRPC on a free port in the same event loop.
* :func:`serve_process`: ``ratewarden serve`` as a child process, stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ratewarden import FakeClock
from ratewarden.service import Service, create_app
from rw_uvicorn import free_port


def clock_route(clock: FakeClock) -> Route:
    """``POST /_test/clock {"advance": s}`` or ``{"set": t}``: the test's hook into the service's clock."""

    async def move(request: Request) -> JSONResponse:
        body = await request.json()
        if "advance" in body:
            clock.advance(float(body["advance"]))
        if "set" in body:
            clock.set(float(body["set"]))
        return JSONResponse({"now": clock()})

    return Route("/_test/clock", move, methods=["POST"])


class LiveServer:
    def __init__(self, service: Service, *, grpc: bool = True, extra_routes: Sequence[Any] = ()) -> None:
        self.service = service
        self.app = create_app(service, extra_routes=list(extra_routes), grpc_port=0 if grpc else None)
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, lifespan="on", log_config=None, loop="asyncio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.app.state.grpc_port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, grpc_port: int | None, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.grpc_port = grpc_port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


@contextlib.contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None, grpc: bool = False) -> Iterator[Proc]:
    port = free_port()
    grpc_port = free_port() if grpc else None
    cmd = [sys.executable, "-m", "ratewarden.cli", "serve", "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port) if grpc_port else "off", *args]
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "service.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
            p = Proc(proc, port, grpc_port, log)
            try:
                wait_healthy(p.url, proc)
                yield p
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()

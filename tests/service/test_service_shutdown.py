"""Graceful shutdown of a real ``ratewarden serve``: SIGTERM while a decision is in flight (its
store hangs for 2 s) lets that request finish with its answer, then the process exits 0."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
from rw_service_helpers import serve_process


def test_sigterm_drains_the_request_in_flight(tmp_path: Path) -> None:
    silent = socket.socket()  # accepts connections and never answers: a hung Redis
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0?timeout=2&breaker=0"
    f = tmp_path / "p.toml"
    f.write_text(f'[ratewarden]\nstorage = "{url}"\n\n[[rule]]\nname = "r"\nkey = "ip"\nlimits = ["5/minute"]\n')
    result: dict[str, object] = {}
    try:
        with serve_process("--policy", str(f), "--grpc-port", "0") as p:

            def ask() -> None:
                t = time.monotonic()
                r = httpx.post(p.url + "/v1/check", json={"rule": "r", "key": "k"}, timeout=30)
                result.update(status=r.status_code, body=r.json(), took=time.monotonic() - t)

            th = threading.Thread(target=ask)
            th.start()
            time.sleep(0.7)  # the request is waiting on the store
            p.signal(signal.SIGTERM)
            th.join(30)
            code = p.proc.wait(30)
            logs = p.logs()
    finally:
        silent.close()
    assert result["status"] == 200 and result["body"]["allowed"] is True  # type: ignore[index]
    assert float(result["took"]) >= 1.5  # type: ignore[arg-type]
    assert code == 0
    assert "Shutting down" in logs and "ratewarden: stopped" in logs

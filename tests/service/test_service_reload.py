"""Hot reload of a real ``ratewarden serve`` process: SIGHUP and the file watch swap the policy;
a broken file is logged with file:line:reason, counted, and the old policy keeps serving; the
memory store's counters survive a reload."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from rw_service_helpers import serve_process

from ratewarden.service import Service

A = '[ratewarden]\nstorage = "memory://"\n\n[[rule]]\nname = "a"\nkey = "ip"\nlimits = ["2/minute"]\n'
B = A.replace('name = "a"', 'name = "b"')
BROKEN = B + '\n[[rule]]\nname = "c"\nkey = "ip"\nlimits = ["5/fortnight"]\n'


def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def rules(url: str) -> list[str]:
    return list(httpx.get(url + "/v1/status").json()["rules"])


def reload_errors(url: str) -> float:
    m = re.search(r'^ratewarden_reloads_total\{result="error"\} (\S+)$', httpx.get(url + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def test_sighup_swaps_the_policy_and_a_broken_file_keeps_the_old_one(tmp_path: Path) -> None:
    f = tmp_path / "ratewarden.toml"
    f.write_text(A)
    with serve_process("--policy", str(f)) as p:
        assert rules(p.url) == ["a"]
        f.write_text(B)
        p.signal(signal.SIGHUP)
        until(lambda: rules(p.url) == ["b"])
        check = {"rule": "b", "key": "k"}
        assert [httpx.post(p.url + "/v1/check", json=check).json()["allowed"] for _ in range(3)] == [True, True, False]
        # a reload with the same store keeps the counters
        p.signal(signal.SIGHUP)
        until(lambda: httpx.get(p.url + "/v1/status").json()["reloads"] == 2)
        assert httpx.post(p.url + "/v1/check", json=check).json()["allowed"] is False
        # a broken file: logged with file:line: reason, counted, the old policy serves on
        f.write_text(BROKEN)
        p.signal(signal.SIGHUP)
        until(lambda: reload_errors(p.url) == 1.0)
        assert rules(p.url) == ["b"]
        assert httpx.post(p.url + "/v1/check", json={"rule": "b", "key": "other"}).json()["allowed"] is True
        status = httpx.get(p.url + "/v1/status").json()
        assert status["reload_errors"] == 1 and f"{f}:12:" in status["last_reload_error"]
        lines = [json.loads(line) for line in p.logs().splitlines() if line.startswith("{")]
        errors = [x for x in lines if x.get("rw_event") == "reload_error"]
        assert len(errors) == 1 and errors[0]["level"] == "error"
        assert f"{f}:12: " in errors[0]["msg"] and "fortnight" in errors[0]["msg"]


def test_the_file_watch_reloads_on_change(tmp_path: Path) -> None:
    f = tmp_path / "ratewarden.toml"
    f.write_text(A)
    with serve_process("--policy", str(f), "--watch", "0.1") as p:
        assert rules(p.url) == ["a"]
        time.sleep(0.05)
        f.write_text(B + "\n")
        until(lambda: rules(p.url) == ["b"])


def test_a_broken_file_at_start_exits_2_with_file_line_reason(tmp_path: Path) -> None:
    import subprocess
    import sys

    f = tmp_path / "bad.toml"
    f.write_text(BROKEN)
    r = subprocess.run(
        [sys.executable, "-m", "ratewarden.cli", "serve", "--policy", str(f), "--grpc-port", "off"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert f"{f}:12: " in r.stderr and "fortnight" in r.stderr
    assert "Traceback" not in r.stderr


def test_reload_in_process_is_atomic_and_counted(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(A)
    svc = Service(str(f))
    before = svc.snapshot
    f.write_text(BROKEN)
    assert svc.reload() is False and svc.snapshot is before
    f.write_text(B)
    assert svc.reload() is True and set(svc.snapshot.rules) == {"b"}
    assert svc.snapshot.engine.store is before.engine.store  # the same memory store: counters kept


def test_sighup_reaches_every_worker(tmp_path: Path) -> None:
    """Two workers on one SQLite file: the parent forwards SIGHUP, and every worker reloads."""
    db = tmp_path / "rl.db"
    f = tmp_path / "ratewarden.toml"
    f.write_text(A.replace("memory://", f"sqlite:///{db}"))
    with serve_process("--policy", str(f), "--workers", "2") as p:
        pids = set()
        for _ in range(40):  # a new connection each time: the kernel spreads them over the workers
            pids.add(httpx.get(p.url + "/v1/status", headers={"connection": "close"}).json()["pid"])
        assert len(pids) == 2
        f.write_text(B.replace("memory://", f"sqlite:///{db}"))
        p.signal(signal.SIGHUP)
        seen: dict[int, list[str]] = {}

        def all_reloaded() -> bool:
            s = httpx.get(p.url + "/v1/status", headers={"connection": "close"}).json()
            seen[s["pid"]] = s["rules"]
            return len(seen) == 2 and all(r == ["b"] for r in seen.values())

        until(all_reloaded, timeout=30)

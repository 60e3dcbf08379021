"""The service on Redis, with real processes: two services on one Redis admit exactly the limit
to six concurrent clients; a Redis stopped for ten seconds under load is followed by
on_store_error (no 5xx outside what the policy asks for) and the service recovers by itself."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from rw_service_helpers import serve_process

pytestmark = [pytest.mark.redis, pytest.mark.slow]
HERE = Path(__file__).parent
CLIENT = str(HERE / "rw_load_client.py")


def policy(tmp_path: Path, prefix: str, storage: str, on_error: str = "allow") -> Path:
    f = tmp_path / "p.toml"
    f.write_text(
        f'[ratewarden]\nstorage = "{storage}"\nkey_prefix = "{prefix}"\non_store_error = "{on_error}"\n\n'
        '[[rule]]\nname = "hourly"\nkey = "ip"\nlimits = ["100/hour"]\nalgorithm = "sliding-log"\n'
    )
    return f


def decisions(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("ratewarden_decisions_total{")
    )


def clients(n: int, calls: int, urls: list[str], *extra: str) -> list[dict[str, object]]:
    procs = [
        subprocess.Popen(
            [sys.executable, CLIENT, *extra, str(calls), "hourly", "shared-key", *urls],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=240)
        assert p.returncode == 0
        out.append(json.loads(stdout))
    return out


def test_two_services_on_one_redis_admit_exactly_the_limit(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    # a 2 s store timeout: on this shared 2-core machine a script may wait longer than the default
    # 50 ms, and a timed-out call is decided by on_store_error (allow: admitted), not by Redis
    f = policy(tmp_path, redis_prefix, redis_url + "?timeout=2")
    with serve_process("--policy", str(f), "--workers", "2") as a, serve_process("--policy", str(f)) as b:
        results = clients(6, 150, [a.url, b.url])
        logs = a.logs() + b.logs()
    assert "the store failed" not in logs
    assert sum(int(r["allowed"]) for r in results) == 100  # type: ignore[call-overload]
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():  # type: ignore[attr-defined]
            statuses[k] = statuses.get(k, 0) + v
    assert statuses == {"200": 900}


@pytest.mark.parametrize("mode", ["allow", "deny"])
def test_redis_stopped_for_ten_seconds_under_load(tmp_path: Path, redis_prefix: str, mode: str) -> None:
    sys.path.insert(0, str(HERE.parent))
    from storage.redis_cluster import RedisServer, free_port

    server = RedisServer(free_port(), tmp_path / "redis").start()
    url = f"redis://127.0.0.1:{server.port}/0"
    f = policy(tmp_path, redis_prefix, url, mode)
    try:
        with serve_process("--policy", str(f)) as svc:
            load = subprocess.Popen(
                [sys.executable, CLIENT, "--trace", "20s", "hourly", "k", svc.url], stdout=subprocess.PIPE, text=True
            )
            deadline = time.monotonic() + 60
            while decisions(svc.url) < 50:  # the client process is up and deciding through Redis
                assert time.monotonic() < deadline, "the load client did not start"
                time.sleep(0.1)
            down_at = time.time()
            server.stop()
            time.sleep(1.0)
            assert httpx.get(svc.url + "/healthz").status_code == 503
            time.sleep(9.0)
            server.start()
            up_at = time.time()
            stdout, _ = load.communicate(timeout=300)
            deadline = time.monotonic() + 10
            while httpx.get(svc.url + "/healthz").status_code != 200:
                assert time.monotonic() < deadline, "the service did not recover"
                time.sleep(0.1)
            # every worker finds Redis again by itself (each has its own pool and circuit breaker,
            # so a /healthz answered by one says nothing of the other, and a pooled connection
            # that died with the server fails its first call, decided by on_store_error): within
            # the deadline, eight fresh keys in a row are decided by Redis again
            probe = iter(range(10_000))

            def fresh() -> dict[str, object]:
                d = httpx.post(svc.url + "/v1/check", json={"rule": "hourly", "key": f"fresh{next(probe)}"}).json()
                assert isinstance(d, dict)
                return d

            afters: list[dict[str, object]] = []
            while len(afters) < 8:
                assert time.monotonic() < deadline + 20, ("the service did not go back to Redis", afters)
                d = fresh()
                afters = [*afters, d] if d["remaining"] == 99 else []
                time.sleep(0.05)
            logs = svc.logs()
    finally:
        server.stop()
    events = json.loads(stdout)["events"]
    assert all(code == 200 for _, code, _ in events), {c for _, c, _ in events}  # never a 5xx for the decision call
    during = [ok for t, _, ok in events if down_at + 0.5 < t < up_at - 0.2]
    before = [ok for t, _, ok in events if t < down_at]
    assert before and during
    if mode == "allow":
        assert all(during)  # fail open
    else:
        assert not any(during)  # fail closed: denied with a retry_after, as the policy says
    assert all(a["allowed"] is True and a["remaining"] == 99 for a in afters), afters  # back on Redis
    assert "store_error" in logs or "the store failed" in logs

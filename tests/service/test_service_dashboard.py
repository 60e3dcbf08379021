"""The service serves the browser helper and the live dashboard: the dashboard counts what
/metrics counts (one recording per decision), follows reloads, shows the /healthz check, and
wants the admin token when one is set. Real uvicorn on the loopback."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rw_service_helpers import LiveServer, free_port, serve_process

from ratewarden import FakeClock
from ratewarden.service import Service

POLICY = """
[ratewarden]
storage = "memory://"
readable_keys = ["ip"]

[[rule]]
name = "save"
match = { path = "/save" }
key = "ip"
limits = ["2/minute"]

[[rule]]
name = "login"
match = { path = "/login" }
key = "ip"
limits = ["3/minute"]
"""
TOKEN = "dashboard-admin-token"


def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def metric(url: str, rule: str, outcome: str) -> float:
    text = httpx.get(url + "/metrics").text
    m = re.search(
        rf'^ratewarden_decisions_total\{{(?=[^}}]*rule="{rule}")(?=[^}}]*outcome="{outcome}")[^}}]*\}} (\S+)$',
        text,
        re.M,
    )
    return float(m.group(1)) if m else 0.0


def test_the_browser_helper_is_served_as_javascript() -> None:
    with LiveServer(Service(POLICY), grpc=False) as s:
        r = httpx.get(s.url + "/ratewarden.js")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        assert "export" in r.text and "Retry-After" in r.text


def test_the_dashboard_wants_the_admin_token_when_one_is_set() -> None:
    with LiveServer(Service(POLICY, admin_token=TOKEN), grpc=False) as s:
        for path in ("/dashboard", "/dashboard/state", "/dashboard/events"):
            no = httpx.get(s.url + path)
            assert no.status_code == 401, path
            wrong = httpx.get(s.url + path, headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 403, path
        ok = httpx.get(s.url + "/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "<canvas" in ok.text
        assert httpx.get(s.url + "/ratewarden.js").status_code == 200  # the helper is public
    with LiveServer(Service(POLICY), grpc=False) as s:  # no token: open, like the rest of the service
        assert httpx.get(s.url + "/dashboard").status_code == 200


def test_a_burst_through_v1_check_shows_on_the_dashboard_as_in_the_metrics() -> None:
    clock = FakeClock(1_000_000.0)
    with LiveServer(Service(POLICY, clock=clock), grpc=False) as s:
        with httpx.Client(base_url=s.url) as c:
            saves = [c.post("/v1/check", json={"rule": "save", "key": "alice"}).json()["allowed"] for _ in range(7)]
            facts = {"method": "POST", "path": "/login", "ip": "198.51.100.7"}
            logins = [c.post("/v1/check", json={"request": facts}).json()["allowed"] for _ in range(5)]
            state = c.get("/dashboard/state").json()
        assert saves.count(True) == 2 and logins.count(True) == 3
        save, login = state["rules"]["save"], state["rules"]["login"]
        assert save["total"] == {"admitted": 2, "denied": 5, "shadow": 0}
        assert login["total"] == {"admitted": 3, "denied": 2, "shadow": 0}
        assert save["last_minute"] == {"decisions": 7, "denied": 5}
        assert save["denied"][-1] == 5  # the per-second series
        # one recording: the dashboard and /metrics say the same
        assert (metric(s.url, "save", "allowed"), metric(s.url, "save", "denied")) == (2.0, 5.0)
        assert (metric(s.url, "login", "allowed"), metric(s.url, "login", "denied")) == (3.0, 2.0)
        keys = {k["key"]: k["denied"] for k in state["top_denied"]}
        assert keys == {"save: alice": 5, "login: ip=198.51.100.7": 2}
        assert state["store"]["healthy"] is True


def test_the_store_health_is_the_healthz_check() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    policy = POLICY.replace('storage = "memory://"', f'storage = "{dead}"\non_store_error = "allow"')
    with LiveServer(Service(policy), grpc=False) as s:
        assert httpx.get(s.url + "/healthz").status_code == 503
        store = httpx.get(s.url + "/dashboard/state", timeout=10).json()["store"]
        assert store["healthy"] is False


def test_reloads_appear_in_the_history_and_the_dashboard_follows_the_new_engine(tmp_path: Path) -> None:
    f = tmp_path / "ratewarden.toml"
    f.write_text(POLICY)
    service = Service(str(f))
    with LiveServer(service, grpc=False) as s:
        f.write_text(POLICY.replace('name = "save"', 'name = "upload"'))
        assert service.reload() is True
        f.write_text(POLICY + '\n[[rule]]\nname = "bad"\nkey = "ip"\nlimits = ["5/fortnight"]\n')
        assert service.reload() is False
        with httpx.Client(base_url=s.url) as c:
            for _ in range(3):
                c.post("/v1/check", json={"rule": "upload", "key": "bob"})
            state = c.get("/dashboard/state").json()
        ok, failed = state["reloads"][1], state["reloads"][0]  # newest first
        assert ok["ok"] is True and "reloaded" in ok["message"]
        assert failed["ok"] is False and "fortnight" in failed["message"]
        assert state["rules"]["upload"]["total"] == {"admitted": 2, "denied": 1, "shadow": 0}
        # the denied key came from the new engine's events: the dashboard follows it
        assert {"key": "upload: bob", "denied": 1} in state["top_denied"]


def _first_event(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=10) as c, c.stream("GET", "/dashboard/events", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data: "):
                break
    assert "event: state" in lines
    data: dict[str, Any] = json.loads(lines[-1][len("data: ") :])
    return data


def test_the_event_stream_yields_the_state() -> None:
    with LiveServer(Service(POLICY), grpc=False) as s:
        for _ in range(3):
            httpx.post(s.url + "/v1/check", json={"rule": "save", "key": "carol"})
        data = _first_event(s.url)
        assert data["rules"]["save"]["total"]["denied"] == 1


def test_ratewarden_serve_shows_the_dashboard_and_a_sighup_reload(tmp_path: Path) -> None:
    f = tmp_path / "ratewarden.toml"
    f.write_text(POLICY)
    with serve_process("--policy", str(f), env={"RATEWARDEN_ADMIN_TOKEN": TOKEN}) as p:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(p.url + "/dashboard").status_code == 401
        assert httpx.get(p.url + "/dashboard", headers=auth).status_code == 200
        assert httpx.get(p.url + "/ratewarden.js").headers["content-type"].startswith("text/javascript")
        for _ in range(4):
            httpx.post(p.url + "/v1/check", json={"rule": "save", "key": "dave"})
        p.signal(signal.SIGHUP)

        def reloaded() -> bool:
            return bool(httpx.get(p.url + "/dashboard/state", headers=auth).json()["reloads"])

        until(reloaded)
        state = _first_event(p.url, auth)
        assert state["reloads"][0]["ok"] is True
        assert state["rules"]["save"]["total"]["denied"] == 2


ENVOY_POLICY = """
[ratewarden]
storage = "memory://"

[[rule]]
name = "by-ip"
key = "ip"
limits = ["2/minute"]
descriptor = { domain = "edge", entries = ["remote_address"] }
"""


def test_envoy_decisions_show_on_the_dashboard_with_their_keys() -> None:
    import grpc

    from ratewarden.service.proto import rls_pb2, rls_pb2_grpc

    entry = rls_pb2.RateLimitDescriptor.Entry(key="remote_address", value="203.0.113.9")
    request = rls_pb2.RateLimitRequest(domain="edge", descriptors=[rls_pb2.RateLimitDescriptor(entries=[entry])])
    with LiveServer(Service(ENVOY_POLICY)) as s, grpc.insecure_channel(s.grpc_target) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        codes = [stub.ShouldRateLimit(request, timeout=10).overall_code for _ in range(5)]
        assert codes.count(rls_pb2.RateLimitResponse.Code.OVER_LIMIT) == 3
        state = httpx.get(s.url + "/dashboard/state").json()
        assert state["rules"]["by-ip"]["total"] == {"admitted": 2, "denied": 3, "shadow": 0}
        assert (metric(s.url, "by-ip", "allowed"), metric(s.url, "by-ip", "denied")) == (2.0, 3.0)
        assert [k["denied"] for k in state["top_denied"]] == [3]
        # a descriptor value (here an address) is shown hashed, like the keys of the engine's events
        assert re.fullmatch(r"by-ip: h:[0-9a-f]{32}", state["top_denied"][0]["key"])


def test_an_open_dashboard_does_not_hold_the_graceful_shutdown(tmp_path: Path) -> None:
    f = tmp_path / "ratewarden.toml"
    f.write_text(POLICY)
    with serve_process("--policy", str(f), "--graceful-timeout", "60") as p:
        events: list[str] = []

        def hold() -> None:
            with httpx.Client(timeout=90) as c, c.stream("GET", p.url + "/dashboard/events") as r:
                events.extend(line for line in r.iter_lines() if line.startswith("event: "))

        reader = threading.Thread(target=hold, daemon=True)
        reader.start()
        until(lambda: bool(events))  # the page is open and streaming
        p.signal(signal.SIGTERM)
        p.proc.wait(45)  # without end_streams: the whole 60 s grace, then a timeout here
        reader.join(10)
        assert not reader.is_alive()  # the stream ended cleanly when the server stopped

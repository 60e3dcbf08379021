"""S3 (ASGI and WSGI): two windows per session (5 per 10 minutes, 20 per hour), the
RATE_LIMIT_EXCEEDED body, every window's status on every response, exempt health checks, exact
boundaries, concurrent requests from one session, and a websocket connection limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from scenario_apps import s3_asgi, s3_wsgi_app
from starlette.testclient import TestClient, WebSocketDenialResponse
from werkzeug.test import Client

from ratewarden import FakeClock
from ratewarden.wsgi import RateLimitMiddleware as WSGIRateLimit

COOKIE = {"Cookie": "sid=session-one"}


def asgi(policies: Path, clock: FakeClock) -> httpx.AsyncClient:
    app = s3_asgi(str(policies / "s3.toml"), clock=clock)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 1)), base_url="http://s3")


async def test_fifth_allowed_sixth_denied_with_the_express_body(policies: Path, clock: FakeClock) -> None:
    async with asgi(policies, clock) as client:
        for n in range(1, 6):
            r = await client.post("/api/chat", headers=COOKIE)
            assert r.status_code == 200, n
            assert r.headers["ratelimit"] == f'"chat-600s";r={5 - n};t=600, "chat-3600s";r={20 - n};t=3600'
        assert r.headers["ratelimit-policy"] == '"chat-600s";q=5;w=600, "chat-3600s";q=20;w=3600'
        denied = await client.post("/api/chat", headers=COOKIE)
        assert denied.status_code == 429
        assert denied.headers["retry-after"] == "600"
        assert denied.json() == {
            "error": "RATE_LIMIT_EXCEEDED",
            "message": "Too many messages: wait 600 seconds.",
            "cooldownSeconds": 600,
            "retryAfter": 600,
            "resetTime": "2026-01-01T00:10:00Z",
            "quotaRemaining": 0,
        }
        # the denial consumed nothing: the hour window still shows 15 left
        assert '"chat-3600s";r=15;' in denied.headers["ratelimit"]
        # another session is independent
        assert (await client.post("/api/chat", headers={"Cookie": "sid=session-two"})).status_code == 200


async def test_exact_window_edge(policies: Path, clock: FakeClock) -> None:
    async with asgi(policies, clock) as client:
        for _ in range(5):
            await client.post("/api/chat", headers=COOKIE)
        clock.advance(599.999)
        assert (await client.post("/api/chat", headers=COOKIE)).status_code == 429
        clock.advance(0.001)  # exactly 600 s after the first request
        assert (await client.post("/api/chat", headers=COOKIE)).status_code == 200


async def test_the_hour_window_decides_after_four_short_windows(policies: Path, clock: FakeClock) -> None:
    async with asgi(policies, clock) as client:
        for _ in range(4):
            assert [(await client.post("/api/chat", headers=COOKIE)).status_code for _ in range(5)] == [200] * 5
            clock.advance(600)
        denied = await client.post("/api/chat", headers=COOKIE)  # t = 2400: 10-minute window free, hour full
        assert denied.status_code == 429
        assert denied.json()["retryAfter"] == 1200  # the first hour entries (00:00) expire at 01:00
        assert denied.json()["resetTime"] == "2026-01-01T01:30:00Z"  # the hour window is empty again at 01:30
        clock.advance(1200)
        assert (await client.post("/api/chat", headers=COOKIE)).status_code == 200


async def test_health_checks_are_exempt_and_carry_no_headers(policies: Path, clock: FakeClock) -> None:
    async with asgi(policies, clock) as client:
        for _ in range(50):
            r = await client.get("/health")
            assert r.status_code == 200
            assert "ratelimit" not in r.headers
        assert (await client.post("/api/chat", headers=COOKIE)).headers["ratelimit"].startswith('"chat-600s";r=4;')


async def test_concurrent_requests_from_one_session_admit_exactly_five(policies: Path, clock: FakeClock) -> None:
    async with asgi(policies, clock) as client:
        results = await asyncio.gather(*(client.post("/api/chat", headers=COOKIE) for _ in range(25)))
    assert sorted(r.status_code for r in results) == [200] * 5 + [429] * 20


def test_without_a_session_cookie_the_ip_is_the_key(policies: Path, clock: FakeClock) -> None:
    with TestClient(s3_asgi(str(policies / "s3.toml"), clock=clock), client=("198.51.100.9", 1)) as client:
        assert [client.post("/api/chat").status_code for _ in range(6)] == [200] * 5 + [429]
        assert client.post("/api/chat", headers=COOKIE).status_code == 200


def test_websocket_connections_are_limited_on_connect(policies: Path, clock: FakeClock) -> None:
    with TestClient(s3_asgi(str(policies / "s3.toml"), clock=clock), client=("198.51.100.7", 1)) as client:
        for _ in range(2):
            with client.websocket_connect("/ws") as ws:
                ws.send_text("ping")
                assert ws.receive_text() == "ping"
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass  # pragma: no cover - refused
        assert denied.value.status_code == 429
        assert denied.value.headers["retry-after"] == "30"
        assert denied.value.json()["error"] == "RATE_LIMIT_EXCEEDED"
        clock.advance(30)
        with client.websocket_connect("/ws") as ws:
            ws.send_text("again")
            assert ws.receive_text() == "again"


def test_the_same_policy_through_the_wsgi_middleware(policies: Path, clock: FakeClock) -> None:
    app = WSGIRateLimit(s3_wsgi_app, policy=str(policies / "s3.toml"), clock=clock)
    client = Client(app)
    env: dict[str, Any] = {"REMOTE_ADDR": "198.51.100.7"}
    statuses = []
    for _ in range(6):
        r = client.post("/api/chat", headers=COOKIE, environ_base=env)
        statuses.append(r.status_code)
        r.close()
    assert statuses == [200] * 5 + [429]
    denied = client.post("/api/chat", headers=COOKIE, environ_base=env)
    assert denied.headers["Retry-After"] == "600"
    assert denied.json is not None and denied.json["error"] == "RATE_LIMIT_EXCEEDED"
    assert denied.json["resetTime"] == "2026-01-01T00:10:00Z"
    assert client.get("/health", environ_base=env).status_code == 200
    clock.advance(600)
    assert client.post("/api/chat", headers=COOKIE, environ_base=env).status_code == 200

"""Black box: the ASGI middleware under a real uvicorn on 127.0.0.1, over real sockets."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rw_uvicorn import uvicorn_process

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {**os.environ, "RW_TEST_POLICY": str(HERE / "policies" / "server.toml")}
    with uvicorn_process("rw_server_app:app", app_dir=HERE, env=env) as base:
        yield base


def test_429_with_retry_after_and_body_and_headers_on_allowed_responses(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        allowed = [client.get("/api/things") for _ in range(3)]
        denied = client.get("/api/things")
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert allowed[0].text == "hello"
    assert allowed[0].headers["ratelimit-policy"] == '"api";q=3;w=3600'
    assert allowed[0].headers["ratelimit"] == '"api";r=2;t=1200'
    assert [r.headers["x-ratelimit-remaining"] for r in allowed] == ["2", "1", "0"]
    assert allowed[2].headers["x-ratelimit-limit"] == "3"
    assert denied.status_code == 429
    assert denied.headers["retry-after"] == "1200"  # 3/hour: the next slot 1200 s after the first
    assert denied.headers["content-type"] == "application/json"
    body = denied.json()
    assert (body["error"], body["rule"], body["retry_after"], body["limit"], body["remaining"]) == (
        "rate_limited",
        "api",
        1200,
        3,
        0,
    )
    assert body["reset"].endswith("Z")
    assert "ratelimit" in denied.headers


def test_body_rule_over_a_real_socket_and_the_app_still_reads_the_body(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        first = client.post("/login", json={"email": "Bob@Example.com"})
        second = client.post("/login", json={"email": "bob@example.COM"})
        third = client.post("/login", json={"email": "BOB@example.com"})
    assert first.json() == {"email": "Bob@Example.com"}
    assert [first.status_code, second.status_code, third.status_code] == [200, 200, 429]
    assert third.headers["retry-after"] == "1800"


def test_raw_bad_requests_never_get_a_500(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    requests = [
        b"GET /api/%FF%FE HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: garbage,,,\r\nConnection: close\r\n\r\n",
        b"GET /api/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9\r\n"
        b"Connection: close\r\n\r\n{not json",
    ]
    for raw in requests:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(raw)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert status != 500 and status < 500, reply[:200]


JWT_SECRET = "a-long-hs256-secret-for-tests-only"


def test_a_second_api_key_line_is_not_a_fresh_bucket(server: str) -> None:
    """uvicorn hands the app every line; Starlette's ``request.headers[...]`` is the first one,
    so the first line is the key, whatever the second says."""
    with httpx.Client(base_url=server) as client:
        got = [
            client.get("/keyed/api-key", headers=[("X-Api-Key", "real-key"), ("X-Api-Key", f"junk-{i}")])
            for i in range(10)
        ]
    assert got[0].json()["api_key"] == "real-key"  # what the handler acts on
    assert [r.status_code for r in got] == [200] * 3 + [429] * 7


def test_a_second_authorization_line_is_not_a_fresh_bucket(server: str) -> None:
    import jwt

    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")
    with httpx.Client(base_url=server) as client:
        own = [client.get("/keyed/jwt", headers={"Authorization": f"Bearer {token}"}) for _ in range(3)]
        got = [
            client.get("/keyed/jwt", headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer x{i}")])
            for i in range(7)
        ]
    assert [r.status_code for r in own] == [200] * 3  # alice's budget is spent
    # a second line neither mints a fresh bucket nor drops alice to the ip fallback's budget
    assert [r.status_code for r in got] == [429] * 7

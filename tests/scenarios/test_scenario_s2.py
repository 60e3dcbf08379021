"""S2 (Flask): register 5/hour/IP, login 10/hour/IP, defaults 200/day and 50/hour; 429 with
Retry-After on every denial; X-Forwarded-For believed only through the trusted proxy; a
``@rw.limit`` decorator with a callable key on a view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from scenario_apps import s2_flask

from ratewarden import FakeClock

PEER = {"REMOTE_ADDR": "198.51.100.7"}


@pytest.fixture
def client(policies: Path, clock: FakeClock) -> FlaskClient:
    return s2_flask(str(policies / "s2.toml"), clock=clock).test_client()


def post(client: FlaskClient, path: str, peer: dict[str, str] = PEER, **kw: Any) -> Any:
    return client.post(path, environ_base=peer, **kw)


def test_sixth_registration_is_429_with_retry_after(client: FlaskClient, clock: FakeClock) -> None:
    statuses = [post(client, "/auth/register").status_code for _ in range(5)]
    denied = post(client, "/auth/register")
    assert statuses == [201] * 5
    assert denied.status_code == 429  # not the hand-made limiter's 400
    assert denied.headers["Retry-After"] == "720"  # 5/hour: one slot every 720 s
    assert denied.json == {
        "error": "rate_limited",
        "message": "Too many requests; retry in 720 seconds.",
        "retry_after": 720,
        "rule": "register",
        "limit": 5,
        "remaining": 0,
        "reset": "2026-01-01T01:00:00Z",
    }
    assert denied.headers["X-RateLimit-Limit"] == "5"
    assert denied.headers["X-RateLimit-Remaining"] == "0"
    policy = denied.headers["RateLimit-Policy"]
    assert '"defaults-86400s";q=200;w=86400' in policy
    assert '"defaults-3600s";q=50;w=3600' in policy
    assert '"register";q=5;w=3600' in policy
    clock.advance(719)
    assert post(client, "/auth/register").status_code == 429
    clock.advance(1)
    assert post(client, "/auth/register").status_code == 201


def test_login_allows_ten_per_hour_per_ip(client: FlaskClient) -> None:
    statuses = [post(client, "/auth/login").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    other = post(client, "/auth/login", peer={"REMOTE_ADDR": "198.51.100.8"})
    assert other.status_code == 200


def test_global_default_fifty_per_hour(client: FlaskClient) -> None:
    statuses = [client.get("/profile", environ_base=PEER).status_code for _ in range(51)]
    assert statuses == [200] * 50 + [429]
    r = client.get("/profile", environ_base=PEER)
    assert r.headers["Retry-After"] == "72"  # 50/hour: one slot every 72 s
    assert r.json is not None and r.json["rule"] == "defaults"
    assert client.get("/healthz", environ_base=PEER).status_code == 404  # exempt: not counted (no route)


def test_allowed_responses_carry_the_real_values(client: FlaskClient) -> None:
    r = post(client, "/auth/register")
    assert r.headers["X-RateLimit-Limit"] == "5"
    assert r.headers["X-RateLimit-Remaining"] == "4"
    assert '"register";r=4;t=720' in r.headers["RateLimit"]
    assert '"defaults-3600s";r=49;t=72' in r.headers["RateLimit"]


def test_spoofed_x_forwarded_for_from_an_untrusted_client_is_ignored(client: FlaskClient) -> None:
    statuses = [
        post(client, "/auth/register", headers={"X-Forwarded-For": f"192.0.2.{i}"}).status_code for i in range(6)
    ]
    assert statuses == [201] * 5 + [429]


def test_behind_the_trusted_proxy_each_client_has_its_own_bucket(client: FlaskClient) -> None:
    proxy = {"REMOTE_ADDR": "10.1.2.3"}
    a = [
        post(client, "/auth/register", proxy, headers={"X-Forwarded-For": "198.51.100.30"}).status_code
        for _ in range(6)
    ]
    b = post(client, "/auth/register", proxy, headers={"X-Forwarded-For": "evil, 198.51.100.31"}).status_code
    assert a == [201] * 5 + [429]
    assert b == 201


def test_decorator_with_a_callable_key_reads_the_body_once_for_both(client: FlaskClient, clock: FakeClock) -> None:
    for i in range(3):
        r = post(
            client, "/auth/reset-password", json={"email": "a@example.com"}, peer={"REMOTE_ADDR": f"198.51.100.{i}"}
        )
        assert r.status_code == 200
        assert r.json == {"sent": True}
    denied = post(client, "/auth/reset-password", json={"email": "a@example.com"})
    assert denied.status_code == 429
    assert denied.headers["Retry-After"] == "1200"  # 3/hour
    assert denied.json is not None and denied.json["rule"] == "reset_password"
    assert post(client, "/auth/reset-password", json={"email": "b@example.com"}).status_code == 200
    clock.advance(1200)
    assert post(client, "/auth/reset-password", json={"email": "a@example.com"}).status_code == 200


def test_decorator_headers_and_policy_headers_both_reach_the_response(client: FlaskClient) -> None:
    r = post(client, "/auth/reset-password", json={"email": "c@example.com"})
    assert r.status_code == 200
    policies = r.headers.getlist("RateLimit-Policy")
    assert len(policies) == 2  # the app-wide rules and the view's own rule
    assert any("q=3;w=3600" in p for p in policies)

"""S1 (Starlette + Flask): sync endpoint by IP and by JWT user, login by lower-cased e-mail,
Fail2Ban (10 failed logins in a minute ban the IP for an hour), safelist, blocklist, spoofing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt
from scenario_apps import s1_flask, s1_starlette

from ratewarden import FakeClock

SECRET = "s1-secret-0123456789-abcdefghijklmnop"
ENV = {"S1_JWT_SECRET": SECRET, "S1_SERVICE_SECRET": "service-token-123"}


def token(sub: str, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, **claims}, secret, algorithm="HS256")


def asgi_client(policies: Path, clock: FakeClock, ip: str = "198.51.100.7", **options: Any) -> httpx.AsyncClient:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV, **options)
    return client_of(app, ip)


def client_of(app: Any, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 50000)), base_url="http://api")


async def test_sync_by_user_then_by_ip(policies: Path, clock: FakeClock) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    async with client_of(app, "198.51.100.7") as client:
        alice = {"Authorization": f"Bearer {token('alice')}"}
        statuses = [(await client.get("/api/v1/sync", headers=alice)).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        denied = await client.get("/api/v1/sync", headers=alice)
        assert denied.headers["retry-after"] == "1"  # 5/s: the next slot is 0.2 s away, rounded up
        assert denied.headers["x-ratelimit-limit"] == "5"
        assert denied.headers["x-ratelimit-remaining"] == "0"
        assert denied.json() == {
            "error": "rate_limited",
            "message": "Too many requests; retry in 1 seconds.",
            "retry_after": 1,
            "rule": "sync-by-user",
        }
        # bob on the same IP: the IP has 5 of 10 left (alice's denials consumed nothing)
        bob = {"Authorization": f"Bearer {token('bob')}"}
        assert [(await client.get("/api/v1/sync", headers=bob)).status_code for _ in range(5)] == [200] * 5
        carol = {"Authorization": f"Bearer {token('carol')}"}
        by_ip = await client.get("/api/v1/sync", headers=carol)
        assert by_ip.status_code == 429
        assert by_ip.json()["rule"] == "sync-by-ip"
        assert by_ip.headers["x-ratelimit-limit"] == "10"
        clock.advance(0.2)  # one 10/s slot and one 5/s slot free again
        assert (await client.get("/api/v1/sync", headers=alice)).status_code == 200


async def test_a_forged_jwt_does_not_get_another_users_bucket(policies: Path, clock: FakeClock) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    async with client_of(app, "198.51.100.7") as victim, client_of(app, "198.51.100.99") as attacker:
        alice = {"Authorization": f"Bearer {token('alice')}"}
        forged = {"Authorization": f"Bearer {token('alice', secret='not-the-secret-but-long-enough-123456')}"}
        # the attacker's forged 'alice' tokens are anonymous: keyed by the attacker's IP
        assert [(await attacker.get("/api/v1/sync", headers=forged)).status_code for _ in range(6)] == [200] * 5 + [429]
        # alice's own bucket is untouched
        assert [(await victim.get("/api/v1/sync", headers=alice)).status_code for _ in range(5)] == [200] * 5


async def test_login_by_lower_cased_email_in_the_body(policies: Path, clock: FakeClock) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    async with client_of(app, "198.51.100.7") as a, client_of(app, "198.51.100.8") as b:
        body = {"email": "Alice@Example.com", "password": "right-password"}
        for i in range(5):
            c = a if i % 2 else b  # two IPs, one e-mail: the e-mail is the key
            r = await c.post("/api/v1/auth/login", json={**body, "email": body["email"].swapcase()})
            assert r.status_code == 200, i
            assert r.json() == {"token": "t"}  # the app read the body the middleware had read
        denied = await a.post("/api/v1/auth/login", json={**body, "email": "ALICE@EXAMPLE.COM"})
        assert denied.status_code == 429
        assert denied.json()["rule"] == "login"
        assert denied.headers["retry-after"] == "240"  # 5 per 20 minutes: one slot per 240 s
        other = await a.post("/api/v1/auth/login", json={"email": "bob@example.com", "password": "x"})
        assert other.status_code == 401


async def test_fail2ban_ten_failed_logins_ban_the_ip_for_an_hour(policies: Path, clock: FakeClock) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    good = {"email": "alice@example.com", "password": "right-password"}
    async with client_of(app, "198.51.100.7") as client, client_of(app, "198.51.100.8") as other:
        for i in range(10):  # ten different e-mails within 45 s: the per-e-mail limit never trips
            if i:
                clock.advance(5)
            r = await client.post("/api/v1/auth/login", json={"email": f"user{i}@example.com", "password": "bad"})
            assert r.status_code == 401, i
        banned = await client.post("/api/v1/auth/login", json=good)
        assert banned.status_code == 403
        assert banned.headers["retry-after"] == "3600"
        assert banned.json() == {
            "error": "banned",
            "message": "This client is banned; retry in 3600 seconds.",
            "retry_after": 3600,
            "rule": "login-abuse",
        }
        # the ban covers this IP on the login path; another IP logs in fine
        assert (await other.post("/api/v1/auth/login", json=good)).status_code == 200
        assert (await client.get("/api/v1/items")).status_code == 200
        clock.advance(3599)
        assert (await client.post("/api/v1/auth/login", json=good)).status_code == 403
        clock.advance(1)
        assert (await client.post("/api/v1/auth/login", json=good)).status_code == 200


def test_fail2ban_through_flask(policies: Path, clock: FakeClock) -> None:
    app = s1_flask(str(policies / "s1.toml"), clock=clock, env=ENV)
    client = app.test_client()
    peer = {"REMOTE_ADDR": "198.51.100.7"}
    good = {"email": "alice@example.com", "password": "right-password"}
    for i in range(10):
        r = client.post(
            "/api/v1/auth/login", json={"email": f"user{i}@example.com", "password": "bad"}, environ_base=peer
        )
        assert r.status_code == 401, i
        # legacy headers show the rule with the fewest units left: login, 5 per e-mail, 4 left
        assert (r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"]) == ("5", "4")
    banned = client.post("/api/v1/auth/login", json=good, environ_base=peer)
    assert banned.status_code == 403
    assert banned.headers["Retry-After"] == "3600"
    assert banned.json is not None and banned.json["error"] == "banned"
    assert client.post("/api/v1/auth/login", json=good, environ_base={"REMOTE_ADDR": "198.51.100.8"}).status_code == 200
    clock.advance(3600)
    ok = client.post("/api/v1/auth/login", json=good, environ_base=peer)
    assert ok.status_code == 200
    assert ok.json == {"token": "t"}  # the body the extension read reached the view


async def test_nine_failures_do_not_ban(policies: Path, clock: FakeClock) -> None:
    async with asgi_client(policies, clock) as client:
        for i in range(9):
            await client.post("/api/v1/auth/login", json={"email": f"u{i}@example.com", "password": "bad"})
        ok = await client.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": "right-password"})
    assert ok.status_code == 200


async def test_safelist_blocklist_and_the_service_token(policies: Path, clock: FakeClock) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    async with (
        client_of(app, "127.0.0.1") as local,
        client_of(app, "203.0.113.9") as blocked,
        client_of(app, "198.51.100.7") as remote,
    ):
        assert [(await local.get("/api/v1/sync")).status_code for _ in range(20)] == [200] * 20
        r = await blocked.get("/api/v1/items")
        assert r.status_code == 403
        assert r.json()["error"] == "blocked"
        service = {"X-Service-Token": "service-token-123"}
        assert [(await remote.get("/api/v1/sync", headers=service)).status_code for _ in range(20)] == [200] * 20
        wrong = {"X-Service-Token": "service-token-124"}
        assert [(await remote.get("/api/v1/sync", headers=wrong)).status_code for _ in range(6)] == [200] * 5 + [429]


async def test_a_spoofed_x_forwarded_for_does_not_change_the_key(policies: Path, clock: FakeClock) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    async with client_of(app, "198.51.100.7") as client:
        statuses = []
        for i in range(11):
            r = await client.get(
                "/api/v1/sync", headers={"X-Forwarded-For": f"192.0.2.{i}", "Forwarded": f"for=192.0.2.{i}"}
            )
            statuses.append(r.status_code)
    assert statuses == [200] * 5 + [429] * 6  # one key (the socket peer) however the header changes


async def test_through_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client(
    policies: Path, clock: FakeClock
) -> None:
    app = s1_starlette(str(policies / "s1.toml"), clock=clock, env=ENV)
    async with client_of(app, "10.0.0.5") as proxy:
        hop = lambda spoof, real: {"X-Forwarded-For": f"{spoof}, {real}, 10.0.0.9"}  # noqa: E731
        a = [
            (await proxy.get("/api/v1/sync", headers=hop(f"1.1.1.{i}", "198.51.100.20"))).status_code for i in range(6)
        ]
        b = (await proxy.get("/api/v1/sync", headers=hop("1.1.1.1", "198.51.100.21"))).status_code
    assert a == [200] * 5 + [429]  # the client's own left-most entries are ignored
    assert b == 200  # another real client behind the same proxy has its own bucket

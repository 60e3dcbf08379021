"""Three teams' apps through the HTTP API of a real service on the loopback: a Rails app (several
throttles per request, login by e-mail, lists, legacy headers), an Express app driven by a Node
script using fetch (two windows per session, its own denial body, health checks exempt), and a
NestJS app (named throttlers with role multipliers, a daily token budget per role). Each shows
the exact request that is first denied and a retry after ``retry_after`` that passes; the
service's clock is a FakeClock moved through a test-only route, so nothing sleeps."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from rw_service_helpers import LiveServer, clock_route

from ratewarden import FakeClock
from ratewarden.service import Service

HERE = Path(__file__).parent
SECRET = "rails-secret-0123456789-abcdefghijkl"


def live_for(policy: str, clock: FakeClock, env: dict[str, str] | None = None) -> LiveServer:
    service = Service(str(HERE / "policies" / policy), clock=clock, env=env or {})
    return LiveServer(service, grpc=False, extra_routes=[clock_route(clock)])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def facts(client: httpx.Client, **request: Any) -> dict[str, Any]:
    r = client.post("/v1/check", json={"request": request})
    assert r.status_code == 200, r.text
    return dict(r.json())


# -- Rails ------------------------------------------------------------------------------------


@pytest.fixture
def rails(clock: FakeClock) -> Iterator[httpx.Client]:
    with live_for("rails.toml", clock, {"RAILS_JWT_SECRET": SECRET}) as live, httpx.Client(base_url=live.url) as c:
        yield c


def test_rails_login_by_lower_cased_email(rails: httpx.Client, clock: FakeClock) -> None:
    answers = []
    for i, email in enumerate(["Alice@Example.com", "alice@example.com", "ALICE@example.com", "aLiCe@example.COM"] * 2):
        body = json.dumps({"email": email, "password": "x"})
        ip = f"198.51.100.{10 + i}"  # a new IP each time: the e-mail is the key
        a = facts(rails, method="POST", path="/api/v1/auth/login", ip=ip, body=body, content_type="application/json")
        answers.append(a)
    assert [a["allowed"] for a in answers] == [True] * 5 + [False] * 3
    first = answers[5]  # the sixth login for alice@example.com
    assert first["status"] == 429 and first["rule"] == "login"
    assert first["retry_after"] == pytest.approx(240.0)  # 5 per 20 minutes: one every 4 minutes
    assert first["headers"]["Retry-After"] == "240"
    assert first["headers"]["X-RateLimit-Limit"] == "5" and first["headers"]["X-RateLimit-Remaining"] == "0"
    assert first["body"] == {
        "error": "rate_limited",
        "message": "Too many requests; retry in 240 seconds.",
        "retry_after": 240,
        "rule": "login",
    }
    clock.advance(first["retry_after"])
    again = facts(
        rails, method="POST", path="/api/v1/auth/login", ip="198.51.100.99", body='{"email": "ALICE@example.com"}'
    )
    assert again["allowed"] is True


def test_rails_sync_by_user_and_by_ip_and_the_lists(rails: httpx.Client, clock: FakeClock) -> None:
    alice = {"authorization": "Bearer " + jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")}
    got = [facts(rails, path="/api/v1/sync", ip="198.51.100.7", headers=alice) for _ in range(6)]
    assert [a["allowed"] for a in got] == [True] * 5 + [False]
    assert got[5]["rule"] == "sync-by-user" and got[5]["retry_after"] == pytest.approx(0.2)
    assert got[5]["headers"]["Retry-After"] == "1"
    bob = {"authorization": "Bearer " + jwt.encode({"sub": "bob"}, SECRET, algorithm="HS256")}
    assert [facts(rails, path="/api/v1/sync", ip="198.51.100.7", headers=bob)["allowed"] for _ in range(6)] == [
        True
    ] * 5 + [False]  # the IP's 10/s is used up by alice's 5 and bob's 5
    clock.advance(got[5]["retry_after"])
    assert facts(rails, path="/api/v1/sync", ip="198.51.100.7", headers=alice)["allowed"] is True
    assert facts(rails, path="/api/v1/sync", ip="203.0.113.9")["status"] == 403  # blocklist
    assert all(facts(rails, path="/api/v1/sync", ip="127.0.0.1")["allowed"] for _ in range(20))  # safelist


# -- Express (a Node client) ------------------------------------------------------------------

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_express_session_quota_driven_by_node_fetch(clock: FakeClock) -> None:
    with live_for("express.toml", clock) as live:
        r = subprocess.run(
            [str(NODE), str(HERE / "express_client.mjs"), live.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    steps = json.loads(r.stdout)
    allowed = [s["allowed"] for s in steps if "step" in s]
    assert allowed == [True] * 5 + [False]
    assert [s["windows"] for s in steps if "step" in s][:5] == [[4, 19], [3, 18], [2, 17], [1, 16], [0, 15]]
    denied = next(s for s in steps if "denied" in s)
    assert denied["denied"] == 6
    assert denied["exact"] == pytest.approx(595.0)  # the first message (t=0) leaves the 10-minute window at 600
    assert denied["retryAfter"] == "595"
    body = denied["body"]
    assert body["error"] == "RATE_LIMIT_EXCEEDED" and body["cooldownSeconds"] == 595 and body["retryAfter"] == 595
    assert body["quotaRemaining"] == 0 and body["resetTime"].endswith("Z")
    assert body["message"] == "Too many messages: wait 595 seconds."
    retry = next(s for s in steps if "retry" in s)
    assert retry == {"retry": True, "windows": [0, 14]}
    assert next(s for s in steps if "otherSession" in s)["otherSession"] is True
    assert next(s for s in steps if "health" in s)["health"] is True


# -- NestJS -----------------------------------------------------------------------------------


@pytest.fixture
def nest(clock: FakeClock) -> Iterator[httpx.Client]:
    clock.set(1_767_225_600.0 + 20 * 3600)  # 20:00 UTC: four hours to the budget's reset
    with live_for("nestjs.toml", clock) as live, httpx.Client(base_url=live.url) as c:
        yield c


def test_nestjs_named_throttlers_with_role_multipliers(nest: httpx.Client, clock: FakeClock) -> None:
    owner = [facts(nest, path="/items", user="u-owner", attrs={"role": "OWNER"}) for _ in range(31)]
    assert [a["allowed"] for a in owner] == [True] * 30 + [False]  # short: 10/s x 3
    first = owner[30]
    assert first["rule"] == "short" and first["retry_after"] == pytest.approx(1 / 30, abs=1e-6)
    assert first["headers"]["X-RateLimit-Limit"] == "30"
    assert {d["name"] for d in first["decisions"]} == {"short", "medium", "long"}
    clock.advance(first["retry_after"])
    assert facts(nest, path="/items", user="u-owner", attrs={"role": "OWNER"})["allowed"] is True
    reader = [facts(nest, path="/items", user="u-reader", attrs={"role": "READER"})["allowed"] for _ in range(11)]
    assert reader == [True] * 10 + [False]
    anon = [facts(nest, path="/items", ip="198.51.100.50")["allowed"] for _ in range(11)]  # by IP: READER's 1x
    assert anon == [True] * 10 + [False]


def test_nestjs_daily_token_budget_by_role(nest: httpx.Client, clock: FakeClock) -> None:
    spend = nest.post(
        "/v1/check", json={"rule": "ai-tokens", "key": "user=u-main", "cost": 999_000, "attrs": {"role": "MAINTAINER"}}
    ).json()
    assert spend["allowed"] is True and spend["remaining"] == 1_000
    over = nest.post(
        "/v1/check", json={"rule": "ai-tokens", "key": "user=u-main", "cost": 2_000, "attrs": {"role": "MAINTAINER"}}
    ).json()
    assert over["allowed"] is False and over["retry_after"] == pytest.approx(4 * 3600)  # until midnight UTC
    assert over["remaining"] == 1_000  # a denial consumes nothing
    reader = facts(nest, path="/generate", user="u-read", attrs={"role": "READER"})
    assert reader["allowed"] is False and reader["rule"] == "ai-tokens" and reader["retry_after"] is None  # no budget
    clock.advance(over["retry_after"])
    again = nest.post(
        "/v1/check", json={"rule": "ai-tokens", "key": "user=u-main", "cost": 2_000, "attrs": {"role": "MAINTAINER"}}
    ).json()
    assert again["allowed"] is True and again["remaining"] == 998_000

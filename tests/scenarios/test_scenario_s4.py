"""S4 (FastAPI): short/medium/long throttlers by user (IP when anonymous) with role multipliers,
a daily AI-token budget per role charged after the response (admitted only while budget
remains; retry after = seconds to midnight), stricter auth limits through a dependency."""

from __future__ import annotations

from pathlib import Path

import pytest
from scenario_apps import s4_fastapi
from starlette.testclient import TestClient

from ratewarden import FakeClock


@pytest.fixture
def client(policies: Path, clock: FakeClock) -> TestClient:
    app = s4_fastapi(str(policies / "s4.toml"), clock=clock)
    return TestClient(app, client=("198.51.100.7", 1))


def user(name: str, role: str) -> dict[str, str]:
    return {"X-Demo-User": f"{name}:{role}"}


@pytest.mark.parametrize(("role", "per_second"), [("OWNER", 30), ("MAINTAINER", 20), ("WRITER", 15), ("READER", 10)])
def test_role_multipliers_on_the_short_throttler(client: TestClient, role: str, per_second: int) -> None:
    h = user("u1", role)
    statuses = [client.get("/projects", headers=h).status_code for _ in range(per_second + 1)]
    assert statuses == [200] * per_second + [429]
    denied = client.get("/projects", headers=h)
    assert denied.json()["rule"] == "short"
    assert denied.json()["limit"] == per_second
    assert denied.headers["x-ratelimit-limit"] == str(per_second)
    assert denied.headers["retry-after"] == "1"


def test_real_header_values_for_every_named_throttler(client: TestClient) -> None:
    r = client.get("/projects", headers=user("u2", "WRITER"))
    # (a rule with tiers names its windows NAME-<seconds>s)
    assert r.headers["ratelimit-policy"] == '"short";q=15;w=1, "medium";q=150;w=60, "long";q=1500;w=3600'
    assert r.headers["ratelimit"] == '"short";r=14;t=1, "medium";r=149;t=1, "long";r=1499;t=3'
    assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == ("15", "14")


def test_anonymous_clients_are_keyed_by_ip(client: TestClient) -> None:
    assert [client.get("/projects").status_code for _ in range(11)] == [200] * 10 + [429]
    assert client.get("/projects", headers=user("u3", "READER")).status_code == 200


def test_the_token_budget_is_charged_after_the_response(client: TestClient, clock: FakeClock) -> None:
    clock.advance(10 * 3600)  # 10:00 UTC
    h = user("w1", "WRITER")  # 500,000 tokens a day
    first = client.post("/generate?tokens=300000", headers=h)
    assert first.status_code == 200
    assert '"ai-tokens";q=500000;w=86400' in first.headers["ratelimit-policy"]
    second = client.post("/generate?tokens=300000", headers=h)  # admitted: budget remained before it
    assert second.status_code == 200
    denied = client.post("/generate?tokens=1", headers=h)
    assert denied.status_code == 429
    assert denied.json()["rule"] == "ai-tokens"
    assert denied.headers["retry-after"] == str(14 * 3600)  # until midnight UTC
    assert denied.json()["reset"] == "2026-01-02T00:00:00Z"
    # other endpoints are unaffected by the token budget
    assert client.get("/projects", headers=h).status_code == 200
    clock.advance(14 * 3600 - 1)
    assert client.post("/generate?tokens=1", headers=h).status_code == 429
    clock.advance(1)
    assert client.post("/generate?tokens=1", headers=h).status_code == 200


def test_budgets_by_role_and_readers_have_none(client: TestClient) -> None:
    owner = user("o1", "OWNER")
    assert client.post("/generate?tokens=2999999", headers=owner).status_code == 200
    assert client.post("/generate?tokens=1", headers=owner).status_code == 200
    assert client.post("/generate?tokens=1", headers=owner).status_code == 429
    reader = client.post("/generate?tokens=1", headers=user("r1", "READER"))
    assert reader.status_code == 429
    assert "retry-after" not in reader.headers  # no budget at all: waiting does not help
    assert reader.json()["retry_after"] is None


def test_stricter_auth_limit_through_the_fastapi_dependency(client: TestClient) -> None:
    first = client.post("/auth/login")
    # the dependency's headers next to the middleware's (one RateLimit-Policy field per engine)
    policies = first.headers.get_list("ratelimit-policy")
    assert '"auth";q=5;w=60' in policies
    assert any(p.startswith('"short"') for p in policies)
    statuses = [first.status_code] + [client.post("/auth/login").status_code for _ in range(5)]
    assert statuses == [200] * 5 + [429]
    denied = client.post("/auth/login")
    assert denied.headers["retry-after"] == "12"
    assert denied.json()["rule"] == "auth"
    assert denied.json()["error"] == "rate_limited"  # install(app): the verdict's body, not {"detail": ...}
    ok = client.post("/auth/login", headers={"X-Forwarded-For": "1.2.3.4"})
    assert ok.status_code == 429  # spoofed header, same socket peer: same key

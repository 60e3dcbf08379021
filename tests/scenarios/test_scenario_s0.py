"""S0 (FastAPI): per-action limits by session token, test/production limits by profile,
counters that survive a restart (SQLite), and the exact ``{"error", "retry_after"}`` body."""

from __future__ import annotations

from pathlib import Path

from scenario_apps import s0_fastapi
from starlette.testclient import TestClient

from ratewarden import FakeClock


def client_for(policies: Path, tmp_path: Path, clock: FakeClock, profile: str | None) -> TestClient:
    env = {"RATEWARDEN_S0_DB": str(tmp_path / "s0.db")}
    if profile:
        env["RATEWARDEN_PROFILE"] = profile
    return TestClient(s0_fastapi(str(policies / "s0.toml"), clock=clock, env=env))


def save(client: TestClient, token: str = "sess-A") -> object:
    return client.post("/api/save_chat", json={"text": "hi"}, headers={"X-Session-Token": token})


def test_test_profile_third_save_is_429_with_exact_retry_after_and_body(
    policies: Path, tmp_path: Path, clock: FakeClock
) -> None:
    with client_for(policies, tmp_path, clock, "test") as client:
        first = save(client)
        assert first.status_code == 200
        assert first.json() == {"saved": {"text": "hi"}}
        assert first.headers["ratelimit-policy"] == '"save_chat";q=2;w=10'
        assert first.headers["ratelimit"] == '"save_chat";r=1;t=5'
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert save(client).status_code == 200
        denied = save(client)
        assert denied.status_code == 429
        assert denied.json() == {"error": "rate_limited", "retry_after": 5}
        assert denied.headers["retry-after"] == "5"
        assert denied.headers["x-ratelimit-remaining"] == "0"
        # another session and another action are separate buckets
        assert save(client, "sess-B").status_code == 200
        assert client.post("/api/personalize", headers={"X-Session-Token": "sess-A"}).status_code == 200
        # exactly retry_after later it passes; a moment earlier it does not
        clock.advance(4.999)
        assert save(client).status_code == 429
        clock.advance(0.001)
        assert save(client).status_code == 200


def test_production_limits_without_a_profile(policies: Path, tmp_path: Path, clock: FakeClock) -> None:
    with client_for(policies, tmp_path, clock, None) as client:
        statuses = [save(client).status_code for _ in range(6)]
        denied = save(client)
    assert statuses == [200] * 5 + [429]
    assert denied.json() == {"error": "rate_limited", "retry_after": 12}
    assert denied.headers["ratelimit-policy"] == '"save_chat";q=5;w=60'


def test_counters_survive_a_backend_restart(policies: Path, tmp_path: Path, clock: FakeClock) -> None:
    with client_for(policies, tmp_path, clock, "test") as client:
        assert [save(client).status_code for _ in range(2)] == [200, 200]
    # a new process would build a new app and a new engine over the same database file
    with client_for(policies, tmp_path, clock, "test") as client:
        denied = save(client)
    assert denied.status_code == 429
    assert denied.json()["retry_after"] == 5


def test_a_request_without_a_session_token_is_not_in_a_shared_bucket(
    policies: Path, tmp_path: Path, clock: FakeClock
) -> None:
    with client_for(policies, tmp_path, clock, "test") as client:
        for _ in range(2):
            save(client)
        # no token: the rule falls back to the client IP (the default fallback), never to A's bucket
        r = client.post("/api/save_chat", json={"text": "x"})
        assert r.status_code == 200
        assert save(client).status_code == 429  # A is still limited

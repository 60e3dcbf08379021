"""S1 and S4 on Redis (the shared test Redis): several app instances share one store, and time is the
Redis server's, so these tests use real time with windows long enough to be deterministic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from scenario_apps import s1_starlette, s4_fastapi

import rw_redis

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.redis

URL = rw_redis.URL


@pytest.fixture
def store() -> Iterator[Any]:
    from ratewarden.storage import open_store

    prefix = f"rwadapt:{uuid.uuid4().hex[:10]}:"
    s = open_store(URL, key_prefix=prefix)
    yield s
    s.close()
    rw_redis.delete_prefix(prefix)


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def asgi_client(app: Any, ip: str = "198.51.100.7") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 1)), base_url="http://api")


async def test_s4_token_budget_shared_by_two_app_instances(policies: Path, store: Any) -> None:
    if seconds_to_midnight() < 30:  # pragma: no cover - the budget would reset mid-test
        pytest.skip("too close to midnight UTC")
    policy = str(policies / "s4.toml")
    h = {"X-Demo-User": "w1:WRITER"}
    try:
        async with (
            asgi_client(s4_fastapi(policy, storage=store)) as one,
            asgi_client(s4_fastapi(policy, storage=store)) as two,
        ):
            assert (await one.post("/generate?tokens=450000", headers=h)).status_code == 200
            assert (await two.post("/generate?tokens=100000", headers=h)).status_code == 200  # 50,000 remained
            denied = await one.post("/generate?tokens=1", headers=h)
            assert denied.status_code == 429
            assert abs(int(denied.headers["retry-after"]) - seconds_to_midnight()) <= 2
            midnight = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            reset = datetime.strptime(denied.json()["reset"], "%Y-%m-%dT%H:%M:%S%z")
            assert abs((reset - midnight).total_seconds()) <= 1
            assert (await two.post("/generate?tokens=1", headers=h)).status_code == 429
            other = await two.post("/generate?tokens=1", headers={"X-Demo-User": "w2:WRITER"})
            assert other.status_code == 200
    finally:
        await store.aclose()


async def test_s1_fail2ban_ban_seen_by_every_instance(policies: Path, store: Any) -> None:
    env = {"S1_JWT_SECRET": "s1-secret-0123456789-abcdefghijklmnop", "S1_SERVICE_SECRET": "service-token-123"}
    apps = [s1_starlette(str(policies / "s1.toml"), storage=store, env=env) for _ in range(2)]

    try:
        await _fail2ban(apps[0], apps[1])
    finally:
        await store.aclose()


async def _fail2ban(app_a: Any, app_b: Any) -> None:
    async with asgi_client(app_a) as a, asgi_client(app_b) as b:
        for i in range(10):  # failures spread over two app servers
            c = a if i % 2 else b
            r = await c.post("/api/v1/auth/login", json={"email": f"u{i}@example.com", "password": "bad"})
            assert r.status_code == 401
        t0 = time.time()
        for c in (a, b):
            banned = await c.post("/api/v1/auth/login", json={"email": "alice@example.com", "password": "x"})
            assert banned.status_code == 403
            assert 3599 <= int(banned.headers["retry-after"]) <= 3600 + int(time.time() - t0)

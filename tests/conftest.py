"""Shared fixtures: a fake clock, and a real Redis on 127.0.0.1 (its own database, cleaned)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ratewarden import FakeClock

REDIS_HOST = os.environ.get("RATEWARDEN_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("RATEWARDEN_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("RATEWARDEN_TEST_REDIS_DB", "13"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_url() -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    redis = pytest.importorskip("redis")
    prefix = f"rwtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

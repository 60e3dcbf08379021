"""Shared fixtures: a fake clock, and the one Redis fixture (URL and cleanup in ``rw_redis``).

Tests marked ``redis`` need the Redis at ``RATEWARDEN_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379``). When it does not answer they are skipped with one reason, except
under ``CI=true``, where each of them fails at set-up with that reason: CI never passes by
skipping the Redis tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import rw_redis
from ratewarden import FakeClock

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("redis") is None:
        return
    reason = rw_redis.unreachable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true and the Redis tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"{reason}; set RATEWARDEN_TEST_REDIS_URL to run the Redis tests")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_url() -> str:
    """The shared test Redis (``RATEWARDEN_TEST_REDIS_URL``)."""
    return rw_redis.URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; every key under it is deleted afterwards."""
    prefix = rw_redis.new_prefix()
    yield prefix
    rw_redis.delete_prefix(prefix)

"""Defined failure (docs/design.md#defined-failure) with a real Redis that dies: a private redis-server of the test's
own is killed mid-run and restarted (the shared 6379 is never touched), a closed port, a server
that never answers. No exception escapes the limiter; allow admits, deny denies with a
retry_after, local holds the rate in process; when Redis is back the shared limit is used again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from ratewarden import AsyncLimiter, Limiter, StoreError
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import open_redis

from . import redis_cluster
from .redis_cluster import RedisServer, free_port

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
private_redis = redis_cluster.private_redis

MODES = ["allow", "deny", "local"]


def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    finally:
        s.close()


def check_fallback(lim: Limiter, mode: str, n: int = 10) -> None:
    ds = [lim.hit("k", "3/minute") for _ in range(n)]
    assert all(d.reason == "store_unavailable" for d in ds)
    if mode == "allow":
        assert all(d.allowed for d in ds)
    elif mode == "deny":
        assert not any(d.allowed for d in ds)
        assert all(d.retry_after > 0 and d.retry_after_header >= 1 for d in ds)
    else:  # the in-process limiter holds the rate
        assert [d.allowed for d in ds] == [True] * 3 + [False] * (n - 3)


@pytest.mark.parametrize("mode", MODES)
def test_a_closed_port_from_the_start(mode: str) -> None:
    lim = Limiter(closed_url(), on_store_error=mode)
    try:
        check_fallback(lim, mode)
        assert lim.store_errors >= 1
        lim.reset("k")  # no exception either
    finally:
        lim.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_closed_port_from_the_start_async(mode: str) -> None:
    lim = AsyncLimiter(closed_url(), on_store_error=mode)
    try:
        ds = await asyncio.gather(*(lim.hit("k", "3/minute") for _ in range(10)))
        assert all(d.reason == "store_unavailable" for d in ds)
        want = {"allow": 10, "deny": 0, "local": 3}[mode]
        assert sum(d.allowed for d in ds) == want
        await lim.reset("k")
    finally:
        await lim.aclose()


@pytest.mark.parametrize("mode", MODES)
def test_redis_dies_mid_run_and_comes_back(private_redis: RedisServer, mode: str) -> None:
    a = Limiter(private_redis.url, on_store_error=mode, breaker=0.2)
    b = Limiter(private_redis.url, on_store_error=mode, breaker=0.2)
    try:
        assert [a.hit("shared", "4/minute").allowed for _ in range(2)] == [True, True]
        assert b.hit("shared", "4/minute").remaining == 1  # one shared limit
        private_redis.stop()
        check_fallback(a, mode)
        assert a.store_errors >= 1
        private_redis.start()  # an empty Redis on the same port (no persistence)
        time.sleep(0.25)  # the breaker lets the next call try again
        ds = [(a if i % 2 else b).hit("shared", "4/minute") for i in range(8)]
        assert [d.allowed for d in ds] == [True] * 4 + [False] * 4  # shared again, exactly
        assert all(d.reason is None for d in ds)
    finally:
        a.close()
        b.close()


async def test_redis_dies_under_pipelined_async_load(private_redis: RedisServer) -> None:
    lim = AsyncLimiter(private_redis.url, on_store_error="deny", breaker=0.2)
    try:
        ds = await asyncio.gather(*(lim.hit(f"k{i}", "5/minute") for i in range(50)))
        assert all(d.allowed for d in ds)

        async def hammer() -> list[bool]:
            return [(await lim.hit("k", "5/minute")).allowed for _ in range(20)]

        task = asyncio.gather(*(hammer() for _ in range(50)))
        await asyncio.sleep(0.01)
        private_redis.stop()
        results = await task  # no exception escapes, whatever was in flight
        assert len(results) == 50
        ds = [await lim.hit("k", "5/minute") for _ in range(5)]
        assert not any(d.allowed for d in ds) and all(d.reason == "store_unavailable" for d in ds)
        private_redis.start()
        await asyncio.sleep(0.25)
        ds = await asyncio.gather(*(lim.hit("fresh", "5/minute") for _ in range(20)))
        assert sum(d.allowed for d in ds) == 5
        assert all(d.reason is None for d in ds)
    finally:
        await lim.aclose()


def test_a_hung_server_costs_one_timeout_then_fails_fast(silent_server: str) -> None:
    lim = Limiter(silent_server, on_store_error="allow", timeout=0.05, breaker=1.0)
    try:
        t0 = time.perf_counter()
        assert lim.hit("k", "3/minute").allowed
        first = time.perf_counter() - t0
        assert first < 0.5  # the 50 ms socket timeout, not redis-py's 5 s default nor its retries
        t0 = time.perf_counter()
        for _ in range(200):
            assert lim.hit("k", "3/minute").allowed
        assert time.perf_counter() - t0 < 0.2  # the breaker is open: no 50 ms per request
        assert lim.store_errors == 201
    finally:
        lim.close()


def test_the_store_raises_store_error_for_every_redis_failure(silent_server: str) -> None:
    w = make_window("gcra", Rate(3, 60 * US))
    for url in (closed_url(), silent_server):
        store = open_redis(url, breaker=0)
        with pytest.raises(StoreError):
            store.hit1("k", w, 1)
        with pytest.raises(StoreError):
            store.apply("peek", [("k", w, 1)])
        with pytest.raises(StoreError):
            store.reset("k")
        store.close()


def test_a_server_side_error_is_a_store_error_but_not_an_outage(private_redis: RedisServer) -> None:
    c = redis.Redis.from_url(private_redis.url)
    store = open_redis(private_redis.url, key_prefix="p:")
    w = make_window("concurrency", Rate(3, 60 * US))
    try:
        c.set(store.codec.state_key("bad", w), "not a lease list")  # the script errs on it
        with pytest.raises(StoreError, match="ResponseError"):
            store.hit1("bad", w, 1)
        assert store.hit1("good", w, 1)[0]  # the breaker did not open: Redis answered
        lim = Limiter(store, on_store_error="deny")
        d = lim.hit("bad", "3/minute", algorithm="concurrency")
        assert not d.allowed and d.reason == "store_unavailable"
    finally:
        store.close()
        c.close()


def test_an_outage_is_logged_once_and_the_recovery_too(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    lim = Limiter(private_redis.url, on_store_error="allow", breaker=0.1)
    try:
        assert lim.hit("k", "3/minute").allowed
        private_redis.stop()
        with caplog.at_level(logging.INFO, logger="ratewarden"):
            for _ in range(20):
                lim.hit("k", "3/minute")
            private_redis.start()
            time.sleep(0.15)
            assert lim.hit("k", "3/minute").reason is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        infos = [r for r in caplog.records if r.levelno == logging.INFO]
        assert len(warnings) == 1 and len(infos) == 1
    finally:
        lim.close()

"""The Redis store's denial cache (``denial_cache=N``): a denied request is denied again in
process until its retry_after, without a round trip, and never longer.

The flood tests count the script calls Redis itself saw (INFO commandstats) on a private
redis-server; the exactness tests check that the cache never denies what Redis would admit:
exactly at retry_after the request goes to Redis and passes, and under a threaded flood every
window admits exactly its limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from ratewarden import FakeClock, Limiter
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, open_redis

from . import redis_cluster
from .redis_cluster import RedisServer

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
private_redis = redis_cluster.private_redis
START = 1_767_225_600 * US


def script_calls(c: Any) -> int:
    stats = c.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{n}", {}).get("calls", 0)) for n in ("evalsha", "eval"))


@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket"])
def test_a_flood_on_a_denied_key_costs_one_call_per_retry_after(private_redis: RedisServer, algorithm: str) -> None:
    """10,000 requests on a denied key at one instant: one script call for the lot. At
    retry_after - 1 us still denied in process; at retry_after exactly the request goes to Redis
    and passes (the cache never holds a request back past the moment Redis would admit it)."""
    clock = FakeClock(START / US)
    store = open_redis(private_redis.url, _test_now=clock, denial_cache=1000, timeout=2.0)
    assert isinstance(store, RedisStore) and store.denials is not None
    w = make_window(algorithm, Rate(5, 10 * US))
    c = redis.Redis.from_url(private_redis.url)
    try:
        for _ in range(5):
            assert store.hit1("k", w, 1)[0]
        before = script_calls(c)
        first = store.hit1("k", w, 1)
        assert not first[0] and first[3] > 0
        outs = [store.hit1("k", w, 1) for _ in range(10_000)]
        assert script_calls(c) - before == 1  # the first denial; the other 10,000 in process
        assert not any(o[0] for o in outs)
        assert store.denials.hits == 10_000
        retry = first[3]
        clock.set((START + retry - 1) / US)
        late = store.hit1("k", w, 1)
        assert not late[0] and late[3] == 1  # retry_after stays exact: 1 us left
        assert script_calls(c) - before == 1
        clock.set((START + retry) / US)
        assert store.hit1("k", w, 1)[0]  # at retry_after: to Redis, admitted
        assert script_calls(c) - before == 2
    finally:
        c.close()
        store.close()


def test_a_real_time_flood_sees_at_most_one_call_per_key_per_retry_after(private_redis: RedisServer) -> None:
    """Wall clock, 10,000 requests as fast as they come on two denied keys (each denied for about
    a second): Redis sees at most one script call per key per retry_after (plus the one that
    admits it again when it has passed)."""
    lim = Limiter(f"{private_redis.url}?denial_cache=1000", algorithm="fixed-window")
    c = redis.Redis.from_url(private_redis.url)
    try:
        for key in ("a", "b"):
            while lim.hit(key, "3/second").allowed:
                pass
        before = script_calls(c)
        t0 = time.monotonic()
        admitted = 0
        for i in range(10_000):
            admitted += lim.hit("ab"[i % 2], "3/second").allowed
        elapsed = time.monotonic() - t0
        calls = script_calls(c) - before
        windows = int(elapsed) + 2  # the windows the flood touched
        assert calls <= 2 * 2 * windows, (calls, elapsed)  # per key per window: the denial + the admission
        assert admitted <= 2 * 3 * windows
    finally:
        c.close()
        lim.close()


def test_every_window_admits_exactly_its_limit_under_a_threaded_flood(private_redis: RedisServer) -> None:
    """8 threads flood one key for ~3.3 s at 20/second (fixed windows): with the cache on, every
    whole second admits exactly 20: never more (the cache only denies), never fewer (it never
    denies past the moment Redis would admit)."""
    lim = Limiter(f"{private_redis.url}?denial_cache=1000", algorithm="fixed-window", timeout=2.0)
    ends: list[int] = []
    lock = threading.Lock()
    stop = time.time() + 3.3

    def flood() -> None:
        while time.time() < stop:
            d = lim.hit("k", "20/second")
            if d.allowed:
                with lock:
                    ends.append(round(time.time() + d.reset_after))  # the end of its window
            time.sleep(0.0005)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        per_window = Counter(ends)
        whole = sorted(per_window)[1:-1]  # the first and last windows were only partly flooded
        assert whole and all(per_window[e] == 20 for e in whole), per_window
        assert lim.store.denials is not None and lim.store.denials.hits > 0  # type: ignore[attr-defined]
        assert lim.store_errors == 0
    finally:
        lim.close()


async def test_async_flood_and_the_boundary(private_redis: RedisServer) -> None:
    clock = FakeClock(START / US)
    store = open_redis(private_redis.url, _test_now=clock, denial_cache=100)
    assert isinstance(store, RedisStore)
    w = make_window("gcra", Rate(2, 4 * US))
    c = redis.Redis.from_url(private_redis.url)
    try:
        assert (await store.ahit1("k", w, 1))[0] and (await store.ahit1("k", w, 1))[0]
        before = script_calls(c)
        first = await store.ahit1("k", w, 1)
        outs = await asyncio.gather(*(store.ahit1("k", w, 1) for _ in range(2_000)))
        assert not first[0] and not any(o[0] for o in outs)
        assert script_calls(c) - before == 1  # the first denial; the 2,000 tasks in process
        retry = first[3]
        clock.set((START + retry) / US)
        assert (await store.ahit1("k", w, 1))[0]
    finally:
        c.close()
        await store.aclose()


def test_leases_peeks_and_resets(private_redis: RedisServer) -> None:
    """Concurrency windows are never cached (a release frees capacity early); a reset through
    this store forgets the key at once; a different cost asks Redis."""
    clock = FakeClock(START / US)
    store = open_redis(private_redis.url, _test_now=clock, denial_cache=100)
    assert isinstance(store, RedisStore) and store.denials is not None
    conc = make_window("concurrency", Rate(1, 60 * US))
    fw = make_window("fixed-window", Rate(1, 60 * US))
    try:
        assert store.apply("acquire", [("c", conc, 1)], "l1")[0][0]
        assert not store.hit1("c", conc, 1)[0]
        store.apply("release", [("c", conc, 1)], "l1")
        assert store.hit1("c", conc, 1)[0]  # not held back by a cached denial
        assert store.hit1("f", fw, 1)[0]
        assert not store.hit1("f", fw, 1)[0]
        assert not store.apply("hit", [("f", fw, 1)])[0][0]
        hits = store.denials.hits
        assert not store.apply("hit", [("f", fw, 1)])[0][0]
        assert store.denials.hits == hits + 1
        store.reset("f")
        assert store.hit1("f", fw, 1)[0]  # the reset is seen at once here
    finally:
        store.close()

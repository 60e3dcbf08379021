"""Wide calls on a healthy Redis: many windows per request and many requests merged into one
script call never turn into store errors (Lua's unpack() takes at most about 8,000 values)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ratewarden import AsyncLimiter, Limiter
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import Codec, RedisStore, open_redis

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/12"
#: 70 windows of one rule: 1000 per 1 s, per 2 s, ... per 70 s
SEVENTY = ";".join(f"1000/{i} seconds" for i in range(1, 71))


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"rwwide:{uuid.uuid4().hex[:10]}:"
    yield p
    c = redis.Redis.from_url(URL)
    keys = list(c.scan_iter(match=p + "*", count=1000))
    if keys:
        c.delete(*keys)
    c.close()


async def test_128_merged_calls_of_70_windows_all_decide(prefix: str) -> None:
    lim = AsyncLimiter(URL, key_prefix=prefix, algorithm="fixed-window", timeout=5.0)
    try:
        ds = await asyncio.gather(*(lim.hit(f"k{i}", SEVENTY) for i in range(128)))
        assert lim.store_errors == 0
        assert all(d.allowed for d in ds)
        assert all(d.remaining == 999 for d in ds)
    finally:
        await lim.aclose()


def test_one_merged_script_call_of_8960_windows(prefix: str) -> None:
    """The merge itself, in one script call: 128 requests x 70 windows (8,960 keys)."""
    store = open_redis(URL, key_prefix=prefix, timeout=5.0)
    assert isinstance(store, RedisStore)
    ws = [make_window("fixed-window", Rate(1000, i * US)) for i in range(1, 71)]
    try:
        calls = [store.codec.pack("hit", [(f"k{i}", w, 1) for w in ws]) for i in range(128)]
        keys, args = Codec.merge(calls)
        assert len(keys) == 8960
        outs = Codec.parse(store._eval(keys, args), len(keys))
        assert all(o[0] and o[1] == 999 for o in outs)
    finally:
        store.close()


def test_one_request_of_9000_windows(prefix: str) -> None:
    with Limiter(URL, key_prefix=prefix, algorithm="gcra", timeout=5.0) as lim:
        many = ";".join(f"5/{i} seconds" for i in range(1, 9001))
        d = lim.hit("k", many)
        assert lim.store_errors == 0
        assert d.allowed


async def test_merged_calls_are_capped_by_keys(prefix: str) -> None:
    """Wide requests are not merged into one huge script call: at most MERGE_KEYS keys per merged
    call (a request wider than that goes alone), so no call runs for long; still exact."""
    import redis.asyncio as aredis

    from ratewarden.storage.redis._batch import MERGE_KEYS, Batcher

    sent: list[int] = []

    class Counting(Batcher):
        async def _send(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
            sent.extend(len(k) for k, _ in calls)
            return await super()._send(calls)

    client = aredis.Redis.from_url(URL)
    b = Counting(client, asyncio.get_running_loop())
    store = open_redis(URL, key_prefix=prefix)
    assert isinstance(store, RedisStore)
    ws = [make_window("fixed-window", Rate(1000, i * US)) for i in range(1, 71)]
    try:
        calls = [store.codec.pack("hit", [(f"k{i}", w, 1) for w in ws]) for i in range(20)]
        replies = await b._raw(calls)
        assert all(isinstance(r, list) and len(r) == 4 * 70 for r in replies)
        assert max(sent) <= MERGE_KEYS and sum(sent) == 20 * 70
    finally:
        store.close()
        await client.aclose()

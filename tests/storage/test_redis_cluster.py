"""The Redis store on a real local Cluster (3 masters, started once per session by
``redis_cluster.cluster_url``): hash tags keep every window of a key in one slot, so a
multi-window decision is one EVALSHA on one node; items of different keys in different slots
are split per slot (peek first, then charge: best-effort all-or-nothing); reset; async.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import rw_redis
from ratewarden import AsyncLimiter, Limiter
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, open_redis

from . import redis_cluster

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
cluster_url = redis_cluster.cluster_url


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[tuple[str, str, Any]]:
    """(url, prefix, a RedisCluster client); the prefix's keys are deleted afterwards."""
    from redis.cluster import RedisCluster

    prefix = f"rwcl:{uuid.uuid4().hex[:10]}:"
    c = RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
    yield cluster_url, prefix, c
    c.close()
    rw_redis.delete_prefix(prefix, cluster_url)


def evalsha_calls(c: Any) -> int:
    stats = c.info("commandstats", target_nodes=c.ALL_NODES)
    return sum(int(s.get("cmdstat_evalsha", {}).get("calls", 0)) for s in stats.values())


def test_every_window_of_a_key_lives_in_one_slot(cluster: tuple[str, str, Any]) -> None:
    url, prefix, c = cluster
    lim = Limiter(url, key_prefix=prefix)
    keys = ["user:1", "user:2", "a}b", "", "x" * 1000]
    try:
        for k in keys:
            assert lim.hit(k, "5/minute;20/hour;100/day").allowed
            assert lim.hit(k, "3/day", algorithm="quota").allowed
        stored = [s.decode() for s in c.scan_iter(match=prefix + "*")]
        assert len(stored) == 4 * len(keys)
        slots: dict[str, set[int]] = {}
        store = lim.store
        assert isinstance(store, RedisStore)
        for s in stored:
            owner = next(k for k in keys if s.startswith(store.codec.base(k)))
            slots.setdefault(owner, set()).add(int(c.cluster_keyslot(s)))
        assert all(len(v) == 1 for v in slots.values())
        assert len({next(iter(v)) for v in slots.values()}) > 1  # different keys spread over slots
    finally:
        lim.close()


def test_a_multi_window_decision_is_one_evalsha(cluster: tuple[str, str, Any]) -> None:
    url, prefix, c = cluster
    lim = Limiter(url, key_prefix=prefix)
    try:
        lim.hit("warm", "1/minute")
        before = evalsha_calls(c)
        ds = [lim.hit("alice", "3/minute;10/hour;50/day") for _ in range(10)]
        assert evalsha_calls(c) - before == 10
        assert [d.allowed for d in ds] == [True] * 3 + [False] * 7
    finally:
        lim.close()


def two_keys_in_different_slots(store: RedisStore) -> tuple[str, str]:
    from redis.crc import key_slot

    w = make_window("fixed-window", Rate(1, 60 * US))
    first = "a"
    for i in range(100):
        other = f"b{i}"
        if key_slot(store.codec.state_key(first, w).encode()) != key_slot(store.codec.state_key(other, w).encode()):
            return first, other
    raise AssertionError("no two slots found")


def test_items_in_different_slots_are_split_and_denials_stay_free(cluster: tuple[str, str, Any]) -> None:
    url, prefix, _ = cluster
    store = open_redis(url, key_prefix=prefix)
    wa = make_window("fixed-window", Rate(5, 3600 * US))
    wb = make_window("gcra", Rate(2, 3600 * US))
    a, b = two_keys_in_different_slots(store)
    try:
        assert len(store._plan("hit", [(a, wa, 1), (b, wb, 1)], "")) == 2
        outs = [store.apply("hit", [(a, wa, 1), (b, wb, 1)]) for _ in range(4)]
        assert [all(o[0] for o in out) for out in outs] == [True, True, False, False]
        # The denials (by b's window) consumed nothing in a's window: 5 - 2 left.
        assert store.apply("peek", [(a, wa, 0)])[0][1] == 3
        assert store.hit1(a, wa, 3)[0]
    finally:
        store.close()


async def test_async_on_the_cluster(cluster: tuple[str, str, Any]) -> None:
    import asyncio

    url, prefix, _ = cluster
    lim = AsyncLimiter(url, key_prefix=prefix, algorithm="sliding-log")
    try:
        ds = await asyncio.gather(*(lim.hit(f"k{i % 5}", "4/minute;10/hour") for i in range(50)))
        assert sum(d.allowed for d in ds) == 20
        await lim.reset("k0")
        assert (await lim.hit("k0", "4/minute;10/hour")).remaining == 3
        assert not (await lim.hit("k1", "4/minute;10/hour")).allowed
        store = lim.store
        a, b = two_keys_in_different_slots(store)
        w = make_window("fixed-window", Rate(1, 60 * US))
        outs = await store.aapply("hit", [(a, w, 1), (b, w, 1)])
        assert all(o[0] for o in outs)
        outs = await store.aapply("hit", [(a, w, 1), (b, w, 1)])
        assert not any(o[0] for o in outs)
    finally:
        await lim.aclose()


def test_reset_on_the_cluster(cluster: tuple[str, str, Any]) -> None:
    url, prefix, _ = cluster
    lim = Limiter(url, key_prefix=prefix)
    try:
        for k in ("u1", "u2", "u3"):
            assert lim.hit(k, "1/minute;2/hour").allowed
        lim.reset("u2")
        assert lim.hit("u2", "1/minute;2/hour").allowed
        assert not lim.hit("u1", "1/minute;2/hour").allowed
        assert not lim.hit("u3", "1/minute").allowed
    finally:
        lim.close()


@pytest.mark.slow
def test_a_master_down_is_a_defined_failure(tmp_path: Any) -> None:
    """A cluster of its own (the session's one stays healthy): kill one master; every decision
    still returns (deny: denied with a retry_after; nothing raises), on keys of every slot."""
    nodes = redis_cluster.start_cluster(tmp_path)
    url = f"redis+cluster://127.0.0.1:{nodes[0].port}"
    lim = Limiter(url, on_store_error="deny", timeout=0.2, breaker=0.1)
    try:
        keys = [f"user:{i}" for i in range(30)]
        assert all(lim.hit(k, "5/minute").allowed for k in keys)
        nodes[1].stop()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # through the connection errors, then CLUSTERDOWN
            ds = [lim.hit(k, "5/minute") for k in keys]
            assert all(d.allowed or d.retry_after > 0 for d in ds)
            time.sleep(0.2)
        ds = [lim.hit(k, "5/minute") for k in keys]
        assert not any(d.allowed for d in ds)  # the whole cluster reports down: fail closed
        assert all(d.reason == "store_unavailable" for d in ds)
        assert lim.store_errors > 0
    finally:
        lim.close()
        for n in nodes:
            n.stop()

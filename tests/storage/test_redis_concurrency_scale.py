"""Concurrency windows with thousands of leases on Redis: the script decides exactly as the core
(core/algorithms/concurrency.py) to the microsecond, and its work per call does not grow with the
number of leases held (counted in Redis commands with INFO commandstats on a private server).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import rw_redis
from ratewarden import FakeClock
from ratewarden.core.algorithms import make_window
from ratewarden.core.evaluate import run
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, open_redis, read_state

from . import redis_cluster
from .redis_cluster import RedisServer

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis
private_redis = redis_cluster.private_redis
START = 1_767_225_600 * US


@pytest.fixture
def client() -> Iterator[Any]:
    c = rw_redis.client()
    yield c
    c.close()


def live(state: Any, now: int) -> Any:
    return tuple(x for x in state or () if x[0] > now) or None


@pytest.mark.parametrize(("seed", "costs"), [(1, [1, 1, 1, 2, 3, 0, 2_001]), (2, [1, 1, 1, 2, 3, 0, 2_001]), (3, [1])])
def test_thousands_of_leases_match_the_core(client: Any, seed: int, costs: list[int]) -> None:
    """2,500 steps on one window of limit 2,000: acquires (named and anonymous, costs 0 to 3 and
    above the limit), releases of held, unknown and expired leases, time steps that expire many
    leases at once and steps back; every outcome and the live state compared with the core. With
    costs of 1 only, more than 250 leases expiring at once are trimmed over several calls."""
    rnd = random.Random(seed)
    w = make_window("concurrency", Rate(2_000, 20 * US))
    clock = FakeClock(START / US)
    prefix = f"rwccs:{uuid.uuid4().hex[:10]}:"
    store = open_redis(rw_redis.URL, key_prefix=prefix, _test_now=clock, timeout=5.0)
    assert isinstance(store, RedisStore)
    state: Any = None
    held: list[str] = []
    now = START
    try:
        for i in range(2_500):
            r = rnd.random()
            if r < 0.02:
                now += rnd.choice([1, 1_000, 5 * US, 19 * US, 20 * US, 21 * US])
            elif r < 0.03:
                now -= rnd.choice([1, 1_000, US])
            else:
                now += rnd.randint(0, 3_000)
            clock.set(now / US)
            r = rnd.random()
            if r < 0.15 and held:
                op, lease, cost = "release", rnd.choice([*held, "nobody"]), 0
            elif r < 0.25:
                op, lease, cost = "hit", "", rnd.choice([0, *costs[:2]])
            else:
                op, lease, cost = "acquire", f"l{i % 1_500}", rnd.choice(costs)
            want, new = run(op, [w], [state], now, [cost], lease)
            got = store.apply(op, [("k", w, cost)], lease)
            assert [o[:4] for o in got] == [o[:4] for o in want], (i, op, cost, now - START)
            if new is not None:
                state = None if new[0] is None or want[0][2] <= 0 else new[0]
            if op == "acquire" and want[0][0] and cost:
                held.append(lease)
            assert live(read_state(client, store.codec, "k", w), now) == live(state, now), i
    finally:
        rw_redis.delete_prefix(prefix)
        store.close()


def commands(r: Any) -> int:
    return sum(v["calls"] for k, v in r.info("commandstats").items() if k not in ("cmdstat_evalsha", "cmdstat_info"))


def test_work_per_call_does_not_grow_with_the_leases_held(private_redis: RedisServer) -> None:
    """Redis commands run inside one acquire, one denied acquire and one release: the same at
        200 and at 5,000 leases held; and no key is read or rewritten whole (the earlier string state
    was parsed, sorted and rewritten per call: 3 commands, O(leases) of Lua)."""
    r = redis.Redis.from_url(private_redis.url)
    clock = FakeClock(START / US)
    store = open_redis(private_redis.url, _test_now=clock, timeout=5.0)
    assert isinstance(store, RedisStore)
    per: dict[int, list[int]] = {}
    try:
        for n in (200, 5_000):
            w = make_window("concurrency", Rate(n + 1, 3_600 * US))
            key = f"c{n}"
            for i in range(n):
                clock.set((START + i) / US)
                assert store.apply("acquire", [(key, w, 1)], f"l{i}")[0][0]
            counts = []
            for op, lease, cost in [("acquire", "x", 1), ("acquire", "y", 1), ("release", "x", 0)]:
                before = commands(r)
                store.apply(op, [(key, w, cost)], lease)  # type: ignore[arg-type]
                counts.append(commands(r) - before)
            per[n] = counts
            # the string state holds no lease (the earlier one held all, parsed and rewritten per call)
            assert r.strlen(store.codec.state_key(key, w)) == 1
        assert per[200] == per[5_000], per
        assert max(per[5_000]) <= 20, per
    finally:
        store.close()
        r.close()


def test_a_lease_string_written_in_the_earlier_form_is_read(client: Any) -> None:
    """States written before the sorted set ("expires lease cost ...") decide as the core would."""
    w = make_window("concurrency", Rate(4, 60 * US))
    clock = FakeClock(START / US)
    prefix = f"rwccs:{uuid.uuid4().hex[:10]}:"
    store = open_redis(rw_redis.URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    assert isinstance(store, RedisStore)
    try:
        old = ((START - 10, "-", 1), (START + 5 * US, "a", 2), (START + 9 * US, "b", 1))
        client.set(store.codec.state_key("k", w), " ".join(f"{e} {id} {c}" for e, id, c in old), px=60_000)
        state: Any = tuple((e, "" if id == "-" else id, c) for e, id, c in old)
        for op, lease, cost in [("acquire", "c", 1), ("acquire", "d", 1), ("release", "a", 0), ("acquire", "d", 2)]:
            want, new = run(op, [w], [state], START, [cost], lease)
            assert [o[:4] for o in store.apply(op, [("k", w, cost)], lease)] == [o[:4] for o in want]
            if new is not None:
                state = new[0]
            assert read_state(client, store.codec, "k", w) == live(state, START)
    finally:
        rw_redis.delete_prefix(prefix)
        store.close()

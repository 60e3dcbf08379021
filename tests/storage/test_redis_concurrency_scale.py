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
            assert r.get(store.codec.state_key(key, w)) == b"Z2"
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


def dead_holders(n: int, costs: list[int]) -> tuple[str, Any]:
    """``n`` named leases that expire at START + 10 s (holders that died), one live lease
    ("late", cost 2) that expires at START + 100 s; as the earlier string form (which every
    version of the script reads) and as the core's state."""
    leases = [(START + 10 * US, f"d{i}", costs[i % len(costs)]) for i in range(n)]
    leases.append((START + 100 * US, "late", 2))
    return " ".join(f"{e} {id} {c}" for e, id, c in leases), tuple(sorted(leases))


@pytest.mark.parametrize("costs", [[1], [1, 2, 3, 7]], ids=["unit", "mixed"])
def test_a_call_meeting_20_000_dead_holders_does_bounded_work(private_redis: RedisServer, costs: list[int]) -> None:
    """1,000 or 20,000 leases whose holders died expire together: the calls that follow (a peek,
    a check, admitted and denied acquires, a release) run the same number of Redis commands at
    1,000 and at 20,000 dead holders, at most 40: a write removes at most a fixed number of them
    (one command per structure, not per lease) and a decision counts the costs of the live
    leases without reading the dead ones. The earlier script removed them all in the first call
    that wrote (about 2 commands per dead lease). Every outcome is the core's."""
    r = redis.Redis.from_url(private_redis.url)
    clock = FakeClock(START / US)
    store = open_redis(private_redis.url, _test_now=clock, timeout=30.0)
    assert isinstance(store, RedisStore)
    w = make_window("concurrency", Rate(10, 90 * US))
    calls = [("peek", "", 1), ("hit", "", 0), ("acquire", "x", 3), ("acquire", "big", 9), ("release", "x", 0)]
    calls += [("acquire", "y", 1), ("acquire", "big", 8), ("peek", "", 6)]
    per: dict[int, list[int]] = {}
    try:
        for n in (1_000, 20_000):
            raw, state = dead_holders(n, costs)
            key = f"c{n}"
            r.set(store.codec.state_key(key, w), raw, px=200_000)
            clock.set((START + 1) / US)
            store.apply("peek", [(key, w, 1)])  # the one-off rewrite of the earlier form: O(n)
            now = START + 20 * US  # the n dead leases have expired
            counts = []
            for op, lease, cost in calls:
                now += 1
                clock.set(now / US)
                want, new = run(op, [w], [state], now, [cost], lease)
                before = commands(r)
                got = store.apply(op, [(key, w, cost)], lease)  # type: ignore[arg-type]
                counts.append(commands(r) - before)
                assert [o[:4] for o in got] == [o[:4] for o in want], (n, op, lease)
                if new is not None:
                    state = new[0]
            per[n] = counts
            assert read_state(r, store.codec, key, w) == live(state, now)
        assert per[1_000] == per[20_000], per
        assert max(per[20_000]) <= 40, per
    finally:
        store.close()
        r.close()


def replay(client: Any, w: Any, steps: list[tuple[int, str, str, int]], states_from: int = 0) -> None:
    """Run (time step, op, lease, cost) on the store and on the core; outcomes equal at every step,
    live states from step ``states_from`` on (reading a state of n leases back costs O(n): a
    build-up of n steps compared at each would cost O(n^2))."""
    clock = FakeClock(START / US)
    prefix = f"rwccs:{uuid.uuid4().hex[:10]}:"
    store = open_redis(rw_redis.URL, key_prefix=prefix, _test_now=clock, timeout=5.0)
    assert isinstance(store, RedisStore)
    state: Any = None
    now = START
    try:
        for i, (dt, op, lease, cost) in enumerate(steps):
            now += dt
            clock.set(now / US)
            want, new = run(op, [w], [state], now, [cost], lease)
            got = store.apply(op, [("k", w, cost)], lease)  # type: ignore[arg-type]
            assert [o[:4] for o in got] == [o[:4] for o in want], (i, op, lease, cost, now - START)
            if new is not None:
                state = None if new[0] is None or want[0][2] <= 0 else new[0]
            if i >= states_from:
                assert live(read_state(client, store.codec, "k", w), now) == live(state, now), i
    finally:
        rw_redis.delete_prefix(prefix)
        store.close()


@pytest.mark.parametrize("costs", [[1], [1, 2, 5, 1, 16]], ids=["unit", "mixed"])
@pytest.mark.parametrize("back", [1, 5 * US, 10 * US - 1, 10 * US, 10 * US + 1, 25 * US])
def test_dropped_leases_not_yet_removed_stay_dropped_when_the_clock_steps_back(
    client: Any, costs: list[int], back: int
) -> None:
    """1,200 leases expire together, so the writes that follow remove them over several calls;
    meanwhile the clock steps back (by less than, exactly, and more than the 10 s lease TTL):
    the leases a write has dropped (as the core's state does) are never counted again, the ones
    no write dropped yet are, and leases acquired after the step back (expiring before the
    dropped ones) count until they expire: every outcome and state the core's."""
    w = make_window("concurrency", Rate(8_000, 10 * US))
    steps = [(0 if i == 0 else 1, "acquire", f"l{i}", costs[i % len(costs)]) for i in range(1_200)]
    steps += [(5 * US, "acquire", "keep", 1)]
    steps += [(5 * US, "peek", "", 1)]  # the 1,200 have expired ("keep" has not); nothing dropped them yet
    steps += [(-back, "peek", "", 1), (back, "acquire", "a", 2)]  # dropped now (a write)
    steps += [(-back, "peek", "", 1), (0, "acquire", "b", 3), (0, "hit", "", 0), (0, "release", "l5", 0)]
    steps += [(1, "acquire", "c", 1), (back // 2, "peek", "", 7999), (0, "acquire", "d", 7000)]
    steps += [(back, "hit", "", 1)] + [(1, "acquire", f"m{i}", 1) for i in range(20)]
    steps += [(-back, "peek", "", 1), (10 * US, "hit", "", 0), (-2 * back, "acquire", "e", 1)]
    replay(client, w, steps, states_from=1_199)  # (the build-up's outcomes are compared, its states once)


def test_a_check_drops_expired_leases_too(client: Any) -> None:
    """An admitted check (cost 0) writes the state, so the core drops the expired leases from it:
    after the clock steps back a whole TTL they are not counted again (the earlier script kept
    them: it removed expired leases only on an admitted acquire or a release)."""
    w = make_window("concurrency", Rate(2, 10 * US))
    steps = [(0, "acquire", "a", 1), (5 * US, "acquire", "b", 1), (6 * US, "hit", "", 0)]
    steps += [(-10 * US, "acquire", "c", 1), (0, "peek", "", 1)]
    replay(client, w, steps)


@pytest.mark.parametrize("seed", [4, 5])
def test_a_long_backlog_with_mixed_costs_matches_the_core(client: Any, seed: int) -> None:
    """Bursts of hundreds of leases of costs 1 to 900 expiring together while later ones stay
    (backlogs of dropped leases), denials whose retry_after needs more than the first 32 live
    leases (the binary search over ranks), releases, checks, and steps back by less and by more
    than the TTL in the middle of a backlog: every outcome and state the core's."""
    rnd = random.Random(seed)
    w = make_window("concurrency", Rate(20_000, 30 * US))
    steps: list[tuple[int, str, str, int]] = []
    jumps = [10 * US, 15 * US, 20 * US, 30 * US, -US, -5 * US, -15 * US, -30 * US, -31 * US, -45 * US]
    for i in range(1_500):
        r = rnd.random()
        dt = rnd.choice([0, 1, 700]) if r < 0.97 else rnd.choice(jumps)
        r = rnd.random()
        if r < 0.1:
            steps.append((dt, "release", f"l{rnd.randrange(i + 1)}", 0))
        elif r < 0.2:
            steps.append((dt, "peek", "", rnd.choice([1, 5_000, 15_000, 19_999])))
        elif r < 0.25:
            steps.append((dt, "hit", "", 0))
        else:
            steps.append((dt, "acquire", f"l{i}", rnd.choice([1, 1, 1, 2, 3, 8, 40] * 9 + [900])))
    replay(client, w, steps)


def test_a_sorted_set_of_the_earlier_form_is_read(client: Any) -> None:
    """The sorted set written before the bit sets (marker "Z", no " cut" nor " bits"): with mixed
    costs the bit sets are built once, and the decisions are the core's."""
    w = make_window("concurrency", Rate(10, 60 * US))
    clock = FakeClock(START / US)
    prefix = f"rwccs:{uuid.uuid4().hex[:10]}:"
    store = open_redis(rw_redis.URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    assert isinstance(store, RedisStore)
    try:
        k = store.codec.state_key("k", w)
        old = [(START - 10, "-", 1), (START + 5 * US, "a", 3), (START + 9 * US, "b", 2), (START + 20 * US, "-", 4)]
        client.zadd(k + ":z", {f"{id} {c} {i + 1}": e for i, (e, id, c) in enumerate(old)})
        client.hset(k + ":h", mapping={" used": 10, " seq": 4, "a": "3:2", "b": "2:3"})
        client.set(k, "Z", px=60_000)
        for key in (k + ":z", k + ":h"):
            client.pexpire(key, 60_000)
        state: Any = tuple((e, "" if id == "-" else id, c) for e, id, c in old)
        now = START
        for dt, op, lease, cost in [(0, "peek", "", 4), (0, "acquire", "c", 2), (0, "acquire", "d", 2)]:
            now += dt
            clock.set(now / US)
            want, new = run(op, [w], [state], now, [cost], lease)
            assert [o[:4] for o in store.apply(op, [("k", w, cost)], lease)] == [o[:4] for o in want]  # type: ignore[arg-type]
            if new is not None:
                state = new[0]
            assert live(read_state(client, store.codec, "k", w), now) == live(state, now)
        assert client.get(k) == b"Z2"
    finally:
        rw_redis.delete_prefix(prefix)
        store.close()

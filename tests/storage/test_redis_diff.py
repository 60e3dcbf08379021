"""Differential tests: the Lua scripts against the pure Python core, on the real Redis (db 12).

Hypothesis generates sequences of (time step, operation, cost) over one to three windows (any
mix of algorithms, one or two keys); every step runs once through the Redis store (one script
call, with the store's test hook giving the script the injected time instead of Redis TIME) and
once through ``core.evaluate.run`` on a dict of states. The outcomes must be equal to the
microsecond (allowed, remaining, reset, retry_after), and so must the state Redis holds, decoded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import rw_redis
from ratewarden import FakeClock, StoreError
from ratewarden.core.algorithms import ALGORITHMS, Quota, Window, make_window
from ratewarden.core.evaluate import run
from ratewarden.core.rates import US, Rate
from ratewarden.storage.redis import RedisStore, decode_state, open_redis, read_state

from .diff_scenarios import DAY, START, scenarios

redis = pytest.importorskip("redis")
pytestmark = pytest.mark.redis

URL = rw_redis.URL


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = redis.Redis.from_url(URL)
    yield c
    c.close()


def live(w: Window, state: Any, now: int) -> Any:
    """A state as it decides at ``now``: the Redis concurrency store drops expired leases on
    every call (a denial or a peek too), the core only when it writes; both decide alike."""
    if w.name != "concurrency" or not state:
        return state
    return tuple(x for x in state if x[0] > now) or None


def check(
    client: Any,
    items: list[tuple[str, Window]],
    steps: list[tuple[Any, ...]],
    hit1: bool = False,
    start: int = START,
    states_from: int = 0,
) -> None:
    """Run ``steps`` (time step, op, cost, lease) on the store and on the core: outcomes equal at
    every step, live states from step ``states_from`` on (reading a state of n entries back costs
    O(n): a build-up of n steps compared at each would cost O(n^2))."""
    clock = FakeClock(start / US)
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    store = open_redis(URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    assert isinstance(store, RedisStore)
    states: dict[tuple[str, str], Any] = {}
    now = start
    try:
        for i, (dt, op, cost, lease) in enumerate(steps):
            now += dt
            clock.set(now / US)
            assert int(clock() * US + 0.5) == now
            wins = [w for _, w in items]
            costs = [cost] * len(items)
            arg = lease if op in ("acquire", "release") else ""
            old = [states.get((k, w.id)) for k, w in items]
            try:
                want, new = run(op, wins, old, now, costs, arg)
            except NotImplementedError:  # charging a concurrency lease: the store refuses alike
                with pytest.raises(NotImplementedError):
                    store.apply(op, [(k, w, cost) for k, w in items], arg)
                continue
            if hit1 and op == "hit" and len(items) == 1:
                got = [store.hit1(items[0][0], items[0][1], cost)]
            else:
                got = store.apply(op, [(k, w, cost) for k, w in items], arg)
            assert [o[:4] for o in got] == [o[:4] for o in want], (op, cost, now - start)
            if new is not None:
                for (k, w), s, o in zip(items, new, want, strict=True):
                    if s is None or o[2] <= 0:
                        states.pop((k, w.id), None)
                    else:
                        states[k, w.id] = s
            for k, w in items if i >= states_from else ():
                got_state = live(w, read_state(client, store.codec, k, w), now)
                assert got_state == live(w, states.get((k, w.id)), now), (w, k)
    finally:
        rw_redis.delete_prefix(prefix)
        store.close()


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@SETTINGS
@given(data=st.data())
def test_each_algorithm_matches_the_core(client: Any, algorithm: str, data: st.DataObject) -> None:
    items, steps = data.draw(scenarios([algorithm]))
    check(client, items, steps, hit1=True)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_mixed_windows_and_keys_match_the_core(client: Any, data: st.DataObject) -> None:
    items, steps = data.draw(scenarios(sorted(ALGORITHMS)))
    check(client, items, steps)


DST_2026 = 1_774_746_000 * US  # 2026-03-29T01:00:00Z: Europe's clocks go forward (a 23-hour day)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris"])
@pytest.mark.parametrize("period", [DAY, 30 * DAY])
def test_quota_clock_stepping_back_by_more_than_a_period(client: Any, tz: str, period: int) -> None:
    """The clock steps back by one period and then another, so the state's period lies beyond
    every bound the client sends (it sends the previous, current and next period around its
    now): the script decides in it from the end stored with the state, exactly like the core
    (around a DST change, where a day is not 24 hours, too)."""
    items = [("a", make_window("quota", Rate(5, period), tz=tz, reset="02:30"))]
    steps = [
        (0, "hit", 1, ""),
        (-period, "hit", 1, ""),
        (-period, "hit", 2, ""),
        (-1, "peek", 1, ""),
        (-period // 2, "charge", 1, ""),
        (-period, "hit", 1, ""),
        (0, "hit", 5, ""),
        (3 * period, "hit", 1, ""),
        (-4 * period, "hit", 0, ""),
    ]
    for start in (START, DST_2026, DST_2026 + DAY // 2):
        check(client, items, steps, start=start)


def test_quota_states_written_without_their_end_are_still_read(client: Any) -> None:
    """A state of the earlier two-number form ("start used") counts in its period; stepped back
    across one reset it is decided from the bounds the client sent; beyond them the script
    refuses (clock skew) rather than guess, and writes nothing."""
    w = make_window("quota", Rate(5, DAY))
    assert isinstance(w, Quota)
    clock = FakeClock(START / US)
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    store = open_redis(URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    key = store.codec.state_key("a", w)
    day0 = w.calendar.bounds(START)[0]
    try:
        client.set(key, f"{day0} 3", px=60_000)
        now = START + 1_000
        clock.set(now / US)
        want = w.decide((day0, 3), now, 1)
        assert store.hit1("a", w, 1)[:4] == want[:4]
        assert decode_state(w, client.get(key)) == want[4] == (day0, 4)
        client.set(key, f"{day0} 3", px=60_000)
        now = START - 3_600 * US  # back across the reset: the state's period is the next one sent
        clock.set(now / US)
        want = w.decide((day0, 3), now, 2)
        assert store.apply("hit", [("a", w, 2)])[0][:4] == want[:4]
        assert decode_state(w, client.get(key)) == want[4] == (day0, 5)
        client.set(key, f"{day0 + 2 * DAY} 3", px=60_000)  # two periods ahead, no end stored
        with pytest.raises(StoreError, match="clock skew"):
            store.hit1("a", w, 1)
        assert client.get(key) == f"{day0 + 2 * DAY} 3".encode()
    finally:
        client.delete(key)
        store.close()


def test_a_deliberate_difference_is_caught(client: Any) -> None:
    """The comparison can fail: a core window with a different limit disagrees with Redis."""
    w5 = make_window("fixed-window", Rate(5, 60 * US))
    w4 = make_window("fixed-window", Rate(4, 60 * US))
    clock = FakeClock(START / US)
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    store = open_redis(URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    try:
        got = store.apply("hit", [("a", w5, 1)])
        want, _ = run("hit", [w4], [None], START, [1])
        assert got[0][:4] != want[0][:4]
    finally:
        store.reset("a")
        store.close()


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_a_merged_batch_matches_the_core_run_request_by_request(client: Any, data: st.DataObject) -> None:
    """The async client merges queued requests into one script call: the requests run one after
    the other in it, so the outcomes must be those of the core applied request by request (a
    later request sees what an earlier one wrote, denials write nothing). The requests are cut
    into several merged calls, each at its own time: the time steps between calls (the
    scenario's, so backward ones too) apply to the whole call."""
    from ratewarden.storage.redis import Codec

    items, steps = data.draw(scenarios(sorted(ALGORITHMS)))
    batches: list[tuple[int, list[tuple[Any, ...]]]] = []
    for i, (dt, step_op, cost, lease) in enumerate(steps):
        its = [(k, w) for k, w in items if data.draw(st.booleans(), label="in")] or items[:1]
        lease_charged = step_op == "charge" and any(w.name == "concurrency" for _, w in its)
        request = (its, "hit" if lease_charged else step_op, cost, lease)  # no charge of a lease
        if i == 0 or data.draw(st.booleans(), label="new call"):
            batches.append((dt if i else 0, []))
        batches[-1][1].append(request)
    clock = FakeClock(START / US + data.draw(st.integers(0, 10**6)))
    now = int(clock() * US + 0.5)
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    store = open_redis(URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    states: dict[tuple[str, str], Any] = {}
    try:
        for dt, requests in batches:
            now += dt
            clock.set(now / US)
            packed = [
                store.codec.pack(op, [(k, w, cost) for k, w in its], lease if op in ("acquire", "release") else "")
                for its, op, cost, lease in requests
            ]
            keys, args = Codec.merge(packed)
            reply = store._eval(keys, args)
            got = Codec.parse(reply, len(keys))
            want = []
            for its, op, cost, lease in requests:
                arg = lease if op in ("acquire", "release") else ""
                outs, new = run(
                    op, [w for _, w in its], [states.get((k, w.id)) for k, w in its], now, [cost] * len(its), arg
                )
                want += outs
                if new is not None:
                    for (k, w), s, o in zip(its, new, outs, strict=True):
                        if s is None or o[2] <= 0:
                            states.pop((k, w.id), None)
                        else:
                            states[k, w.id] = s
            assert [o[:4] for o in got] == [o[:4] for o in want], now - START
            for k, w in items:
                assert live(w, read_state(client, store.codec, k, w), now) == live(w, states.get((k, w.id)), now)
    finally:
        rw_redis.delete_prefix(prefix)
        store.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_long_sliding_log_matches_the_core(client: Any, seed: int) -> None:
    """Logs of hundreds of entries, entries leaving the window during long denial streaks (the
    script then binary-searches its sorted set for the first live entry), costs of several
    units, and the clock stepping back: the same outcomes and states as the core, every step."""
    import random

    rnd = random.Random(seed)
    w = make_window("sliding-log", Rate(300, 10 * US))
    steps: list[tuple[Any, ...]] = []
    for _ in range(1500):
        r = rnd.random()
        dt = rnd.choice([0, 1, 7, 1_000, 20_000, 333_333]) if r < 0.97 else rnd.choice([-1, -5_000, -10 * US, 4 * US])
        op = rnd.choice(["hit"] * 8 + ["peek", "charge"])
        steps.append((dt, op, rnd.choice([0, 1, 1, 1, 2, 5, 40]), ""))
    check(client, [("a", w)], steps, hit1=True)


def test_a_sliding_log_written_in_the_earlier_form_is_read(client: Any) -> None:
    """States written before the sorted set ("ts cost ts cost ...") decide as the core would."""
    w = make_window("sliding-log", Rate(3, 60 * US))
    clock = FakeClock(START / US)
    prefix = f"rwdiff:{uuid.uuid4().hex[:10]}:"
    store = open_redis(URL, key_prefix=prefix, _test_now=clock, timeout=2.0)
    key = store.codec.state_key("a", w)
    try:
        client.set(key, f"{START - 30 * US} 1 {START - 10 * US} 1", px=60_000)
        old = ((START - 30 * US, 1), (START - 10 * US, 1))
        want = w.decide(old, START, 1)
        assert store.hit1("a", w, 1)[:4] == want[:4]
        assert read_state(client, store.codec, "a", w) == want[4]
        assert not store.hit1("a", w, 1)[0]
    finally:
        store.reset("a")
        store.close()


YEAR = 365 * DAY
EXTREMES = [Rate(10**12, 10 * YEAR), Rate(1, 10 * YEAR), Rate(10**9, US)]


@pytest.mark.parametrize("rate", EXTREMES, ids=["1e12-per-10y", "1-per-10y", "1e9-per-second"])
@pytest.mark.parametrize(
    "algorithm", ["fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket", "concurrency"]
)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking these sequences takes minutes
)
@given(data=st.data())
def test_the_extremes_of_the_arithmetic_match_the_core(
    client: Any, algorithm: str, rate: Rate, data: st.DataObject
) -> None:
    """Limits up to 10^12 and periods up to 10 years (limit x period ~ 3e26, far beyond a Lua
    double's 2^53): the Redis store takes these rates and decides them to the microsecond as
    the core does, with costs up to the whole limit and time steps up to years."""
    w = make_window(algorithm, rate)
    lim, p = rate.limit, rate.period
    cost = st.one_of(
        st.sampled_from([0, 1, 2, lim // 3, lim // 2, lim - 1, lim, lim + 1]).map(lambda c: max(0, c)),
        st.integers(0, lim),
    )
    step = st.one_of(
        st.just(0),
        st.integers(1, 1_000),
        st.integers(0, p),
        st.sampled_from([p // 2, p - 1, p, p + 1, 2 * p, YEAR, 3 * YEAR]),
        st.integers(-1_000, -1),
    )
    ops = st.sampled_from(
        ["hit", "hit", "hit", "peek", "charge"] + (["acquire", "release"] * (algorithm == "concurrency"))
    )
    steps = data.draw(st.lists(st.tuples(step, ops, cost, st.sampled_from(["l1", "l2"])), min_size=1, max_size=20))
    steps = [(dt, "hit" if op == "charge" and algorithm == "concurrency" else op, c, ls) for dt, op, c, ls in steps]
    # The test clock holds float seconds: past 2^31 s (2038) it cannot name every microsecond.
    kept, total = [], 0
    for s in steps:
        total += s[0]
        if total > 11 * YEAR:
            break
        kept.append(s)
    check(client, [("a", w)], kept or steps[:1], hit1=True)


@pytest.mark.parametrize("rate", EXTREMES, ids=["1e12-per-10y", "1-per-10y", "1e9-per-second"])
@pytest.mark.parametrize("algorithm", ["sliding-window", "token-bucket", "gcra", "sliding-log", "fixed-window"])
@pytest.mark.parametrize("seed", range(4))
def test_the_extremes_at_retry_after_and_one_microsecond_before(
    client: Any, algorithm: str, rate: Rate, seed: int
) -> None:
    """The boundaries themselves: every denied request is retried exactly at its retry_after
    and one microsecond before it (the steps are planned on the core, then replayed on both)."""
    import random

    rnd = random.Random(seed)
    w = make_window(algorithm, rate)
    lim = rate.limit
    states: list[Any] = [None]
    now = START
    steps: list[tuple[Any, ...]] = []
    dt = 0
    for _ in range(30):
        cost = rnd.choice([1, lim, max(1, lim // 3), max(1, lim - 1), rnd.randint(1, lim)])
        steps.append((dt, "hit", cost, ""))
        now += dt
        outs, new = run("hit", [w], states, now, [cost])
        if new is not None:
            states = new
        retry = outs[0][3]
        if retry > 0:
            dt = retry - rnd.choice([0, 1])
        else:
            dt = rnd.choice([0, 1, rate.period // 7])
        if now + dt - START > 11 * YEAR:
            break
    check(client, [("a", w)], steps, hit1=True)


def test_a_log_leaving_the_window_at_once_is_trimmed_over_several_calls(client: Any) -> None:
    """2,500 entries leave the window together: a call removes at most 250 of them (bounded
    work), the rest are passed over until later calls remove them; outcomes and states stay the
    core's at every step, and the set ends with the live entries only."""
    w = make_window("sliding-log", Rate(3_000, 10 * US))
    steps: list[tuple[Any, ...]] = [(0 if i == 0 else 1, "hit", 1, "") for i in range(2_500)]
    steps += [(1_000, "hit", 1, "")] * 10  # these stay in the window
    steps += [(10 * US + 2_500 - 12_499, "hit", 1, "")]  # the first 2,500 have just left it
    steps += [(1, "peek", 1, ""), (1, "hit", 2, ""), (1, "hit", 0, ""), (1, "charge", 1, "")]
    steps += [(1, "hit", 1, "")] * 3
    check(client, [("a", w)], steps, hit1=True, states_from=2_499)

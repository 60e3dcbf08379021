"""The public ``Limiter("memory://", clock=FakeClock())`` against several reference models at once.

A multi-window request (``"3/2s;5/7s"``, or any two or three random windows) must be admitted by
every window or consume nothing in any (docs/design.md#all-or-nothing). For random sequences of
(time step, cost) on one key, each test checks the public :class:`Decision`:

* ``allowed`` == every model admits;
* on a denial, ``retry_after`` is the largest wait among the denying windows (``inf`` if a cost
  can never fit), the request passes when peeked at ``now + retry_after`` and not 1 us before,
  and ``rate`` names a denying window that asks that wait;
* when allowed, ``remaining`` is the smallest remaining among the windows;
* ``status`` gives one Decision per window, equal to that window's model;
* ``peek`` gives the Decision of ``hit`` and consumes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.reference import (
    NEVER,
    ConcurrencyModel,
    FixedWindowModel,
    GCRAModel,
    Model,
    SlidingLogModel,
    SlidingWindowModel,
    TokenBucketModel,
    expected,
    first_true,
)
from ratewarden import AsyncLimiter, FakeClock, Limiter, Rate

S = 1_000_000
EPOCH = 1_767_225_600 * S

MODELS: dict[str, type[Model]] = {
    "fixed-window": FixedWindowModel,
    "sliding-log": SlidingLogModel,
    "sliding-window": SlidingWindowModel,
    "gcra": GCRAModel,
    "token-bucket": TokenBucketModel,
    "concurrency": ConcurrencyModel,
}

RATES = st.lists(
    st.builds(
        Rate,
        st.integers(1, 6),
        st.sampled_from([S, 2 * S, 3 * S, 7 * S, 10 * S, 60 * S, 1500 * 1000, 333_333]),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda r: r.period,  # one state per (algorithm, period) for the limit-free ones
).map(tuple)

STEPS = st.lists(
    st.tuples(
        st.one_of(
            st.just(0),
            st.integers(1, 2),
            st.integers(0, 12 * S),
            st.sampled_from(["retry", "edge"]),
        ),
        st.integers(0, 8),
    ),
    min_size=1,
    max_size=25,
)


def set_time(clock: FakeClock, us: int) -> None:
    clock.set(us / S)


def check_denial(d: Any, models: list[Model], rates: tuple[Rate, ...], now: int, cost: int) -> int:
    """The Decision of a denial against the models; returns the expected retry in us."""
    waits = []
    for m in models:
        if cost > m.capacity:
            waits.append(math.inf)
        elif not m.fits(now, max(cost, 1)):
            waits.append(first_true(lambda t, m=m: m.fits(now + t, max(cost, 1)), 1, m.horizon))
        else:
            waits.append(None)
    longest = max(w for w in waits if w is not None)
    if math.isinf(longest):
        assert math.isinf(d.retry_after) and d.reason == "cost_exceeds_limit"
    else:
        assert round(d.retry_after * S) == longest
    assert d.rate in [r for r, w in zip(rates, waits, strict=True) if w == longest]
    return -1 if math.isinf(longest) else int(longest)


@pytest.mark.parametrize("algorithm", sorted(MODELS))
@settings(max_examples=100, deadline=None)
@given(rates=RATES, offset=st.integers(0, 20 * S), steps=STEPS)
def test_limiter_multiwindow_all_or_nothing(
    algorithm: str, rates: tuple[Rate, ...], offset: int, steps: list[tuple[Any, int]]
) -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, algorithm=algorithm)
    models = [MODELS[algorithm](r.limit, r.period) for r in rates]
    now = EPOCH + offset
    last_retry = 0
    for step, cost in steps:
        if step == "retry":
            now += last_retry
        elif step == "edge":
            now += rates[0].period - now % rates[0].period
        else:
            now += step
        set_time(clock, now)

        # status: one Decision per window, nothing consumed
        for d, m in zip(limiter.status("k", rates), models, strict=True):
            exp = expected_check(m, now)
            assert (d.allowed, d.remaining, round(d.reset_after * S)) == exp

        peeked = limiter.peek("k", rates, cost)
        d = limiter.hit("k", rates, cost)
        assert (peeked.allowed, peeked.remaining, peeked.retry_after) == (d.allowed, d.remaining, d.retry_after)

        allowed = all(cost <= m.capacity and m.fits(now, max(cost, 1)) for m in models)
        assert d.allowed == allowed, (now - EPOCH, cost, d)
        if allowed:
            outs = [expected(m, now, cost) for m in models]  # admits into every model
            assert d.retry_after == 0
            assert d.remaining == min(o[1] for o in outs)
            last_retry = 0
        else:
            retry = check_denial(d, models, rates, now, cost)
            assert retry == NEVER or (d.retry_after_header or 0) >= 1
            if retry != NEVER:
                set_time(clock, now + retry)
                assert limiter.peek("k", rates, cost).allowed, "not admitted at now + retry_after"
                set_time(clock, now + retry - 1)
                assert not limiter.peek("k", rates, cost).allowed, "retry_after is not tight"
                set_time(clock, now)
            last_retry = max(0, retry)


def expected_check(m: Model, now: int) -> tuple[bool, int, int]:
    """What ``status`` (cost 0) says for one window: one unit fits, remaining, reset."""
    reset = first_true(lambda t: m.empty(now + t), 0, m.horizon)
    return m.fits(now, 1), m.remaining(now), reset


@settings(max_examples=60, deadline=None)
@given(rates=RATES, steps=STEPS)
async def test_async_limiter_agrees_with_sync(rates: tuple[Rate, ...], steps: list[tuple[Any, int]]) -> None:
    """``AsyncLimiter`` runs the same core: on the same sequence it gives the same Decisions."""
    c1, c2 = FakeClock(), FakeClock()
    sync = Limiter("memory://", clock=c1, algorithm="sliding-log")
    alim = AsyncLimiter("memory://", clock=c2, algorithm="sliding-log")
    now = EPOCH
    for step, cost in steps:
        now += step if isinstance(step, int) else S
        set_time(c1, now)
        set_time(c2, now)
        assert await alim.hit("k", rates, cost) == sync.hit("k", rates, cost)
        assert await alim.status("k", rates) == sync.status("k", rates)


@pytest.mark.parametrize("algorithm", sorted(MODELS))
def test_denial_in_one_window_leaves_the_others_untouched(algorithm: str) -> None:
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock, algorithm=algorithm)
    before = limiter.status("k", "2/second;10/minute")
    assert limiter.hit("k", "2/second;10/minute", 2).allowed
    mid = limiter.status("k", "2/second;10/minute")
    assert not limiter.hit("k", "2/second;10/minute").allowed  # the second's window denies
    assert limiter.status("k", "2/second;10/minute") == mid  # ... and the minute's is unchanged
    assert mid[1].remaining == before[1].remaining - 2 == 8


def test_rates_given_as_a_list() -> None:
    """``RateSpec`` includes a list of strings or Rates (limiter.py): every method accepts one."""
    limiter = Limiter("memory://", clock=FakeClock())
    rates = ["2/second", Rate(5, 60 * S)]
    assert limiter.hit("k", rates).allowed
    assert limiter.peek("k", rates).remaining == 0  # peek answers what hit would: one left, then none
    assert limiter.peek("k", rates, cost=0).remaining == 1
    assert [d.remaining for d in limiter.status("k", rates)] == [1, 4]


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 5),
    ttl=st.sampled_from([S, 3 * S, 60 * S]),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("acquire"), st.integers(0, 7)),
            st.tuples(st.just("release"), st.integers(0, 20)),
            st.tuples(st.just("advance"), st.integers(0, 4 * S)),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_concurrency_leases_against_a_model(limit: int, ttl: int, ops: list[tuple[str, int]]) -> None:
    """``acquire``/``release``: at most ``limit`` units in flight at once; a released or expired
    lease frees its units; retry_after is the time until enough leases expire by their TTL."""
    clock = FakeClock()
    limiter = Limiter("memory://", clock=clock)
    rate = Rate(limit, ttl)
    now = EPOCH
    set_time(clock, now)
    leases: list[tuple[str, int, int]] = []  # (name, taken at, cost), released ones removed

    def in_flight(t: int) -> int:
        return sum(c for _, s, c in leases if s <= t < s + ttl)

    for op, arg in ops:
        if op == "advance":
            now += arg
            set_time(clock, now)
        elif op == "release":
            if leases:
                name = leases.pop(arg % len(leases))[0]
                limiter.release("k", rate, name)
            else:
                limiter.release("k", rate, "no-such-lease")
        else:
            cost = arg
            d = limiter.acquire("k", rate, cost)
            used = in_flight(now)
            ok = cost <= limit and used + max(cost, 1) <= limit
            assert d.allowed == ok, (now, cost, used, d)
            if ok:
                if cost:
                    assert d.lease is not None
                    leases.append((d.lease, now, cost))
                assert d.remaining == limit - in_flight(now)
            elif cost > limit:
                assert math.isinf(d.retry_after)
            else:
                need = max(cost, 1)
                wait = first_true(lambda t, t0=now, need=need: in_flight(t0 + t) + need <= limit, 1, 2 * ttl)
                assert round(d.retry_after * S) == wait
                assert d.remaining == limit - used
        assert in_flight(now) <= limit
        assert limiter.status("k", rate, algorithm="concurrency")[0].remaining == limit - in_flight(now)

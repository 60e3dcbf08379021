"""Every algorithm's pure ``decide`` against its reference model (tests/core/reference.py).

For random sequences of (time step, cost), with steps of 0, steps landing exactly on window
edges and on ``now + retry_after`` (and 1 us before it), costs of 0 and costs above the
capacity, each test checks that:

* the whole Outcome ``(allowed, remaining, reset_us, retry_us)`` equals the model's;
* the admitted units never exceed the algorithm's bound (see each ``_check_bound`` branch);
* a request sent at ``now + retry_us`` passes when nothing else consumed, and one sent 1 us
  earlier is denied (every algorithm here is tight);
* a denial and a cost-0 check leave the state as it was (same answers at every later time);
* a cost above the capacity is denied with ``retry_us == NEVER``.

The bound of the token-bucket family (gcra, token-bucket): over any closed interval of length
``L`` (from one admission to a later one) at most ``burst + L * limit / P`` units are admitted.
The continuous bucket starts full (``burst``) and gains ``L * limit / P`` over the interval, and
neither algorithm may admit more than that, whatever the rounding.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden.core.algorithms import (
    GCRA,
    NEVER,
    Concurrency,
    FixedWindow,
    Quota,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
    Window,
)
from ratewarden.core.rates import Rate

from .reference import (
    DAY,
    ConcurrencyModel,
    FixedWindowModel,
    GCRAModel,
    Model,
    QuotaModelUTC,
    SlidingLogModel,
    SlidingWindowModel,
    TokenBucketModel,
    expected,
)

EPOCH = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in us

PERIODS = [1, 2, 3, 5, 7, 10, 60, 1000, 999_999, 1_000_000, 3_600_000_000]


def build(name: str, limit: int, period: int, burst: int | None) -> tuple[Window, Model]:
    rate = Rate(limit, period)
    if name == "fixed-window":
        return FixedWindow(rate), FixedWindowModel(limit, period)
    if name == "sliding-log":
        return SlidingLog(rate), SlidingLogModel(limit, period)
    if name == "sliding-window":
        return SlidingWindow(rate), SlidingWindowModel(limit, period)
    if name == "gcra":
        return GCRA(rate), GCRAModel(limit, period)
    if name == "gcra-burst":
        return GCRA(rate, burst=burst), GCRAModel(limit, period, burst)
    if name == "token-bucket":
        return TokenBucket(rate), TokenBucketModel(limit, period)
    if name == "token-bucket-burst":
        return TokenBucket(rate, burst=burst), TokenBucketModel(limit, period, burst)
    if name == "concurrency":
        return Concurrency(rate), ConcurrencyModel(limit, period)
    raise AssertionError(name)


# A step is a number of microseconds or a tag resolved against the current state:
# "edge" = to the next aligned window edge, "expiry" = to the moment the oldest admission stops
# counting, "retry" / "retry-1" = to now + the last retry (or 1 us before it).
STEP = st.one_of(
    st.just(0),
    st.integers(1, 3),
    st.floats(0, 2.2).map(lambda f: ("frac", f)),
    st.sampled_from(["edge", "expiry", "retry", "retry-1"]),
)


def resolve(step: Any, now: int, period: int, model: Model, last_retry: int) -> int:
    if isinstance(step, int):
        return step
    if isinstance(step, tuple):
        return int(step[1] * period)
    if step == "edge":
        return period - now % period
    if step == "expiry":
        return max(0, model.log[0][0] + period - now) if model.log else 0
    if step == "retry":
        return max(0, last_retry)
    return max(0, last_retry - 1)  # "retry-1"


def same_state(w: Window, a: Any, b: Any, now: int, horizon: int) -> None:
    """Two states are the same if they give the same answers at every probed later time."""
    for dt in (0, 1, w.period // 2, w.period - 1, w.period, w.period + 1, horizon):
        for c in (0, 1, w.capacity):
            assert w.decide(a, now + dt, c)[:4] == w.decide(b, now + dt, c)[:4], (a, b, dt, c)


def check_bound(name: str, w: Window, model: Model) -> None:
    """The admission bound of each algorithm, on the model's admission log."""
    log = model.log
    limit, p = w.limit, w.period
    if not log:
        return
    t_last = log[-1][0]
    if name == "fixed-window":
        assert sum(c for s, c in log if s // p == t_last // p) <= limit
    elif name == "sliding-log":
        # The heaviest window (t - P, t] ends at an admission: checking at the newest is enough.
        assert sum(c for s, c in log if s > t_last - p) <= limit
    elif name == "concurrency":
        assert sum(c for s, c in log if s <= t_last < s + p) <= limit
    elif name == "sliding-window":
        # Never more than 2x the limit in any rolling window (t - P, t].
        assert sum(c for s, c in log if s > t_last - p) <= 2 * limit
        # ... and never more than the limit in any aligned window.
        assert sum(c for s, c in log if s // p == t_last // p) <= limit
    else:  # gcra, token-bucket: burst + L * limit / P over [s_i, t_last]
        burst = w.capacity
        total = 0
        for s, c in reversed(log):
            total += c
            assert total * p <= burst * p + (t_last - s) * limit, (total, s, t_last)


ALGOS = [
    "fixed-window",
    "sliding-log",
    "sliding-window",
    "gcra",
    "gcra-burst",
    "token-bucket",
    "token-bucket-burst",
    "concurrency",
]


@pytest.mark.parametrize("name", ALGOS)
@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 8),
    period=st.sampled_from(PERIODS),
    burst=st.integers(1, 10),
    offset=st.one_of(st.just(0), st.integers(0, 10**7)),
    ops=st.lists(st.tuples(STEP, st.integers(0, 12)), min_size=1, max_size=30),
)
def test_decide_matches_model(
    name: str, limit: int, period: int, burst: int, offset: int, ops: list[tuple[Any, int]]
) -> None:
    w, model = build(name, limit, period, burst)
    now = EPOCH + offset
    state: Any = None
    last_retry = 0
    for step, raw_cost in ops:
        now += resolve(step, now, period, model, last_retry)
        cost = raw_cost if raw_cost <= w.capacity + 2 else raw_cost % (w.capacity + 1)
        out = w.decide(state, now, cost)
        exp = expected(model, now, cost)
        assert out[:4] == exp, (name, now - EPOCH, cost, state, out, exp)
        allowed, _, _, retry, new = out
        if cost > w.capacity:
            assert not allowed and retry == NEVER
        if allowed and cost:
            state = new
            check_bound(name, w, model)
        else:
            # A denial or a check (cost 0) changes nothing, whatever new_state it hands back.
            same_state(w, new, state, now, model.horizon)
            if allowed:
                state = new  # what a store writes after an all-allowed cost-0 hit
        if not allowed and retry != NEVER:
            assert retry >= 1
            assert w.decide(state, now + retry, cost)[0], "not admitted at now + retry_after"
            assert not w.decide(state, now + retry - 1, cost)[0], "retry_after is not tight"
        last_retry = retry if retry > 0 else 0


@pytest.mark.parametrize("name", ALGOS)
@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 6), period=st.sampled_from(PERIODS), burst=st.integers(1, 8), data=st.data())
def test_charge_consumes_unconditionally(name: str, limit: int, period: int, burst: int, data: st.DataObject) -> None:
    """``charge`` is a forced admission: the model with the cost admitted gives the same answers."""
    w, model = build(name, limit, period, burst)
    if name == "concurrency":
        with pytest.raises(NotImplementedError):
            w.charge(None, EPOCH, 1)
        return
    now = EPOCH
    state: Any = None
    for _ in range(data.draw(st.integers(1, 6))):
        now += data.draw(st.sampled_from([0, 1, period // 3, period]))
        cost = data.draw(st.integers(1, w.capacity))
        if w.decide(state, now, cost)[0] and expected(model, now, cost)[0]:
            state = w.charge(state, now, cost)  # fits: a charge is a hit
    cost = data.draw(st.integers(1, w.capacity))
    state = w.charge(state, now, cost)
    model.admit(now, cost)
    # After a possible overdraft, the answers still agree with the model (remaining floored at 0).
    for dt in (0, 1, period // 2, period):
        out = w.decide(state, now + dt, 0)  # a check: consumes nothing
        m_allowed = model.fits(now + dt, 1)
        assert out[0] == m_allowed
        assert max(0, out[1]) == model.remaining(now + dt)


@pytest.mark.parametrize("monthly", [False, True])
@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 8),
    reset=st.sampled_from(["00:00", "06:30", "23:59"]),
    offset=st.integers(0, 400 * DAY),
    ops=st.lists(
        st.tuples(
            st.one_of(
                st.just(0),
                st.integers(1, 3),
                st.integers(1, 40 * 3_600_000_000),
                st.sampled_from(["retry", "retry-1"]),
            ),
            st.integers(0, 10),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_quota_matches_model(monthly: bool, limit: int, reset: str, offset: int, ops: list[tuple[Any, int]]) -> None:
    """UTC quotas, daily and monthly, with a reset time: per-period budget, retry = time to reset."""
    period = 30 * DAY if monthly else DAY
    w = Quota(Rate(limit, period), tz="UTC", reset=reset)
    h, m = map(int, reset.split(":"))
    model = QuotaModelUTC(limit, monthly, h * 60 + m)
    now = EPOCH + offset
    state: Any = None
    last_retry = 0
    for step, cost in ops:
        if step == "retry":
            now += last_retry
        elif step == "retry-1":
            now += max(0, last_retry - 1)
        else:
            now += step
        out = w.decide(state, now, cost)
        exp = expected(model, now, cost)
        assert out[:4] == exp, (now - EPOCH, cost, out, exp)
        allowed, _, reset_us, retry, new = out
        if allowed and cost:
            state = new
            p = model.period_of(now)
            assert sum(c for s, c in model.log if model.period_of(s) == p) <= limit
        else:
            same_state(w, new, state, now, 40 * DAY)
        if not allowed and retry != NEVER:
            assert retry == reset_us  # the time to the next reset
            assert w.decide(state, now + retry, cost)[0]
            assert not w.decide(state, now + retry - 1, cost)[0]
        last_retry = max(0, retry)


def test_token_bucket_never_refills_twice_when_the_clock_steps_back() -> None:
    """A time read late (another process, an NTP step back) must not credit a refill twice:
    the admitted units still respect burst + L * limit / P over [0, 5 s]."""
    w = TokenBucket(Rate(10, 10 * 1_000_000))  # 1 token a second, burst 10
    t0 = EPOCH
    state: Any = None
    admitted = 0
    for now, cost in ((t0, 10), (t0 + 5_000_000, 4), (t0 + 4_000_000, 1), (t0 + 5_000_000, 1)):
        out = w.decide(state, now, cost)
        if out[0]:
            state = out[4]
            admitted += cost
    assert admitted <= 10 + 5


def test_concurrency_release() -> None:
    w = Concurrency(Rate(3, 60 * 1_000_000))
    now = EPOCH
    out = w.acquire(None, now, 1, "a")
    out = w.acquire(out[4], now, 1, "b")
    out = w.decide(out[4], now, 1)  # anonymous: released only by the TTL
    state = out[4]
    assert not w.decide(state, now, 1)[0]
    held, state2 = w.release(state, now, "a")
    assert held and w.decide(state2, now, 1)[0]
    assert w.release(state2, now, "a")[0] is False  # twice: no longer held
    assert w.release(state, now, "nope") == (False, state)
    held, state3 = w.release(state, now, "")  # "" is not a lease name
    assert not held and state3 == state
    assert w.release(state, now + 60 * 1_000_000, "b") == (False, None)  # expired: nothing held


@pytest.mark.parametrize(
    "name", ["fixed-window", "sliding-log", "sliding-window", "token-bucket", "token-bucket-burst"]
)
@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(1, 6),
    period=st.sampled_from([2, 5, 10, 1000]),
    burst=st.integers(1, 8),
    ops=st.lists(st.tuples(st.floats(-2.2, 2.2), st.integers(0, 6)), min_size=1, max_size=30),
)
def test_a_clock_stepping_back_never_reopens_what_was_used(
    name: str, limit: int, period: int, burst: int, ops: list[tuple[float, int]]
) -> None:
    """Times may go back (an NTP step, a failover to a server whose clock is behind). Each
    admission is then charged to the latest time its state knows of (the last admission, and for
    the windowed algorithms the start of the state's window), and the bounds still hold there: a window that was
    left is never reopened, a refill is never credited twice. (gcra is not here: a request
    stamped before an idle TAT can start a new schedule in the past; concurrency leases taken
    late expire early. Both are bounded by the size of the step.)"""
    w, model = build(name, limit, period, burst)
    now = EPOCH + 10 * period
    latest = 0  # the latest admission: what the state can know of time
    state: Any = None
    for frac, raw_cost in ops:
        now = max(EPOCH, now + int(frac * period))
        # Costs 1..capacity: a check (cost 0) or a cost above the capacity records no time.
        cost = min(max(raw_cost, 1), w.capacity)
        out = w.decide(state, now, cost)
        assert out[3] != NEVER
        if out[0]:
            state = out[4]
            if cost:
                # what the state knows of time: the last admission, and the window it is in
                latest = max(latest, now, state[0] if name in ("fixed-window", "sliding-window") else 0)
                model.admit(latest, cost)
                check_bound(name, w, model)
        elif out[3] > 0:
            assert w.decide(state, now + out[3], cost)[0]  # retry_after still measured from now


def test_quota_clock_stepping_back_across_the_reset() -> None:
    w = Quota(Rate(3, DAY))
    midnight = EPOCH + 10 * DAY
    state = None
    for now in (midnight + 1, midnight + 2, midnight + 3):
        out = w.decide(state, now, 1)
        assert out[0]
        state = out[4]
    out = w.decide(state, midnight - 5, 1)  # 5 us before the reset, after the period began
    assert not out[0] and out[3] == DAY + 5  # the day that was left stays closed
    assert w.charge(state, midnight - 5, 1) == (midnight, 4)


def test_fixed_window_clock_stepping_back_keeps_the_newest_window() -> None:
    w = FixedWindow(Rate(2, 1000))
    t = EPOCH + 5000
    s1 = w.decide(None, t + 10, 2)[4]
    out = w.decide(s1, t - 1, 1)  # the previous window, seen late
    assert not out[0] and out[3] == 1000 + 1
    assert w.charge(s1, t - 1, 1) == (t, 3)

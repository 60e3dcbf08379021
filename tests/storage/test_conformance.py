"""The same behaviour on every backend (backends.BACKENDS), through Limiter and AsyncLimiter alike.

Each test body is written once as a coroutine against ``rl``, a thin face that awaits the async
limiter's methods and calls the sync limiter's directly, so the two faces cannot drift apart.
Tests that move the fake clock are skipped on backends that take time from the server.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest

from ratewarden import ALGORITHMS, AsyncLimiter, ConfigError, Decision, FakeClock, Limiter, RateParseError

from . import backends
from .backends import Backend, needs_fake_clock

# the fixtures, parametrised over backends.BACKENDS
backend = backends.backend
make_limiter = backends.make_limiter
make_alimiter = backends.make_alimiter
limiter = backends.limiter
alimiter = backends.alimiter

US = 1_000_000
#: a rate each algorithm accepts (quota is per calendar day or month)
RATE = {name: "5/day" if name == "quota" else "5/minute" for name in ALGORITHMS}
#: two windows on one key, the first one the tighter
TWO = {name: "5/day;20/month" if name == "quota" else "5/10 minutes;20/hour" for name in ALGORITHMS}
#: the same two windows with the wider period the tighter
TWO_REVERSED = {name: "20/day;5/month" if name == "quota" else "20/10 minutes;5/hour" for name in ALGORITHMS}
#: algorithms whose retry_after is tight to the microsecond (sliding-window's is an upper estimate)
TIGHT = sorted(set(ALGORITHMS) - {"sliding-window"})


class Face:
    """``await rl.hit(...)`` whichever limiter is behind it."""

    def __init__(self, lim: Limiter | AsyncLimiter, make: Callable[..., Limiter | AsyncLimiter]) -> None:
        self.lim = lim
        self._make = make
        self.is_async = isinstance(lim, AsyncLimiter)

    def make(self, **options: Any) -> Face:
        """Another limiter of the same kind on the same backend."""
        return Face(self._make(**options), self._make)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.lim, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return call

    async def lease_cycle(self, key: str, rates: str) -> tuple[Decision, list[Decision]]:
        """Hold a lease through the context manager; status inside and after."""
        if isinstance(self.lim, AsyncLimiter):
            async with self.lim.lease(key, rates) as d:
                inside = await self.lim.status(key, rates, algorithm="concurrency")
            return d, [*inside, *await self.lim.status(key, rates, algorithm="concurrency")]
        with self.lim.lease(key, rates) as d:
            inside = self.lim.status(key, rates, algorithm="concurrency")
        return d, [*inside, *self.lim.status(key, rates, algorithm="concurrency")]


@pytest.fixture(params=["sync", "async"])
def rl(request: pytest.FixtureRequest, make_limiter: Any, make_alimiter: Any) -> Face:
    make = make_limiter if request.param == "sync" else make_alimiter
    return Face(make(), make)


def snapshot(ds: list[Decision]) -> list[tuple[Any, ...]]:
    return [(d.allowed, d.limit, d.remaining, d.reset_after, d.retry_after, d.rate) for d in ds]


def now_us(clock: FakeClock) -> int:
    return int(clock() * US + 0.5)


def set_us(clock: FakeClock, us: int) -> None:
    clock.set(us / US)


# -- hit / peek / status ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_hit_admits_the_limit_then_denies(rl: Face, algorithm: str) -> None:
    rate = RATE[algorithm]
    got = [await rl.hit("k", rate, algorithm=algorithm) for _ in range(7)]
    assert [d.allowed for d in got] == [True] * 5 + [False] * 2
    assert [d.remaining for d in got] == [4, 3, 2, 1, 0, 0, 0]
    assert all(d.limit == 5 and d.algorithm == algorithm for d in got)
    assert all(d.retry_after == 0 for d in got[:5])
    assert all(d.retry_after > 0 and d.retry_after_header >= 1 for d in got[5:])
    assert (await rl.hit("other", rate, algorithm=algorithm)).remaining == 4  # keys are independent


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_peek_predicts_hit_and_consumes_nothing(rl: Face, algorithm: str) -> None:
    rate = RATE[algorithm]
    await rl.hit("k", rate, 2, algorithm=algorithm)
    for _ in range(3):
        p = await rl.peek("k", rate, 2, algorithm=algorithm)
        assert (p.allowed, p.remaining) == (True, 1)
    h = await rl.hit("k", rate, 2, algorithm=algorithm)
    assert snapshot([h]) == snapshot([p])
    denied = await rl.peek("k", rate, 2, algorithm=algorithm)
    assert not denied.allowed
    assert snapshot([await rl.hit("k", rate, 2, algorithm=algorithm)]) == snapshot([denied])


async def test_status_returns_one_decision_per_window(rl: Face) -> None:
    await rl.hit("k", "5/10 minutes;20/hour", 2, algorithm="fixed-window")
    ds = await rl.status("k", "5/10 minutes;20/hour", algorithm="fixed-window")
    assert [(str(d.rate), d.limit, d.remaining, d.allowed) for d in ds] == [
        ("5/10 minutes", 5, 3, True),
        ("20/hour", 20, 18, True),
    ]
    await rl.hit("k", "5/10 minutes;20/hour", 3, algorithm="fixed-window")
    ds = await rl.status("k", "5/10 minutes;20/hour", algorithm="fixed-window")
    assert [(d.remaining, d.allowed) for d in ds] == [(0, False), (15, True)]
    assert ds[0].retry_after > 0 and ds[1].retry_after == 0


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_a_window_is_shared_by_every_rate_string_that_names_it(rl: Face, algorithm: str) -> None:
    two = TWO[algorithm]
    wide = two.split(";")[1]
    for _ in range(3):
        assert (await rl.hit("k", two, algorithm=algorithm)).allowed
    (hour,) = await rl.status("k", wide, algorithm=algorithm)
    assert hour.remaining == 17
    assert (await rl.peek("k", wide, algorithm=algorithm)).remaining == 16
    await rl.hit("k", wide, algorithm=algorithm)  # charged alone, seen by the pair
    assert (await rl.status("k", two, algorithm=algorithm))[1].remaining == 16


# -- all or nothing, denials are free ------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("rates", ["narrow-first", "wide-first"])
async def test_a_denial_in_one_window_leaves_the_other_untouched(rl: Face, algorithm: str, rates: str) -> None:
    spec = (TWO if rates == "narrow-first" else TWO_REVERSED)[algorithm]
    for _ in range(5):
        assert (await rl.hit("k", spec, algorithm=algorithm)).allowed
    before = await rl.status("k", spec, algorithm=algorithm)
    assert [d.remaining for d in before] == ([0, 15] if rates == "narrow-first" else [15, 0])
    for cost in (1, 3):
        d = await rl.hit("k", spec, cost, algorithm=algorithm)
        assert not d.allowed
        assert d.rate == before[0 if rates == "narrow-first" else 1].rate  # the denying window decides
    after = await rl.status("k", spec, algorithm=algorithm)
    assert snapshot(after) == snapshot(before)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_denials_consume_nothing(rl: Face, algorithm: str) -> None:
    rate = RATE[algorithm]
    await rl.hit("k", rate, 4, algorithm=algorithm)
    before = await rl.status("k", rate, algorithm=algorithm)
    for _ in range(20):
        assert not (await rl.hit("k", rate, 2, algorithm=algorithm)).allowed
    assert snapshot(await rl.status("k", rate, algorithm=algorithm)) == snapshot(before)
    assert (await rl.hit("k", rate, 1, algorithm=algorithm)).allowed  # the last unit is still there


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_retry_after_is_exact(rl: Face, backend: Backend, clock: FakeClock, algorithm: str) -> None:
    needs_fake_clock(backend)
    rate = RATE[algorithm]
    set_us(clock, now_us(clock) + 17 * US + 123_457)  # off the window edges
    for _ in range(5):
        await rl.hit("k", rate, algorithm=algorithm)
        clock.advance(0.25)
    d = await rl.hit("k", rate, algorithm=algorithm)
    assert not d.allowed and 0 < d.retry_after < math.inf
    retry_us = round(d.retry_after * US)
    start = now_us(clock)
    if algorithm in TIGHT:
        set_us(clock, start + retry_us - 1)
        late = await rl.hit("k", rate, algorithm=algorithm)
        assert not late.allowed, f"{algorithm} admitted 1 µs before retry_after"
        assert round(late.retry_after * US) == 1
    set_us(clock, start + retry_us)
    assert (await rl.hit("k", rate, algorithm=algorithm)).allowed


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_multi_window_retry_after_is_the_longest_wait(
    rl: Face, backend: Backend, clock: FakeClock, algorithm: str
) -> None:
    needs_fake_clock(backend)
    spec = TWO_REVERSED[algorithm]  # the wide window denies, and asks the longer wait
    for _ in range(5):
        await rl.hit("k", spec, algorithm=algorithm)
    d = await rl.hit("k", spec, algorithm=algorithm)
    assert not d.allowed
    assert d.retry_after == max(x.retry_after for x in await rl.status("k", spec, algorithm=algorithm))
    clock.advance(d.retry_after)
    assert (await rl.hit("k", spec, algorithm=algorithm)).allowed


# -- cost ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_cost_zero_only_checks(rl: Face, algorithm: str) -> None:
    rate = RATE[algorithm]
    for _ in range(3):
        d = await rl.hit("k", rate, 0, algorithm=algorithm)
        assert (d.allowed, d.remaining) == (True, 5)
    await rl.hit("k", rate, 5, algorithm=algorithm)
    before = await rl.status("k", rate, algorithm=algorithm)
    d = await rl.hit("k", rate, 0, algorithm=algorithm)
    assert (d.allowed, d.remaining) == (False, 0) and d.retry_after > 0
    assert snapshot(await rl.status("k", rate, algorithm=algorithm)) == snapshot(before)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_cost_above_the_limit_is_refused_for_good(rl: Face, algorithm: str) -> None:
    rate = RATE[algorithm]
    await rl.hit("k", rate, 1, algorithm=algorithm)
    for call in (rl.hit, rl.peek):
        d = await call("k", rate, 6, algorithm=algorithm)
        assert not d.allowed
        assert d.reason == "cost_exceeds_limit"
        assert d.retry_after == math.inf
        assert d.remaining == 4
    assert (await rl.hit("k", rate, 4, algorithm=algorithm)).allowed  # nothing was consumed


async def test_cost_above_one_window_of_several_is_refused(rl: Face) -> None:
    d = await rl.hit("k", "5/10 minutes;20/hour", 6)
    assert (d.allowed, d.reason, d.retry_after, str(d.rate)) == (False, "cost_exceeds_limit", math.inf, "5/10 minutes")
    assert [x.remaining for x in await rl.status("k", "5/10 minutes;20/hour")] == [5, 20]


# -- charge, reset ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(set(ALGORITHMS) - {"concurrency"}))
async def test_charge_consumes_unconditionally(rl: Face, algorithm: str) -> None:
    rate = RATE[algorithm]
    d = await rl.charge("k", rate, 3, algorithm=algorithm)
    assert d.allowed and d.remaining == 2
    d = await rl.charge("k", rate, 4, algorithm=algorithm)  # more than is left: charged anyway
    assert d.remaining == 0
    denied = await rl.hit("k", rate, 1, algorithm=algorithm)
    assert not denied.allowed and denied.retry_after > 0


async def test_charge_charges_every_window(rl: Face) -> None:
    await rl.charge("k", "5/10 minutes;20/hour", 7, algorithm="fixed-window")
    assert [d.remaining for d in await rl.status("k", "5/10 minutes;20/hour", algorithm="fixed-window")] == [0, 13]


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
async def test_reset_forgets_every_window_of_the_key(rl: Face, algorithm: str) -> None:
    spec = TWO[algorithm]
    for key in ("k", "other"):
        for _ in range(5):
            await rl.hit(key, spec, algorithm=algorithm)
    await rl.reset("k")
    assert [d.remaining for d in await rl.status("k", spec, algorithm=algorithm)] == [5, 20]
    assert [d.remaining for d in await rl.status("other", spec, algorithm=algorithm)] == [0, 15]


async def test_reset_of_some_windows_keeps_the_others(rl: Face) -> None:
    await rl.hit("k", "5/10 minutes;20/hour", 4)
    await rl.reset("k", "20/hour")
    assert [d.remaining for d in await rl.status("k", "5/10 minutes;20/hour")] == [1, 20]
    await rl.reset("never-seen")  # harmless


# -- concurrency leases ----------------------------------------------------------------------


async def test_acquire_and_release(rl: Face) -> None:
    a = await rl.acquire("k", "2/minute")
    b = await rl.acquire("k", "2/minute")
    c = await rl.acquire("k", "2/minute")
    assert (a.allowed, b.allowed, c.allowed) == (True, True, False)
    assert a.lease and b.lease and a.lease != b.lease and c.lease is None
    assert a.algorithm == "concurrency"
    await rl.release("k", "2/minute", a.lease)
    await rl.release("k", "2/minute", a.lease)  # twice: harmless
    await rl.release("k", "2/minute", "not-a-lease")
    d = await rl.acquire("k", "2/minute")
    assert d.allowed and d.remaining == 0
    assert not (await rl.acquire("k", "2/minute")).allowed


async def test_acquire_cost_and_lease_context(rl: Face) -> None:
    big = await rl.acquire("k", "3/minute", 2)
    assert big.allowed and big.remaining == 1
    assert not (await rl.acquire("k", "3/minute", 2)).allowed
    d, statuses = await rl.lease_cycle("k", "3/minute")
    assert d.allowed
    assert [s.remaining for s in statuses] == [0, 1]  # held inside, given back after
    assert (await rl.acquire("k", "3/minute", 4)).reason == "cost_exceeds_limit"


async def test_a_lease_expires_after_its_ttl(rl: Face, backend: Backend, clock: FakeClock) -> None:
    needs_fake_clock(backend)
    assert (await rl.acquire("k", "1/minute")).allowed
    d = await rl.acquire("k", "1/minute")
    assert not d.allowed and d.retry_after == 60
    clock.advance(60)
    assert (await rl.acquire("k", "1/minute")).allowed


# -- bad input ----------------------------------------------------------------------------------

BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception]]] = [
    ("hit", ("k", "5/minute", -1), {}, ConfigError),
    ("hit", ("k", "5/minute", 1.5), {}, ConfigError),
    ("hit", ("k", "5/minute", "1"), {}, ConfigError),
    ("hit", ("k", "5/minute", True), {}, ConfigError),
    ("hit", ("k", "5/minute", None), {}, ConfigError),
    ("hit", (b"k", "5/minute"), {}, ConfigError),
    ("hit", (1, "5/minute"), {}, ConfigError),
    ("hit", (None, "5/minute"), {}, ConfigError),
    ("hit", ("k", "5/fortnight"), {}, RateParseError),
    ("hit", ("k", "0/minute"), {}, RateParseError),
    ("hit", ("k", "-5/minute"), {}, RateParseError),
    ("hit", ("k", ""), {}, RateParseError),
    ("hit", ("k", "five per minute"), {}, RateParseError),
    ("hit", ("k", "5/minute;5/minute"), {}, RateParseError),
    ("hit", ("k", "5/minute"), {"algorithm": "leaky-bucket"}, ConfigError),
    ("hit", ("k", "5/minute"), {"algorithm": "quota"}, ConfigError),
    ("hit", ("k", "5/minute"), {"algorithm": "gcra", "burst": 0}, ConfigError),
    ("hit", ("k", "5/minute"), {"algorithm": "fixed-window", "burst": 2}, ConfigError),
    ("peek", ("k", "5/minute", -1), {}, ConfigError),
    ("status", (7, "5/minute"), {}, ConfigError),
    ("charge", ("k", "5/minute", -3), {}, ConfigError),
    ("acquire", ("k", "5/minute", 2.0), {}, ConfigError),
    ("reset", (None,), {}, ConfigError),
    ("reset", ("k", "5/lightyear"), {}, RateParseError),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "error"), BAD_CALLS)
async def test_bad_input_is_refused_and_changes_nothing(
    rl: Face, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    await rl.hit("k", "5/minute", 2)
    before = await rl.status("k", "5/minute")
    with pytest.raises(error) as info:
        await getattr(rl, method)(*args, **kwargs)
    assert str(info.value)  # says what was wrong
    assert snapshot(await rl.status("k", "5/minute")) == snapshot(before)


def test_bad_limiter_options_are_refused(backend: Backend, clock: FakeClock, tmp_path: Any) -> None:
    for options in ({"algorithm": "nope"}, {"on_store_error": "explode"}, {"key_prefix": 3}):
        with pytest.raises(ConfigError):
            backend.sync(clock, tmp_path, **options)


# -- keys ---------------------------------------------------------------------------------------

ODD_KEYS = ["", " ", "a\x00b", "a\x00c", "ключ", "🔑", "x\udc80", "x\udc81", "\ud800", "k" * 10_000, "a:b:*{x}"]


async def test_any_string_is_a_key_of_its_own(rl: Face, backend: Backend, request: pytest.FixtureRequest) -> None:
    """Keys come from requests: NULs, emoji, lone surrogates (undecodable bytes), huge ones. Each
    is limited exactly and separately, and none makes the store fail (a failure would fail open)."""
    for key in ODD_KEYS:
        got = [(await rl.hit(key, "2/minute")) for _ in range(3)]
        assert [(d.allowed, d.reason) for d in got] == [(True, None), (True, None), (False, None)], repr(key[:20])
    for key in ODD_KEYS:
        (d,) = await rl.status(key, "2/minute")
        assert d.remaining == 0
    await rl.reset("x\udc80")
    assert (await rl.hit("x\udc80", "2/minute")).allowed
    assert not (await rl.hit("x\udc81", "2/minute")).allowed
    assert rl.lim.store_errors == 0


# -- several limiters on one backend -------------------------------------------------------------


async def test_key_prefixes_keep_limiters_apart(rl: Face, backend: Backend) -> None:
    a = rl.make(key_prefix="app-a:")
    b = rl.make(key_prefix="app-b:")
    assert (await a.hit("k", "1/minute")).allowed
    assert (await b.hit("k", "1/minute")).allowed
    assert not (await a.hit("k", "1/minute")).allowed
    if backend.shared:
        same = rl.make(key_prefix="app-a:")
        assert not (await same.hit("k", "1/minute")).allowed  # same prefix, same file: same state


async def test_state_outlives_the_limiter_on_persistent_backends(rl: Face, backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip(f"{backend.name} keeps state only as long as its limiter")
    for _ in range(3):
        await rl.hit("k", "3/minute;10/hour", algorithm="sliding-log")
    if rl.is_async:
        await rl.lim.aclose()
    else:
        rl.lim.close()
    fresh = rl.make()
    d = await fresh.hit("k", "3/minute;10/hour", algorithm="sliding-log")
    assert (d.allowed, str(d.rate)) == (False, "3/minute")
    assert [x.remaining for x in await fresh.status("k", "3/minute;10/hour", algorithm="sliding-log")] == [0, 7]


async def test_the_plain_fixtures_give_one_limiter_of_each_face(limiter: Limiter, alimiter: AsyncLimiter) -> None:
    """``limiter``/``alimiter`` (for other suites): real limiters on the same backend."""
    assert isinstance(limiter, Limiter) and isinstance(alimiter, AsyncLimiter)
    assert type(limiter.store) is type(alimiter.store)
    assert [limiter.hit("k", "1/minute").allowed, limiter.hit("k", "1/minute").allowed] == [True, False]
    assert (await alimiter.hit("k2", "1/minute")).allowed

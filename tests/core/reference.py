"""Reference models of the seven algorithms, written from their definitions (docs/design.md#algorithms
and each module's docstring), not from the implementation.

Each model keeps the plain list of admissions ``(time_us, cost)`` and answers three questions
from it by brute force: does a request of ``k >= 1`` units fit at time ``t`` (``fits``), is the
window empty at ``t`` (``empty``), and what is the largest single request (``capacity``). The
whole Outcome follows from those by definition (see :func:`expected`):

* ``allowed``   = ``cost <= capacity`` and ``fits(now, max(cost, 1))``;
* ``remaining`` = the largest ``k`` that fits now, after this decision;
* ``reset``     = the smallest ``d >= 0`` with ``empty(now + d)``;
* ``retry``     = 0 when allowed, NEVER when ``cost > capacity``, else the smallest ``d >= 1``
  with ``fits(now + d, max(cost, 1))`` (found by search: both predicates are monotone in time
  while nothing is admitted).
"""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

NEVER = -1
DAY = 86_400_000_000


def first_true(pred: object, start: int, horizon: int) -> int:
    """The smallest ``d`` in ``[start, horizon]`` with ``pred(d)`` (monotone); error if none."""
    assert callable(pred)
    if pred(start):
        return start
    lo, step = start, 1
    hi = start + step
    while not pred(hi):
        lo = hi
        step *= 2
        hi = start + step
        if hi - start > horizon:
            raise AssertionError(f"no passing time within {horizon} us")
    while hi - lo > 1:  # pred(lo) false, pred(hi) true
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


class Model:
    """Base: an admission log and the derived Outcome."""

    horizon = 0  # how far ahead a search may look (us)

    def __init__(self, limit: int, period: int) -> None:
        self.limit = limit
        self.period = period
        self.log: list[tuple[int, int]] = []
        self.horizon = 8 * period + 8

    @property
    def capacity(self) -> int:
        return self.limit

    def fits(self, t: int, k: int) -> bool:
        raise NotImplementedError

    def empty(self, t: int) -> bool:
        raise NotImplementedError

    def admit(self, t: int, cost: int) -> None:
        if cost:
            self.log.append((t, cost))

    def remaining(self, t: int) -> int:
        k = 0
        while k < self.capacity and self.fits(t, k + 1):
            k += 1
        return k


def expected(model: Model, now: int, cost: int) -> tuple[bool, int, int, int]:
    """The Outcome (without the state) the model prescribes; admits into the model if allowed."""
    if cost > model.capacity:
        allowed, retry = False, NEVER
    else:
        allowed = model.fits(now, max(cost, 1))
        retry = 0 if allowed else first_true(lambda d: model.fits(now + d, max(cost, 1)), 1, model.horizon)
    if allowed:
        model.admit(now, cost)
    remaining = model.remaining(now)
    reset = first_true(lambda d: model.empty(now + d), 0, model.horizon)
    return allowed, remaining, reset, retry


class FixedWindowModel(Model):
    """``limit`` per aligned window ``[k*P, (k+1)*P)``."""

    def used(self, t: int) -> int:
        return sum(c for s, c in self.log if s // self.period == t // self.period)

    def fits(self, t: int, k: int) -> bool:
        return self.used(t) + k <= self.limit

    def empty(self, t: int) -> bool:
        return self.used(t) == 0


class SlidingLogModel(Model):
    """``limit`` in any window ``(t - P, t]``."""

    def used(self, t: int) -> int:
        return sum(c for s, c in self.log if t - self.period < s <= t)

    def fits(self, t: int, k: int) -> bool:
        return self.used(t) + k <= self.limit

    def empty(self, t: int) -> bool:
        return self.used(t) == 0


class SlidingWindowModel(Model):
    """``previous * (P - elapsed) / P + current`` (exact fractions)."""

    def usage(self, t: int) -> Fraction:
        p = self.period
        w = t // p
        prev = sum(c for s, c in self.log if s // p == w - 1)
        cur = sum(c for s, c in self.log if s // p == w)
        return Fraction(prev * (p - (t - w * p)), p) + cur

    def fits(self, t: int, k: int) -> bool:
        return self.usage(t) + k <= self.limit

    def empty(self, t: int) -> bool:
        return self.usage(t) == 0


class TokenBucketModel(Model):
    """A continuous bucket of ``burst`` tokens refilled at ``limit / P`` per us (exact fractions)."""

    def __init__(self, limit: int, period: int, burst: int | None = None) -> None:
        super().__init__(limit, period)
        self.burst = limit if burst is None else burst
        self.horizon = 8 * period * max(1, self.burst) + 8

    @property
    def capacity(self) -> int:
        return self.burst

    def tokens(self, t: int) -> Fraction:
        rate = Fraction(self.limit, self.period)
        key = len(self.log)
        if getattr(self, "_replayed", (None,))[0] != key:  # replay the log once per admission
            tokens = Fraction(self.burst)
            last: int | None = None
            for s, c in self.log:
                if last is not None:
                    tokens = min(Fraction(self.burst), tokens + (s - last) * rate)
                tokens -= c
                last = s
            self._replayed = (key, tokens, last)
        _, tokens, last = self._replayed
        if last is not None:
            tokens = min(Fraction(self.burst), tokens + (t - last) * rate)
        return tokens

    def fits(self, t: int, k: int) -> bool:
        return self.tokens(t) >= k

    def empty(self, t: int) -> bool:
        return self.tokens(t) == self.burst


class GCRAModel(TokenBucketModel):
    """A bucket of time credit: ``burst * T`` us of credit, refilled 1 us per us, a unit costs
    ``T = ceil(P / limit)`` us (the gcra docstring's emission interval, rounded up)."""

    def __init__(self, limit: int, period: int, burst: int | None = None) -> None:
        super().__init__(limit, period, burst)
        self.t = -(-period // limit)

    def credit(self, t: int) -> int:
        full = self.burst * self.t
        key = len(self.log)
        if getattr(self, "_credited", (None,))[0] != key:  # replay the log once per admission
            credit = full
            last: int | None = None
            for s, c in self.log:
                if last is not None:
                    credit = min(full, credit + (s - last))
                credit -= c * self.t
                last = s
            self._credited = (key, credit, last)
        _, credit, last = self._credited
        if last is not None:
            credit = min(full, credit + (t - last))
        return credit

    def fits(self, t: int, k: int) -> bool:
        return self.credit(t) >= k * self.t

    def empty(self, t: int) -> bool:
        return self.credit(t) == self.burst * self.t


class ConcurrencyModel(Model):
    """At most ``limit`` units held at once; a lease taken at ``s`` is held while ``t < s + P``."""

    def in_flight(self, t: int) -> int:
        return sum(c for s, c in self.log if s <= t < s + self.period)

    def fits(self, t: int, k: int) -> bool:
        return self.in_flight(t) + k <= self.limit

    def empty(self, t: int) -> bool:
        return self.in_flight(t) == 0


class QuotaModelUTC(Model):
    """A budget per UTC calendar day or month starting at ``reset`` (minutes after midnight)."""

    def __init__(self, limit: int, monthly: bool, reset_minutes: int = 0) -> None:
        super().__init__(limit, 31 * DAY if monthly else DAY)
        self.monthly = monthly
        self.shift = reset_minutes * 60_000_000
        self.horizon = 64 * DAY

    def period_of(self, t: int) -> int:
        shifted = t - self.shift
        if not self.monthly:
            return shifted // DAY
        d = datetime.fromtimestamp(shifted // 1_000_000, UTC)
        return d.year * 12 + d.month

    def used(self, t: int) -> int:
        p = self.period_of(t)
        return sum(c for s, c in self.log if self.period_of(s) == p)

    def fits(self, t: int, k: int) -> bool:
        return self.used(t) + k <= self.limit

    def empty(self, t: int) -> bool:
        return self.used(t) == 0

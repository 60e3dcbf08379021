"""``gcra`` (the default): the generic cell rate algorithm, a token bucket without a refill task.

State: one integer, the theoretical arrival time (TAT) in microseconds. Each unit advances the
TAT by the emission interval ``T = ceil(P / limit)`` microseconds (a request of cost ``c`` by
``c * T``); a request passes while the TAT it would leave is at most ``tau = burst * T`` ahead
of now. So: a burst of exactly ``burst`` units from an idle state (default: the limit), then a
steady one unit per ``T``.

Bound (what the property tests check): over any interval of length ``L`` it admits at most
``burst + L * limit / P`` units. Proof: each admitted unit advances the TAT by ``T``, the TAT is
at least the start of the interval before the first admission and at most ``tau`` ahead of the
last one, so ``n * T <= L + burst * T``, and ``T >= P / limit``.

Rounding: ``T`` is rounded *up* to a whole microsecond and ``tau`` is a whole number of ``T``,
so a burst is never cut short by rounding and rounding never admits early: when ``P`` is not a
multiple of ``limit`` the steady rate is at most one microsecond per unit slower than nominal
(negligible below ~1000 units per second; use ``token-bucket``, which is exact, for very high
rates). ``remaining`` is the exact number of units that would pass now.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, BurstWindow, Outcome, ceil_div
from ratewarden.core.rates import Rate

__all__ = ["GCRA"]


class GCRA(BurstWindow):
    name = "gcra"
    strict = True
    __slots__ = ("tau", "unit")

    def __init__(self, rate: Rate, burst: int | None = None) -> None:
        super().__init__(rate, burst)
        self.unit = ceil_div(rate.period, rate.limit)  # the emission interval T, rounded up
        self.tau = self.burst * self.unit  # a whole number of T: a full burst always fits

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        if cost == 1:  # the hot path, in as few steps as it takes
            unit = self.unit
            ahead = (state - now if state is not None and state > now else 0) + unit  # new TAT - now
            if ahead <= self.tau:
                return (True, (self.tau - ahead) // unit, ahead, 0, now + ahead)
            return (False, (self.tau - ahead) // unit + 1, ahead - unit, ahead - self.tau, state)
        tat = state if state is not None and state > now else now
        unit, tau = self.unit, self.tau
        if cost > self.burst:
            return (False, (tau - tat + now) // unit, tat - now, NEVER, state)
        new_tat = tat + (cost or 1) * unit
        if new_tat - now <= tau:
            if cost == 0:
                return (True, (tau - tat + now) // unit, tat - now, 0, state)
            return (True, (tau - new_tat + now) // unit, new_tat - now, 0, new_tat)
        return (False, (tau - tat + now) // unit, tat - now, new_tat - now - tau, state)

    def charge(self, state: Any, now: int, cost: int) -> Any:
        tat = state if state is not None and state > now else now
        return tat + cost * self.unit

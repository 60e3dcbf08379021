"""``gcra`` (the default): the generic cell rate algorithm, a token bucket without a refill task.

State: one integer, the theoretical arrival time (TAT) in microseconds. Each unit advances the
TAT by the emission interval ``T = P / limit``; a request passes while the TAT it would leave
is at most ``burst * T`` ahead of now. So: a burst of up to ``burst`` units (default: the
limit), then a steady ``limit`` per ``P``. Over any interval of length ``L`` it admits at most
``burst + L * limit / P`` units.

Increments are rounded *up* to whole microseconds (``ceil(cost * P / limit)``), so rounding can
only ever deny a microsecond late, never admit early.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window, ceil_div
from ratewarden.core.rates import Rate
from ratewarden.errors import ConfigError

__all__ = ["GCRA"]


class GCRA(Window):
    name = "gcra"
    strict = True
    limit_free_state = False
    __slots__ = ("burst", "tau", "unit")

    def __init__(self, rate: Rate, burst: int | None = None) -> None:
        super().__init__(rate)
        if burst is None:
            burst = rate.limit
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"burst must be a positive integer, not {burst!r}")
        self.burst = burst
        self.unit = ceil_div(rate.period, rate.limit)  # one unit's increment (used when cost=1)
        self.tau = ceil_div(burst * rate.period, rate.limit)
        if burst != rate.limit:
            self.id = f"{self.id}:{burst}"

    @property
    def capacity(self) -> int:
        return self.burst

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        tat = state if state is not None and state > now else now
        if cost == 1:
            new_tat = tat + self.unit
            if new_tat - now <= self.tau:
                return True, (self.tau - new_tat + now) * self.limit // self.period, new_tat - now, 0, new_tat
            return (
                False,
                (self.tau - tat + now) * self.limit // self.period,
                tat - now,
                new_tat - now - self.tau,
                state,
            )
        p, limit, tau = self.period, self.limit, self.tau
        if cost > self.burst:
            return False, (tau - tat + now) * limit // p, tat - now, NEVER, state
        new_tat = tat + ceil_div((cost or 1) * p, limit)
        if new_tat - now <= tau:
            if cost == 0:
                return True, (tau - tat + now) * limit // p, tat - now, 0, state
            return True, (tau - new_tat + now) * limit // p, new_tat - now, 0, new_tat
        return False, (tau - tat + now) * limit // p, tat - now, new_tat - now - tau, state

    def charge(self, state: Any, now: int, cost: int) -> Any:
        tat = state if state is not None and state > now else now
        return tat + ceil_div(cost * self.period, self.limit)

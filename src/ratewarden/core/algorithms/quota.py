"""``quota``: a budget per calendar day or month in a time zone, reset at the boundary.

State: ``(period_start, used)``. ``"3000000/day"`` gives 3,000,000 units from one reset to the
next (``reset = "00:00"`` in ``tz`` by default); ``"100/month"`` a monthly budget. A denied
request's ``retry_after`` is the time to the next reset. Costs charged after the fact (see
:meth:`ratewarden.Limiter.charge`) may take ``used`` above the limit; the quota then stays
exhausted until the reset.

A clock that steps back across a reset never reopens the period that was left: the request is
counted in the state's period, with its waits measured from the real ``now``.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window, _late
from ratewarden.core.calendar import Calendar
from ratewarden.core.rates import US, Rate
from ratewarden.errors import ConfigError

__all__ = ["Quota"]

_DAY = 86400 * US
_MONTH = 30 * _DAY


class Quota(Window):
    name = "quota"
    __slots__ = ("calendar",)

    def __init__(self, rate: Rate, tz: str = "UTC", reset: str = "00:00") -> None:
        super().__init__(rate)
        if rate.period == _DAY:
            unit = "day"
        elif rate.period == _MONTH:
            unit = "month"
        else:
            raise ConfigError(f"a quota is per day or per month, not per {rate.seconds:g} seconds ({rate})")
        self.calendar = Calendar(unit, tz, reset)
        # The reset time as parsed ("6:30" and "06:30" are one quota, so one state).
        self.id = f"quota:{unit}:{tz}:{self.calendar.reset.strftime('%H:%M')}"

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        start, end = self.calendar.bounds(now)
        if state is not None and state[0] > start:
            return _late(self.decide(state, state[0], cost), state[0] - now)
        used = state[1] if state is not None and state[0] == start else 0
        limit = self.limit
        left = end - now
        if cost > limit:
            return (False, max(0, limit - used), left if used else 0, NEVER, state)
        if used + (cost or 1) <= limit:
            used += cost
            return (True, limit - used, left if used else 0, 0, (start, used))
        return (False, max(0, limit - used), left, left, state)

    def charge(self, state: Any, now: int, cost: int) -> Any:
        start, _ = self.calendar.bounds(now)
        if state is not None and state[0] > start:
            start = state[0]
        used = state[1] if state is not None and state[0] == start else 0
        return (start, used + cost)

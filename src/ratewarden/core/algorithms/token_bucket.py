"""``token-bucket``: ``burst`` tokens (default: the limit), refilled at ``limit`` per ``P``.

State: ``(level, last)`` where ``level`` is the token count times ``P`` (so refill is the
integer ``elapsed_us * limit`` and nothing is ever rounded) and ``last`` the time of the last
update. Same family as GCRA, for users who think in tokens; exact to the microsecond.
``last`` never moves back: a request stamped before it (the clock stepped back) is decided at
``last``, so the refill between the two times is never credited twice.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, BurstWindow, Outcome, _late, ceil_div
from ratewarden.core.rates import Rate

__all__ = ["TokenBucket"]


class TokenBucket(BurstWindow):
    name = "token-bucket"
    __slots__ = ("full",)

    def __init__(self, rate: Rate, burst: int | None = None) -> None:
        super().__init__(rate, burst)
        self.full = self.burst * rate.period

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        if state is not None and now < state[1]:
            # The clock stepped back: decide at the last update (no refill is credited twice),
            # with the waits measured from the real ``now``.
            return _late(self.decide(state, state[1], cost), state[1] - now)
        p, limit, full = self.period, self.limit, self.full
        # The level at ``now`` and the waits, written out: ``_level`` and ``ceil_div`` as calls
        # cost more than the rest of a decision (the same arithmetic as ``_level``).
        if state is None:
            level = full
        else:
            level = state[0]
            missing = full - level
            if missing > 0 and now > state[1]:
                elapsed = now - state[1]
                level = full if elapsed >= -(-missing // limit) else level + elapsed * limit
        if cost <= self.burst:
            need = (cost or 1) * p
            if level >= need:
                if cost:
                    level -= cost * p
                    return (True, level // p, -((level - full) // limit), 0, (level, now))
                return (True, level // p, -((level - full) // limit), 0, state)
            return (False, level // p, -((level - full) // limit), -((level - need) // limit), state)
        return (False, level // p, -((level - full) // limit), NEVER, state)

    def charge(self, state: Any, now: int, cost: int) -> Any:
        last = now if state is None or now > state[1] else state[1]
        return (self._level(state, now) - cost * self.period, last)

    def _level(self, state: Any, now: int) -> int:
        """The level at ``now``: the stored level plus the refill since, capped at full."""
        if state is None:
            return self.full
        level: int = state[0]
        missing = self.full - level
        if missing > 0 and now > state[1]:
            elapsed = now - state[1]
            # Compare before multiplying, so the product never exceeds what fills the bucket.
            level = self.full if elapsed >= ceil_div(missing, self.limit) else level + elapsed * self.limit
        return level

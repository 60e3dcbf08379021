"""``fixed-window``: ``limit`` units per window aligned to the epoch (``[k*P, (k+1)*P)``).

State: ``(window_start, count)``. A request exactly at a window edge (``now == (k+1)*P``)
belongs to the new window. Cheapest algorithm; a client can pass up to 2x the limit across
an edge (the last instant of one window and the first of the next).

A clock that steps back (an NTP step, a failover to a server whose clock is behind) never
reopens a window that was left: a request stamped before the state's window is counted in
that window, and its waits are measured from the real ``now``.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window, _late

__all__ = ["FixedWindow"]


class FixedWindow(Window):
    name = "fixed-window"
    __slots__ = ()

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        period = self.period
        limit = self.limit
        start = now - now % period
        if state is not None and state[0] > start:
            return _late(self.decide(state, state[0], cost), state[0] - now)
        count = state[1] if state is not None and state[0] == start else 0
        left = start + period - now
        if cost > limit:
            return (False, limit - count, left if count else 0, NEVER, state)
        if count + (cost or 1) <= limit:
            count += cost
            return (True, limit - count, left if count else 0, 0, (start, count))
        return (False, limit - count, left, left, state)

    def charge(self, state: Any, now: int, cost: int) -> Any:
        start = now - now % self.period
        if state is not None and state[0] > start:
            start = state[0]
        count = state[1] if state is not None and state[0] == start else 0
        return (start, count + cost)

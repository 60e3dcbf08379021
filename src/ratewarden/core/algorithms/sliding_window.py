"""``sliding-window``: the weighted two-window counter (approximate, bounded error).

State: ``(window_start, previous_count, current_count)`` with windows aligned to the epoch.
The usage at ``now`` is ``previous * (P - elapsed) / P + current``; a request passes when that
plus its cost is at most the limit. All arithmetic is on integers (the inequality is multiplied
by ``P``), so there is no rounding anywhere and the Lua port gives identical answers.

Error bound: it assumes the previous window's hits were spread evenly, so over any rolling
window it admits at most the limit plus what the previous window admitted early (it can never
exceed 2x the limit, and matches the limit exactly for uniform traffic).

A clock that steps back into an older window is decided at the start of the state's window
(so no window is counted twice), with its waits measured from the real ``now``.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window, _late

__all__ = ["SlidingWindow"]


class SlidingWindow(Window):
    name = "sliding-window"
    strict = False
    __slots__ = ()

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        p = self.period
        limit = self.limit
        start = now - now % p
        prev = cur = 0
        if state is not None:
            if state[0] == start:
                prev, cur = state[1], state[2]
            elif state[0] == start - p:
                prev = state[2]
            elif state[0] > start:
                return _late(self.decide(state, state[0], cost), state[0] - now)
        elapsed = now - start
        weight = prev * (p - elapsed)  # the previous window's share, times P
        cap = limit * p
        # (``remaining`` and ``reset`` written out in each branch: two method calls cost more
        # than the rest of a decision)
        if cost <= limit:
            need = cost or 1
            if weight + (cur + need) * p <= cap:
                cur += cost
                left = (cap - weight - cur * p) // p
                return (
                    True,
                    left if left > 0 else 0,
                    start + 2 * p - now if cur else (start + p - now if prev else 0),
                    0,
                    (start, prev, cur),
                )
            if cur + need <= limit:
                # Wait in this window until the previous window's weight has decayed enough.
                retry = p - ((limit - cur - need) * p) // prev - elapsed
            else:
                # Wait for the next window, where this window's count becomes the previous one.
                nxt = p - ((limit - need) * p) // cur if cur else 0
                retry = p - elapsed + (nxt if nxt > 0 else 0)
        else:
            retry = NEVER
        left = (cap - weight - cur * p) // p
        return (
            False,
            left if left > 0 else 0,
            start + 2 * p - now if cur else (start + p - now if prev else 0),
            retry,
            state,
        )

    def charge(self, state: Any, now: int, cost: int) -> Any:
        p = self.period
        start = now - now % p
        prev = cur = 0
        if state is not None:
            if state[0] >= start:
                start, prev, cur = state
            elif state[0] == start - p:
                prev = state[2]
        return (start, prev, cur + cost)

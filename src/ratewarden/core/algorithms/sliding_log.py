"""``sliding-log``: exact — at most ``limit`` units in *any* window ``(t - P, t]``.

State: a tuple of ``(timestamp, cost)`` pairs, oldest first; simultaneous hits are merged, so
the state holds one pair per distinct admission time (O(limit) at worst). An entry stamped
``t`` stops counting at ``t + P`` exactly. ``retry_after`` is the time at which enough of the
oldest entries have left the window for the request to fit.

Entries stay in time order even if the clock steps back: a request stamped before the newest
entry is merged into it (counted for longer, never shorter).
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window

__all__ = ["SlidingLog"]


class SlidingLog(Window):
    name = "sliding-log"
    __slots__ = ()

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        p = self.period
        limit = self.limit
        floor = now - p
        entries: tuple[tuple[int, int], ...] = state or ()
        if entries and entries[0][0] <= floor:
            entries = tuple(e for e in entries if e[0] > floor)
        used = 0
        for e in entries:
            used += e[1]
        reset = entries[-1][0] + p - now if entries else 0
        if cost > limit:
            return False, limit - used, reset, NEVER, entries
        need = cost or 1
        if used + need <= limit:
            if cost:
                if entries and entries[-1][0] >= now:
                    entries = (*entries[:-1], (entries[-1][0], entries[-1][1] + cost))
                else:
                    entries = (*entries, (now, cost))
                used += cost
                reset = entries[-1][0] + p - now
            return True, limit - used, reset, 0, entries
        excess = used + need - limit
        freed = 0
        for ts, c in entries:
            freed += c
            if freed >= excess:
                return False, limit - used, reset, ts + p - now, entries
        raise AssertionError("unreachable: cost <= limit frees enough")  # pragma: no cover

    def charge(self, state: Any, now: int, cost: int) -> Any:
        floor = now - self.period
        entries = tuple(e for e in (state or ()) if e[0] > floor)
        if entries and entries[-1][0] >= now:
            return (*entries[:-1], (entries[-1][0], entries[-1][1] + cost))
        return (*entries, (now, cost))

"""``sliding-log``: exact — at most ``limit`` units in *any* window ``(t - P, t]``.

State: a :class:`Log`, the admissions oldest first as two parallel integer lists: ``ts[i]``,
the time of admission ``i``, and ``cum[i]``, the running total of the costs admitted up to and
including it. An entry stamped ``t`` stops counting at ``t + P`` exactly. Then, with ``h`` the
first entry still in the window (a binary search on ``ts``):

* used = ``cum[last] - cum[h - 1]`` (O(1));
* ``retry_after`` is the time at which enough of the oldest entries have left the window for
  the request to fit: the first entry whose ``cum`` reaches ``cum[h - 1] + excess`` (a binary
  search on ``cum``), plus ``P``;
* an admission appends one entry (amortised O(1)); expired entries are dropped from the left
  when the log is rewritten, at most once each.

So a decision costs O(log n) whatever the log's length, never a copy of the log.

Entries stay in time order even if the clock steps back: a request stamped before the newest
entry is stamped with the newest entry's time (counted for longer, never shorter).

A ``Log`` is a *version* of a key's log: it sees entries ``[head, n)`` of lists it may share
with later versions. Extending a version appends to the shared lists (cutting off whatever a
discarded later version appended), so only the newest version a store holds for a key may be
extended; older versions stay readable. Every store keeps exactly one state per key, so this
holds; :meth:`Log.entries` gives the value (for equality, encoding and tests). A store that
keeps entries elsewhere (rows of a table) subclasses ``Log`` with ``ts``/``cum`` sequences
that read them on demand and its own :meth:`Log.view`/:meth:`Log.add`: the decision only ever
reads ``ts[i]``/``cum[i]`` at a few indices and binary-searches them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window

__all__ = ["Log", "SlidingLog"]

#: a log whose expired prefix is at least this long and half of it is copied without that prefix
_COMPACT = 64


class Log:
    """The admissions of one sliding-log key: entries ``[head, n)`` of ``ts``/``cum``."""

    __slots__ = ("cum", "head", "n", "ts")

    def __init__(self, ts: list[int], cum: list[int], head: int, n: int) -> None:
        self.ts = ts
        self.cum = cum
        self.head = head
        self.n = n

    @classmethod
    def of(cls, entries: Iterable[tuple[int, int]]) -> Log:
        """A log holding ``(time, cost)`` entries, oldest first."""
        ts: list[int] = []
        cum: list[int] = []
        total = 0
        for t, c in entries:
            total += c
            ts.append(t)
            cum.append(total)
        return cls(ts, cum, 0, len(ts))

    def entries(self) -> tuple[tuple[int, int], ...]:
        """``(time, cost)`` pairs, oldest first, one per distinct time."""
        out: list[tuple[int, int]] = []
        ts, cum, h = self.ts, self.cum, self.head
        prev = cum[h - 1] if h else 0
        for i in range(h, self.n):
            c = cum[i] - prev
            prev = cum[i]
            if out and out[-1][0] == ts[i]:
                out[-1] = (ts[i], out[-1][1] + c)
            else:
                out.append((ts[i], c))
        return tuple(out)

    def total(self) -> int:
        """The sum of the costs of the entries."""
        if self.head >= self.n:
            return 0
        return self.cum[self.n - 1] - (self.cum[self.head - 1] if self.head else 0)

    def __len__(self) -> int:
        return self.n - self.head

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Log):
            return self.entries() == other.entries()
        if isinstance(other, tuple):
            return self.entries() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Log({list(self.entries())!r})"

    def view(self, head: int) -> Log:
        """This version without its first ``head - self.head`` entries (expired)."""
        return self if head == self.head else Log(self.ts, self.cum, head, self.n)

    def add(self, head: int, t: int, cost: int) -> Log:
        """The next version: entries ``[head, n)`` and ``(t, cost)`` (``t`` >= the newest time)."""
        ts, cum, n = self.ts, self.cum, self.n
        if len(ts) > n:  # a discarded version appended here: cut it off
            del ts[n:]
            del cum[n:]
        if head >= _COMPACT and 2 * head >= n:
            base = cum[head - 1]
            ts = ts[head:n]
            cum = [c - base for c in cum[head:n]]
            n -= head
            head = 0
        ts.append(t)
        cum.append((cum[n - 1] if n else 0) + cost)
        return Log(ts, cum, head, n + 1)


def as_log(state: Any) -> Log | None:
    """The state as a :class:`Log` (a tuple of ``(time, cost)`` pairs, as written by earlier
    versions, is read as the same entries)."""
    if state is None or isinstance(state, Log):
        return state
    if isinstance(state, tuple | list):
        return Log.of((int(t), int(c)) for t, c in state) if state else None
    raise TypeError(f"a sliding-log state is a Log, not {type(state).__name__}")


class SlidingLog(Window):
    name = "sliding-log"
    __slots__ = ()

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        p = self.period
        limit = self.limit
        log = state if type(state) is Log else as_log(state)
        if log is None or log.head >= log.n:
            if cost > limit:
                return (False, limit, 0, NEVER, log)
            if cost:
                return (True, limit - cost, p, 0, Log([now], [cost], 0, 1))
            return (True, limit, 0, 0, log)
        ts, cum, n, h = log.ts, log.cum, log.n, log.head
        floor = now - p
        if ts[h] <= floor:
            h = bisect_right(ts, floor, h, n)
            log = log.view(h)
        if h >= n:
            used = 0
            reset = 0
            base = 0
        else:
            base = cum[h - 1] if h else 0
            used = cum[n - 1] - base
            reset = ts[n - 1] + p - now
        if cost > limit:
            return (False, limit - used, reset, NEVER, log)
        need = cost or 1
        if used + need <= limit:
            if cost:
                last = ts[n - 1]
                t = last if h < n and last >= now else now
                log = log.add(h, t, cost)
                used += cost
                reset = t + p - now
            return (True, limit - used, reset, 0, log)
        i = bisect_left(cum, base + used + need - limit, h, n)
        return (False, limit - used, reset, ts[i] + p - now, log)

    def charge(self, state: Any, now: int, cost: int) -> Any:
        log = as_log(state)
        if log is None or log.head >= log.n:
            return Log([now], [cost], 0, 1)
        h = bisect_right(log.ts, now - self.period, log.head, log.n)
        last = log.ts[log.n - 1]
        return log.add(h, last if h < log.n and last >= now else now, cost)

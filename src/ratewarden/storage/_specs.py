"""Window spec strings, shared by the stores whose server runs the algorithms (Redis, PostgreSQL).

A window travels as a spec string whose first number is the algorithm's code; a quota's spec
carries the calendar bounds around the client's now (the server picks the period holding its
own clock). Each store formats and bounds-checks a spec its own way (``spec_of``); the codes,
the caching and the quota's bounds are the same for both and live here.
"""

from __future__ import annotations

from collections.abc import Callable

from ratewarden.core.algorithms import (
    GCRA,
    Concurrency,
    FixedWindow,
    Quota,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
    Window,
)

__all__ = ["CODES", "SpecCache"]

#: algorithm name -> code used by the server-side code (``A[code]`` in Lua, ``CASE`` in PL/pgSQL)
CODES: dict[str, int] = {
    FixedWindow.name: 1,
    SlidingWindow.name: 2,
    SlidingLog.name: 3,
    GCRA.name: 4,
    TokenBucket.name: 5,
    Concurrency.name: 6,
    Quota.name: 7,
}
_MAX = 10_000  # cached specs (a flood of distinct rates cannot grow the caches without bound)


class SpecCache:
    """Spec strings, cached per window (a quota's per calendar period)."""

    __slots__ = ("_quota", "by_window", "spec_of")

    def __init__(self, spec_of: Callable[[Window], str]) -> None:
        self.spec_of = spec_of
        #: (window id, limit, period, burst) -> spec: read directly by a store's one-window hot path
        self.by_window: dict[tuple[str, int, int, int], str] = {}
        self._quota: dict[str, tuple[int, int, str]] = {}

    def get(self, w: Window, client_now: int) -> str:
        if isinstance(w, Quota):
            return self._quota_spec(w, client_now)
        k = (w.id, w.limit, w.period, getattr(w, "burst", 0))
        s = self.by_window.get(k)
        if s is None:
            if len(self.by_window) > _MAX:
                self.by_window.clear()
            s = self.by_window[k] = self.spec_of(w)
        return s

    def _quota_spec(self, w: Quota, now: int) -> str:
        k = f"{w.id}:{w.limit}"
        q = self._quota.get(k)
        if q is not None and q[0] <= now < q[1]:
            return q[2]
        cal = w.calendar
        start, end = cal.bounds(now)
        prev = cal.bounds(start - 1)[0]
        nxt = cal.bounds(end)[1]
        cal.bounds(now)  # leave the calendar's own cache on the current period
        if len(self._quota) > _MAX:
            self._quota.clear()
        spec = f"{CODES['quota']} {w.limit} {prev} {start} {end} {nxt}"
        self._quota[k] = (start, end, spec)
        return spec

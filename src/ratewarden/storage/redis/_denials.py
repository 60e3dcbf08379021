"""The denial cache of the Redis store: a request Redis just denied is denied again in process,
without a round trip, until its ``retry_after`` has passed.

Why this is exact: a denial consumes nothing, and for every algorithm but ``concurrency``
nothing but time (or an admin reset) frees capacity. So while the windows that denied a
request are still within their ``retry_after``, the same request (same keys, windows and
costs) is certainly denied again; others can only consume more meanwhile, never less.

* Only ``hit`` is cached (never peeks, charges, leases); a request with a ``concurrency``
  window is never cached (a release frees capacity early).
* Only the *same* request is answered (same state keys, same costs): its ``retry_after`` and
  ``reset`` are the cached ones minus the time elapsed, so they stay exact; a request with
  another cost goes to Redis.
* Served only while every denying window is still before its ``retry_after`` (measured on a
  monotonic clock from the reply). The remaining counts of the windows that did not deny are
  those of the round trip (others may have consumed since; the decision is still exact).
* A reset through this store forgets the key's entries at once; a reset made through another
  server is seen here only once the cached ``retry_after`` has passed.
* Bounded: at most ``size`` entries; when full, the expired ones are dropped, then everything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ratewarden.core.algorithms.base import ALLOWED, RETRY_US, Outcome

__all__ = ["DenialCache"]

_Key = tuple[tuple[str, ...], tuple[int, ...]]


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class DenialCache:
    """``(state keys, costs) -> (when, until, outcomes)``: denials to answer in process."""

    __slots__ = ("_data", "_lock", "hits", "now", "size")

    def __init__(self, size: int = 10_000, now: Callable[[], int] | None = None) -> None:
        self.size = size
        self.now = now or _monotonic_us
        self._data: dict[_Key, tuple[int, int, list[Outcome]]] = {}
        self._lock = threading.Lock()
        #: how many requests were answered here (for tests and metrics)
        self.hits = 0

    def get(self, keys: Sequence[str], costs: Sequence[int]) -> list[Outcome] | None:
        """The outcomes of a denied request seen before, if it is certainly still denied."""
        if not self._data:
            return None
        k = (tuple(keys), tuple(costs))
        e = self._data.get(k)
        if e is None:
            return None
        when, until, outs = e
        now = self.now()
        if now >= until or now < when:  # passed, or a test clock stepped back: ask Redis
            self._data.pop(k, None)
            return None
        self.hits += 1
        lag = now - when
        return [
            (a, rem, rst - lag if rst > lag else 0, rty - lag if rty > 0 else rty, None) for a, rem, rst, rty, _ in outs
        ]

    def put(self, keys: Sequence[str], costs: Sequence[int], outs: Sequence[Outcome]) -> None:
        """Remember a request's outcomes when it was denied with a finite ``retry_after``."""
        until = 0
        for o in outs:
            if not o[ALLOWED]:
                if o[RETRY_US] <= 0:  # never passes (cost above the window), or nothing to wait for
                    return
                until = o[RETRY_US] if not until else min(until, o[RETRY_US])
        if not until:
            return
        now = self.now()
        with self._lock:
            if len(self._data) >= self.size:
                self._data = {k: v for k, v in self._data.items() if v[1] > now}
                if len(self._data) >= self.size:
                    self._data.clear()
            self._data[(tuple(keys), tuple(costs))] = (now, now + until, list(outs))

    def forget(self, match: Callable[[str], bool]) -> None:
        """Drop every entry with a state key that ``match`` accepts (a reset through this store)."""
        with self._lock:
            self._data = {k: v for k, v in self._data.items() if not any(match(s) for s in k[0])}

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

"""Clocks: a manual clock for tests and simulations (``Limiter("memory://", clock=FakeClock())``),
and :func:`micros`, the one place where a clock's reading becomes integer microseconds.

The core counts time in integer microseconds. A clock given to a limiter or a store returns
seconds (``time.time`` does); a :class:`FakeClock` keeps integer microseconds internally and
hands them over exactly through ``micros()``, so a retry at exactly ``retry_after`` passes and
one microsecond earlier does not, at any epoch (a float of seconds near the year 2100 is only
good to about half a microsecond).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["FakeClock", "micros", "to_micros"]

US = 1_000_000


def to_micros(seconds: float) -> int:
    """Seconds (int or float) -> the nearest whole microsecond: the one place seconds become
    microseconds (clocks, durations, the stores' client time, the fail-closed waits). Never
    truncated: ``int(t * 10**6)`` of a float a hair below a whole microsecond loses it."""
    if isinstance(seconds, int):
        return seconds * US
    return round(seconds * US)


class FakeClock:
    """Seconds since the epoch, moved only by :meth:`advance` or :meth:`set`. Thread-safe.

    Time is held as integer microseconds; calling the clock returns seconds (a float), and
    :meth:`micros` the exact integer.
    """

    __slots__ = ("_lock", "_us")

    def __init__(self, start: float = 1_767_225_600) -> None:  # 2026-01-01T00:00:00Z
        self._us = to_micros(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._us / US

    def micros(self) -> int:
        """The time in whole microseconds since the epoch (exact)."""
        return self._us

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (rounded to the microsecond); the new time in seconds."""
        step = to_micros(seconds)
        with self._lock:
            self._us += step
            return self._us / US

    def advance_micros(self, us: int) -> int:
        """Move forward by ``us`` whole microseconds; the new time in microseconds."""
        with self._lock:
            self._us += int(us)
            return self._us

    def set(self, now: float) -> None:
        """Jump to ``now`` seconds since the epoch (rounded to the microsecond)."""
        us = to_micros(now)
        with self._lock:
            self._us = us


def micros(clock: Callable[[], float]) -> Callable[[], int]:
    """A function giving ``clock``'s time in integer microseconds: the clock's own ``micros``
    when it has one (:class:`FakeClock`: exact), else its seconds rounded to the microsecond.
    Every store that takes an injected clock reads it through this."""
    exact = getattr(clock, "micros", None)
    if callable(exact):
        return exact  # type: ignore[no-any-return]
    return lambda: to_micros(clock())

"""When a stored state has expired: by the wall clock, never ahead of the monotonic clock.

Windows are aligned to the wall clock, which NTP may step ahead and back. Judging expiry by it
alone, a sweep run while the clock is 40 days ahead deletes every live state, and when the clock
comes back their usage is gone. The monotonic clock never steps, so the smallest offset between
the two seen so far maps monotonic time onto the wall clock: a step ahead is ignored (states
expire as they age in real time), a step back is followed at once (nothing is deleted early).
"""

from __future__ import annotations

import time

__all__ = ["ExpiryClock"]


class ExpiryClock:
    """``expiry(now)``: the time (microseconds) at which to judge expiry, given the wall clock's ``now``."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 1 << 80  # the smallest wall-minus-monotonic offset seen (microseconds)

    def __call__(self, now: int) -> int:
        mono = time.monotonic_ns() // 1000
        offset = now - mono
        self.offset = min(self.offset, offset)
        return mono + self.offset

"""``concurrency``: at most ``limit`` requests in flight; ``"10/minute"`` = 10 leases of 60 s.

State: a tuple of ``(expires, lease_id, cost)``, soonest expiry first. A lease is taken by a
request and released when it completes (:meth:`ratewarden.Limiter.release`), or expires after
the TTL if its holder died. ``retry_after`` on a denial is the time until enough leases have
*expired*: an upper bound, since a holder may release earlier.

``decide`` takes an anonymous lease (released only by its TTL); :meth:`acquire` names it.
"""

from __future__ import annotations

from typing import Any

from ratewarden.core.algorithms.base import NEVER, Outcome, Window

__all__ = ["Concurrency"]


class Concurrency(Window):
    name = "concurrency"
    __slots__ = ()

    def decide(self, state: Any, now: int, cost: int) -> Outcome:
        return self.acquire(state, now, cost, "")

    def acquire(self, state: Any, now: int, cost: int, lease: str) -> Outcome:
        leases: tuple[tuple[int, str, int], ...] = state or ()
        if leases and leases[0][0] <= now:
            leases = tuple(x for x in leases if x[0] > now)
        used = 0
        for x in leases:
            used += x[2]
        limit = self.limit
        reset = leases[-1][0] - now if leases else 0
        if cost > limit:
            return (False, limit - used, reset, NEVER, leases)
        need = cost or 1
        if used + need <= limit:
            if cost:
                leases = tuple(sorted((*leases, (now + self.period, lease, cost))))
                used += cost
                reset = leases[-1][0] - now
            return (True, limit - used, reset, 0, leases)
        excess = used + need - limit
        freed = 0
        for expires, _, c in leases:
            freed += c
            if freed >= excess:
                return (False, limit - used, reset, expires - now, leases)
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self, state: Any, now: int, lease: str) -> tuple[bool, Any]:
        """Drop ``lease`` (and expired leases). Returns (whether it was held, new state).

        The anonymous leases of :meth:`decide` (named ``""``) are released only by their TTL.
        """
        leases: tuple[tuple[int, str, int], ...] = state or ()
        if not lease:
            return False, tuple(x for x in leases if x[0] > now) or None
        kept = tuple(x for x in leases if x[0] > now and x[1] != lease)
        held = len(kept) < sum(1 for x in leases if x[0] > now)
        return held, kept or None

"""What every algorithm module provides: a *window*, i.e. one algorithm bound to one rate.

A window is pure: ``decide(state, now, cost)`` is a function of its arguments only (no clock,
no I/O, no locks) and returns an :data:`Outcome`, a plain tuple read through named index constants::

    (allowed, remaining, reset_us, retry_us, new_state)   # out[ALLOWED], out[REMAINING], ...

* ``allowed``: whether ``cost`` units may pass now;
* ``remaining``: units left in this window *after* this decision (nothing is consumed on a denial);
* ``reset_us``: microseconds until the window holds no usage at all (0 when empty); it is also
  how long the state must be kept, so stores use ``now + reset_us`` as the expiry;
* ``retry_us``: 0 when allowed; otherwise microseconds until the same request would pass if
  nothing else consumed in between, or :data:`NEVER` when ``cost`` exceeds what the window can
  ever hold;
* ``new_state``: the state to store if (and only if) the request is admitted everywhere.

``cost == 0`` is a check: it is allowed when one unit could pass now, and consumes nothing.
States are immutable (``None``, ints and tuples), so a store may keep the old state on denial.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, TypeAlias

from ratewarden.core.rates import LIMIT_MAX, Rate
from ratewarden.errors import ConfigError

__all__ = [
    "ALLOWED",
    "NEVER",
    "NEW_STATE",
    "REMAINING",
    "RESET_US",
    "RETRY_US",
    "BurstWindow",
    "Outcome",
    "Window",
    "ceil_div",
]

#: ``retry_us`` of a request that can never pass (its cost is larger than the window).
NEVER = -1


#: One window's answer, ``(allowed, remaining, reset_us, retry_us, new_state)``: a plain tuple,
#: read by name through the index constants below (``out[ALLOWED]``) or by unpacking. Not a
#: NamedTuple: on CPython 3.11 an instance of a tuple *subclass* is allocated and freed through
#: the generic GC path (no free list) and unpacking one leaves the exact-tuple fast path; every
#: decision builds one, and callgrind put the named form at about 2,000 more instructions per
#: memory hit (docs/benchmarks.md, "before and after the restructuring").
Outcome: TypeAlias = tuple[bool, int, int, int, Any]

ALLOWED: Final = 0  #: whether ``cost`` units may pass now
REMAINING: Final = 1  #: units left after this decision (nothing is consumed on a denial)
RESET_US: Final = 2  #: microseconds until the window holds no usage (0 when empty)
RETRY_US: Final = 3  #: 0 when allowed; else the wait, or NEVER
NEW_STATE: Final = 4  #: the state to store if the request is admitted everywhere


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling division for ``b > 0``."""
    return -(-a // b)


def _late(out: Outcome, lag: int) -> Outcome:
    """An outcome decided at a later time than ``now`` (the clock stepped back by ``lag``):
    the waits are measured from the real ``now``, so they grow by ``lag``."""
    allowed, remaining, reset, retry, new = out
    return (allowed, remaining, reset + lag if reset else 0, retry + lag if retry > 0 else retry, new)


class Window:
    """One algorithm applied to one rate. Subclasses implement :meth:`decide`."""

    name: ClassVar[str]
    #: True when no more than the limit is ever admitted per window (exact admission).
    strict: ClassVar[bool] = True
    #: True when the state does not depend on the limit (counts), so a tier that changes the
    #: limit keeps the usage already counted; False for gcra/token-bucket (times/levels).
    limit_free_state: ClassVar[bool] = True

    __slots__ = ("id", "limit", "period", "rate")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.limit = rate.limit
        self.period = rate.period
        self.id = f"{self.name}:{rate.period}" if self.limit_free_state else (f"{self.name}:{rate.limit}:{rate.period}")

    @property
    def capacity(self) -> int:
        """The largest cost a single request may ever have."""
        return self.limit

    def decide(self, state: Any, now: int, cost: int) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    def charge(self, state: Any, now: int, cost: int) -> Any:
        """The state after consuming ``cost`` unconditionally (costs known only afterwards)."""
        raise NotImplementedError(f"{self.name} does not support charging after the fact")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.rate}>"


class BurstWindow(Window):
    """A window with a ``burst`` (gcra, token-bucket): the largest cost, by default the limit.
    Their states are times or levels, so a burst other than the limit is part of the state's id."""

    limit_free_state = False
    __slots__ = ("burst",)

    def __init__(self, rate: Rate, burst: int | None = None) -> None:
        super().__init__(rate)
        if burst is None:
            burst = rate.limit
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= LIMIT_MAX:
            raise ConfigError(f"burst must be an integer from 1 to 10^12, not {burst!r:.60}")
        self.burst = burst
        if burst != rate.limit:
            self.id = f"{self.id}:{burst}"

    @property
    def capacity(self) -> int:
        return self.burst

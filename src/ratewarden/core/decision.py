"""The :class:`Decision` a limiter returns, and how several windows' outcomes become one.

Choosing the deciding window (pure):

* if any window denies, the deciding one is the denying window that asks the longest wait
  (a cost no window can hold beats any finite wait), so ``retry_after`` is the true wait;
* otherwise it is the most restrictive window: the fewest units remaining, then the latest reset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ratewarden.core.algorithms.base import NEVER, Outcome, Window
from ratewarden.core.rates import US, Rate

__all__ = ["Decision", "deciding_index", "to_decision"]


@dataclass(slots=True)
class Decision:
    """The answer for one request (or, from ``status``, for one window).

    ``retry_after`` is 0 when allowed, the exact seconds until the same request would pass when
    denied, and ``math.inf`` when its cost is larger than the window can ever hold
    (``reason == "cost_exceeds_limit"``). ``reset_after`` is the seconds until the window is
    back to its full limit. ``rate`` and ``algorithm`` name the deciding window.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    rate: Rate
    algorithm: str
    key: str
    reason: str | None = None
    lease: str | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def retry_after_header(self) -> int:
        """``Retry-After`` in whole seconds: ``ceil(retry_after)``, never 0 on a denial."""
        if self.allowed:
            return 0
        if math.isinf(self.retry_after):
            return 0
        return max(1, math.ceil(self.retry_after))

    def to_dict(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "limit": self.limit,
            "remaining": self.remaining,
            "reset_after": self.reset_after,
            "retry_after": None if math.isinf(self.retry_after) else self.retry_after,
            "rate": str(self.rate),
            "algorithm": self.algorithm,
            "key": self.key,
            "reason": self.reason,
        }


def deciding_index(outcomes: Sequence[Outcome]) -> int:
    """Index of the outcome that decides (see the module docstring)."""
    if len(outcomes) == 1:
        return 0
    best = -1
    best_retry = -2
    for i, o in enumerate(outcomes):
        if not o[0]:
            retry = math.inf if o[3] == NEVER else o[3]
            if retry > best_retry:
                best, best_retry = i, retry  # type: ignore[assignment]
    if best >= 0:
        return best
    return min(range(len(outcomes)), key=lambda i: (outcomes[i][1], -outcomes[i][2]))


def to_decision(window: Window, o: Outcome, key: str, lease: str | None = None) -> Decision:
    """Build the public :class:`Decision` for one window's outcome."""
    allowed, remaining, reset_us, retry_us, _ = o
    if retry_us == NEVER:
        return Decision(
            False,
            window.limit,
            max(0, remaining),
            reset_us / US,
            math.inf,
            window.rate,
            window.name,
            key,
            "cost_exceeds_limit",
        )
    return Decision(
        allowed,
        window.limit,
        remaining if remaining > 0 else 0,
        reset_us / US,
        retry_us / US,
        window.rate,
        window.name,
        key,
        None,
        lease if allowed else None,
    )

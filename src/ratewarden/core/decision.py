"""The :class:`Decision` a limiter returns, and how several windows' outcomes become one.

Choosing the deciding window (pure):

* if any window denies, the deciding one is the denying window that asks the longest wait
  (a cost no window can hold beats any finite wait), so ``retry_after`` is the true wait;
* otherwise it is the most restrictive window: the fewest units remaining, then the latest reset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from ratewarden.core.algorithms.base import NEVER, Outcome, Window
from ratewarden.core.rates import US, Rate

__all__ = ["Decision", "deciding_index", "retry_after_seconds", "to_decision"]

_new = tuple.__new__


class Decision(NamedTuple):
    """The answer for one request (or, from ``status``, for one window).

    ``retry_after`` is 0 when allowed, the exact seconds until the same request would pass when
    denied, and ``math.inf`` when its cost is larger than the window can ever hold
    (``reason == "cost_exceeds_limit"``). ``reset_after`` is the seconds until the window is
    back to its full limit. ``rate`` and ``algorithm`` name the deciding window.
    ``reason`` is ``None``, ``"cost_exceeds_limit"``, or ``"store_unavailable"`` when the store
    failed and ``on_store_error`` decided. ``bool(decision)`` is ``decision.allowed``.

    Immutable (a named tuple: cheap to build on the hot path); use ``_replace`` to derive one.
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
    def retry_after_header(self) -> int | None:
        """``Retry-After`` in whole seconds: ``ceil(retry_after)``, never 0 on a denial; 0 when
        allowed; ``None`` when no wait will ever do (a cost above the limit): send no header."""
        return 0 if self.allowed else retry_after_seconds(self.retry_after)

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, limit={self.limit}, remaining={self.remaining}, "
            f"reset_after={self.reset_after:g}, retry_after={self.retry_after:g}, rate='{self.rate}', "
            f"algorithm={self.algorithm!r}, key={self.key!r}"
            + (f", reason={self.reason!r}" if self.reason else "")
            + (f", lease={self.lease!r}" if self.lease else "")
            + ")"
        )

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
    """Index of the outcome that decides (see the module docstring): the one place this rule is
    written (the limiter, the engine and the decision service call it)."""
    if len(outcomes) == 2:  # the common multi-window case, unrolled (this runs on every hit)
        (a_ok, a_left, a_reset, a_retry, _), (b_ok, b_left, b_reset, b_retry, _) = outcomes
        if a_ok:
            return 1 if not b_ok or b_left < a_left or (b_left == a_left and b_reset > a_reset) else 0
        return 1 if not b_ok and a_retry != NEVER and (b_retry == NEVER or b_retry > a_retry) else 0
    best = 0
    ok, left, reset, retry, _ = outcomes[0]
    i = 0
    for o_ok, o_left, o_reset, o_retry, _ in outcomes:
        if ok:
            if not o_ok or o_left < left or (o_left == left and o_reset > reset):
                best, ok, left, reset, retry = i, o_ok, o_left, o_reset, o_retry
        elif not o_ok and retry != NEVER and (o_retry == NEVER or o_retry > retry):
            best, ok, left, reset, retry = i, o_ok, o_left, o_reset, o_retry
        i += 1
    return best


def retry_after_seconds(retry_after: float) -> int | None:
    """``Retry-After`` of a denial in whole seconds: ``ceil(retry_after)``, never 0; ``None`` when
    no wait will ever do (``inf``: a cost above the limit; or NaN): send no header. The one
    place this rounding is written (Decision, the HTTP headers and bodies, the decision service)."""
    if math.isinf(retry_after) or math.isnan(retry_after):
        return None
    return max(1, math.ceil(retry_after))


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
    # tuple.__new__ in C: a NamedTuple's own __new__ is a Python function (about half the cost)
    return _new(
        Decision,
        (
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
        ),
    )

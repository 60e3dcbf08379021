"""Rate-limit response header fields, computed from the real state of every window that applied.

* ``draft``: draft-ietf-httpapi-ratelimit-headers-10. ``RateLimit-Policy`` is a Structured
  Fields List with one Item per policy, the policy name as a String with ``q`` (quota) and
  ``w`` (window, seconds); ``RateLimit`` lists the same names with ``r`` (remaining) and ``t``
  (seconds until the quota is fully available again)::

      RateLimit-Policy: "login";q=5;w=1200
      RateLimit: "login";r=4;t=1200

* ``legacy``: ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` (seconds,
  or an epoch time with ``legacy_reset = "epoch"``) of the most restrictive window: the denying
  window with the longest wait on a denial, else the one with the fewest units left.
* ``Retry-After`` (on denials only) is ``ceil(retry_after)`` whole seconds, never 0.

When two checks put headers on one response (the policy file's middleware and a per-route limit),
:func:`merge_headers` combines them: the legacy fields keep one value, the most restrictive
window's (fewest units left, then the longest wait); the draft fields are lists, so each
check's field line is kept (two lines of a list field mean their joined list).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from ratewarden.clock import to_micros
from ratewarden.core.algorithms.base import NEVER
from ratewarden.core.decision import (
    deciding_index,
    retry_after_seconds,  # the one Retry-After rounding, re-exported
)

__all__ = [
    "PolicyState",
    "ceil_time",
    "merge_headers",
    "policy_field",
    "rate_limit_headers",
    "retry_after_seconds",
]


class PolicyState(NamedTuple):
    """One window that applied to the request, after the decision (a named tuple: one is made
    per window per request, and a tuple costs a fraction of a frozen dataclass)."""

    name: str  # printable ASCII without '"' or '\\' (rule names are validated at load)
    limit: int
    window: float  # seconds
    remaining: int
    reset_after: float  # seconds until full again
    allowed: bool = True
    retry_after: float = 0.0


def ceil_time(epoch: float) -> int:
    """``epoch`` rounded up to a whole second, except that a time within a millisecond of a whole
    second is that second (``now + reset_after`` carries float error: midnight is not 00:00:01)."""
    near = round(epoch)
    return near if abs(epoch - near) < 1e-3 else math.ceil(epoch)


def _sec(x: float) -> int:
    return max(0, math.ceil(x))


@lru_cache(maxsize=1024)
def _policy_field(policies: tuple[tuple[str, int, float], ...]) -> str:
    return ", ".join([f'"{name}";q={limit};w={_sec(window)}' for name, limit, window in policies])


def policy_field(states: Sequence[PolicyState]) -> str:
    """The ``RateLimit-Policy`` value of ``states`` (it depends only on names, limits and
    windows: callers with a fixed set of windows compute it once and pass it as ``policy=``)."""
    return _policy_field(tuple((s.name, s.limit, s.window) for s in states))


def most_restrictive(states: Sequence[PolicyState]) -> PolicyState:
    """The window whose numbers a single-valued header shows: the core's one deciding rule
    (:func:`ratewarden.core.decision.deciding_index`) applied to the windows' states."""
    if len(states) == 1:
        return states[0]
    outs = [
        (
            s.allowed,
            s.remaining,
            to_micros(s.reset_after),
            NEVER if math.isinf(s.retry_after) else to_micros(s.retry_after),
            None,
        )
        for s in states
    ]
    return states[deciding_index(outs)]


def rate_limit_headers(
    mode: str,
    states: Sequence[PolicyState],
    *,
    now: float = 0.0,
    legacy_reset: str = "seconds",
    policy: str | None = None,
) -> list[tuple[str, str]]:
    """The header fields for ``mode`` (``draft``, ``legacy``, ``both``, ``none``); ``policy``:
    the ``RateLimit-Policy`` value of ``states`` if the caller has it already (see :func:`policy_field`)."""
    if mode == "none" or not states:
        return []
    if mode == "draft":  # the default: two fields
        ceil = math.ceil
        return [
            ("RateLimit-Policy", policy_field(states) if policy is None else policy),
            (
                "RateLimit",
                ", ".join([f'"{s[0]}";r={max(s[3], 0)};t={max(ceil(s[4]), 0)}' for s in states]),
            ),
        ]
    out: list[tuple[str, str]] = []
    if mode == "both":
        out = rate_limit_headers("draft", states, policy=policy)
    if mode in ("legacy", "both"):
        s = most_restrictive(states)
        reset = _sec(s.reset_after) if legacy_reset == "seconds" else ceil_time(now + s.reset_after)
        out.append(("X-RateLimit-Limit", str(s.limit)))
        out.append(("X-RateLimit-Remaining", str(max(0, s.remaining))))
        out.append(("X-RateLimit-Reset", str(reset)))
    return out


#: the legacy fields, which carry one value each
LEGACY = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
#: the draft fields: Structured Fields lists, so two field lines combine into one list
DRAFT = ("ratelimit-policy", "ratelimit")
RATE_LIMIT_FIELDS = frozenset((*LEGACY, *DRAFT))


def _legacy(headers: Sequence[tuple[str, str]]) -> tuple[int, int, int] | None:
    """``(remaining, -reset, limit)`` of the legacy fields in ``headers`` (None when absent or
    not integers): the smallest tuple is the most restrictive window."""
    found: dict[str, int] = {}
    for name, value in headers:
        key = name.lower()
        if key in LEGACY:
            try:
                found[key] = int(str(value).strip())
            except ValueError:
                return None
    if len(found) != len(LEGACY):
        return None
    return found["x-ratelimit-remaining"], -found["x-ratelimit-reset"], found["x-ratelimit-limit"]


def merge_headers(first: Sequence[tuple[str, str]], second: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rate-limit fields of two checks of one request as one set: one legacy triple (the more
    restrictive of the two); every other field (the draft lists included) kept from both, in order."""
    out: list[tuple[str, str]] = []
    a, b = _legacy(first), _legacy(second)
    legacy_from = second if a is None or (b is not None and b < a) else first
    wrote_legacy = False
    for source in (first, second):
        for name, value in source:
            key = name.lower()
            if key in LEGACY:
                if source is legacy_from and not wrote_legacy:
                    out.extend((n, v) for n, v in legacy_from if n.lower() in LEGACY)
                    wrote_legacy = True
                continue
            out.append((name, value))
    return out

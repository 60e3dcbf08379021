"""When to retry a rate-limited response, and how long to wait: the logic the httpx and requests
clients share, with no I/O of its own (callers pass the clock, the sleep and the random source).

Rules, in order:

* only ``429`` and ``503`` are retried, and only for idempotent methods (``GET``, ``HEAD``,
  ``OPTIONS``, ``PUT``, ``DELETE``, ``TRACE``) unless ``retry_unsafe`` is set;
* the wait is the server's: ``Retry-After`` (delay-seconds or an HTTP date), else the largest
  ``t`` of the ``RateLimit`` items whose ``r`` is 0 (``RateLimit: "login";r=0;t=12``), else an
  exponential back-off (0.5 s, 1 s, 2 s, ...);
* jitter is only ever *added* (up to ``jitter`` x the wait, at most 1 s), so a client never comes
  back before the server said it may; it is trimmed so that the budget below is never exceeded;
* ``max_wait`` is the budget of sleep for one request, all retries together: a wait that does not
  fit is not started, and the last response (a 429) is handed back as it is, never an exception;
* at most ``max_retries`` retries.

With ``wait_when_empty``, a response whose ``RateLimit`` says ``r=0`` for a policy makes the next
request to the same origin wait ``t`` seconds first (when that fits the budget), instead of
spending a round trip on a 429.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from ratewarden.errors import ConfigError

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "RateLimitItem",
    "RetryPolicy",
    "parse_rate_limit",
    "parse_retry_after",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({429, 503})
_MAX_JITTER = 1.0
_BACKOFF_BASE = 0.5
#: one member of a Structured Fields list: a string or a token, then ``;key=value`` parameters
_MEMBER = re.compile(
    r'\s*(?:"(?P<s>(?:[^"\\]|\\.)*)"|(?P<t>[A-Za-z*][A-Za-z0-9_:/.*%!#$&\'+^`|~-]*))'
    r"(?P<params>(?:\s*;\s*[a-z*][a-z0-9_.*-]*(?:=(?:\"(?:[^\"\\]|\\.)*\"|[^;,\"]*))?)*)\s*(?:,|$)"
)
_PARAM = re.compile(r';\s*([a-z*][a-z0-9_.*-]*)(?:=("(?:[^"\\]|\\.)*"|[^;,"]*))?')


class RateLimitItem(NamedTuple):
    """One policy of a ``RateLimit`` field: its name, ``r`` (units left) and ``t`` (seconds)."""

    name: str
    remaining: int | None
    reset: int | None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 15:
        return None
    return int(text)


def parse_rate_limit(value: str | None) -> list[RateLimitItem]:
    """The items of a ``RateLimit`` field; members it cannot read are skipped, never raised on."""
    if not value or len(value) > 8192:
        return []
    out: list[RateLimitItem] = []
    pos = 0
    while pos < len(value):
        m = _MEMBER.match(value, pos)
        if m is None or m.end() == pos:
            nxt = value.find(",", pos)  # skip a member we cannot read
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        pos = m.end()
        params = {k: v for k, v in _PARAM.findall(m.group("params") or "")}
        name = m.group("s") if m.group("s") is not None else m.group("t")
        out.append(RateLimitItem(name, _int(params.get("r")), _int(params.get("t"))))
    return out


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds from ``now`` (epoch seconds): delay-seconds or an HTTP date
    (a date in the past is 0); ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(int(value)) if len(value) <= 15 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _get(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` for case-insensitive mappings (httpx, requests) and plain dicts alike."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def server_wait(headers: Mapping[str, str], now: float) -> float | None:
    """How long the server asked to wait: ``Retry-After``, else the largest ``t`` among the
    ``RateLimit`` items with ``r=0``; ``None`` when it said neither."""
    wait = parse_retry_after(_get(headers, "Retry-After"), now)
    if wait is not None:
        return wait
    empty = [i.reset for i in parse_rate_limit(_get(headers, "RateLimit")) if i.remaining == 0 and i.reset is not None]
    return float(max(empty)) if empty else None


@dataclass
class RetryPolicy:
    """The retry decisions of one client (see the module docstring); ``clock`` gives epoch seconds
    (for HTTP dates and up-front waits), ``random`` a float in ``[0, 1)`` (the jitter)."""

    max_retries: int = 3
    max_wait: float = 60.0
    retry_unsafe: bool = False
    jitter: float = 0.1
    wait_when_empty: bool = False
    clock: Callable[[], float] = field(default=lambda: 0.0)
    random: Callable[[], float] = field(default=lambda: 0.0)
    #: origin -> epoch time before which its last RateLimit said nothing is left
    _empty_until: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, not {self.max_retries!r}")
        if not isinstance(self.max_wait, int | float) or not self.max_wait >= 0 or math.isinf(self.max_wait):
            raise ConfigError(f"max_wait must be a finite number of seconds >= 0, not {self.max_wait!r}")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise ConfigError(f"jitter must be a fraction between 0 and 1, not {self.jitter!r}")

    def may_retry(self, method: str) -> bool:
        return self.max_retries > 0 and (self.retry_unsafe or method.upper() in IDEMPOTENT_METHODS)

    def delay(self, method: str, status: int, headers: Mapping[str, str], retries: int, slept: float) -> float | None:
        """Seconds to sleep before retry number ``retries + 1``, or ``None`` to hand the response
        back: not a retryable status or method, retries used up, or a wait that does not fit the
        budget (``slept``: seconds already slept for this request)."""
        if status not in RETRY_STATUSES or retries >= self.max_retries or not self.may_retry(method):
            return None
        wait = server_wait(headers, self.clock())
        if wait is None:
            wait = _BACKOFF_BASE * 2**retries
        budget = self.max_wait - slept
        if wait > budget:
            return None
        extra = min(self.jitter * wait, _MAX_JITTER) * self.random()
        return min(wait + extra, budget)

    # -- waiting up front --------------------------------------------------------------------

    def observe(self, origin: str, headers: Mapping[str, str]) -> None:
        """Remember when ``origin``'s quota is known to be empty (only with ``wait_when_empty``)."""
        if not self.wait_when_empty:
            return
        items = parse_rate_limit(_get(headers, "RateLimit"))
        empty = [i.reset for i in items if i.remaining == 0 and i.reset]
        if empty:
            self._empty_until[origin] = self.clock() + max(empty)
            if len(self._empty_until) > 1024:  # bounded: forget the oldest origin
                self._empty_until.pop(next(iter(self._empty_until)))
        else:
            self._empty_until.pop(origin, None)

    def wait_first(self, origin: str) -> float:
        """Seconds to wait before sending to ``origin`` (0 unless ``wait_when_empty`` and its last
        ``RateLimit`` said ``r=0`` less than ``t`` seconds ago); never more than ``max_wait``:
        a longer wait is skipped and the server decides."""
        until = self._empty_until.get(origin)
        if until is None:
            return 0.0
        wait = until - self.clock()
        if wait <= 0:
            self._empty_until.pop(origin, None)
            return 0.0
        return wait if wait <= self.max_wait else 0.0

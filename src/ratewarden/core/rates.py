"""Rate notation: ``"10/second"``, ``"5 per 10 minutes"``, ``"100/1m"``, joined by ``;`` or ``,``.

This is the notation of the ``limits`` library (Flask-Limiter, SlowAPI), so users can bring
their strings, plus the short units ``s``, ``m``, ``h``, ``d`` and ``ms``.

Invariants kept here:

* a ``Rate`` always has ``limit >= 1`` and ``period >= 1`` microsecond;
* parsing is pure and cached: the same string always yields the same (interned) tuple;
* every bad string raises :class:`RateParseError`, whose message quotes the bad part.

Durations are integers in **microseconds** throughout the core, so that the Python core and
the Redis Lua scripts (whose numbers are doubles, exact up to 2**53) compute identical results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ratewarden.errors import RateParseError

__all__ = ["Rate", "RateParseError", "parse_duration", "parse_rate", "parse_rates", "US"]

US = 1_000_000  # microseconds per second

#: unit name -> length in microseconds. ``month`` is 30 days and ``year`` 365 days for the
#: rolling algorithms; the ``quota`` algorithm uses calendar days and months instead.
_UNITS: dict[str, int] = {}
for _names, _us in (
    (("ms", "millisecond", "milliseconds", "msec"), 1_000),
    (("s", "sec", "secs", "second", "seconds"), US),
    (("m", "min", "mins", "minute", "minutes"), 60 * US),
    (("h", "hr", "hrs", "hour", "hours"), 3600 * US),
    (("d", "day", "days"), 86400 * US),
    (("w", "week", "weeks"), 7 * 86400 * US),
    (("month", "months"), 30 * 86400 * US),
    (("y", "year", "years"), 365 * 86400 * US),
):
    for _n in _names:
        _UNITS[_n] = _us

_UNIT_NAMES = {
    1_000: "millisecond",
    US: "second",
    60 * US: "minute",
    3600 * US: "hour",
    86400 * US: "day",
    7 * 86400 * US: "week",
    30 * 86400 * US: "month",
    365 * 86400 * US: "year",
}

_RATE_RE = re.compile(
    r"""^\s*(?P<limit>[+-]?\d+)\s*(?:/|\bper\b)\s*(?P<count>[+-]?\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$""",
    re.IGNORECASE,
)
_DURATION_RE = re.compile(r"^\s*(?P<count>[+-]?\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units per ``period`` microseconds."""

    limit: int
    period: int  # microseconds

    @property
    def seconds(self) -> float:
        """The window length in seconds."""
        return self.period / US

    def scaled(self, factor: float) -> Rate:
        """The same window with the limit multiplied by ``factor`` (rounded down, at least 1)."""
        return Rate(max(1, int(self.limit * factor)), self.period)

    def __str__(self) -> str:
        return f"{self.limit}/{format_duration(self.period)}"


def format_duration(us: int) -> str:
    """``60_000_000`` -> ``"minute"``, ``600_000_000`` -> ``"10 minutes"``, ``1_500_000`` -> ``"1.5s"``."""
    for size in sorted(_UNIT_NAMES, reverse=True):
        if us % size == 0:
            n = us // size
            name = _UNIT_NAMES[size]
            return name if n == 1 else f"{n} {name}s"
    return f"{us / US:g}s"


def _unit(unit: str, text: str, part: str) -> int:
    try:
        return _UNITS[unit.lower()]
    except KeyError:
        raise RateParseError(
            f"unknown time unit {unit!r} in {part!r} (of {text!r}); "
            "use second, minute, hour, day, week, month or year (or s, m, h, d)"
        ) from None


def _count(raw: str | None, text: str, part: str) -> float:
    if raw is None:
        return 1.0
    count = float(raw)
    if count <= 0:
        raise RateParseError(f"the period must be positive in {part!r} (of {text!r})")
    return count


def parse_rates(text: str) -> tuple[Rate, ...]:
    """Parse one or more rates joined by ``;`` or ``,``. Raises :class:`RateParseError`."""
    if not isinstance(text, str):  # before the cache, which would raise TypeError on a list
        raise RateParseError(f"a rate must be a string like '10/minute', not {text!r}")
    return _parse_rates(text)


@lru_cache(maxsize=4096)
def _parse_rates(text: str) -> tuple[Rate, ...]:
    parts = list(re.split(r"[;,|]", text))
    if not text.strip():
        raise RateParseError(f"empty rate string {text!r}; expected something like '10/minute'")
    rates: list[Rate] = []
    seen: dict[Rate, str] = {}
    for part in parts:
        if not part.strip():
            raise RateParseError(f"empty rate between separators in {text!r}")
        rate = _parse_one(part, text)
        if rate in seen:
            first = seen[rate]
            same = f"{part.strip()!r}" if first == part.strip() else f"{part.strip()!r} (the same as {first!r})"
            raise RateParseError(f"the rate {same} appears twice in {text!r}")
        seen[rate] = part.strip()
        rates.append(rate)
    return tuple(rates)


def parse_rate(text: str) -> Rate:
    """Parse exactly one rate."""
    rates = parse_rates(text)
    if len(rates) != 1:
        raise RateParseError(f"expected a single rate, got {len(rates)} in {text!r}")
    return rates[0]


def _parse_one(part: str, text: str) -> Rate:
    m = _RATE_RE.match(part)
    if m is None:
        raise RateParseError(
            f"cannot parse {part.strip()!r} (of {text!r}); expected '<n>/<unit>' or "
            "'<n> per <m> <units>', e.g. '10/second', '5 per 10 minutes', '100/1m'"
        )
    limit = int(m["limit"])
    if limit <= 0:
        raise RateParseError(f"the limit must be a positive integer in {part.strip()!r} (of {text!r})")
    period = round(_count(m["count"], text, part.strip()) * _unit(m["unit"], text, part.strip()))
    if period < 1:
        raise RateParseError(f"the period is shorter than a microsecond in {part.strip()!r}")
    return Rate(limit, period)


def parse_duration(text: str | int | float) -> int:
    """``"1 hour"``, ``"90s"``, ``"10 minutes"`` or a number of seconds -> microseconds."""
    if isinstance(text, bool):
        raise RateParseError(f"a duration must be a number of seconds or a string, not {text!r}")
    if isinstance(text, int | float):
        if text <= 0:
            raise RateParseError(f"a duration must be positive, not {text!r}")
        return round(text * US)
    m = _DURATION_RE.match(text)
    if m is None:
        raise RateParseError(f"cannot parse the duration {text!r}; expected e.g. '1 hour' or '90s'")
    return round(_count(m["count"], text, text) * _unit(m["unit"], text, text))

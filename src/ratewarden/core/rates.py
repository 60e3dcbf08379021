"""Rate notation: ``"10/second"``, ``"5 per 10 minutes"``, ``"100/1m"``, joined by ``;`` or ``,``.

This is the notation of the ``limits`` library (Flask-Limiter, SlowAPI), so users can bring
their strings, plus the short units ``s``, ``m``, ``h``, ``d`` and ``ms``.

Invariants kept here:

* a ``Rate`` always has ``1 <= limit <=`` :data:`LIMIT_MAX` (10^12) and ``1 <= period <=``
  :data:`PERIOD_MAX` microseconds (ten years): the sizes every store decides exactly; anything
  beyond is refused with a :class:`RateParseError` that names the value;
* parsing is pure and cached: the same string always yields the same (interned) tuple;
* every bad string raises :class:`RateParseError`, whose message quotes the bad part.

Durations are integers in **microseconds** throughout the core, so that the Python core and
the Redis Lua scripts (whose numbers are doubles, exact up to 2**53) compute identical results.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from ratewarden.clock import US, to_micros
from ratewarden.errors import RateParseError

__all__ = [
    "LIMIT_MAX",
    "PERIOD_MAX",
    "Rate",
    "RateParseError",
    "US",
    "check_limit",
    "check_period",
    "parse_duration",
    "parse_rate",
    "parse_rates",
    "to_micros",
]


#: The sizes ratewarden promises to decide exactly in every store: a limit (and a cost that can
#: pass) up to 10^12 units, a period (and any duration: a ban, a TTL) up to ten years. A larger
#: value is a configuration error, never an overflow at run time.
LIMIT_MAX = 10**12
PERIOD_MAX = 10 * 366 * 86400 * US  # ten years, leap days included

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

    def __post_init__(self) -> None:
        check_limit(self.limit, f"the limit of {self.limit!r}/{self.period!r}us")
        check_period(self.period, f"the period of {self.limit!r}/{self.period!r}us")

    @property
    def seconds(self) -> float:
        """The window length in seconds."""
        return self.period / US

    def scaled(self, factor: float) -> Rate:
        """The same window with the limit multiplied by ``factor`` (rounded down, at least 1).
        Raises :class:`RateParseError` when the product is not finite or above :data:`LIMIT_MAX`."""
        product = self.limit * factor
        if not math.isfinite(product) or product > LIMIT_MAX:
            raise RateParseError(f"{self} times {factor!r} is above the largest limit, {LIMIT_MAX:,}")
        return Rate(max(1, int(product)), self.period)

    def __str__(self) -> str:
        return f"{self.limit}/{format_duration(self.period)}"


def check_limit(limit: object, what: str) -> int:
    """``limit`` if it is an integer from 1 to :data:`LIMIT_MAX`, else :class:`RateParseError`."""
    if type(limit) is not int or not 1 <= limit <= LIMIT_MAX:
        raise RateParseError(f"{what} must be an integer from 1 to {LIMIT_MAX:,} (10^12), not {_short(limit)}")
    return limit


def check_period(period: object, what: str) -> int:
    """``period`` (microseconds) if it is an integer from 1 to :data:`PERIOD_MAX`, else
    :class:`RateParseError`."""
    if type(period) is not int or not 1 <= period <= PERIOD_MAX:
        raise RateParseError(f"{what} must be from 1 microsecond to 10 years, not {_short(period)}")
    return period


def _short(value: object) -> str:
    """A value for an error message: a 400-digit number is shown by its size."""
    if type(value) is int and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit number"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
            f"unknown time unit {unit!r} in {_where(part, text)}; "
            "use second, minute, hour, day, week, month or year (or s, m, h, d)"
        ) from None


def _count(raw: str | None, text: str, part: str) -> float:
    if raw is None:
        return 1.0
    if len(raw) > 20:
        raise RateParseError(f"the period {_clip(raw)} is longer than 10 years in {_where(part, text)}")
    count = float(raw)
    if count <= 0:
        raise RateParseError(f"the period must be positive in {part!r} (of {text!r})")
    return count


def _period(count: float, unit: int, part: str, text: str) -> int:
    """``count`` units as whole microseconds, at most :data:`PERIOD_MAX`."""
    period = count * unit
    if period > PERIOD_MAX:
        raise RateParseError(f"the period of {_where(part, text)} is longer than 10 years")
    period_us = round(period)
    if period_us < 1:
        raise RateParseError(f"the period is shorter than a microsecond in {part!r}")
    return period_us


def _where(part: str, text: str) -> str:
    return _clip(part) if part == text.strip() else f"{_clip(part)} (of {_clip(text)})"


def _clip(text: str) -> str:
    """``repr(text)``, cut short when long (a 400-digit number stays readable)."""
    return repr(text) if len(text) <= 60 else repr(text[:40] + "...") + f" ({len(text)} characters)"


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
    raw = m["limit"]
    limit = int(raw) if len(raw) <= 20 else LIMIT_MAX + 1
    if limit <= 0:
        raise RateParseError(f"the limit must be a positive integer in {part.strip()!r} (of {_clip(text)})")
    if limit > LIMIT_MAX:
        raise RateParseError(
            f"the limit {_clip(raw)} in {_where(part.strip(), text)} is above the largest limit, {LIMIT_MAX:,} (10^12)"
        )
    period = _period(_count(m["count"], text, part.strip()), _unit(m["unit"], text, part.strip()), part.strip(), text)
    return Rate(limit, period)


def parse_duration(text: str | int | float) -> int:
    """``"1 hour"``, ``"90s"``, ``"10 minutes"`` or a number of seconds -> microseconds."""
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise RateParseError(f"a duration must be a number of seconds or a string, not {_short(text)}")
    if isinstance(text, int | float):
        if not text > 0:  # also NaN
            raise RateParseError(f"a duration must be positive, not {_short(text)}")
        if text > PERIOD_MAX / US:  # also inf
            raise RateParseError(f"a duration must be at most 10 years, not {_short(text)} seconds")
        us = to_micros(text)
        if us < 1:
            raise RateParseError(f"a duration must be at least a microsecond, not {_short(text)} seconds")
        return us
    m = _DURATION_RE.match(text)
    if m is None:
        raise RateParseError(f"cannot parse the duration {_clip(text)}; expected e.g. '1 hour' or '90s'")
    return _period(_count(m["count"], text, text), _unit(m["unit"], text, text), text, text)

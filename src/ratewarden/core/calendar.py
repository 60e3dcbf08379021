"""Calendar periods for the ``quota`` algorithm: a day or a month in a time zone.

Pure arithmetic on an epoch time in microseconds; the only outside input is the IANA time-zone
database (``zoneinfo``), read once per zone. Days around a DST change are 23 or 25 hours long,
a reset time that does not exist on a given day (02:30 on a spring-forward night) falls at
the first instant after the gap (03:00 new time), and a reset time that occurs twice (01:30 on
a fall-back night) falls at its first occurrence.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ratewarden.core.rates import US
from ratewarden.errors import ConfigError

__all__ = ["Calendar"]

_RESET_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class Calendar:
    """Maps an instant to the ``[start, end)`` of its day or month (microseconds since epoch)."""

    __slots__ = ("_cache", "months", "reset", "tz")

    def __init__(self, unit: str = "day", tz: str = "UTC", reset: str = "00:00") -> None:
        if unit not in ("day", "month"):
            raise ConfigError(f"a quota period is 'day' or 'month', not {unit!r}")
        if not isinstance(tz, str) or not tz:
            raise ConfigError(f"a quota time zone is an IANA name such as 'Europe/Paris', not {tz!r:.60}")
        if not isinstance(reset, str):
            raise ConfigError(f"a quota reset time is 'HH:MM' (24 h), not {reset!r:.60}")
        m = _RESET_RE.match(reset)
        if m is None:
            raise ConfigError(f"a quota reset time is 'HH:MM' (24 h), not {reset!r}")
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris')") from None
        self.months = unit == "month"
        self.reset = time(int(m[1]), int(m[2]))
        self._cache: tuple[int, int] = (0, 0)

    def bounds(self, now: int) -> tuple[int, int]:
        """``(start, end)`` of the period holding ``now``; cached while ``now`` stays inside it."""
        start, end = self._cache
        if start <= now < end:
            return start, end
        try:
            bounds = self._bounds(now)
        except (OverflowError, OSError, ValueError):
            raise ConfigError(
                f"the clock reads {now!r:.30} microseconds since the epoch, outside the calendar of a quota "
                "(years 1 to 9999): check the clock given to the limiter"
            ) from None
        self._cache = bounds
        return bounds

    def _bounds(self, now: int) -> tuple[int, int]:
        local = datetime.fromtimestamp(now / US, UTC).astimezone(self.tz)
        day = local.date()
        start_dt = self._at(self._period_day(day))
        if self._ts(start_dt) > now:
            start_dt = self._at(self._step(self._period_day(day), -1))
        end_dt = self._at(self._step(start_dt.date(), 1))
        return self._ts(start_dt), self._ts(end_dt)

    def _period_day(self, d: date) -> date:
        return d.replace(day=1) if self.months else d

    def _step(self, d: date, n: int) -> date:
        if not self.months:
            return d + timedelta(days=n)
        y, m = divmod(d.year * 12 + d.month - 1 + n, 12)
        return date(y, m + 1, 1)

    def _at(self, d: date) -> datetime:
        """The reset instant of day ``d`` (see the module docstring for gaps and folds)."""
        wall = datetime.combine(d, self.reset)
        dt = wall.replace(tzinfo=self.tz)  # fold=0: the first occurrence of an ambiguous time
        utc = dt.astimezone(UTC)
        if utc.astimezone(self.tz).replace(tzinfo=None) == wall:
            return dt
        # ``wall`` is in a gap: zoneinfo maps it past the gap (by the offset before it). The
        # reset is the first instant whose local time is not before ``wall``: the end of the gap.
        # Transitions fall on whole seconds, so a binary search on seconds finds it exactly.
        lo = int(wall.replace(tzinfo=self.tz, fold=1).timestamp())  # before the gap
        hi = int(utc.timestamp())  # after the gap
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, self.tz).replace(tzinfo=None) >= wall:
                hi = mid
            else:
                lo = mid
        return datetime.fromtimestamp(hi, self.tz)

    @staticmethod
    def _ts(dt: datetime) -> int:
        # Aware datetime -> exact microseconds since the epoch (no float rounding).
        delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * US + delta.microseconds

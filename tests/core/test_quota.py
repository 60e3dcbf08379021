"""``quota``: a budget per calendar day or month in a time zone (scenario S4's daily budget, docs/scenarios.md).

Resets at the reset time (midnight by default) in the configured zone, on normal days and on
DST days (23 h and 25 h long), and monthly at the first of the month; ``retry_after`` is the
exact time until the reset. Bad zones, reset times and periods are ConfigErrors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden import ConfigError, FakeClock, Limiter
from ratewarden.core.algorithms import make_window
from ratewarden.core.calendar import Calendar
from ratewarden.core.rates import Rate

S = 1_000_000
H = 3600 * S


def utc(*args: int) -> int:
    """A UTC wall time -> microseconds since the epoch (written out independently of zoneinfo)."""
    d = datetime(*args, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)  # type: ignore[misc]
    return (d.days * 86_400 + d.seconds) * S


def at(clock: FakeClock, us: int) -> None:
    clock.set(us / S)


# (zone, reset, start of the period in UTC, its length in hours): offsets from the tz rules,
# e.g. New York is UTC-5 in winter and UTC-4 in summer, Paris UTC+1 and UTC+2.
DAYS = [
    ("UTC", "00:00", utc(2026, 1, 15, 0, 0), 24),
    ("America/New_York", "00:00", utc(2026, 1, 15, 5, 0), 24),
    ("America/New_York", "00:00", utc(2026, 3, 8, 5, 0), 23),  # spring forward
    ("America/New_York", "00:00", utc(2026, 11, 1, 4, 0), 25),  # fall back
    ("Europe/Paris", "00:00", utc(2026, 3, 28, 23, 0), 23),
    ("Europe/Paris", "00:00", utc(2026, 10, 24, 22, 0), 25),
    ("Europe/Paris", "00:00", utc(2026, 7, 1, 22, 0), 24),
    ("America/New_York", "06:30", utc(2026, 3, 7, 11, 30), 23),  # 06:30 EST -> 06:30 EDT
    ("America/New_York", "06:30", utc(2026, 10, 31, 10, 30), 25),
    ("Europe/Paris", "06:30", utc(2026, 3, 28, 5, 30), 23),
    ("Europe/Paris", "06:30", utc(2026, 10, 24, 4, 30), 25),
    ("UTC", "06:30", utc(2026, 5, 5, 6, 30), 24),
    ("America/New_York", "02:30", utc(2026, 3, 8, 7, 0), 23.5),  # 02:30 does not exist: 03:00 EDT
]


@pytest.mark.parametrize(("tz", "reset", "start", "hours"), DAYS)
def test_daily_quota_resets_at_the_reset_time(tz: str, reset: str, start: int, hours: float) -> None:
    end = start + round(hours * H)
    clock = FakeClock(start / S)
    limiter = Limiter("memory://", clock=clock, algorithm="quota")
    rates = "3/day"
    assert [limiter.hit("u", rates, tz=tz, reset=reset).allowed for _ in range(4)] == [True] * 3 + [False]
    d = limiter.hit("u", rates, tz=tz, reset=reset)
    assert round(d.retry_after * S) == end - start  # a 23 h or 25 h day on DST days
    assert round(d.reset_after * S) == end - start
    at(clock, end - 1)
    d = limiter.hit("u", rates, tz=tz, reset=reset)
    assert not d.allowed and round(d.retry_after * S) == 1 and d.retry_after_header == 1
    at(clock, end)
    d = limiter.hit("u", rates, tz=tz, reset=reset)
    assert d.allowed and d.remaining == 2
    # the period before started one period earlier: a hit 1 us before `start` is in another day
    clock2 = FakeClock((start - 1) / S)
    other = Limiter("memory://", clock=clock2, algorithm="quota")
    d = other.hit("u", "1/day", tz=tz, reset=reset)
    assert d.allowed and round(d.reset_after * S) == 1


def test_reset_is_seconds_until_local_midnight() -> None:
    """S4: a daily token budget, retryAfter = seconds until midnight (New York)."""
    clock = FakeClock(utc(2026, 6, 10, 20, 0) / S)  # 16:00 EDT
    limiter = Limiter("memory://", clock=clock, algorithm="quota")
    assert limiter.hit("u", "3000000/day", 2_999_999, tz="America/New_York").allowed
    d = limiter.hit("u", "3000000/day", 2, tz="America/New_York")
    assert not d.allowed and d.retry_after == 8 * 3600  # until 00:00 EDT = 04:00 UTC
    assert d.retry_after_header == 8 * 3600


MONTHS = [
    ("UTC", "00:00", utc(2026, 2, 1), utc(2026, 3, 1)),  # February: 28 days
    ("UTC", "00:00", utc(2026, 12, 1), utc(2027, 1, 1)),  # December -> January
    ("UTC", "06:30", utc(2026, 12, 1, 6, 30), utc(2027, 1, 1, 6, 30)),
    ("Europe/Paris", "00:00", utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),  # March: 31 d - 1 h
    ("America/New_York", "06:30", utc(2026, 10, 1, 10, 30), utc(2026, 11, 1, 11, 30)),
]


@pytest.mark.parametrize(("tz", "reset", "start", "end"), MONTHS)
def test_monthly_quota(tz: str, reset: str, start: int, end: int) -> None:
    clock = FakeClock(start / S)
    limiter = Limiter("memory://", clock=clock, algorithm="quota")
    assert limiter.hit("u", "2/month", 2, tz=tz, reset=reset).allowed
    d = limiter.hit("u", "2/month", tz=tz, reset=reset)
    assert not d.allowed and round(d.retry_after * S) == end - start
    at(clock, end - 1)
    assert not limiter.hit("u", "2/month", tz=tz, reset=reset).allowed
    at(clock, end)
    assert limiter.hit("u", "2/month", 2, tz=tz, reset=reset).allowed


def test_december_to_january() -> None:
    clock = FakeClock(utc(2026, 12, 31, 23) / S)
    limiter = Limiter("memory://", clock=clock, algorithm="quota")
    assert limiter.hit("u", "1/month").allowed
    d = limiter.hit("u", "1/month")
    assert not d.allowed and d.retry_after == 3600
    clock.advance(3600)
    assert limiter.hit("u", "1/month").allowed


def test_cost_above_the_quota_is_never_admitted() -> None:
    limiter = Limiter("memory://", clock=FakeClock(), algorithm="quota")
    d = limiter.hit("u", "10/day", 11)
    assert not d.allowed and d.reason == "cost_exceeds_limit" and d.retry_after == float("inf")
    assert limiter.status("u", "10/day")[0].remaining == 10


@pytest.mark.parametrize(
    ("rates", "params", "match"),
    [
        ("3/day", {"tz": "Mars/Olympus_Mons"}, "time zone"),
        ("3/day", {"tz": ""}, "time zone"),
        ("3/day", {"tz": "../../etc/passwd"}, "time zone"),
        ("3/day", {"reset": "24:00"}, "reset"),
        ("3/day", {"reset": "6:3"}, "reset"),
        ("3/day", {"reset": "noon"}, "reset"),
        ("3/day", {"reset": "06:30:00"}, "reset"),
        ("3/hour", {}, "per day or per month"),
        ("3/2 days", {}, "per day or per month"),
        ("3/week", {}, "per day or per month"),
        ("3/day", {"zone": "UTC"}, "no parameter"),
    ],
)
def test_bad_quota_configuration(rates: str, params: dict[str, str], match: str) -> None:
    limiter = Limiter("memory://", clock=FakeClock(), algorithm="quota")
    with pytest.raises(ConfigError, match=match):
        limiter.hit("u", rates, **params)


def test_bad_calendar_unit() -> None:
    with pytest.raises(ConfigError, match="'day' or 'month'"):
        Calendar("week")
    with pytest.raises(ConfigError):
        make_window("quota", Rate(3, 86_400 * S), tz="Nowhere/Land")


ZONES = ["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata"]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    reset=st.sampled_from(["00:00", "02:30", "06:30", "23:59"]),
    monthly=st.booleans(),
    now=st.integers(utc(2025, 1, 1), utc(2028, 1, 1)),
)
def test_calendar_periods_tile_time(zone: str, reset: str, monthly: bool, now: int) -> None:
    """Every instant is in exactly one period, periods are contiguous, and a period starts at
    the reset time in its zone (or at the end of a DST gap that swallowed it)."""
    cal = Calendar("month" if monthly else "day", zone, reset)
    start, end = cal.bounds(now)
    assert start <= now < end
    assert Calendar("month" if monthly else "day", zone, reset).bounds(end)[0] == end
    assert Calendar("month" if monthly else "day", zone, reset).bounds(start - 1)[1] == start
    if not monthly:
        assert 22 * H <= end - start <= 26 * H
    local = datetime.fromtimestamp(start / S, ZoneInfo(zone))
    want = tuple(map(int, reset.split(":")))
    if (local.hour, local.minute) != want:
        # only in a gap: 1 us earlier the local time is before the reset time on that day
        before = datetime.fromtimestamp((start - 1) / S, ZoneInfo(zone))
        assert (before.hour, before.minute) < want < (local.hour, local.minute) or local.day != before.day


def test_one_reset_time_spelled_two_ways_is_one_quota() -> None:
    limiter = Limiter("memory://", clock=FakeClock(), algorithm="quota")
    assert limiter.hit("u", "2/day", reset="6:30").allowed
    assert limiter.hit("u", "2/day", reset="06:30").remaining == 0
    assert make_window("quota", Rate(2, 86_400 * S), reset="6:30").id == "quota:day:UTC:06:30"

"""Rate notation (docs/design.md#rates): every form parses to the right Rate, every error is a
:class:`RateParseError` whose message quotes the bad part."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratewarden import Rate, RateParseError, parse_rate, parse_rates
from ratewarden.core.rates import format_duration, parse_duration

S = 1_000_000


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("10/second", 10, S),
        ("10/s", 10, S),
        ("10/sec", 10, S),
        ("10 / SECOND", 10, S),
        ("5 per 10 minutes", 5, 600 * S),
        ("5 per minute", 5, 60 * S),
        ("100/1m", 100, 60 * S),
        ("100/1min", 100, 60 * S),
        ("1000 per day", 1000, 86_400 * S),
        ("1000/d", 1000, 86_400 * S),
        ("20/hour", 20, 3600 * S),
        ("20/h", 20, 3600 * S),
        ("20 per 2 hours", 20, 7200 * S),
        ("10/2.5s", 10, 2_500_000),
        ("3/500ms", 3, 500_000),
        ("7/week", 7, 7 * 86_400 * S),
        ("1/month", 1, 30 * 86_400 * S),
        ("1/year", 1, 365 * 86_400 * S),
        ("  10/second  ", 10, S),
    ],
)
def test_one_rate(text: str, limit: int, period: int) -> None:
    assert parse_rate(text) == Rate(limit, period)
    assert parse_rates(text) == (Rate(limit, period),)


@pytest.mark.parametrize("sep", [";", ",", "; ", " , "])
def test_several_rates(sep: str) -> None:
    text = sep.join(["5 per 10 minutes", "20/hour", "100/1m"])
    assert parse_rates(text) == (Rate(5, 600 * S), Rate(20, 3600 * S), Rate(100, 60 * S))
    with pytest.raises(RateParseError, match="expected a single rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("10/fortnight", "'fortnight'"),  # unknown unit
        ("10/second;5/parsec", "'parsec'"),  # unknown unit in the second part
        ("0/second", "'0/second'"),  # zero limit
        ("-5/second", "'-5/second'"),  # negative limit
        ("10/0 seconds", "'10/0 seconds'"),  # zero period
        ("10/-1s", "'10/-1s'"),  # negative period
        ("10/0.0000001s", "'10/0.0000001s'"),  # shorter than a microsecond
        ("ten per second", "'ten per second'"),  # garbage
        ("1.5/second", "'1.5/second'"),  # not an integer limit
        ("10/", "'10/'"),
        ("/second", "'/second'"),
        ("10 second", "'10 second'"),
        ("10/second;;5/minute", "'10/second;;5/minute'"),  # empty part
        ("10/second;", "'10/second;'"),
        ("", "''"),  # empty
        ("   ", "'   '"),
        ("10/second;10/second", "'10/second'"),  # duplicate
        ("10/second;10/s", "'10/s'"),  # duplicate, spelled differently
        ("10/1000ms,10/s", "'10/1000ms'"),
    ],
)
def test_bad_rates_quote_the_bad_part(text: str, quoted: str) -> None:
    with pytest.raises(RateParseError) as info:
        parse_rates(text)
    assert quoted in str(info.value)
    assert isinstance(info.value, ValueError)  # also catchable as a ValueError


@pytest.mark.parametrize("bad", [None, 10, ["10/second"], b"10/second"])
def test_non_strings_are_refused(bad: object) -> None:
    with pytest.raises(RateParseError, match="must be a string"):
        parse_rates(bad)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 10**9),
    count=st.integers(1, 1000),
    unit=st.sampled_from([("s", S), ("second", S), ("minutes", 60 * S), ("h", 3600 * S), ("days", 86_400 * S)]),
    per=st.booleans(),
)
def test_round_trip(limit: int, count: int, unit: tuple[str, int], per: bool) -> None:
    """Any valid rate parses to (limit, count * unit), and its str() parses back to the same Rate."""
    text = f"{limit} per {count} {unit[0]}" if per else f"{limit}/{count}{unit[0]}"
    rate = parse_rate(text)
    assert rate == Rate(limit, count * unit[1])
    assert parse_rate(str(rate)) == rate


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_string_parses_or_raises_rate_parse_error(text: str) -> None:
    try:
        rates = parse_rates(text)
    except RateParseError:
        return
    assert rates and all(r.limit >= 1 and r.period >= 1 for r in rates)
    assert len(set(rates)) == len(rates)


def test_durations() -> None:
    assert parse_duration("1 hour") == 3600 * S
    assert parse_duration("90s") == 90 * S
    assert parse_duration(1.5) == 1_500_000
    assert format_duration(600 * S) == "10 minutes"
    assert format_duration(60 * S) == "minute"
    for bad in ("0s", "-1 hour", "soon", 0, -1, True):
        with pytest.raises(RateParseError):
            parse_duration(bad)  # type: ignore[arg-type]

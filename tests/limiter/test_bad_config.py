"""The Python API refuses bad configuration with a ConfigError (or RateParseError) that names
the value, never an OverflowError, ValueError, TypeError or NotImplementedError from inside."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ratewarden import AsyncLimiter, ConfigError, FakeClock, Limiter, Rate, RateParseError
from ratewarden.core.rates import LIMIT_MAX, PERIOD_MAX, parse_duration, parse_rates

HUGE = "9" * 400


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -1, 1e308, "1", None, True])
def test_deny_retry_after_must_be_a_sane_number_of_seconds(value: Any) -> None:
    with pytest.raises(ConfigError, match="deny_retry_after"):
        Limiter("memory://", deny_retry_after=value)


@pytest.mark.parametrize(
    "rates",
    [
        {"5/minute": 1},
        {"5/minute"},
        ["5/minute", 5],
        [["5/minute"]],
        5,
        None,
        f"1/{HUGE} seconds",
        f"{HUGE}/second",
        "2/100000000000 years",
        f"{LIMIT_MAX + 1}/second",
    ],
    ids=lambda r: repr(r)[:30],
)
async def test_a_bad_rate_spec_is_a_clear_error(rates: Any) -> None:
    with Limiter("memory://") as limiter, pytest.raises(ConfigError if not isinstance(rates, str) else RateParseError):
        limiter.hit("k", rates)
    alimiter = AsyncLimiter("memory://")
    with pytest.raises(ConfigError if not isinstance(rates, str) else RateParseError):
        await alimiter.hit("k", rates)
    await alimiter.aclose()


def test_the_largest_promised_rates_work() -> None:
    with Limiter("memory://", algorithm="fixed-window") as limiter:
        assert limiter.hit("k", f"{LIMIT_MAX}/second", cost=LIMIT_MAX).allowed
        assert limiter.hit("k", "1/3660 days").allowed
    assert parse_rates("5 per 10 years")[0].period <= PERIOD_MAX


@pytest.mark.parametrize("limit", [0, -1, LIMIT_MAX + 1, 1.5, True, "5"])
def test_a_rate_object_keeps_its_bounds(limit: Any) -> None:
    with pytest.raises(RateParseError):
        Rate(limit, 1_000_000)
    with pytest.raises(RateParseError):
        Rate(5, limit if not isinstance(limit, int) or isinstance(limit, bool) else PERIOD_MAX + 1)


@pytest.mark.parametrize("factor", [math.nan, math.inf, 1e308])
def test_scaling_a_rate_past_the_largest_limit_is_refused(factor: float) -> None:
    with pytest.raises(RateParseError, match="largest limit"):
        Rate(10, 1_000_000).scaled(factor)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e308, -1, 0, "nan seconds", f"{HUGE} seconds", None, [1]])
def test_a_bad_duration_is_a_rate_parse_error(value: Any) -> None:
    with pytest.raises(RateParseError):
        parse_duration(value)


@pytest.mark.parametrize("algorithm", ["concurrency"])
async def test_charge_with_an_algorithm_that_cannot_charge(algorithm: str) -> None:
    with Limiter("memory://") as limiter:
        with pytest.raises(ConfigError, match=f"{algorithm} algorithm cannot charge"):
            limiter.charge("k", "5/minute", 3, algorithm=algorithm)
        assert limiter.charge("k", "5/minute", 3, algorithm="fixed-window").allowed
    alimiter = AsyncLimiter("memory://")
    with pytest.raises(ConfigError, match="cannot charge"):
        await alimiter.charge("k", "5/minute", 3, algorithm=algorithm)
    await alimiter.aclose()


@pytest.mark.parametrize("algorithm", [["gcra"], {}, 5, "leaky"])
def test_a_bad_algorithm_is_a_config_error(algorithm: Any) -> None:
    with Limiter("memory://") as limiter, pytest.raises(ConfigError, match="unknown algorithm"):
        limiter.hit("k", "5/minute", algorithm=algorithm)
    with pytest.raises(ConfigError, match="unknown algorithm"):
        Limiter("memory://", algorithm=algorithm)


@pytest.mark.parametrize(("params"), [{"burst": 10**400}, {"burst": LIMIT_MAX + 1}, {"burst": math.nan}])
def test_a_bad_burst_is_a_config_error(params: dict[str, Any]) -> None:
    with Limiter("memory://") as limiter, pytest.raises(ConfigError, match="burst"):
        limiter.hit("k", "5/minute", **params)


@pytest.mark.parametrize(("params"), [{"tz": 5}, {"tz": None}, {"reset": None}, {"reset": 5}, {"tz": "Mars/Base"}])
def test_bad_quota_parameters_are_config_errors(params: dict[str, Any]) -> None:
    with Limiter("memory://") as limiter, pytest.raises(ConfigError):
        limiter.hit("k", "5/day", algorithm="quota", **params)


@pytest.mark.parametrize("start", [1e12, 253_402_300_800, -1e12])
def test_a_quota_with_a_clock_outside_the_calendar_is_a_config_error(start: float) -> None:
    with (
        Limiter("memory://", clock=FakeClock(start)) as limiter,
        pytest.raises(ConfigError, match="outside the calendar"),
    ):
        limiter.hit("k", "5/month", algorithm="quota")

"""Pins the public API (docs/design.md#the-python-api), so it changes only on purpose."""

from __future__ import annotations

import inspect

import pytest

import ratewarden
from ratewarden import ALGORITHMS, AsyncLimiter, Decision, FakeClock, Limiter

EXPORTS = [
    "ALGORITHMS",
    "AsyncLimiter",
    "ConfigError",
    "Decision",
    "FakeClock",
    "Limiter",
    "Rate",
    "RateParseError",
    "RatewardenError",
    "StoreError",
    "parse_rate",
    "parse_rates",
]

SEVEN = {"fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket", "concurrency", "quota"}


def test_all_is_pinned() -> None:
    assert sorted(ratewarden.__all__) == sorted(EXPORTS)
    for name in ratewarden.__all__:
        assert hasattr(ratewarden, name), name


def test_the_seven_algorithm_names() -> None:
    assert set(ALGORITHMS) == SEVEN
    for name, cls in ALGORITHMS.items():
        assert cls.name == name


@pytest.mark.parametrize("cls", [Limiter, AsyncLimiter])
def test_constructor_keywords(cls: type) -> None:
    params = inspect.signature(cls).parameters
    first = next(iter(params.values()))
    assert first.name == "storage" and first.default == "memory://"
    assert first.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    defaults = {"algorithm": "gcra", "on_store_error": "allow", "key_prefix": "rw:", "clock": None}
    for name, default in defaults.items():
        assert params[name].kind == inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    assert params["max_keys"].kind == inspect.Parameter.KEYWORD_ONLY


def test_constructor_accepts_the_documented_forms() -> None:
    clock = FakeClock()
    for mode in ("allow", "deny", "local"):
        Limiter("memory://", algorithm="sliding-log", on_store_error=mode, key_prefix="x:", clock=clock)
    Limiter("memory://", max_keys=100_000)
    Limiter("memory://?max_keys=100000")
    Limiter(storage="memory://")
    with pytest.raises(ratewarden.ConfigError):
        Limiter("memory://", algorithm="leaky")
    with pytest.raises(ratewarden.ConfigError):
        Limiter("memory://", on_store_error="explode")


@pytest.mark.parametrize("name", ["hit", "peek", "status", "reset"])
def test_methods(name: str) -> None:
    sync = getattr(Limiter, name)
    async_ = getattr(AsyncLimiter, name)
    assert callable(sync) and not inspect.iscoroutinefunction(sync)
    assert inspect.iscoroutinefunction(async_)
    sync_params = list(inspect.signature(sync).parameters)
    assert sync_params[:2] == ["self", "key"]
    assert list(inspect.signature(async_).parameters)[:2] == ["self", "key"]
    if name != "reset":
        assert "algorithm" in inspect.signature(sync).parameters
        assert sync_params[2] == "rates"
    if name in ("hit", "peek"):
        assert inspect.signature(sync).parameters["cost"].default == 1


def test_decision_fields() -> None:
    limiter = Limiter("memory://", clock=FakeClock())
    d = limiter.hit("login:alice@example.com", "5/20 minutes", cost=1)
    assert isinstance(d, Decision)
    assert (d.allowed, d.limit, d.remaining, d.retry_after) == (True, 5, 4, 0)
    assert d.reset_after == 240.0  # gcra: one unit of 20 minutes / 5
    assert str(d.rate) == "5/20 minutes"
    assert bool(d) is True
    # the window state is (key, window): peek sees the hour window that hit charged
    limiter.hit("k", "5/10 minutes;20/hour", algorithm="sliding-log")
    assert limiter.peek("k", "20/hour", algorithm="sliding-log").remaining == 18
    assert [x.remaining for x in limiter.status("k", "5/10 minutes;20/hour", algorithm="sliding-log")] == [4, 19]
    limiter.reset("k")
    assert limiter.peek("k", "20/hour", algorithm="sliding-log").remaining == 19


async def test_async_limiter_same_answers() -> None:
    clock = FakeClock()
    alim = AsyncLimiter("memory://", clock=clock)
    d = await alim.hit("k", "2/minute")
    assert (d.allowed, d.remaining) == (True, 1)
    assert (await alim.peek("k", "2/minute")).remaining == 0
    assert [x.remaining for x in await alim.status("k", "2/minute")] == [1]
    await alim.reset("k")
    assert (await alim.peek("k", "2/minute")).remaining == 1

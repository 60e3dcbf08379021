"""The fake clock keeps integer microseconds: a retry at exactly ``retry_after`` passes and one
microsecond earlier does not, at any epoch, on every store that takes an injected clock."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ratewarden import FakeClock, Limiter
from ratewarden.clock import micros

EPOCHS = [0.0, 1_796_052_622.552234, 1_767_225_600.123457, 4_102_444_799.999999, 2**33 + 0.7]


@pytest.mark.parametrize("start", EPOCHS)
@pytest.mark.parametrize("algorithm", ["gcra", "fixed-window", "sliding-log", "token-bucket", "sliding-window"])
def test_retry_after_is_exact_to_the_microsecond(start: float, algorithm: str, tmp_path: Path) -> None:
    rnd = random.Random(f"{start}-{algorithm}")
    for url in ("memory://", f"sqlite:///{tmp_path / 'rl.db'}"):
        clock = FakeClock(start)
        with Limiter(url, clock=clock, algorithm=algorithm) as limiter:
            early = 0
            for i in range(120):
                d = limiter.hit("k", "3/7s")
                if d.allowed:
                    clock.advance(rnd.choice((0, 0, 0.000001, 0.37, 1.234567)))
                    continue
                clock.advance(d.retry_after - 0.000001)
                early += limiter.hit("k", "3/7s").allowed
                clock.advance(0.000001)
                assert limiter.hit("k", "3/7s").allowed, (url, i)
            assert early == 0, url


def test_the_clock_holds_whole_microseconds() -> None:
    clock = FakeClock(1_767_225_600.1234567)
    assert clock.micros() == 1_767_225_600_123_457
    for _ in range(1000):
        clock.advance(0.1)
    assert clock.micros() == 1_767_225_700_123_457
    clock.advance_micros(-457)
    assert clock() == 1_767_225_700.123
    clock.set(4_102_444_799.999999)
    assert clock.micros() == 4_102_444_799_999_999
    assert micros(clock)() == 4_102_444_799_999_999
    assert micros(lambda: 1.5)() == 1_500_000

"""Every local store decides the extreme rates exactly as the pure core: 10^12 per 10 years,
1 per 10 years and 10^9 per second (products up to ~3e26: Python integers, stored exactly,
SQLite states beyond 64 bits as JSON), costs up to the whole limit, steps up to years, and
every denied request retried exactly at its retry_after and 1 us before."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ratewarden import FakeClock
from ratewarden.core.algorithms import make_window
from ratewarden.core.evaluate import run
from ratewarden.core.rates import US, Rate
from ratewarden.storage.memory import MemoryStore
from ratewarden.storage.sqlite import SQLiteStore

START = 1_767_225_600 * US
YEAR = 365 * 86_400 * US
EXTREMES = [Rate(10**12, 10 * YEAR), Rate(1, 10 * YEAR), Rate(10**9, US)]


@pytest.mark.parametrize("rate", EXTREMES, ids=["1e12-per-10y", "1-per-10y", "1e9-per-second"])
@pytest.mark.parametrize("algorithm", ["fixed-window", "sliding-window", "sliding-log", "gcra", "token-bucket"])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_extreme_rates_decide_as_the_core(tmp_path: Path, kind: str, algorithm: str, rate: Rate) -> None:
    rnd = random.Random(f"{kind}{algorithm}{rate}")
    w = make_window(algorithm, rate)
    clock = FakeClock(START / US)
    store: Any = MemoryStore(clock=clock) if kind == "memory" else SQLiteStore(tmp_path / "x.db", clock=clock)
    lim = rate.limit
    states: list[Any] = [None]
    now = START
    dt = 0
    try:
        for i in range(60):
            if now + dt - START > 11 * YEAR:  # the test clock holds float seconds: stay before 2038
                break
            now += dt
            clock.set(now / US)
            cost = rnd.choice([0, 1, lim, max(1, lim // 3), max(1, lim - 1), rnd.randint(1, lim)])
            op = "charge" if i % 11 == 5 else "hit"
            want, new = run(op, [w], states, now, [cost])
            got = store.apply(op, [("k", w, cost)])
            assert [o[:4] for o in got] == [o[:4] for o in want], (i, op, cost, now - START)
            if new is not None:
                states = [new[0] if want[0][2] > 0 else None]
            retry = want[0][3]
            dt = retry - rnd.choice([0, 1]) if retry > 0 else rnd.choice([0, 1, rate.period // 7, YEAR])
    finally:
        store.close()

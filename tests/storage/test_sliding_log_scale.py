"""Long sliding logs in every local store decide exactly as the pure core on a plain log.

Hundreds of entries, costs of several units, entries leaving the window during long denial
streaks (the binary searches), checks, charges, and the clock stepping back; the SQLite log
keeps one row per entry and reads a few of them per decision, and its sweep may reclaim entry
rows that left the window at any time.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ratewarden import FakeClock
from ratewarden.core.algorithms import make_window
from ratewarden.core.algorithms.sliding_log import Log
from ratewarden.core.evaluate import run
from ratewarden.core.rates import US, Rate
from ratewarden.storage.memory import MemoryStore
from ratewarden.storage.sqlite import SQLiteStore

START = 1_767_225_600 * US


def scenario(seed: int, n: int = 1500) -> list[tuple[int, str, int]]:
    rnd = random.Random(seed)
    steps = []
    for _ in range(n):
        if rnd.random() < 0.97:
            dt = rnd.choice([0, 1, 7, 1_000, 20_000, 333_333])
        else:
            dt = rnd.choice([-1, -5_000, -10 * US, 4 * US])
        op = rnd.choice(["hit"] * 8 + ["peek", "charge"])
        steps.append((dt, op, rnd.choice([0, 1, 1, 1, 2, 5, 40])))
    return steps


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_long_log_decides_as_the_core(tmp_path: Path, kind: str, seed: int) -> None:
    w = make_window("sliding-log", Rate(300, 10 * US))
    w2 = make_window("fixed-window", Rate(1000, 60 * US))  # a second window: all or nothing
    clock = FakeClock(START / US)
    store: Any = MemoryStore(clock=clock) if kind == "memory" else SQLiteStore(tmp_path / "l.db", clock=clock)
    states: list[Any] = [None, None]
    now = START
    try:
        for i, (dt, op, cost) in enumerate(scenario(seed)):
            now += dt
            clock.set(now / US)
            # the core on immutable copies of the log: no version is ever shared
            old = [Log.of(s.entries()) if isinstance(s, Log) else s for s in states]
            both = not (op == "hit" and i % 3 == 0)
            windows = [w, w2] if both else [w]
            want, new = run(op, windows, old[: len(windows)], now, [cost] * len(windows))  # type: ignore[arg-type]
            if both:
                got = store.apply(op, [("k", x, cost) for x in windows])
            else:
                got = [store.hit1("k", w, cost)]
            assert [o[:4] for o in got] == [o[:4] for o in want], (i, op, cost, now - START)
            if new is not None:
                for j, (s, o) in enumerate(zip(new, want, strict=True)):
                    states[j] = s if o[2] > 0 else None
            if kind == "sqlite" and i % 97 == 0:
                store.sweep()  # entry rows that left the window go at any time
        assert len(Log.of(states[0].entries()) if states[0] is not None else ()) <= 300
    finally:
        store.close()


def test_sqlite_reads_a_log_written_in_the_earlier_form(tmp_path: Path) -> None:
    """A row holding the whole log as JSON pairs (before one row per entry) is read, then
    rewritten as a header and entry rows."""
    w = make_window("sliding-log", Rate(3, 60 * US))
    clock = FakeClock(START / US)
    store = SQLiteStore(tmp_path / "old.db", clock=clock)
    try:
        store.hit1("x", w, 1)  # creates the file and tables
        db = sqlite3.connect(tmp_path / "old.db")
        db.execute(
            "INSERT OR REPLACE INTO ratewarden_state VALUES (?, ?, ?, ?)",
            ("k", w.id, f"[[{START - 30 * US},1],[{START - 10 * US},1]]", START + 60 * US),
        )
        db.commit()
        db.close()
        want = w.decide(((START - 30 * US, 1), (START - 10 * US, 1)), START, 1)
        assert store.hit1("k", w, 1)[:4] == want[:4]
        assert not store.hit1("k", w, 1)[0]
        clock.set((START + 30 * US) / US)  # the first entry has left the window
        assert store.hit1("k", w, 1)[0]
    finally:
        store.close()

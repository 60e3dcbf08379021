"""The PostgreSQL store on the real server (127.0.0.1:5432, database "test", a schema of this
run's own): exactness across processes on the database's clock, state kept across limiters,
all-or-nothing over windows and keys, schema management, the bounded table, failures.

The conformance and concurrency suites run on it too (``backends.py``); the differential tests
against the core are in ``test_postgres_diff.py``.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ratewarden import AsyncLimiter, FakeClock, Limiter
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate

from .backends import PG_SCHEMA, PG_URL, pg_conn

psycopg = pytest.importorskip("psycopg")
from ratewarden.storage.postgres import open_postgres  # noqa: E402

pytestmark = pytest.mark.postgres
conn = pg_conn

URL = f"{PG_URL}?schema={PG_SCHEMA}"
START = 1_767_225_600.0 + 17.5  # 2026-01-01T00:00:17.5Z
STRICT = {
    "fixed-window": "100/hour",
    "sliding-log": "100/hour",
    "gcra": "100/hour",
    "token-bucket": "100/hour",
    "concurrency": "100/hour",
    "quota": "100/day",
}


@pytest.fixture
def prefix(conn: Any) -> Iterator[str]:
    """A key prefix of this test's own; its rows are deleted afterwards."""
    p = f"rwtest:{uuid.uuid4().hex[:12]}:"
    yield p
    if conn.execute("SELECT to_regclass(%s)", (f'"{PG_SCHEMA}".ratewarden_state',)).fetchone()[0]:
        conn.execute(f'DELETE FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (p,))


def _rows(conn: Any, prefix: str) -> int:
    n: int = conn.execute(
        f'SELECT count(*) FROM "{PG_SCHEMA}".ratewarden_state WHERE starts_with(key, %s)', (prefix,)
    ).fetchone()[0]
    return n


def _clear_of_boundaries(conn: Any, margin: float = 30.0) -> None:
    """Wait until the database clock is not within ``margin`` seconds of an hour boundary (an
    aligned fixed window or a day quota would restart in the middle of a race on the real clock)."""
    while True:
        now: dt.datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        into = now.minute * 60 + now.second
        if margin <= into <= 3600 - margin:
            return
        time.sleep(1.0)


# -- exact across processes, on the database's clock ----------------------------------------------


def _process_worker(url: str, prefix: str, share: int, barrier: Any, results: Any) -> None:
    lim = Limiter(url, key_prefix=prefix)  # no injected clock: clock_timestamp() decides
    try:
        for algorithm, rate in sorted(STRICT.items()):
            barrier.wait(timeout=60)
            n = sum(lim.hit(f"race:{algorithm}", rate, algorithm=algorithm).allowed for _ in range(share))
            results.put((algorithm, n, lim.store_errors))
    finally:
        lim.close()


def test_four_processes_admit_exactly_100_of_1000_for_every_strict_algorithm(conn: Any, prefix: str) -> None:
    Limiter(URL, key_prefix=prefix).close()
    _clear_of_boundaries(conn)
    ctx = mp.get_context("spawn")
    procs, attempts = 4, 1000
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_process_worker, args=(URL, prefix, attempts // procs, barrier, results))
        for _ in range(procs)
    ]
    for p in workers:
        p.start()
    got: dict[str, list[int]] = {}
    try:
        for _ in range(procs * len(STRICT)):
            algorithm, n, errors = results.get(timeout=180)
            assert errors == 0
            got.setdefault(algorithm, []).append(n)
    finally:
        for p in workers:
            p.join(timeout=30)
            if p.is_alive():  # pragma: no cover - only when the test already failed
                p.kill()
    assert all(p.exitcode == 0 for p in workers)
    assert {a: sum(ns) for a, ns in got.items()} == dict.fromkeys(STRICT, 100)
    assert sum(1 for ns in got.values() for n in ns if n) > len(STRICT)  # the processes shared the work
    check = Limiter(URL, key_prefix=prefix)
    try:
        for algorithm, rate in STRICT.items():
            assert not check.hit(f"race:{algorithm}", rate, algorithm=algorithm).allowed
    finally:
        check.close()


# -- state kept ---------------------------------------------------------------------------------


def _hit_in_child(url: str, prefix: str, times: int, results: Any) -> None:
    lim = Limiter(url, key_prefix=prefix)
    results.put([lim.hit("session:abc", "2/hour", algorithm="fixed-window").allowed for _ in range(times)])
    lim.close()


def _run_child(url: str, prefix: str, times: int) -> list[bool]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_hit_in_child, args=(url, prefix, times, results))
    p.start()
    try:
        got: list[bool] = results.get(timeout=60)
    finally:
        p.join(timeout=30)
    assert p.exitcode == 0
    return got


def test_state_is_kept_across_new_limiters_and_processes(conn: Any, prefix: str) -> None:
    _clear_of_boundaries(conn, margin=5.0)
    assert _run_child(URL, prefix, 3) == [True, True, False]
    assert _run_child(URL, prefix, 1) == [False]
    lim = Limiter(URL, key_prefix=prefix)
    try:
        d = lim.hit("session:abc", "2/hour", algorithm="fixed-window")
        assert not d.allowed and 0 < d.retry_after <= 3600
        assert lim.hit("session:other", "2/hour", algorithm="fixed-window").allowed
    finally:
        lim.close()


# -- all or nothing -----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(STRICT.keys() - {"quota"}))
def test_several_windows_are_all_or_nothing(prefix: str, algorithm: str) -> None:
    clock = FakeClock(START)
    lim = Limiter(URL, key_prefix=prefix, clock=clock, _test_now=clock, algorithm=algorithm)
    try:
        assert [lim.hit("k", "2/minute;3/hour").allowed for _ in range(3)] == [True, True, False]
        minute, hour = lim.status("k", "2/minute;3/hour")
        assert (minute.remaining, hour.remaining) == (0, 1)  # the denial charged neither window
        clock.advance(61)
        assert lim.hit("k", "2/minute;3/hour").allowed
        assert not lim.hit("k", "2/minute;3/hour").allowed  # now the hour refuses, the minute is not charged
        assert lim.status("k", "2/minute;3/hour")[0].remaining == 1
    finally:
        lim.close()


def test_one_call_over_several_keys_is_all_or_nothing(prefix: str) -> None:
    clock = FakeClock(START)
    store = open_postgres(URL, key_prefix=prefix, _test_now=clock)
    w = make_window("fixed-window", Rate(2, 60 * US))
    try:
        assert store.apply("hit", [("b", w, 2)])[0][0]  # b is full
        outs = store.apply("hit", [("a", w, 1), ("b", w, 1), ("c", w, 1)])
        assert [o[0] for o in outs] == [True, False, True]
        peek = store.apply("peek", [("a", w, 0), ("c", w, 0)])
        assert [o[1] for o in peek] == [2, 2]  # neither a nor c was charged
        assert [o[0] for o in store.apply("hit", [("c", w, 1), ("a", w, 1)])] == [True, True]
    finally:
        store.close()


async def test_async_face_and_leases(prefix: str) -> None:
    clock = FakeClock(START)
    lim = AsyncLimiter(URL, key_prefix=prefix, clock=clock, _test_now=clock)
    try:
        async with lim.lease("pool", "2/minute") as d1, lim.lease("pool", "2/minute") as d2:
            assert d1.allowed and d2.allowed
            assert not (await lim.acquire("pool", "2/minute")).allowed
        (status,) = await lim.status("pool", "2/minute", algorithm="concurrency")
        assert status.remaining == 2
        assert [(await lim.hit("q", "2/day", algorithm="quota")).allowed for _ in range(3)] == [True, True, False]
        await lim.reset("q")
        assert (await lim.hit("q", "2/day", algorithm="quota")).allowed
    finally:
        await lim.aclose()


# -- the table stays bounded --------------------------------------------------------------------


def test_a_flood_of_distinct_keys_keeps_the_table_bounded(conn: Any, prefix: str) -> None:
    """3,000 distinct keys, the (fake) clock 20 s further at each: rows expire an hour after
    their window in test mode, so about 180 are live at any time; every call may sweep up to
    20 expired rows, so the table never holds many more, and a live key is never swept."""
    clock = FakeClock(START)
    lim = Limiter(URL, key_prefix=prefix, clock=clock, _test_now=clock, sweep_batch=20, sweep_interval=1e-9)
    try:
        assert [lim.hit("keep", "3/day", algorithm="fixed-window").allowed for _ in range(4)] == [True] * 3 + [False]
        peak = 0
        for i in range(3000):
            clock.advance(20)
            assert lim.hit(f"flood:{i}", "1/second", algorithm="fixed-window").allowed
            if i % 100 == 99:
                peak = max(peak, _rows(conn, prefix))
        assert 150 <= peak <= 182 + 20, peak
        assert not lim.hit("keep", "3/day", algorithm="fixed-window").allowed  # 16.7 hours later, same day
    finally:
        lim.close()


def test_a_backlog_of_expired_rows_is_caught_up_however_long_the_interval(conn: Any, prefix: str) -> None:
    """A full sweep batch makes the next call sweep again: 500 expired rows are gone within
    about 25 calls although the interval (an hour) never elapses."""
    clock = FakeClock(START)
    lim = Limiter(URL, key_prefix=prefix, clock=clock, _test_now=clock, sweep_interval=0)
    for i in range(500):
        assert lim.hit(f"old:{i}", "1/second", algorithm="fixed-window").allowed
    lim.close()
    assert _rows(conn, prefix) == 500
    clock.advance(2 * 3600)
    lim = Limiter(URL, key_prefix=prefix, clock=clock, _test_now=clock, sweep_batch=20, sweep_interval=3600)
    try:
        for i in range(30):
            lim.hit(f"new:{i}", "1/hour", algorithm="fixed-window")
        assert _rows(conn, prefix) == 30
        clock.advance(3 * 3600)
        assert lim.store.sweep() >= 30  # the admin sweep: everything expired, at once
        assert _rows(conn, prefix) == 0
    finally:
        lim.close()


def _log_rows(conn: Any, prefix: str) -> int:
    n: int = conn.execute(
        f'SELECT count(*) FROM "{PG_SCHEMA}".ratewarden_log WHERE starts_with(key, %s)', (prefix,)
    ).fetchone()[0]
    return n


def test_a_sliding_log_is_rows_read_by_index_and_dropped_as_they_expire(conn: Any, prefix: str) -> None:
    """One row per admission time (a same-microsecond admission adds to the newest row); an
    admission drops the entries that left the window; the sweep takes a key's entries with it."""
    clock = FakeClock(START)
    lim = Limiter(URL, key_prefix=prefix, clock=clock, _test_now=clock, algorithm="sliding-log", sweep_interval=0)
    try:
        for _ in range(50):
            assert lim.hit("k", "100/minute").allowed
            clock.advance(1)
        assert lim.hit("k", "100/minute", cost=2).allowed  # same instant as ...
        clock.advance(-1)
        assert lim.hit("k", "100/minute").allowed  # ... a request stamped before it: merged
        assert _log_rows(conn, prefix) == 51
        assert lim.status("k", "100/minute")[0].remaining == 100 - 53
        clock.advance(61)
        assert lim.hit("k", "100/minute").allowed
        assert _log_rows(conn, prefix) == 1  # the 51 entries that left the window are gone
        clock.advance(2 * 3600)
        assert lim.store.sweep() == 1
        assert _log_rows(conn, prefix) == 0 and _rows(conn, prefix) == 0
    finally:
        lim.close()

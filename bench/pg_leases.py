"""Concurrency on the PostgreSQL store: per-call time against the number of live leases.

    .venv/bin/python bench/pg_leases.py [--url postgresql://root@127.0.0.1:5432/test] [--sizes 200,2000,20000] [--reps 200]

For each size n, one key holds n live leases of one unit (written straight into the tables,
in the form of the store's schema version: the text state of version 1, the rows of version 2;
so the script measures the code it imports, e.g. ``PYTHONPATH=/path/to/old/src``), the clock
is the store's test hook (the leases never expire during the run), and ``reps`` calls of each
kind are timed one by one (the median is printed, in ms):

* acquire: a named lease taken (limit 10^9: admitted), then released (timed as "release");
* denied: an acquire on a window of limit n holding n leases (refused; retry_after computed);

and, for scale, a fixed-window hit (one state row, no leases).

Everything is created in a schema of the run's own, dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg

from ratewarden import FakeClock
from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import US, Rate
from ratewarden.storage.postgres import SCHEMA_VERSION, db_key, open_postgres

START = 1_767_225_600 * US
TTL = 3_600 * US


def fill(conn: psycopg.Connection, names: str, key: str, wid: str, n: int) -> None:
    """n live leases of one unit, expiring one microsecond apart after START + TTL."""
    if SCHEMA_VERSION == 1:
        state = " ".join(f"{START + TTL + i} f{i} 1" for i in range(1, n + 1))
    else:
        conn.execute(
            f"INSERT INTO {names}lease (key, wid, ex, seq, id, cost) "
            "SELECT %s, %s, %s + i, i, 'f' || i, 1 FROM generate_series(1, %s) i",
            (key, wid, START + TTL, n),
        )
        state = f"{n} 0 0 {n}"
    conn.execute(
        f"INSERT INTO {names}state (key, wid, state, expires) VALUES (%s, %s, %s, 4000000000)", (key, wid, state)
    )


def timed(f: object, reps: int) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql://root@127.0.0.1:5432/test")
    ap.add_argument("--sizes", default="200,2000,20000")
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    schema = f"rwbench_{uuid.uuid4().hex[:8]}"
    clock = FakeClock(START / US)
    store = open_postgres(a.url, key_prefix="b:", _test_now=clock, schema=schema, statement_timeout=60)
    conn = psycopg.connect(a.url, autocommit=True)
    names = store.names.s
    print(f"schema version {SCHEMA_VERSION}; median ms per call over {a.reps} calls")
    print(f"{'live leases':>12} {'acquire':>9} {'release':>9} {'denied':>9}")
    try:
        store.hit1("warm", make_window("fixed-window", Rate(1, US)), 1)  # installs the schema
        fw = make_window("fixed-window", Rate(10**9, TTL))
        print(f"{'(for scale: a fixed-window hit)':>32} {timed(lambda: store.hit1('fw', fw, 1), a.reps):.3f}")
        step = [0]  # the clock: one microsecond on per timed acquire
        for n in (int(x) for x in a.sizes.split(",")):
            wide = make_window("concurrency", Rate(10**9, TTL))
            full = make_window("concurrency", Rate(n, TTL))
            key = f"k{n}"
            fill(conn, names, db_key(store.key_prefix, key), wide.id, n)
            fill(conn, names, db_key(store.key_prefix, key + "d"), full.id, n)  # (the id omits the limit)

            def acquire(step: list[int] = step) -> None:
                step[0] += 1
                clock.set((START + step[0]) / US)
                assert store.apply("acquire", [(key, wide, 1)], "bench")[0][0]  # noqa: B023

            def release() -> None:
                store.apply("release", [(key, wide, 0)], "bench")  # noqa: B023

            def denied(step: list[int] = step) -> None:
                step[0] += 1
                clock.set((START + step[0]) / US)
                assert not store.apply("acquire", [(key + "d", full, 1)], "x")[0][0]  # noqa: B023

            acq, rel = [], []
            for _ in range(a.reps):
                acq.append(timed(acquire, 1))
                rel.append(timed(release, 1))
            den = timed(denied, a.reps)
            print(f"{n:>12,} {statistics.median(acq):>9.3f} {statistics.median(rel):>9.3f} {den:>9.3f}")
    finally:
        store.close()
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


if __name__ == "__main__":
    main()

"""ratewarden's PostgreSQL store against pyrate-limiter's PostgreSQL bucket, in one run.

    .venv/bin/python bench/pg_bench.py [--url postgresql://root@127.0.0.1:5432/test] [--n 2000] [--reps 3]

Same database, same process, interleaved repetitions (every subject once per round; the
median is printed). Each subject hits ONE key at a rate so high nothing is denied
(1,000,000/hour), a fresh key (pyrate: a fresh table) per repetition:

* sync: one thread, ``n`` decisions in a loop -> decisions/s;
* async: 50 asyncio tasks share ``n`` decisions -> decisions/s;
* denied: calls refused although the rate was never reached, over all repetitions (pyrate's
  bucket refuses when it cannot take its table lock at once: under concurrency it is not exact
  the other way round; a store error under ``on_store_error="deny"`` counts here too).

Subjects: ratewarden ``postgresql://`` (fixed-window and sliding-log, the store's default
``synchronous_commit=off`` and with ``synchronous_commit=on``, which waits for the WAL flush
like pyrate's default sessions); pyrate-limiter 4.5.1 ``PostgresBucket`` (its default
sliding-window log, one bucket = one table, ``Limiter(bucket).try_acquire(name,
blocking=False)``; its async face runs the same sync bucket); and ratewarden's Redis store
(``redis://127.0.0.1:6379/15``) for scale. Ratios to pyrate are printed. Everything is
created in a schema of the run's own (pyrate's tables via search_path), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ratewarden import AsyncLimiter, Limiter

RATE = "1000000/hour"
TASKS = 50
SyncMake = Callable[[str], tuple[Callable[[], bool], Callable[[], None]]]
AsyncMake = Callable[[str], Awaitable[tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]]]


def rw_sync(url: str, algorithm: str) -> SyncMake:
    def make(key: str) -> tuple[Callable[[], bool], Callable[[], None]]:
        lim = Limiter(url, algorithm=algorithm, on_store_error="deny")

        def hit() -> bool:
            return lim.hit(key, RATE).allowed

        return hit, lim.close

    return make


def rw_async(url: str, algorithm: str) -> AsyncMake:
    async def make(key: str) -> tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]:
        lim = AsyncLimiter(url, algorithm=algorithm, on_store_error="deny")

        async def hit() -> bool:
            return (await lim.hit(key, RATE)).allowed

        return hit, lim.aclose

    return make


def pyrate_sync(url: str, schema: str) -> SyncMake:
    import pyrate_limiter as pl
    from psycopg_pool import ConnectionPool

    def make(key: str) -> tuple[Callable[[], bool], Callable[[], None]]:
        pool: Any = ConnectionPool(url, min_size=1, max_size=10, kwargs={"options": f"-c search_path={schema}"})
        bucket = pl.PostgresBucket(pool, f"b_{key}", [pl.Rate(1_000_000, pl.Duration.HOUR)])
        lim = pl.Limiter(bucket)

        def hit() -> bool:
            return bool(lim.try_acquire(key, blocking=False))

        def close() -> None:
            lim.close()
            pool.close()

        return hit, close

    return make


def pyrate_async(url: str, schema: str) -> AsyncMake:
    async def make(key: str) -> tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]:
        import pyrate_limiter as pl
        from psycopg_pool import ConnectionPool

        pool: Any = ConnectionPool(url, min_size=1, max_size=10, kwargs={"options": f"-c search_path={schema}"})
        bucket = pl.PostgresBucket(pool, f"a_{key}", [pl.Rate(1_000_000, pl.Duration.HOUR)])
        lim = pl.Limiter(bucket)

        async def hit() -> bool:
            return bool(await lim.try_acquire_async(key, blocking=False))

        async def aclose() -> None:
            lim.close()
            pool.close()

        return hit, aclose

    return make


DENIED: dict[str, int] = {}


def run_sync(make: SyncMake, n: int, name: str = "") -> float:
    hit, close = make(uuid.uuid4().hex[:12])
    try:
        hit()  # connect, install, warm the caches
        t0 = time.perf_counter()
        ok = sum(hit() for _ in range(n))
        dt = time.perf_counter() - t0
    finally:
        close()
    DENIED[name] = DENIED.get(name, 0) + n - ok
    return n / dt


async def run_async(make: AsyncMake, n: int, name: str = "") -> float:
    hit, close = await make(uuid.uuid4().hex[:12])
    try:
        await asyncio.gather(*(hit() for _ in range(TASKS)))  # open the pool's connections
        share = n // TASKS
        results: list[int] = []

        async def task() -> None:
            k = 0
            for _ in range(share):
                k += await hit()
            results.append(k)

        t0 = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(TASKS)))
        dt = time.perf_counter() - t0
    finally:
        await close()
    DENIED[name] = DENIED.get(name, 0) + share * TASKS - sum(results)
    return share * TASKS / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql://root@127.0.0.1:5432/test")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import psycopg

    schema = f"rwbench_{uuid.uuid4().hex[:8]}"
    rw = f"{args.url}?schema={schema}"
    redis_prefix = f"rwbench:{uuid.uuid4().hex[:8]}:"
    subjects: list[tuple[str, SyncMake, AsyncMake]] = [
        ("ratewarden postgres fixed-window", rw_sync(rw, "fixed-window"), rw_async(rw, "fixed-window")),
        ("ratewarden postgres sliding-log", rw_sync(rw, "sliding-log"), rw_async(rw, "sliding-log")),
        (
            "ratewarden postgres fixed-window, synchronous_commit=on",
            rw_sync(rw + "&synchronous_commit=on", "fixed-window"),
            rw_async(rw + "&synchronous_commit=on", "fixed-window"),
        ),
        ("pyrate-limiter PostgresBucket (sliding log)", pyrate_sync(args.url, schema), pyrate_async(args.url, schema)),
        (
            "ratewarden redis fixed-window (for scale)",
            rw_sync(f"{args.redis}?key_prefix={redis_prefix}&timeout=1", "fixed-window"),
            rw_async(f"{args.redis}?key_prefix={redis_prefix}&timeout=1", "fixed-window"),
        ),
    ]
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sync: dict[str, list[float]] = {name: [] for name, _, _ in subjects}
    asy: dict[str, list[float]] = {name: [] for name, _, _ in subjects}
    try:
        for rep in range(args.reps):
            for name, make_s, make_a in subjects:
                sync[name].append(run_sync(make_s, args.n, name))
                asy[name].append(asyncio.run(run_async(make_a, args.n, name)))
            print(f"round {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        import redis

        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=redis_prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    peer = "pyrate-limiter PostgresBucket (sliding log)"
    ps, pa = statistics.median(sync[peer]), statistics.median(asy[peer])
    print(f"\n{args.n} decisions per repetition, median of {args.reps}; one key, {RATE}; async = {TASKS} tasks")
    print("denied: calls refused although the rate was never reached (lock contention, errors)")
    print(f"{'subject':58} {'sync/s':>9} {'x pyrate':>9} {'async/s':>9} {'x pyrate':>9} {'denied':>7}")
    for name, _, _ in subjects:
        rs, ra = statistics.median(sync[name]), statistics.median(asy[name])
        print(f"{name:58} {rs:9.0f} {rs / ps:9.2f} {ra:9.0f} {ra / pa:9.2f} {DENIED.get(name, 0):7d}")


if __name__ == "__main__":
    main()

"""bench/redis_timeout.py - how often the Redis store's socket timeout fires under load (each
firing is a decision left to on_store_error: over-admission under "allow"), per timeout value.

    .venv/bin/python bench/redis_timeout.py [--tasks 200] [--calls 50] [--hogs 2]

On a private redis-server (never the shared one): for each timeout, 200 asyncio tasks x 50 hits
(AsyncLimiter's store, auto-pipelined) and 16 threads x 100 sync hits, while ``--hogs`` processes
burn CPU (the app server's other work on a 2-core machine). Reports the share of calls that
failed (StoreError) and the slowest successful call.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import PrivateRedis  # noqa: E402

from ratewarden import StoreError  # noqa: E402
from ratewarden.core.algorithms import make_window  # noqa: E402
from ratewarden.core.rates import US, Rate  # noqa: E402
from ratewarden.storage.redis import RedisStore, open_redis  # noqa: E402

W = make_window("gcra", Rate(10**9, 3600 * US))


def hog(stop: float) -> None:
    while time.time() < stop:
        pass


def run_async(store: RedisStore, tasks: int, calls: int) -> tuple[int, int, float]:
    errors = 0
    worst = 0.0

    async def one(i: int) -> None:
        nonlocal errors, worst
        for j in range(calls):
            t = time.perf_counter()
            try:
                await store.ahit1(f"a{i}:{j % 10}", W, 1)
                worst = max(worst, time.perf_counter() - t)
            except StoreError:
                errors += 1

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(tasks)))
        await store.aclose()

    asyncio.run(main())
    return tasks * calls, errors, worst


def run_sync(store: RedisStore, threads: int, calls: int) -> tuple[int, int, float]:
    errors = [0]
    worst = [0.0]
    lock = threading.Lock()

    def one(i: int) -> None:
        for j in range(calls):
            t = time.perf_counter()
            try:
                store.hit1(f"s{i}:{j % 10}", W, 1)
                d = time.perf_counter() - t
                with lock:
                    worst[0] = max(worst[0], d)
            except StoreError:
                with lock:
                    errors[0] += 1

    ts = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    store.close()
    return threads * calls, errors[0], worst[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--timeouts", default="0.05,0.1,0.25,0.5,1.0")
    a = ap.parse_args()
    srv = PrivateRedis()
    rows = []
    try:
        for timeout in [float(x) for x in a.timeouts.split(",")]:
            stop = time.time() + 3600
            hogs = [multiprocessing.Process(target=hog, args=(stop,), daemon=True) for _ in range(a.hogs)]
            for h in hogs:
                h.start()
            try:
                url = f"redis://127.0.0.1:{srv.port}/0"
                s1 = open_redis(url, timeout=timeout, breaker=0)
                s2 = open_redis(url, timeout=timeout, breaker=0)
                assert isinstance(s1, RedisStore) and isinstance(s2, RedisStore)
                an, ae, aw = run_async(s1, a.tasks, a.calls)
                sn, se, sw = run_sync(s2, 16, 100)
            finally:
                for h in hogs:
                    h.terminate()
                    h.join()
            rows.append((timeout, an, ae, aw, sn, se, sw))
    finally:
        srv.close()
    print(
        f"redis_timeout.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {a.hogs} CPU hogs"
    )
    print()
    print(
        f"| timeout | async calls ({a.tasks} tasks) | failed | slowest ok ms | sync calls (16 threads) | failed | slowest ok ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for t, an, ae, aw, sn, se, sw in rows:
        print(
            f"| {t * 1000:.0f} ms | {an:,} | {ae:,} ({100 * ae / an:.1f}%) | {aw * 1000:.0f} | "
            f"{sn:,} | {se:,} ({100 * se / sn:.1f}%) | {sw * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()

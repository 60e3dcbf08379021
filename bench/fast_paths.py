"""Each store's fast path (``hit1``) against its general path (``apply("hit", [item])``): a
same-run, interleaved timeit ratio (the machine's load moves both alike).

    python bench/fast_paths.py [memory,sqlite,redis,postgres] [--n 20000] [--rounds 7]

Redis and PostgreSQL use the servers of the test suite (``RATEWARDEN_TEST_REDIS_URL``,
``RATEWARDEN_TEST_POSTGRES_URL``), under a key prefix of their own that is deleted afterwards.
Prints, per store, the best-of-rounds microseconds per call of each path and their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from typing import Any

from ratewarden.core.algorithms import make_window
from ratewarden.core.rates import parse_rates


def _open(name: str, tmp: str) -> Any:
    prefix = f"rwbench:{uuid.uuid4().hex[:10]}:"
    if name == "memory":
        from ratewarden.storage.memory import MemoryStore

        return MemoryStore()
    if name == "sqlite":
        from ratewarden.storage.sqlite import SQLiteStore

        return SQLiteStore(os.path.join(tmp, "bench.db"))
    if name == "redis":
        from ratewarden.storage.redis import open_redis

        return open_redis(os.environ.get("RATEWARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379"), key_prefix=prefix)
    from ratewarden.storage.postgres import open_postgres

    url = os.environ.get("RATEWARDEN_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
    return open_postgres(url, schema="rwbench_" + uuid.uuid4().hex[:8])


def measure(name: str, n: int, rounds: int) -> tuple[float, float]:
    w = make_window("gcra", parse_rates("1000000000/minute")[0])
    with tempfile.TemporaryDirectory() as tmp:
        store = _open(name, tmp)
        try:
            fast, general = float("inf"), float("inf")
            hit1, apply = store.hit1, store.apply
            for _ in range(rounds):  # interleaved: each round times both
                t = time.perf_counter()
                for i in range(n):
                    hit1(f"k{i & 63}", w, 1)
                fast = min(fast, time.perf_counter() - t)
                t = time.perf_counter()
                for i in range(n):
                    apply("hit", [(f"k{i & 63}", w, 1)])
                general = min(general, time.perf_counter() - t)
            return fast / n * 1e6, general / n * 1e6
        finally:
            if name == "redis":
                store._sync().delete(*store._sync().keys(store.codec.prefix + "*") or ["-"])
            store.close()
            if name == "postgres":
                import psycopg

                with psycopg.connect(store._conninfo, autocommit=True) as c:
                    c.execute(f"DROP SCHEMA {store.names.schema} CASCADE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="?", default="memory,sqlite")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    for name in args.stores.split(","):
        f, g = measure(name, args.n, args.rounds)
        print(f"{name}: hit1 {f:.2f} us, apply {g:.2f} us per call: apply/hit1 = {g / f:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

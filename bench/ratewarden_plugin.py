"""peerbench plugin: ratewarden next to the peers, through its public API only.

    bench/.venv/bin/python bench/peerbench.py --plugin bench/ratewarden_plugin.py --only ratewarden --quick

Registers one Case per algorithm (gcra is the default). Each decision is
``Limiter(...).hit(key, "L/W s", algorithm=...)``; ``Decision.allowed`` is ok and
``Decision.retry_after`` the retry-after. Backends:

* ``mem``: ``Limiter("memory://", max_keys=4_000_000)`` so every key of the 1M-key rss run keeps its
  state, as the harness does for throttled-py (the rss section also shows the default bound);
  ``len(limiter.store)`` is the size and ``limiter.store.sweep()`` the cleanup.
* ``redis`` / ``aredis``: ``Limiter(url, timeout=2.0)`` / ``AsyncLimiter(url, timeout=2.0)``; registered only while
  ``ratewarden.storage.redis`` is importable.
* peer ``ratewarden-sqlite``: ``Limiter("sqlite:///<tmp file>")`` in the race (8 threads) and retry
  sections only (its speed is measured by run.py); registered only while
  ``ratewarden.storage.sqlite`` is importable.

A store failure must never look like a decision here (the limiter's default ``on_store_error``
is "allow"): ``ok()`` raises on a fallback Decision and ``close()`` raises if any store error was
counted, so the harness reports an ERROR instead of a silent over-admission.
"""

import contextlib
import functools
import importlib
import importlib.util
import os
import shutil
import tempfile

import peerbench as pb

from ratewarden import AsyncLimiter, Limiter

# (contract name, peerbench kind, default?) - "refill" = token-bucket family (bound L + refill)
ALGOS = [
    ("gcra", "refill", True),
    ("fixed-window", "window", False),
    ("sliding-window", "window", False),
    ("sliding-log", "window", False),
    ("token-bucket", "refill", False),
]
BIG_MAX_KEYS = 4_000_000
# Algorithms kept out of the sections that hammer ONE key with a never-reached limit (mem, redis,
# async): bench/run.py sets it to sliding-log, whose log grows by one entry per hit there, so each
# hit costs O(entries) (in memory and in one long Lua call that blocks the shared Redis); run.py
# measures that growth itself. Such a case keeps race/retry/rss/expiry, in memory only.
SKIP = {a for a in os.environ.get("RATEWARDEN_BENCH_SKIP", "").split(",") if a}
# The Redis store refuses sliding-window/token-bucket rates whose limit x period reaches 2^53 us
# (Lua doubles) with a ConfigError; peerbench's "never reached" limit (10^9 per 60 s) is one.
# The redis factories lower such a limit to a value that is still never reached by the harness.
LUA_EXACT = 2**53
# The Redis store's socket timeout defaults to 50 ms and a timeout makes the limiter fall back to
# on_store_error for the breaker interval; the peers' clients have no timeout at all. On this shared,
# loaded machine 50 ms is sometimes exceeded on loopback, so the benchmark allows 2 s (redis_bench.py too).
REDIS_TIMEOUT = 2.0


def has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def redis_store_ready():
    """True once ratewarden.storage.redis provides open_redis (a half-written package does not count)."""
    if not has_module("redis"):
        return False
    try:
        mod = importlib.import_module("ratewarden.storage.redis")
    except Exception:
        return False
    return callable(getattr(mod, "open_redis", None))


HAS_REDIS = redis_store_ready()
HAS_SQLITE = has_module("ratewarden.storage.sqlite")


def rate_of(limit, window_s):
    return f"{limit}/{window_s} s"


def ok(d):
    if d.reason == "store_unavailable":
        raise RuntimeError("store unavailable: the Decision is on_store_error's fallback, not the store's")
    return d.allowed


def retry_after(_key, d):
    return d.retry_after


def check_errors(lim):
    if lim.store_errors:
        raise RuntimeError(f"{lim.store_errors} store errors during the run (decisions were fallbacks)")


def make_mem(algo):
    def mem(limit, window_s, max_keys=BIG_MAX_KEYS, **_):
        lim = Limiter("memory://", max_keys=max_keys)
        store = lim.store

        def cleanup():
            dropped = store.sweep()
            return f"limiter.store.sweep() (dropped {dropped:,}; also runs by itself on a new key's insert)"

        return pb.Handle(
            hit=functools.partial(lim.hit, rates=rate_of(limit, window_s), algorithm=algo),
            ok=ok,
            retry_after=retry_after,
            size=lambda: {"states": len(store)},
            cleanup=cleanup,
            close=lim.close,
        )

    return mem


def redis_limit(limit, window_s):
    period_us = window_s * 1_000_000
    return limit if limit * period_us < LUA_EXACT else (LUA_EXACT - 1) // period_us // 2


def make_redis(algo):
    def redis(limit, window_s, url):
        lim = Limiter(url, timeout=REDIS_TIMEOUT)
        limit = redis_limit(limit, window_s)

        def close():
            lim.close()
            check_errors(lim)

        return pb.Handle(
            hit=functools.partial(lim.hit, rates=rate_of(limit, window_s), algorithm=algo),
            ok=ok,
            retry_after=retry_after,
            close=close,
        )

    return redis


def make_aredis(algo):
    async def aredis(limit, window_s, url):
        lim = AsyncLimiter(url, timeout=REDIS_TIMEOUT)
        limit = redis_limit(limit, window_s)

        async def close():
            await lim.aclose()
            check_errors(lim)

        return pb.Handle(
            hit=functools.partial(lim.hit, rates=rate_of(limit, window_s), algorithm=algo),
            ok=ok,
            retry_after=retry_after,
            close=close,
        )

    return aredis


def make_sqlite(algo):
    def sqlite(limit, window_s, **_):
        tmp = tempfile.mkdtemp(prefix="rw-bench-")
        lim = Limiter("sqlite:///" + os.path.join(tmp, "rl.db"))

        def close():
            try:
                lim.close()
                check_errors(lim)
            finally:
                with contextlib.suppress(OSError):
                    shutil.rmtree(tmp)

        return pb.Handle(
            hit=functools.partial(lim.hit, rates=rate_of(limit, window_s), algorithm=algo),
            ok=ok,
            retry_after=retry_after,
            close=close,
        )

    return sqlite


pb.PEER_DISTRIBUTIONS["ratewarden"] = "ratewarden"
pb.PEER_NOTES["ratewarden"] = (
    "the project under test (bench/ratewarden_plugin.py): Limiter(...).hit(key, 'L/W s', algorithm=...), "
    f"memory store with max_keys={BIG_MAX_KEYS:,} (rss also shows the default 1,000,000 bound); "
    + (
        f"Redis store present, opened with timeout={REDIS_TIMEOUT} (default 0.05 s); on Redis a never-reached limit whose limit x period reaches 2^53 us is lowered to "
        "(2^53 / period) / 2 (the store refuses larger ones for sliding-window and token-bucket)."
        if HAS_REDIS
        else "ratewarden.storage.redis has no open_redis yet: no Redis rows."
    )
    + (f" Kept out of mem/redis/async (one ever-growing key): {', '.join(sorted(SKIP))}." if SKIP else "")
)
for _algo, _kind, _default in ALGOS:
    pb.register(
        pb.Case(
            "ratewarden",
            _algo,
            _kind,
            _default,
            mem=make_mem(_algo),
            redis=make_redis(_algo) if HAS_REDIS and _algo not in SKIP else None,
            aredis=make_aredis(_algo) if HAS_REDIS and _algo not in SKIP else None,
            rss_variants=[("", {}), (" (default max_keys=1,000,000)", {"max_keys": 1_000_000})]
            if _default
            else [("", {})],
            sections={"race", "retry", "rss", "expiry"} if _algo in SKIP else None,
        )
    )
if HAS_SQLITE:
    pb.PEER_NOTES["ratewarden-sqlite"] = (
        "ratewarden's SQLite store (one temp file per handle), in the race and retry sections only; "
        "its decisions/s are in run.py's summary."
    )
    for _algo, _kind, _default in ALGOS:
        pb.register(
            pb.Case("ratewarden-sqlite", _algo, _kind, _default, mem=make_sqlite(_algo), sections={"race", "retry"})
        )

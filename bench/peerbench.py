#!/usr/bin/env python3
# Verbatim copy of the project's reference harness shared/bench/peerbench.py; keep it unchanged so runs stay comparable.
"""peerbench - reference benchmark harness for Python rate-limiting libraries.

Measures existing rate limiters ("peers") so that a new limiter can be compared
with them side by side, on the same machine, with the same loops.

Peers built in (each is skipped if it is not importable):
  limits          FixedWindow*, MovingWindow, SlidingWindowCounter
  pyrate-limiter  SlidingWindowLog*, FixedWindow, GCRA   (TokenBucket is GCRA)
  throttled-py    FixedWindow, SlidingWindow, TokenBucket*, LeakingBucket, GCRA
  (* = the algorithm used by the peer's default configuration)
  ref             floors measured in the same loops: noop call (harness overhead), dict
                  increment in a function, a correct 12-line fixed-window limiter
                  (monotonic + Lock + dict; also a self-test of race/retry), redis-py INCR
                  and EVALSHA. Leave them out with --no-refs.

Repetitions are interleaved (every case once per round) so that machine drift hits all
cases alike; medians of separate runs on a noisy VM can differ by 30 %+, so compare a new
limiter against the peers within one run.

Sections (--sections, default: all):
  mem      in-memory decision cost, single thread: N hits on one key (limit so
           high nothing is denied), N hits spread over K distinct keys, and N hits
           on one key with L=100 (so >99.9 % take the *deny* path).
           ns per decision, median of R repetitions, fresh limiter per repetition.
  redis    sync Redis, single thread: N hits on one key, us per decision (median of
           R), plus Redis commands per decision (INFO commandstats delta, Lua-internal
           calls included) and client round trips per decision (socket writes).
  async    asyncio Redis (redis.asyncio): T concurrent tasks hammer one key,
           total decisions/s (median of 3).
  race     correctness under concurrency: L=100 per 60 s on one fresh key,
           8 threads (memory and Redis) and 4 processes (Redis) race 1,000
           attempts; admitted count vs the exact bound. The GIL switch interval
           is lowered to 1 us during thread races so interleavings actually occur.
  retry    retry-after honesty (L=5 per 2 s): exhaust a key, read the peer's
           retry-after, probe at 0.8 x retry-after (should be denied) and at
           retry-after + 30 ms (should be admitted).
  rss      RSS growth after 1,000,000 distinct keys hit once (fresh subprocess
           per case; keys are generated on the fly so only what the limiter
           retains is counted).
  expiry   100k keys with a 1 s window, sleep 3 s, trigger whatever cleanup the
           peer has, report retained entries and RSS before/after.
  refs     "physical limits" on this machine: harness overhead, bare dict
           increment, clock/lock cost, redis-py round trip (sync and async),
           redis-benchmark SET/GET/INCR and EVAL/EVALSHA (1 conn, -P 16, 50 conns).

Usage:
  python peerbench.py                       # everything (~18 min on 2 cores)
  python peerbench.py --quick               # smaller N, fewer repetitions (~3 min)
  python peerbench.py --only limits --sections mem,redis
  python peerbench.py --plugin mylimiter_adapter.py --only mylimiter
  python peerbench.py --profile limits/FixedWindow --backend mem

Adding your own limiter: write a file that calls peerbench.register(Case(...))
(see the adapters below for the shape: mem/redis factories return a Handle
whose .hit(key) performs one decision through the public API) and pass it with
--plugin. It then appears in every table next to the peers.

Redis: defaults to redis://127.0.0.1:6379/15. The harness FLUSHDBs that
database between runs and resets INFO commandstats: never point it at a
Redis that holds data you care about.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib.metadata
import inspect
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Awaitable, Callable, Optional
from urllib.parse import urlparse

HIGH_LIMIT = 10**9  # "so high nothing is denied"
WINDOW_S = 60

# --------------------------------------------------------------------------- config


@dataclass
class Config:
    mem_n: int = 200_000          # hits per in-memory repetition
    mem_keys: int = 100_000       # distinct keys in the spread test
    reps: int = 5                 # repetitions (median reported)
    redis_n: int = 20_000         # hits per sync-Redis repetition
    redis_reps: int = 5
    stats_sample: int = 1_000     # hits sampled for command / round-trip counts
    async_n: int = 20_000         # total decisions per async run
    async_tasks: int = 50
    async_reps: int = 3
    race_total: int = 1_000
    race_threads: int = 8
    race_procs: int = 4
    race_trials: int = 5
    race_limit: int = 100
    race_window: int = 60
    retry_trials: int = 4
    rss_keys: int = 1_000_000
    expiry_keys: int = 100_000
    bench_n: int = 200_000        # redis-benchmark -n for set,get,incr
    bench_eval_n: int = 100_000   # redis-benchmark -n for eval/evalsha


QUICK = Config(mem_n=20_000, mem_keys=10_000, reps=3, redis_n=2_000, redis_reps=3,
               stats_sample=200, async_n=2_000, async_reps=1, race_trials=2, retry_trials=2,
               rss_keys=100_000, expiry_keys=20_000, bench_n=20_000, bench_eval_n=10_000)

# --------------------------------------------------------------------------- adapter API


@dataclass
class Handle:
    """One configured limiter (fixed limit/window) seen through the peer's public API.

    hit(key)            performs one decision (for async handles: a coroutine).
    ok(raw)             turns hit()'s return value into admitted? (bool).
    retry_after(k, raw) seconds until `k` may retry, from the peer's own API,
                        called right after a denied hit (may be a coroutine).
    size()              dict of retained entries (in-memory backends).
    cleanup()           triggers whatever expiry/cleanup the peer offers and
                        returns a one-line description of what was done.
    close()             releases threads/connections (may be a coroutine).
    """
    hit: Callable[[str], Any]
    ok: Callable[[Any], bool] = bool
    retry_after: Optional[Callable[[str, Any], Any]] = None
    size: Callable[[], dict] = dict
    cleanup: Optional[Callable[[], str]] = None
    close: Callable[[], Any] = lambda: None


@dataclass
class Case:
    """A (peer, algorithm) pair and how to build it on each backend.

    kind: "window" -> at most `limit` admissions per window (exact bound = limit);
          "refill" -> token-bucket family: bound = limit + refill during the race.
    mem(limit, window_s, **opts) -> Handle
    redis(limit, window_s, url) -> Handle
    aredis(limit, window_s, url) -> coroutine -> Handle   (async hit)
    rss_variants: extra (label, opts) pairs passed to mem() in the rss section.
    """
    peer: str
    algo: str
    kind: str = "window"
    default: bool = False
    mem: Optional[Callable[..., Handle]] = None
    redis: Optional[Callable[[int, int, str], Handle]] = None
    aredis: Optional[Callable[[int, int, str], Awaitable[Handle]]] = None
    rss_variants: list = field(default_factory=lambda: [("", {})])
    note: str = ""
    sections: Optional[set] = None   # sections this case takes part in (None = all it can)

    @property
    def id(self) -> str:
        return f"{self.peer}/{self.algo}"

    def wants(self, section: str) -> bool:
        return self.sections is None or section in self.sections


CASES: list[Case] = []
PEER_DISTRIBUTIONS: dict[str, str] = {}   # peer name -> PyPI distribution (for versions)
PEER_NOTES: dict[str, str] = {}


def register(case: Case) -> None:
    CASES.append(case)


async def _maybe_await(x):
    while inspect.isawaitable(x):
        x = await x
    return x

# --------------------------------------------------------------------------- peer: limits


def _register_limits() -> None:
    from limits import RateLimitItemPerSecond
    from limits import strategies as S
    from limits.aio import strategies as AS
    from limits.aio.storage import RedisStorage as AioRedisStorage
    from limits.storage import MemoryStorage, RedisStorage

    PEER_DISTRIBUTIONS["limits"] = "limits"
    PEER_NOTES["limits"] = ("hit() returns a bool; retry-after needs a second call "
                            "(get_window_stats). Async Redis uses implementation='redispy' "
                            "(the default, coredis, is not installed).")

    def sync_handle(lim, item, **kw) -> Handle:
        def retry_after(key, _raw):
            return max(0.0, lim.get_window_stats(item, key).reset_time - time.time())
        return Handle(hit=functools.partial(lim.hit, item), ok=bool, retry_after=retry_after, **kw)

    specs = [("FixedWindow", S.FixedWindowRateLimiter, AS.FixedWindowRateLimiter, True),
             ("MovingWindow", S.MovingWindowRateLimiter, AS.MovingWindowRateLimiter, False),
             ("SlidingWindowCounter", S.SlidingWindowCounterRateLimiter,
              AS.SlidingWindowCounterRateLimiter, False)]
    for algo, cls, acls, default in specs:
        def mem(limit, window_s, cls=cls, **_):
            st = MemoryStorage()
            lim, item = cls(st), RateLimitItemPerSecond(limit, window_s)

            def size():
                return {"counters": len(st.storage), "logs": len(st.events),
                        "log_entries": sum(map(len, st.events.values())), "locks": len(st.locks)}

            def cleanup():
                lim.hit(item, "__peerbench_cleanup__")   # re-arms the 10 ms expiry timer
                time.sleep(1.0)
                return "1 hit on a new key (re-arms the 10 ms expiry Timer), wait 1 s"

            def close():
                st.timer.cancel()
                st.timer.join()   # reset() while the timer iterates raises KeyError in it
                st.reset()
            return sync_handle(lim, item, size=size, cleanup=cleanup, close=close)

        def redis(limit, window_s, url, cls=cls):
            st = RedisStorage(url)
            return sync_handle(cls(st), RateLimitItemPerSecond(limit, window_s),
                               close=st.get_connection().close)

        async def aredis(limit, window_s, url, acls=acls):
            st = AioRedisStorage("async+" + url, implementation="redispy")
            lim, item = acls(st), RateLimitItemPerSecond(limit, window_s)

            async def retry_after(key, _raw):
                return max(0.0, (await lim.get_window_stats(item, key)).reset_time - time.time())
            return Handle(hit=functools.partial(lim.hit, item), ok=bool, retry_after=retry_after,
                          close=st.bridge.storage.aclose)

        register(Case("limits", algo, "window", default, mem, redis, aredis))

# --------------------------------------------------------------------------- peer: pyrate-limiter


def _register_pyrate() -> None:
    import pyrate_limiter as pl
    from pyrate_limiter.buckets.redis_bucket import LuaScript

    PEER_DISTRIBUTIONS["pyrate-limiter"] = "pyrate-limiter"
    PEER_NOTES["pyrate-limiter"] = (
        "Per-key limiting needs a BucketFactory; we use the README's 'one bucket per name' "
        "pattern (bucket created on first use + schedule_leak). try_acquire(name, blocking=False). "
        "Every call takes the Limiter-wide RLock (async: a loop-wide asyncio.Lock).")

    class PerKeyFactory(pl.BucketFactory):
        """The README's PerNameFactory: one bucket per key, created on first use."""

        def __init__(self, new_bucket, clock):
            self._new_bucket, self.clock, self.by_key = new_bucket, clock, {}

        def wrap_item(self, name, weight=1):
            return pl.RateItem(name, self.clock.now(), weight=weight)

        def get(self, item):
            bucket = self.by_key.get(item.name)
            if bucket is None:
                bucket = self.by_key[item.name] = self._new_bucket(item.name)
                self.schedule_leak(bucket)      # == BucketFactory.create()
            return bucket

    def retry_after_of(factory):
        def retry_after(key, _raw):
            bucket = factory.by_key[key]
            wait = bucket.waiting(pl.RateItem(key, bucket.now(), 1))
            if inspect.isawaitable(wait):
                async def _a():
                    return (await wait) / 1000
                return _a()
            return wait / 1000
        return retry_after

    specs = [("SlidingWindowLog", "window", True, None),
             ("FixedWindow", "window", False, pl.FixedWindow),
             ("GCRA", "refill", False, pl.GCRA)]
    for algo, kind, default, alg_cls in specs:
        state = alg_cls is not None and issubclass(alg_cls, pl.StateAlgorithm)

        def mem(limit, window_s, alg_cls=alg_cls, state=state, **_):
            rates = [pl.Rate(limit, window_s * 1000)]
            if state:
                def new(_key):
                    return pl.StateBucket(rates, algorithm=alg_cls())
            else:
                def new(_key):
                    return pl.InMemoryBucket(rates, algorithm=alg_cls() if alg_cls else None)
            factory = PerKeyFactory(new, pl.MonotonicClock())
            lim = pl.Limiter(factory)

            def size():
                return {"buckets": len(factory.by_key),
                        "log_entries": sum(len(b.items) for b in factory.by_key.values()
                                           if hasattr(b, "items"))}

            def cleanup():
                for bucket in list(factory.by_key.values()):
                    bucket.leak(bucket.now())
                return ("bucket.leak(now) on every bucket (what the Leaker thread does every "
                        "10 s); buckets themselves are never removed")
            return Handle(hit=functools.partial(lim.try_acquire, blocking=False), ok=bool,
                          retry_after=retry_after_of(factory), size=size, cleanup=cleanup,
                          close=lim.close)

        def make_redis_factory(client, sha, limit, window_s, alg_cls=alg_cls, state=state):
            rates = [pl.Rate(limit, window_s * 1000)]
            if state:
                def new(key):
                    return pl.StateBucket(rates, algorithm=alg_cls(),
                                          store=pl.RedisStateStore(client, f"pyrate:{key}"))
            else:
                def new(key):
                    return pl.RedisBucket(rates, client, f"pyrate:{key}", sha,
                                          algorithm=alg_cls() if alg_cls else None)
            return PerKeyFactory(new, pl.WallClock())

        def redis(limit, window_s, url, mk=make_redis_factory):
            import redis as redis_mod
            client = redis_mod.Redis.from_url(url)
            factory = mk(client, client.script_load(LuaScript.PUT_ITEM), limit, window_s)
            lim = pl.Limiter(factory)

            def close():
                lim.close()
                client.close()
            return Handle(hit=functools.partial(lim.try_acquire, blocking=False), ok=bool,
                          retry_after=retry_after_of(factory), close=close)

        async def aredis(limit, window_s, url, mk=make_redis_factory):
            import redis.asyncio as aioredis
            client = aioredis.Redis.from_url(url)
            factory = mk(client, await client.script_load(LuaScript.PUT_ITEM), limit, window_s)
            lim = pl.Limiter(factory)

            async def close():
                lim.close()
                await client.aclose()
            return Handle(hit=functools.partial(lim.try_acquire_async, blocking=False), ok=bool,
                          retry_after=retry_after_of(factory), close=close)

        register(Case("pyrate-limiter", algo, kind, default, mem, redis, aredis,
                      note="TokenBucket is `class TokenBucket(GCRA)` - identical" if alg_cls is pl.GCRA else ""))

# --------------------------------------------------------------------------- peer: throttled-py


def _register_throttled() -> None:
    from throttled import MemoryStore, RedisStore, Throttled, per_duration
    from throttled.asyncio import RedisStore as AioRedisStore
    from throttled.asyncio import Throttled as AioThrottled

    PEER_DISTRIBUTIONS["throttled-py"] = "throttled-py"
    big = 4_000_000
    PEER_NOTES["throttled-py"] = (
        f"MemoryStore default MAX_SIZE is 1024 keys (LRU): beyond that, live limits are evicted. "
        f"The harness uses MAX_SIZE={big:,} so every key keeps its state; the rss section "
        f"also shows the default.")

    def handle(t, **kw):
        return Handle(hit=t.limit, ok=lambda r: not r.limited,
                      retry_after=lambda _key, r: r.state.retry_after, **kw)

    specs = [("FixedWindow", "fixed_window", "window", False),
             ("SlidingWindow", "sliding_window", "window", False),
             ("TokenBucket", "token_bucket", "refill", True),
             ("LeakingBucket", "leaking_bucket", "refill", False),
             ("GCRA", "gcra", "refill", False)]
    for algo, using, kind, default in specs:
        def mem(limit, window_s, using=using, max_size=big, **_):
            store = MemoryStore(options={"MAX_SIZE": max_size} if max_size else None)
            t = Throttled(using=using, quota=per_duration(timedelta(seconds=window_s), limit),
                          store=store)
            return handle(t, size=lambda: {"keys": len(store._backend._client)}, cleanup=None)

        def redis(limit, window_s, url, using=using):
            t = Throttled(using=using, quota=per_duration(timedelta(seconds=window_s), limit),
                          store=RedisStore(server=url))
            return handle(t)

        async def aredis(limit, window_s, url, using=using):
            t = AioThrottled(using=using, quota=per_duration(timedelta(seconds=window_s), limit),
                             store=AioRedisStore(server=url))
            return handle(t)

        variants = [("", {})]
        if default:
            variants.append((" (default MAX_SIZE=1024)", {"max_size": None}))
        register(Case("throttled-py", algo, kind, default, mem, redis, aredis, variants))


# --------------------------------------------------------------------------- references


INCR_LUA = "return redis.call('incr',KEYS[1])"


def _register_refs() -> None:
    """Floors measured inside the same interleaved loops as the peers (peer name 'ref')."""
    PEER_NOTES["ref"] = ("not a limiter: cost floors measured in the same loops. 'fixed-window "
                         "floor' is a correct 12-line limiter (monotonic clock + one Lock + dict) "
                         "and doubles as a self-test of the race/retry sections.")

    def noop(limit, window_s, **_):
        return Handle(hit=lambda k: None, ok=lambda _r: True)

    def dict_incr(limit, window_s, **_):
        d = {}

        def hit(k):
            d[k] = d.get(k, 0) + 1
        return Handle(hit=hit, ok=lambda _r: True, size=lambda: {"keys": len(d)})

    def floor(limit, window_s, **_):
        d, lock, mono = {}, threading.Lock(), time.monotonic

        def hit(k):
            now = mono()
            with lock:
                e = d.get(k)
                if e is None or e[0] <= now:
                    d[k] = e = [now + window_s, 0]
                if e[1] < limit:
                    e[1] += 1
                    return True
                return False

        def retry_after(k, _raw):
            e = d.get(k)
            return max(0.0, e[0] - mono()) if e else 0.0
        return Handle(hit=hit, retry_after=retry_after, size=lambda: {"keys": len(d)})

    def r_incr(limit, window_s, url):
        import redis
        r = redis.Redis.from_url(url)
        return Handle(hit=r.incr, ok=lambda _r: True, close=r.close)

    def r_evalsha(limit, window_s, url):
        import redis
        r = redis.Redis.from_url(url)
        sha = r.script_load(INCR_LUA)
        return Handle(hit=lambda k: r.evalsha(sha, 1, k), ok=lambda _r: True, close=r.close)

    async def a_incr(limit, window_s, url):
        import redis.asyncio as aioredis
        r = aioredis.Redis.from_url(url)
        return Handle(hit=r.incr, ok=lambda _r: True, close=r.aclose)

    async def a_evalsha(limit, window_s, url):
        import redis.asyncio as aioredis
        r = aioredis.Redis.from_url(url)
        sha = await r.script_load(INCR_LUA)
        return Handle(hit=lambda k: r.evalsha(sha, 1, k), ok=lambda _r: True, close=r.aclose)

    register(Case("ref", "noop call (harness overhead)", "ref", mem=noop, sections={"mem"}))
    register(Case("ref", "dict increment in a function", "ref", mem=dict_incr, sections={"mem", "rss"}))
    register(Case("ref", "fixed-window floor", "window", mem=floor,
                  sections={"mem", "race", "retry", "rss"}))
    register(Case("ref", "redis-py INCR", "ref", redis=r_incr, aredis=a_incr,
                  sections={"redis", "async"}))
    register(Case("ref", "redis-py EVALSHA(incr)", "ref", redis=r_evalsha, aredis=a_evalsha,
                  sections={"redis", "async"}))


def load_peers(plugins: list[str]) -> None:
    _register_refs()
    for fn in (_register_limits, _register_pyrate, _register_throttled):
        try:
            fn()
        except ImportError as e:
            print(f"[peerbench] skipping {fn.__name__[10:]}: {e}", file=sys.stderr)
    for path in plugins:
        ns = {"__file__": path, "__name__": "peerbench_plugin"}
        sys.modules.setdefault("peerbench", sys.modules[__name__])
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), ns)


def find_case(case_id: str) -> Case:
    for c in CASES:
        if c.id == case_id:
            return c
    raise SystemExit(f"unknown case {case_id!r}; known: {[c.id for c in CASES]}")

# --------------------------------------------------------------------------- helpers


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_loop(hit: Callable[[str], Any], keys: list[str]) -> int:
    """The measured loop. Identical for peers and references."""
    t0 = time.perf_counter_ns()
    for k in keys:
        hit(k)
    return time.perf_counter_ns() - t0


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_int(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def fmt_f(x, nd=1):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{nd}f}"


def redis_client(url):
    import redis
    return redis.Redis.from_url(url)


@contextlib.contextmanager
def count_round_trips():
    """Counts socket writes of every sync redis-py connection (1 write == 1 round trip;
    a pipeline is one write)."""
    from redis.connection import AbstractConnection
    counter = {"n": 0}
    orig = AbstractConnection.send_packed_command

    def patched(self, command, check_health=True):
        counter["n"] += 1
        return orig(self, command, check_health)
    AbstractConnection.send_packed_command = patched
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = orig


def commandstats(r) -> dict[str, int]:
    return {k[len("cmdstat_"):] if k.startswith("cmdstat_") else k: v["calls"]
            for k, v in r.info("commandstats").items()}


def avoid_window_edge(window_s: int, margin: float = 3.0) -> None:
    """Fixed windows aligned to the wall clock or to the monotonic clock could reset
    mid-race and legitimately admit 2 x limit; wait until both clocks are clear of an edge."""
    for _ in range(3):
        w = window_s - (time.time() % window_s)
        m = window_s - (time.monotonic() % window_s)
        wait = max(w if w < margin else 0, m if m < margin else 0)
        if not wait:
            return
        time.sleep(wait + 0.05)


def run_worker(spec: dict, plugins: list[str], timeout: int = 900) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)]
    for p in plugins:
        cmd += ["--plugin", p]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {"error": (p.stderr.strip().splitlines() or ["rc=%d" % p.returncode])[-1][:200]}
    return json.loads(lines[-1])

# --------------------------------------------------------------------------- section: mem


def verify_admits_all(h: Handle, n: int = 2_000) -> int:
    """Returns how many of n hits on one key were denied (must be 0 for HIGH_LIMIT)."""
    return sum(1 for _ in range(n) if not h.ok(h.hit("verify")))


def bench_mem(cases, cfg: Config):
    """Repetitions are interleaved (rep-major, case-minor) so that slow drifts of the
    machine hit every case alike; each sample uses a fresh limiter."""
    one_key = ["k"] * cfg.mem_n
    spread = [f"user:{i % cfg.mem_keys}" for i in range(cfg.mem_n)]
    workloads = (("one_key", one_key, HIGH_LIMIT), ("spread", spread, HIGH_LIMIT),
                 ("deny_path", one_key, 100))
    cases = [c for c in cases if c.mem and c.wants("mem")]
    rows = {c.id: {"case": c.id, "default": c.default} for c in cases}
    samples = {(c.id, w[0]): [] for c in cases for w in workloads}
    for c in cases:
        try:
            h = c.mem(HIGH_LIMIT, WINDOW_S)
            rows[c.id]["denied_in_verify"] = verify_admits_all(h)
            h.close()
        except Exception as e:  # noqa: BLE001
            rows[c.id]["error"] = f"{type(e).__name__}: {e}"[:160]
    for rep in range(cfg.reps):
        for c in cases:
            if "error" in rows[c.id]:
                continue
            for label, keys, limit in workloads:
                try:
                    h = c.mem(limit, WINDOW_S)
                    gc.collect()
                    samples[(c.id, label)].append(time_loop(h.hit, keys) / len(keys))
                    h.close()
                    del h
                except Exception as e:  # noqa: BLE001
                    rows[c.id]["error"] = f"{type(e).__name__}: {e}"[:160]
        print(f"  mem: repetition {rep + 1}/{cfg.reps} done", file=sys.stderr)
    for (cid, label), xs in samples.items():
        if xs:
            rows[cid][label] = med(xs)
            rows[cid][label + "_spread"] = (min(xs), max(xs))
    for row in rows.values():
        print(f"  mem {row['case']}: {row}", file=sys.stderr)
    return list(rows.values())

# --------------------------------------------------------------------------- section: redis


def bench_redis(cases, cfg: Config, url: str):
    r = redis_client(url)
    keys = ["k"] * cfg.redis_n
    cases = [c for c in cases if c.redis and c.wants("redis")]
    rows = {c.id: {"case": c.id} for c in cases}
    samples = {c.id: [] for c in cases}
    for c in cases:
        try:
            r.flushdb()
            h = c.redis(HIGH_LIMIT, WINDOW_S, url)
            rows[c.id]["denied_in_verify"] = verify_admits_all(h, 500)
            h.close()
        except Exception as e:  # noqa: BLE001
            rows[c.id]["error"] = f"{type(e).__name__}: {e}"[:160]
    for rep in range(cfg.redis_reps):          # interleaved, as in bench_mem
        for c in cases:
            if "error" in rows[c.id]:
                continue
            try:
                r.flushdb()
                h = c.redis(HIGH_LIMIT, WINDOW_S, url)
                h.hit("k")  # connect + load scripts outside the timed loop
                samples[c.id].append(time_loop(h.hit, keys) / len(keys) / 1000)
                h.close()
            except Exception as e:  # noqa: BLE001
                rows[c.id]["error"] = f"{type(e).__name__}: {e}"[:160]
        print(f"  redis: repetition {rep + 1}/{cfg.redis_reps} done", file=sys.stderr)
    for c in cases:
        row = rows[c.id]
        if "error" in row:
            continue
        row["us"] = med(samples[c.id])
        row["us_spread"] = (min(samples[c.id]), max(samples[c.id]))
        try:   # command accounting on a steady-state sample
            r.flushdb()
            h = c.redis(HIGH_LIMIT, WINDOW_S, url)
            h.hit("k")
            h.hit("k")
            r.config_resetstat()
            with count_round_trips() as rt:
                for _ in range(cfg.stats_sample):
                    h.hit("k")
            stats = commandstats(r)
            h.close()
            stats = {k: v for k, v in stats.items() if k not in ("info", "config|resetstat", "config")}
            row["round_trips"] = rt["n"] / cfg.stats_sample
            row["server_cmds"] = sum(stats.values()) / cfg.stats_sample
            row["cmds"] = {k: round(v / cfg.stats_sample, 2) for k, v in sorted(stats.items())
                           if v / cfg.stats_sample >= 0.005}
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:160]
        print(f"  redis {c.id}: {row}", file=sys.stderr)
    r.flushdb()
    return list(rows.values())

# --------------------------------------------------------------------------- section: async


async def _async_run(make, url, n, tasks, key="k"):
    h = await make(HIGH_LIMIT, WINDOW_S, url)
    await _maybe_await(h.hit(key))
    per = n // tasks

    async def worker():
        hit = h.hit
        for _ in range(per):
            await hit(key)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    dt = time.perf_counter() - t0
    await _maybe_await(h.close())
    return per * tasks / dt


def bench_async(cases, cfg: Config, url: str):
    r = redis_client(url)
    cases = [c for c in cases if c.aredis and c.wants("async")]
    rows = {c.id: {"case": c.id} for c in cases}
    samples = {c.id: [] for c in cases}
    for rep in range(cfg.async_reps):          # interleaved, as in bench_mem
        for c in cases:
            if "error" in rows[c.id]:
                continue
            try:
                r.flushdb()
                samples[c.id].append(asyncio.run(_async_run(c.aredis, url, cfg.async_n, cfg.async_tasks)))
            except Exception as e:  # noqa: BLE001
                rows[c.id]["error"] = f"{type(e).__name__}: {e}"[:160]
    for c in cases:
        row = rows[c.id]
        if "error" in row:
            continue
        row["per_s"] = med(samples[c.id])
        try:
            r.flushdb()
            row["per_s_1task"] = asyncio.run(_async_run(c.aredis, url, cfg.async_n // 4, 1))
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"[:160]
        print(f"  async {c.id}: {row}", file=sys.stderr)
    r.flushdb()
    return list(rows.values())

# --------------------------------------------------------------------------- section: race


def _race_threads(h: Handle, key: str, n_threads: int, total: int, switch: Optional[float] = 1e-6):
    per = total // n_threads
    barrier = threading.Barrier(n_threads + 1)
    counts, errors = [0] * n_threads, []

    def worker(i):
        hit, ok = h.hit, h.ok
        barrier.wait()
        c = 0
        try:
            for _ in range(per):
                if ok(hit(key)):
                    c += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
        counts[i] = c
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    old = sys.getswitchinterval()
    if switch:
        sys.setswitchinterval(switch)   # force interleavings inside the limiter's code
    try:
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        dt = time.perf_counter() - t0
    finally:
        sys.setswitchinterval(old)
    return sum(counts), dt, errors


def _race_proc_child(case_id, plugins, url, key, per, limit, window, barrier, q):
    load_peers(plugins)
    h = find_case(case_id).redis(limit, window, url)
    h.hit("__warm__")   # connect + load scripts before the start line
    barrier.wait()
    t0 = time.time()
    c = sum(1 for _ in range(per) if h.ok(h.hit(key)))
    q.put((c, t0, time.time()))
    h.close()


def _race_procs(case: Case, plugins, url, key, n_procs, total, limit, window):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=_race_proc_child,
                         args=(case.id, plugins, url, key, total // n_procs, limit, window, barrier, q))
             for _ in range(n_procs)]
    for p in procs:
        p.start()
    res = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return sum(x[0] for x in res), max(x[2] for x in res) - min(x[1] for x in res), []


async def _race_async(make, url, key, tasks, total, limit, window):
    h = await make(limit, window, url)
    await _maybe_await(h.hit("__warm__"))
    per = total // tasks

    async def worker():
        c = 0
        for _ in range(per):
            if h.ok(await h.hit(key)):
                c += 1
        return c
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(worker() for _ in range(tasks)), return_exceptions=True)
    dt = time.perf_counter() - t0
    await _maybe_await(h.close())
    errs = [f"{type(c).__name__}: {c}" for c in counts if isinstance(c, BaseException)]
    return sum(c for c in counts if isinstance(c, int)), dt, errs


def bench_race(cases, cfg: Config, url: Optional[str], plugins):
    """Over-admission races (limit L, exact bound L) and spurious-denial runs
    (limit never reached, so every denial is wrong)."""
    L, W = cfg.race_limit, cfg.race_window
    spurious_total = cfg.race_total * cfg.race_threads
    r = redis_client(url) if url else None
    rows = []
    for c in cases:
        if not c.wants("race") or c.kind == "ref":
            continue
        row = {"case": c.id, "kind": c.kind}
        modes = []
        if c.mem:
            modes.append(("mem_threads", "threads", lambda lim: c.mem(lim, W)))
        if c.redis and url:
            modes.append(("redis_threads", "threads", lambda lim: c.redis(lim, W, url)))
            modes.append(("redis_procs", "procs", None))
        if c.aredis and url:
            modes.append(("redis_async", "async", None))
        for label, how, make in modes:
            got, overs, errs = [], [], []
            try:
                for _ in range(cfg.race_trials):
                    avoid_window_edge(W)
                    key = f"race:{uuid.uuid4().hex[:12]}"
                    if how == "threads":
                        h = make(L)
                        n, dt, e = _race_threads(h, key, cfg.race_threads, cfg.race_total)
                        h.close()
                    elif how == "procs":
                        n, dt, e = _race_procs(c, plugins, url, key, cfg.race_procs,
                                               cfg.race_total, L, W)
                    else:
                        n, dt, e = asyncio.run(_race_async(c.aredis, url, key, cfg.async_tasks,
                                                           cfg.race_total, L, W))
                    bound = L if c.kind == "window" else L + math.ceil(dt * L / W)
                    got.append(n)
                    overs.append(n - bound)
                    errs += e
                row[label] = {"min": min(got), "max": max(got), "over_max": max(overs),
                              "errors": errs[:3]}
            except Exception as e:  # noqa: BLE001
                row[label] = {"error": f"{type(e).__name__}: {e}"[:160]}
            if how != "threads":
                continue
            # spurious denials: limit far above the attempts, default GIL switch interval
            try:
                h = make(HIGH_LIMIT)
                n, dt, e = _race_threads(h, f"spur:{uuid.uuid4().hex[:12]}", cfg.race_threads,
                                         spurious_total, switch=None)
                h.close()
                row[label + "_spurious"] = {"denied": spurious_total - n, "of": spurious_total,
                                            "errors": e[:3]}
            except Exception as e:  # noqa: BLE001
                row[label + "_spurious"] = {"error": f"{type(e).__name__}: {e}"[:160]}
        if r is not None:
            r.flushdb()
        rows.append(row)
        print(f"  race {c.id}: {row}", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- section: retry


def _retry_probe(h: Handle, limit=5, window=2, early=0.8, late_ms=30):
    res = {}
    keys = {"A": f"ra:{uuid.uuid4().hex[:10]}", "B": f"ra:{uuid.uuid4().hex[:10]}"}
    t_deny, ra = {}, {}
    for tag, key in keys.items():
        admitted = sum(1 for _ in range(limit) if h.ok(h.hit(key)))
        raw = h.hit(key)
        t_deny[tag] = time.monotonic()
        if admitted != limit or h.ok(raw):
            res.setdefault("anomaly", []).append(f"exhaust: {admitted}/{limit} admitted, "
                                                 f"extra hit admitted={h.ok(raw)}")
        ra[tag] = h.retry_after(key, raw) if h.retry_after else None
    res["retry_after_s"] = ra["A"]
    if ra["A"] is None:
        return res
    time.sleep(max(0.0, t_deny["A"] + early * ra["A"] - time.monotonic()))
    res["early_admitted"] = h.ok(h.hit(keys["A"]))
    time.sleep(max(0.0, t_deny["B"] + ra["B"] + late_ms / 1000 - time.monotonic()))
    res["late_admitted"] = h.ok(h.hit(keys["B"]))
    return res


def bench_retry(cases, cfg: Config, url: Optional[str]):
    rows = []
    for c in cases:
        if not c.wants("retry") or c.kind == "ref":
            continue
        row = {"case": c.id, "kind": c.kind}
        for label, make in (("mem", c.mem and (lambda: c.mem(5, 2))),
                            ("redis", c.redis and url and (lambda: c.redis(5, 2, url)))):
            if not make:
                continue
            try:
                trials = []
                for _ in range(cfg.retry_trials):
                    h = make()
                    trials.append(_retry_probe(h))
                    h.close()
                ras = [t["retry_after_s"] for t in trials if t.get("retry_after_s") is not None]
                row[label] = {
                    "trials": len(trials),
                    "ra": [float(x) for x in ras],
                    "early_admitted": sum(1 for t in trials if t.get("early_admitted")),
                    "late_admitted": sum(1 for t in trials if t.get("late_admitted")),
                    "anomaly": sorted({a for t in trials for a in t.get("anomaly", [])}),
                }
            except Exception as e:  # noqa: BLE001
                row[label] = {"error": f"{type(e).__name__}: {e}"[:160]}
        rows.append(row)
        print(f"  retry {c.id}: {row}", file=sys.stderr)
    return rows

# --------------------------------------------------------------------------- sections: rss / expiry (subprocess workers)


def worker_rss(case: Case, n: int, opts: dict) -> dict:
    h = case.mem(100, WINDOW_S, **opts)
    for i in range(100):            # warm up lazy imports / first-use allocations
        h.hit(f"warm:{i}")
    gc.collect()
    before = rss_bytes()
    hit = h.hit
    t0 = time.perf_counter()
    for i in range(n):
        hit(f"user:{i}")            # key built on the fly: only what the limiter keeps stays alive
    dt = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    return {"rss_before": before, "rss_after": after, "delta": after - before,
            "bytes_per_key": (after - before) / n, "size": h.size(), "ns_per_new_key": dt / n * 1e9}


def worker_expiry(case: Case, n: int) -> dict:
    h = case.mem(100, 1)
    base = rss_bytes()
    for i in range(n):
        h.hit(f"user:{i}")
    gc.collect()
    out = {"rss_base": base, "after_hits": {"size": h.size(), "rss": rss_bytes()}}
    time.sleep(3)
    gc.collect()
    out["after_sleep"] = {"size": h.size(), "rss": rss_bytes()}
    out["cleanup"] = h.cleanup() if h.cleanup else "no cleanup mechanism (lazy expiry on access only)"
    time.sleep(0.2)
    gc.collect()
    out["after_cleanup"] = {"size": h.size(), "rss": rss_bytes()}
    return out


def bench_rss(cases, cfg: Config, plugins):
    rows = []
    for c in cases:
        if not c.mem or not c.wants("rss"):
            continue
        for label, opts in c.rss_variants:
            res = run_worker({"what": "rss", "case": c.id, "n": cfg.rss_keys, "opts": opts}, plugins)
            res.update(case=c.id + label, default=c.default)
            rows.append(res)
            print(f"  rss {c.id}{label}: {res}", file=sys.stderr)
    return rows


def bench_expiry(cases, cfg: Config, plugins):
    rows = []
    for c in cases:
        if not c.mem or not c.wants("expiry") or c.peer == "ref":
            continue
        res = run_worker({"what": "expiry", "case": c.id, "n": cfg.expiry_keys}, plugins)
        res.update(case=c.id, default=c.default)
        rows.append(res)
        print(f"  expiry {c.id}: {res}", file=sys.stderr)
    return rows

# --------------------------------------------------------------------------- section: refs


def _parse_rb(out: str) -> dict[str, float]:
    res = {}
    for line in out.replace("\r", "\n").splitlines():
        m = re.match(r"\s*(.+?):\s+([\d.]+) requests per second", line)
        if m:
            res[m.group(1).strip()] = float(m.group(2))
    return res


def bench_refs(cfg: Config, url: Optional[str]):
    """Micro-references that do not fit the hit(key) shape, plus redis-benchmark (C client).
    The call-shaped floors (noop, dict, fixed-window floor, redis-py INCR/EVALSHA) are
    'ref/...' rows of the main tables, measured interleaved with the peers."""
    out = {"python": [], "redis_py": [], "redis_benchmark": []}
    one_key = ["k"] * cfg.mem_n
    spread = [f"user:{i % cfg.mem_keys}" for i in range(cfg.mem_n)]

    def inline_dict(keys):
        d = {}
        t0 = time.perf_counter_ns()
        for k in keys:
            d[k] = d.get(k, 0) + 1
        return time.perf_counter_ns() - t0

    py = out["python"]
    py.append({"name": "bare dict increment, inline `d[k] = d.get(k, 0) + 1` (no call)",
               "one_key": med([inline_dict(one_key) / len(one_key) for _ in range(cfg.reps)]),
               "spread": med([inline_dict(spread) / len(spread) for _ in range(cfg.reps)])})
    n = cfg.mem_n
    for name, fn in (("time.monotonic()", time.monotonic), ("time.time()", time.time)):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        py.append({"name": f"{name} call", "one_key": (time.perf_counter_ns() - t0) / n})
    for name, lock in (("threading.Lock", threading.Lock()), ("threading.RLock", threading.RLock())):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            with lock:
                pass
        py.append({"name": f"{name} `with lock: pass`", "one_key": (time.perf_counter_ns() - t0) / n})

    if not url:
        return out
    r = redis_client(url)
    r.flushdb()
    N = cfg.redis_n
    samples = []
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(N):
            r.ping()
        samples.append((time.perf_counter_ns() - t0) / N / 1000)
    out["redis_py"].append({"name": "redis-py sync PING", "us": med(samples), "per_s": 1e6 / med(samples)})

    u = urlparse(url)
    base = ["redis-benchmark", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379),
            "--dbnum", (u.path.strip("/") or "0"), "-q"]
    esha = r.script_load(INCR_LUA)
    runs = []
    for conc, pipe in (("1", "1"), ("1", "16"), ("50", "1")):
        extra = ["-c", conc, "-P", pipe]
        runs.append((f"-c {conc} -P {pipe}", base + ["-n", str(cfg.bench_n), "-t", "set,get,incr"] + extra))
        runs.append((f"-c {conc} -P {pipe}", base + ["-n", str(cfg.bench_eval_n)] + extra
                     + ["eval", INCR_LUA, "1", "k"]))
        runs.append((f"-c {conc} -P {pipe}", base + ["-n", str(cfg.bench_eval_n)] + extra
                     + ["evalsha", esha, "1", "k"]))
    for label, cmd in runs:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            for test, rps in _parse_rb(p.stdout).items():
                test = "EVAL(incr)" if test.startswith("eval ") else \
                       "EVALSHA(incr)" if test.startswith("evalsha") else test
                out["redis_benchmark"].append({"test": test, "mode": label, "per_s": rps,
                                               "cmd": shlex.join(cmd)})
        except FileNotFoundError:
            out["redis_benchmark"].append({"test": "redis-benchmark not found", "mode": label})
            break
    r.flushdb()
    return out

# --------------------------------------------------------------------------- profile


def run_profile(case: Case, backend: str, n: int, url: str, limit: int = HIGH_LIMIT):
    import cProfile
    import pstats
    h = case.mem(limit, WINDOW_S) if backend == "mem" else case.redis(limit, WINDOW_S, url)
    h.hit("k")
    keys = ["k"] * n
    prof = cProfile.Profile()
    prof.enable()
    time_loop(h.hit, keys)
    prof.disable()
    h.close()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)

# --------------------------------------------------------------------------- report


def versions(url: Optional[str]) -> dict:
    v = {"python": sys.version.split()[0], "platform": platform.platform(),
         "cpus": os.cpu_count()}
    with contextlib.suppress(Exception):
        with open("/proc/cpuinfo") as f:
            v["cpu"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    for dist in ["limits", "pyrate-limiter", "throttled-py", "redis", "hiredis", "deprecated",
                 "packaging", "typing_extensions", "wrapt"] + list(PEER_DISTRIBUTIONS.values()):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            v[dist] = importlib.metadata.version(dist)
    if url:
        with contextlib.suppress(Exception):
            v["redis-server"] = redis_client(url).info("server")["redis_version"]
    with contextlib.suppress(Exception):
        v["redis-benchmark"] = subprocess.run(["redis-benchmark", "--version"], capture_output=True,
                                              text=True).stdout.strip()
    return v


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def name_of(row):
    return row["case"] + (" *" if row.get("default") else "")


def render(res: dict, cfg: Config, argv_base: str) -> str:
    md = ["# peerbench results", ""]
    v = res["versions"]
    md += ["## Environment and versions", "",
           table(["component", "version"], [(k, v[k]) for k in v]), "",
           f"Config: `{json.dumps(asdict(cfg))}`", "",
           "`*` marks the algorithm the peer uses by default.", ""]
    for peer, note in PEER_NOTES.items():
        md.append(f"- **{peer}**: {note}")
    md.append("")
    cmd = lambda s: f"Reproduce: `{argv_base} --sections {s}`"  # noqa: E731

    if "mem" in res:
        md += ["## 1. In-memory decision cost (single thread, ns/decision, median of "
               f"{cfg.reps}; min-max in brackets)", "",
               f"one key: {cfg.mem_n:,} hits, limit {HIGH_LIMIT:,}/60 s (nothing denied). "
               f"spread: {cfg.mem_n:,} hits round-robin over {cfg.mem_keys:,} keys (each key "
               f"created then hit again). deny path: {cfg.mem_n:,} hits on one key with "
               f"limit 100/60 s (all but 100 denied). Fresh limiter per repetition.", ""]
        rows = []
        for r in res["mem"]:
            if "error" in r:
                rows.append((name_of(r), r["error"], "", "", ""))
                continue
            f = lambda k: f"{fmt_int(r[k])} ({fmt_int(r[k + '_spread'][0])}-{fmt_int(r[k + '_spread'][1])})"  # noqa: E731
            rows.append((name_of(r), f("one_key"), f("spread"), f("deny_path"),
                         r.get("denied_in_verify", "")))
        md += [table(["peer/algorithm", "one key", f"{cfg.mem_keys // 1000}k keys", "deny path",
                      "denied in 2k-hit check (want 0)"], rows), "", cmd("mem"), ""]
    if "redis" in res:
        md += [f"## 2. Sync Redis (single thread, {cfg.redis_n:,} hits on one key, "
               f"median of {cfg.redis_reps})", "",
               "round trips = client socket writes per decision; server cmds = INFO commandstats "
               "calls per decision (Lua-internal redis.call()s included).", ""]
        rows = []
        for r in res["redis"]:
            if "error" in r:
                rows.append((r["case"], r["error"], "", "", "", ""))
                continue
            rows.append((r["case"], f"{fmt_f(r['us'])} ({fmt_f(r['us_spread'][0])}-{fmt_f(r['us_spread'][1])})",
                         fmt_int(1e6 / r["us"]), fmt_f(r["round_trips"], 2), fmt_f(r["server_cmds"], 2),
                         ", ".join(f"{k} {v:g}" for k, v in r["cmds"].items())))
        md += [table(["peer/algorithm", "us/decision", "decisions/s", "round trips",
                      "server cmds", "commands per decision"], rows), "", cmd("redis"), ""]
    if "async" in res:
        md += [f"## 3. Async Redis ({cfg.async_tasks} asyncio tasks on one key, {cfg.async_n:,} "
               f"decisions, median of {cfg.async_reps})", ""]
        rows = [(r["case"], r.get("error") or fmt_int(r["per_s"]), fmt_int(r.get("per_s_1task")),
                 fmt_f(r["per_s"] / r["per_s_1task"], 2) if "per_s_1task" in r else "")
                for r in res["async"]]
        md += [table(["peer/algorithm", f"decisions/s ({cfg.async_tasks} tasks)",
                      "decisions/s (1 task)", "speed-up from concurrency"], rows), "", cmd("async"), ""]
    if "race" in res:
        md += [f"## 4. Correctness under concurrency (limit {cfg.race_limit}/{cfg.race_window} s, "
               f"{cfg.race_total:,} attempts on one fresh key, {cfg.race_trials} trials)", "",
               f"Admitted count, min-max over trials. Exact = {cfg.race_limit} for window algorithms; "
               "refill algorithms may legitimately add the tokens refilled during the race. "
               "'over' = worst (admitted - bound); positive = over-admission, negative = "
               f"under-admission. Threads: {cfg.race_threads} (GIL switch interval 1 us); "
               f"processes: {cfg.race_procs} (spawned, own client each); async: "
               f"{cfg.async_tasks} asyncio tasks.", ""]
        rows = []
        for r in res["race"]:
            cells = []
            for m in ("mem_threads", "redis_threads", "redis_procs", "redis_async"):
                x = r.get(m)
                if x is None:
                    cells.append("-")
                elif "error" in x:
                    cells.append("ERROR " + x["error"])
                else:
                    s = f"{x['min']}-{x['max']} (over {x['over_max']:+d})"
                    if x["errors"]:
                        s += " exceptions: " + "; ".join(x["errors"])
                    cells.append(s)
            rows.append((r["case"], r["kind"], *cells))
        md += [table(["peer/algorithm", "kind", f"memory, {cfg.race_threads} threads",
                      f"Redis, {cfg.race_threads} threads", f"Redis, {cfg.race_procs} processes",
                      f"Redis, {cfg.async_tasks} async tasks"], rows), ""]
        total = cfg.race_total * cfg.race_threads
        md += [f"### 4a. Spurious denials ({cfg.race_threads} threads, {total:,} attempts, limit "
               f"{HIGH_LIMIT:,} so every denial is wrong; default GIL switch interval)", ""]
        rows = []
        for r in res["race"]:
            cells = []
            for m in ("mem_threads_spurious", "redis_threads_spurious"):
                x = r.get(m)
                if x is None:
                    cells.append("-")
                elif "error" in x:
                    cells.append("ERROR " + x["error"])
                else:
                    cells.append(f"{x['denied']:,} / {x['of']:,}"
                                 + (" exceptions: " + "; ".join(x["errors"]) if x["errors"] else ""))
            rows.append((r["case"], *cells))
        md += [table(["peer/algorithm", "memory: denied", "Redis: denied"], rows), "", cmd("race"), ""]
    if "retry" in res:
        md += ["## 4b. Retry-after honesty (limit 5 per 2 s)", "",
               "Exhaust a key, take the retry-after the peer reports for the denied hit, then probe "
               "at 0.8 x retry-after (a tight, honest value => denied) and at retry-after + 30 ms "
               "(=> admitted). 'early admitted' = retry-after overstated; 'late denied' = "
               "understated. Ideal values: log/sliding ~2.0 s, fixed window = time to the window "
               "end (<= 2 s), refill (token/GCRA/leaky) 0.4 s = one token.", ""]
        rows = []
        for r in res["retry"]:
            cells = []
            for m in ("mem", "redis"):
                x = r.get(m)
                if x is None:
                    cells.append("-")
                elif "error" in x:
                    cells.append("ERROR " + x["error"])
                elif not x["ra"]:
                    cells.append("n/a (no retry-after)")
                else:
                    n = x["trials"]
                    s = (f"{min(x['ra']):.3f}-{max(x['ra']):.3f} s; early admitted "
                         f"{x['early_admitted']}/{n}; late admitted {x['late_admitted']}/{n}")
                    if x["anomaly"]:
                        s += " ANOMALY: " + "; ".join(x["anomaly"])
                    cells.append(s)
            rows.append((r["case"], r["kind"], *cells))
        md += [table(["peer/algorithm", "kind", "memory: retry-after range; probes",
                      "Redis: retry-after range; probes"], rows), "", cmd("retry"), ""]
    if "rss" in res:
        md += [f"## 5a. Memory: RSS growth after {cfg.rss_keys:,} distinct keys hit once (limit 100/60 s)", ""]
        rows = []
        for r in res["rss"]:
            if "error" in r:
                rows.append((name_of(r), r["error"], "", "", ""))
                continue
            rows.append((name_of(r), f"{r['delta'] / 2**20:,.0f} MiB", fmt_int(r["bytes_per_key"]),
                         fmt_int(r["ns_per_new_key"]), ", ".join(f"{k}={v:,}" for k, v in r["size"].items())))
        md += [table(["peer/algorithm", "RSS growth", "bytes/key", "ns per new-key hit",
                      "retained entries"], rows), "", cmd("rss"), ""]
    if "expiry" in res:
        md += [f"## 5b. Expired-key cleanup ({cfg.expiry_keys:,} keys, 1 s window, sleep 3 s, "
               "trigger cleanup)", ""]
        rows = []
        for r in res["expiry"]:
            if "error" in r:
                rows.append((name_of(r), r["error"], "", "", ""))
                continue
            sz = lambda s: ", ".join(f"{k}={v:,}" for k, v in s["size"].items())  # noqa: E731
            mb = lambda s: f"{(s['rss'] - r['rss_base']) / 2**20:,.1f}"  # noqa: E731
            rows.append((name_of(r), sz(r["after_hits"]) + f" ({mb(r['after_hits'])} MiB)",
                         sz(r["after_sleep"]) + f" ({mb(r['after_sleep'])} MiB)",
                         sz(r["after_cleanup"]) + f" ({mb(r['after_cleanup'])} MiB)", r["cleanup"]))
        md += [table(["peer/algorithm", "after hits (RSS growth)", "after 3 s sleep",
                      "after cleanup", "cleanup trigger used"], rows), "", cmd("expiry"), ""]
    if "refs" in res:
        rf = res["refs"]
        md += ["## 6. Physical-limit references", "",
               "The call-shaped floors (`ref/...` rows) are in the tables above, measured interleaved "
               "with the peers. Below: micro-costs every limiter pays, and the C client.", "",
               table(["reference", "ns/op one key", f"ns/op {cfg.mem_keys // 1000}k keys"],
                     [(x["name"], fmt_f(x.get("one_key")), fmt_f(x.get("spread"))) for x in rf["python"]]),
               ""]
        if rf["redis_py"]:
            md += [table(["redis-py reference", "us/op", "ops/s"],
                         [(x["name"], fmt_f(x["us"]), fmt_int(x["per_s"])) for x in rf["redis_py"]]), ""]
        if rf["redis_benchmark"]:
            md += [table(["redis-benchmark", "mode", "requests/s", "command"],
                         [(x["test"], x["mode"], fmt_int(x.get("per_s")), f"`{x.get('cmd', '')}`")
                          for x in rf["redis_benchmark"]]), ""]
        md += [cmd("refs"), ""]
    return "\n".join(md)

# --------------------------------------------------------------------------- main


ALL_SECTIONS = ["mem", "redis", "async", "race", "retry", "rss", "expiry", "refs"]
ALIASES = {"pyrate": "pyrate-limiter", "pyrate_limiter": "pyrate-limiter", "throttled": "throttled-py"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", action="append", default=[],
                    help="peer name(s) to run (repeatable or comma-separated): limits, "
                         "pyrate-limiter, throttled-py, or a plugin's peer; refs always run")
    ap.add_argument("--algo", action="append", default=[], help="restrict to these algorithm names")
    ap.add_argument("--quick", action="store_true", help="small N / fewer repetitions (smoke run)")
    ap.add_argument("--sections", default=",".join(ALL_SECTIONS),
                    help=f"comma-separated subset of {ALL_SECTIONS}")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15",
                    help="Redis to use (its DB is FLUSHed!); 'none' skips Redis sections")
    ap.add_argument("--out", default=None, help="markdown output (default: print only)")
    ap.add_argument("--json", default=None, help="raw results as JSON")
    ap.add_argument("--plugin", action="append", default=[], help="python file that calls register()")
    ap.add_argument("--no-refs", action="store_true", help="leave out the 'ref/...' floor rows")
    ap.add_argument("--profile", metavar="PEER/ALGO", help="cProfile one case instead of benchmarking")
    ap.add_argument("--backend", choices=["mem", "redis"], default="mem", help="for --profile")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    load_peers(args.plugin)
    cfg = QUICK if args.quick else Config()
    url = None if args.redis_url.lower() == "none" else args.redis_url

    if args._worker:
        spec = json.loads(args._worker)
        case = find_case(spec["case"])
        res = worker_rss(case, spec["n"], spec.get("opts", {})) if spec["what"] == "rss" \
            else worker_expiry(case, spec["n"])
        print(json.dumps(res))
        os._exit(0)   # don't wait for peers' non-daemon timer threads

    if args.profile:
        run_profile(find_case(args.profile), args.backend, 50_000 if args.backend == "mem" else 5_000, url)
        return

    only = {ALIASES.get(p, p) for o in args.only for p in o.split(",") if p}
    algos = {a for o in args.algo for a in o.split(",") if a}
    cases = [c for c in CASES if (not only or c.peer in only) and (not algos or c.algo in algos)
             and c.peer != "ref"]
    if not args.no_refs:
        cases = [c for c in CASES if c.peer == "ref"] + cases
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        ap.error(f"unknown sections {unknown}")
    if url:
        try:
            redis_client(url).ping()
        except Exception as e:  # noqa: BLE001
            print(f"[peerbench] Redis at {url} unreachable ({e}); skipping Redis sections", file=sys.stderr)
            url = None

    res = {"versions": versions(url)}
    t_start = time.time()
    for s in sections:
        print(f"[peerbench] section {s} ...", file=sys.stderr)
        t0 = time.time()
        if s == "mem":
            res[s] = bench_mem(cases, cfg)
        elif s == "redis" and url:
            res[s] = bench_redis(cases, cfg, url)
        elif s == "async" and url:
            res[s] = bench_async(cases, cfg, url)
        elif s == "race":
            res[s] = bench_race(cases, cfg, url, args.plugin)
        elif s == "retry":
            res[s] = bench_retry(cases, cfg, url)
        elif s == "rss":
            res[s] = bench_rss(cases, cfg, args.plugin)
        elif s == "expiry":
            res[s] = bench_expiry(cases, cfg, args.plugin)
        elif s == "refs":
            res[s] = bench_refs(cfg, url)
        print(f"[peerbench] section {s} took {time.time() - t0:.0f} s", file=sys.stderr)
    res["elapsed_s"] = time.time() - t_start

    base = "python peerbench.py" + (" --quick" if args.quick else "")
    if args.only:
        base += " --only " + ",".join(sorted(only))
    if algos:
        base += " --algo " + ",".join(sorted(algos))
    for p in args.plugin:
        base += f" --plugin {p}"
    if args.redis_url != "redis://127.0.0.1:6379/15":
        base += f" --redis-url {args.redis_url}"
    md = render(res, cfg, base)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    sys.stdout.flush()
    os._exit(0)   # peers leave non-daemon timer threads behind (limits' MemoryStorage)


if __name__ == "__main__":
    main()

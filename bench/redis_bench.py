"""ratewarden's Redis store against bare redis-py and the peers' Redis storages, in one process.

    bench/.venv/bin/python bench/redis_bench.py [--url redis://127.0.0.1:6379/15] [--n 4000] [--reps 5]

Sections (one connection per limiter for the sync ones; Redis db 15; keys under a per-run
token, deleted at the end, no FLUSHDB):

1. sync, one key and one window per decision, per algorithm, microseconds per decision
   (median of interleaved repetitions), next to bare redis-py ``EVALSHA`` of a trivial script
   and the same algorithm in each peer (limits, throttled-py, pyrate-limiter, via
   bench/peerbench.py's adapters) -- ratio to bare EVALSHA;
2. three windows on one key (gcra) against one window: one round trip either way;
3. async, 50 concurrent tasks: decisions per second, ratewarden (auto-pipelining) vs peers;
4. Redis commands per decision for each row, counted with MONITOR restricted to db 15:
   ``client`` = commands the client sent (round trips when not pipelined), ``lua`` = the
   redis.call()s inside the scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import redis

from ratewarden import AsyncLimiter, Limiter

HIGH = 1_000_000  # per hour: nothing is denied during the run (and inside the 2^53 bound)
WINDOW_S = 3600
KEYS = 1000
PEER_ALGOS = {
    "fixed-window": ["limits/FixedWindow", "throttled-py/FixedWindow", "pyrate-limiter/FixedWindow"],
    "sliding-window": ["limits/SlidingWindowCounter", "throttled-py/SlidingWindow"],
    "sliding-log": ["limits/MovingWindow", "pyrate-limiter/SlidingWindowLog"],
    "gcra": ["throttled-py/GCRA", "pyrate-limiter/GCRA"],
    "token-bucket": ["throttled-py/TokenBucket"],
    "concurrency": [],
    "quota": [],
}
RATE = {a: ("24000000/day" if a == "quota" else f"{HIGH}/hour") for a in PEER_ALGOS}


def load_peer_cases() -> dict[str, object]:
    try:
        import peerbench as pb
    except ImportError as e:  # pragma: no cover - bench without the harness
        print(f"[redis_bench] peers unavailable: {e}", file=sys.stderr)
        return {}
    pb.load_peers([])
    return {c.id: c for c in pb.CASES if c.peer != "ref" and c.redis is not None}


class Monitor:
    """Counts commands on db ``db`` through MONITOR: client commands by name, and Lua ones."""

    def __init__(self, url: str, needle: str = "") -> None:
        """``needle``: count only client commands whose line contains it (the subject's keys),
        so background commands of other subjects (pyrate-limiter's leak threads) are not counted."""
        self.needle = needle.encode()
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 6379
        self.db = (u.path or "/0").strip("/") or "0"
        self.client: Counter[str] = Counter()
        self.lua: Counter[str] = Counter()

    def __enter__(self) -> Monitor:
        self.sock = socket.create_connection((self.host, self.port))
        self.sock.sendall(b"MONITOR\r\n")
        self.buf = b""
        self._read_until(lambda: b"+OK\r\n" in self.buf)
        self.buf = self.buf.split(b"+OK\r\n", 1)[1]
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _read_until(self, cond) -> None:  # type: ignore[no-untyped-def]
        while not cond():
            self.buf += self.sock.recv(65536)

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.buf += data
            *lines, self.buf = self.buf.split(b"\r\n")
            for line in lines:
                # +1700000000.123456 [15 127.0.0.1:5555] "EVALSHA" ...   or   [15 lua] "GET" ...
                if not line.startswith(b"+") or b" [" not in line:
                    continue
                where = line.split(b" [", 1)[1].split(b"]", 1)[0].decode()
                db, _, src = where.partition(" ")
                if db != self.db:
                    continue
                cmd = line.split(b'] "', 1)[1].split(b'"', 1)[0].decode().lower()
                if src == "lua":
                    self.lua[cmd] += 1
                elif self.needle in line:
                    self.client[cmd] += 1

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self.stop = True
        self.thread.join()
        self.sock.close()


def per_decision(counter: Counter[str], n: int) -> str:
    total = sum(counter.values()) / n
    parts = ", ".join(f"{k} {v / n:g}" for k, v in counter.most_common())
    return f"{total:g} ({parts})" if counter else "0"


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--n", type=int, default=4000, help="decisions per repetition (sync)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--async-n", type=int, default=20000)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    url, n = args.url, args.n
    token = uuid.uuid4().hex[:8]
    r = redis.Redis.from_url(url)
    peers = {} if args.no_peers else load_peer_cases()

    # -- build every sync subject: name -> (hit(key) callable, close) -----------------------------
    subjects: dict[str, tuple[object, object]] = {}
    trivial = r.script_load("return 1")
    subjects["bare redis-py EVALSHA (return 1)"] = (lambda k: r.evalsha(trivial, 0), lambda: None)
    for algo, pids in PEER_ALGOS.items():
        lim = Limiter(url, algorithm=algo, key_prefix=f"rwb{token}:", timeout=2.0)
        rate = RATE[algo]
        subjects[f"ratewarden {algo}"] = (lambda k, lim=lim, rate=rate: lim.hit(k, rate), lim)
        for pid in pids:
            case = peers.get(pid)
            if case is not None:
                h = case.redis(HIGH, WINDOW_S, url)
                subjects[pid] = (h.hit, h)
    three = Limiter(url, key_prefix=f"rwb{token}:3:", timeout=2.0)
    subjects["ratewarden gcra, 3 windows on one key"] = (
        lambda k: three.hit(k, "100000/minute;1000000/hour;5000000/day"),
        three,
    )

    # -- sync timing, interleaved repetitions ---------------------------------------------------
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    # every subject its own keys (peers store different types under similar names)
    own = {name: [f"rwb{token}s{i}:{j % KEYS}" for j in range(n)] for i, name in enumerate(subjects)}
    needles = {name: f"rwb{token}s{i}:" for i, name in enumerate(subjects)}
    needles["bare redis-py EVALSHA (return 1)"] = trivial
    for name, (hit, _) in subjects.items():  # warm up: connect, load scripts
        for k in own[name][:200]:
            hit(k)  # type: ignore[operator]
    order = list(subjects)
    rng = random.Random(7)
    for _ in range(args.reps):
        rng.shuffle(order)  # no subject always runs first (or right after a heavy one)
        for name in order:
            hit = subjects[name][0]
            ks = own[name]
            t0 = time.perf_counter_ns()
            for k in ks:
                hit(k)  # type: ignore[operator]
            samples[name].append((time.perf_counter_ns() - t0) / n / 1000)
    cmds: dict[str, str] = {}
    lua: dict[str, str] = {}
    for name, (hit, _) in subjects.items():
        with Monitor(url, needles[name]) as m:
            for k in own[name][:500]:
                hit(k)  # type: ignore[operator]
        cmds[name] = per_decision(m.client, 500)
        lua[name] = per_decision(m.lua, 500)
    for lim in list(subjects.values()):
        obj = lim[1]
        if isinstance(obj, Limiter):
            assert obj.store_errors == 0, "a store error would look like a fast decision"

    bare = median_us(samples["bare redis-py EVALSHA (return 1)"])
    one_gcra = median_us(samples["ratewarden gcra"])
    print(f"# Redis store benchmark ({url}, {n} decisions x {args.reps} reps, {KEYS} keys, one connection)\n")
    print("## sync: one decision = one hit\n")
    print("| subject | us/decision | x bare EVALSHA | client cmds/decision | lua cmds/decision |")
    print("|---|---:|---:|---|---|")
    for name in subjects:
        us = median_us(samples[name])
        print(f"| {name} | {us:.1f} | {us / bare:.2f} | {cmds[name]} | {lua[name]} |")
    print(
        f"\n3 windows on one key / 1 window (gcra): {median_us(samples['ratewarden gcra, 3 windows on one key']) / one_gcra:.2f}x"
    )
    print("\n## sync, by algorithm: ratewarden vs the fastest peer\n")
    print("| algorithm | ratewarden us | fastest peer | peer us | peer / ratewarden |")
    print("|---|---:|---|---:|---:|")
    for algo, pids in PEER_ALGOS.items():
        rw = median_us(samples[f"ratewarden {algo}"])
        got = [(median_us(samples[p]), p) for p in pids if p in samples]
        if got:
            best_us, best = min(got)
            print(f"| {algo} | {rw:.1f} | {best} | {best_us:.1f} | {best_us / rw:.2f} |")
        else:
            print(f"| {algo} | {rw:.1f} | (no peer has it) | - | - |")

    # -- async ----------------------------------------------------------------------------------
    async def run_async(make, tasks: int, total: int, tag: str) -> tuple[float, Counter[str], Counter[str]]:  # type: ignore[no-untyped-def]
        hit, close = await make()
        token_ = f"{token}:{tag}"
        needle = bare_sha[0] if tag == "0" else f"rwa{token_}:"
        per = total // tasks
        await asyncio.gather(*(hit(f"rwa{token_}:{i}") for i in range(tasks)))  # warm up

        async def worker(i: int) -> None:
            for j in range(per):
                await hit(f"rwa{token_}:{(i * per + j) % KEYS}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(tasks)))
        rate = per * tasks / (time.perf_counter() - t0)
        with Monitor(url, needle) as m:
            await asyncio.gather(*(hit(f"rwa{token_}:{i}") for i in range(500)))
        await close()
        return rate, m.client, m.lua

    def rw_async(algo: str):  # type: ignore[no-untyped-def]
        async def make():  # type: ignore[no-untyped-def]
            lim = AsyncLimiter(url, algorithm=algo, key_prefix=f"rwb{token}:", timeout=2.0)
            rate = RATE[algo]

            async def close() -> None:
                assert lim.store_errors == 0
                await lim.aclose()

            return (lambda k: lim.hit(k, rate)), close

        return make

    def peer_async(case):  # type: ignore[no-untyped-def]
        async def make():  # type: ignore[no-untyped-def]
            h = await case.aredis(HIGH, WINDOW_S, url)

            async def close() -> None:
                res = h.close()
                if asyncio.iscoroutine(res):
                    await res

            return h.hit, close

        return make

    bare_sha = [trivial]

    async def bare_async():  # type: ignore[no-untyped-def]
        import redis.asyncio as aioredis

        c = aioredis.Redis.from_url(url)
        sha = await c.script_load("return 1")
        return (lambda k: c.evalsha(sha, 0)), c.aclose

    amakers = {"bare redis.asyncio EVALSHA (return 1)": bare_async, "ratewarden gcra": rw_async("gcra")}
    amakers["ratewarden fixed-window"] = rw_async("fixed-window")
    for pid in ("limits/FixedWindow", "throttled-py/GCRA", "throttled-py/TokenBucket", "pyrate-limiter/GCRA"):
        case = peers.get(pid)
        if case is not None and getattr(case, "aredis", None) is not None:
            amakers[pid] = peer_async(case)
    results: dict[str, list[float]] = {k: [] for k in amakers}
    counts: dict[str, tuple[Counter[str], Counter[str]]] = {}
    for _ in range(3):
        for i, (name, make) in enumerate(amakers.items()):
            rate, cc, lc = asyncio.run(run_async(make, args.tasks, args.async_n, str(i)))
            results[name].append(rate)
            counts[name] = (cc, lc)
    print(f"\n## async: {args.tasks} concurrent tasks, {args.async_n} decisions (median of 3)\n")
    print("| subject | decisions/s | x best peer | client cmds/decision | lua cmds/decision |")
    print("|---|---:|---:|---|---|")
    best_peer = max([statistics.median(v) for k, v in results.items() if "/" in k] or [float("nan")])
    for name, v in results.items():
        rate = statistics.median(v)
        cc, lc = counts[name]
        print(f"| {name} | {rate:,.0f} | {rate / best_peer:.2f} | {per_decision(cc, 500)} | {per_decision(lc, 500)} |")

    # -- cleanup --------------------------------------------------------------------------------
    for obj in [s[1] for s in subjects.values()]:
        close = getattr(obj, "close", None)
        if callable(close):
            close()
    doomed = [k for pat in (f"*rwb{token}*", f"*rwa{token}*") for k in r.scan_iter(match=pat, count=1000)]
    for i in range(0, len(doomed), 500):
        r.delete(*doomed[i : i + 500])
    r.close()


if __name__ == "__main__":
    main()

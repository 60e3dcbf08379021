"""Redis at its floor: where the time of one ratewarden decision goes, next to the least any
Lua limiter can do (a script doing exactly TIME + GET + SET) and a bare EVALSHA(incr).

    bench/.venv/bin/python bench/redis_floor.py                  # sync + async + commandstats
    bench/.venv/bin/python bench/redis_floor.py --callgrind      # client instructions per call
    PYTHONPATH=$PWD/src bench/.venv/bin/python bench/redis_floor.py   # a worktree's code

Everything runs against a redis-server of its own on a free port (no persistence; stopped at
the end), never the shared one. Subjects, all on ONE key with a limit that is never reached:

* ``floor``: redis-py ``evalsha`` of a script doing exactly ``TIME``, ``GET``, ``SET .. PX`` and
  returning the 4 integers ratewarden's script returns (async: queued calls merged into one
  script call, as ratewarden's batcher does: one TIME + GET + SET per round trip, 4 integers
  per merged call in the reply);
* ``bare``: redis-py ``evalsha`` of ``return redis.call('INCR', KEYS[1])`` (async: redis-py's
  pool, no batching, as peerbench's reference row);
* ``gcra`` / ``fixed-window``: ``Limiter(url).hit(key, rate, algorithm=...)`` (async:
  ``AsyncLimiter``), as bench/ratewarden_plugin.py calls it;
* async only: the peers' async Redis rows (throttled-py GCRA and TokenBucket, limits
  FixedWindow, pyrate-limiter GCRA) through bench/peerbench.py's adapters.

Figures: sync microseconds per decision (interleaved repetitions: median, min-max), async
decisions per second (50 tasks on one key: median, min-max), the 1-minute load average around
each repetition, and from ``INFO commandstats`` (``CONFIG RESETSTAT`` before each subject) the
script calls and Redis microseconds per decision, plus the commands the scripts ran.
``--callgrind``: instructions executed by the client process per decision under valgrind
(a run of N decisions minus a run of 0, same process set-up), sync and async.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import redis  # noqa: E402
from run import PrivateRedis  # noqa: E402

HIGH = 10**9  # per hour: never reached, and limit x period stays below 2^53 us
RATE = f"{HIGH}/3600 s"
KEY = "floor:k"

#: exactly TIME + GET + SET per call, replying as ratewarden's script does (4 integers per item)
FLOOR_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], now, 'PX', 3600000)
local n = tonumber(ARGV[1] or '1')
local out = {}
for i = 1, 4 * n, 4 do
  out[i] = 1
  out[i + 1] = 0
  out[i + 2] = 3600000000
  out[i + 3] = 0
end
return out
"""
INCR_LUA = "return redis.call('INCR', KEYS[1])"


def load1() -> float:
    return os.getloadavg()[0]


# -- sync subjects: name -> (url -> (hit(key), close())) ---------------------------------------


def sync_floor(url: str) -> tuple[Callable[[str], Any], Callable[[], None]]:
    r = redis.Redis.from_url(url)
    sha = r.script_load(FLOOR_LUA)
    return (lambda k: r.evalsha(sha, 1, k)), r.close


def sync_bare(url: str) -> tuple[Callable[[str], Any], Callable[[], None]]:
    r = redis.Redis.from_url(url)
    sha = r.script_load(INCR_LUA)
    return (lambda k: r.evalsha(sha, 1, k)), r.close


def sync_rw(algo: str) -> Callable[[str], tuple[Callable[[str], Any], Callable[[], None]]]:
    def make(url: str) -> tuple[Callable[[str], Any], Callable[[], None]]:
        from ratewarden import Limiter

        lim = Limiter(url, timeout=2.0)

        def hit(k: str) -> Any:
            return lim.hit(k, RATE, algorithm=algo)

        def close() -> None:
            assert lim.store_errors == 0
            lim.close()

        return hit, close

    return make


SYNC = {
    "floor": sync_floor,
    "bare": sync_bare,
    "gcra": sync_rw("gcra"),
    "fixed-window": sync_rw("fixed-window"),
}


# -- async subjects: peerbench's maker signature (limit, window_s, url) -> Handle --------------


def _pb() -> Any:
    import peerbench as pb

    return pb


async def async_floor(limit: int, window_s: int, url: str) -> Any:
    """The floor with ratewarden's batching idea: one call in flight; the calls queued meanwhile
    are answered by ONE script call (one TIME + GET + SET) that replies 4 integers each."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    sha = await r.script_load(FLOOR_LUA)
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"busy": False, "queue": [], "tasks": set()}

    async def drain() -> None:
        while state["queue"]:
            batch, state["queue"] = state["queue"], []
            reply = await r.evalsha(sha, 1, KEY, len(batch))
            for i, fut in enumerate(batch):
                fut.set_result(reply[4 * i : 4 * i + 4])
            if not state["queue"]:
                await asyncio.sleep(0)  # as ratewarden's batcher: the woken tasks join the next call
        state["busy"] = False

    async def hit(k: str) -> Any:
        if state["busy"]:
            fut = loop.create_future()
            state["queue"].append(fut)
            return await fut
        state["busy"] = True
        try:
            return await r.evalsha(sha, 1, k, 1)
        finally:
            if state["queue"]:
                task = loop.create_task(drain())
                state["tasks"].add(task)
                task.add_done_callback(state["tasks"].discard)
            else:
                state["busy"] = False

    return _pb().Handle(hit=hit, ok=lambda _r: True, close=r.aclose)


async def async_bare(limit: int, window_s: int, url: str) -> Any:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    sha = await r.script_load(INCR_LUA)
    return _pb().Handle(hit=lambda k: r.evalsha(sha, 1, k), ok=lambda _r: True, close=r.aclose)


def async_rw(algo: str) -> Callable[[int, int, str], Any]:
    async def make(limit: int, window_s: int, url: str) -> Any:
        from ratewarden import AsyncLimiter

        lim = AsyncLimiter(url, timeout=2.0)

        async def close() -> None:
            assert lim.store_errors == 0
            await lim.aclose()

        return _pb().Handle(hit=lambda k: lim.hit(k, RATE, algorithm=algo), ok=lambda _r: True, close=close)

    return make


ASYNC: dict[str, Callable[[int, int, str], Any]] = {
    "floor": async_floor,
    "bare": async_bare,
    "gcra": async_rw("gcra"),
    "fixed-window": async_rw("fixed-window"),
}
PEERS = ("throttled-py/GCRA", "throttled-py/TokenBucket", "limits/FixedWindow", "pyrate-limiter/GCRA")


def commandstats(r: redis.Redis) -> dict[str, tuple[int, float]]:
    """command -> (calls, usec) from INFO commandstats."""
    out = {}
    for name, v in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(v["calls"]), float(v["usec"]))
    return out


def run_sync(make: Callable[[str], Any], url: str, n: int) -> float:
    hit, close = make(url)
    for _ in range(200):
        hit(KEY)
    t0 = time.perf_counter()
    for _ in range(n):
        hit(KEY)
    dt = time.perf_counter() - t0
    close()
    return dt / n * 1e6


def spread(v: list[float], nd: int = 1) -> str:
    return f"{statistics.median(v):,.{nd}f} ({min(v):,.{nd}f}-{max(v):,.{nd}f})"


def bench(args: argparse.Namespace, url: str) -> None:
    pb = _pb()
    pb.load_peers([])
    peers = {c.id: c for c in pb.CASES if c.id in PEERS and c.aredis is not None}
    r = redis.Redis.from_url(url)
    loads: list[float] = []

    # sync: interleaved repetitions
    us: dict[str, list[float]] = {k: [] for k in SYNC}
    for _ in range(args.reps):
        for name, make in SYNC.items():
            loads.append(load1())
            r.delete(KEY)
            us[name].append(run_sync(make, url, args.n))
    loads.append(load1())
    print(f"\n## sync, one key: us per decision, median (min-max) of {args.reps} interleaved runs of {args.n}")
    print(f"load average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f}\n")
    print("| subject | us/decision | x floor (median of per-rep ratios) | x bare EVALSHA |")
    print("|---|---:|---:|---:|")
    for name, v in us.items():
        xf = statistics.median(a / b for a, b in zip(v, us["floor"], strict=True))
        xb = statistics.median(a / b for a, b in zip(v, us["bare"], strict=True))
        print(f"| {name} | {spread(v)} | {xf:.2f} | {xb:.2f} |")

    # commandstats: script calls and server microseconds per decision
    print(f"\n## Redis CPU per decision (INFO commandstats after CONFIG RESETSTAT, {args.n} sync decisions)\n")
    print("| subject | evalsha/decision | evalsha us/call | commands inside the script per decision |")
    print("|---|---:|---:|---|")
    for name, make in SYNC.items():
        r.delete(KEY)
        hit, close = make(url)
        hit(KEY)
        r.config_resetstat()
        for _ in range(args.n):
            hit(KEY)
        st = commandstats(r)
        close()
        calls, usec = st.get("evalsha", (0, 0.0))
        inner = ", ".join(
            f"{c} {v[0] / args.n:.2f}" for c, v in sorted(st.items()) if c not in ("evalsha", "config", "info")
        )
        print(f"| {name} | {calls / args.n:.2f} | {usec / max(calls, 1):.2f} | {inner} |")

    # async: 50 tasks on one key
    amakers: dict[str, Any] = dict(ASYNC)
    for pid, c in peers.items():
        amakers[pid] = c.aredis
    rates: dict[str, list[float]] = {k: [] for k in amakers}
    aloads: list[float] = []
    for _ in range(args.reps):
        for name, make in amakers.items():
            aloads.append(load1())
            r.delete(KEY)
            rates[name].append(asyncio.run(pb._async_run(make, url, args.async_n, args.tasks, key=KEY)))
    aloads.append(load1())
    print(f"\n## async, {args.tasks} tasks on one key, {args.async_n} decisions: decisions/s, median (min-max)")
    print(f"load average (1 min) during the runs: {min(aloads):.2f}-{max(aloads):.2f}\n")
    print("| subject | decisions/s | x best peer (per-rep ratios, median) | us/decision |")
    print("|---|---:|---:|---:|")
    peer_names = [p for p in amakers if "/" in p]
    for name, v in rates.items():
        xs = [v[i] / max(rates[p][i] for p in peer_names) for i in range(args.reps)] if peer_names else [0.0]
        print(f"| {name} | {spread(v, 0)} | {statistics.median(xs):.2f} | {1e6 / statistics.median(v):.1f} |")

    print(f"\n## async Redis CPU (INFO commandstats, {args.async_n} decisions, {args.tasks} tasks on one key)\n")
    print("| subject | script calls/decision | decisions/call | script us/call | script us/decision | inside |")
    print("|---|---:|---:|---:|---:|---|")
    for name in ASYNC:
        r.delete(KEY)
        r.config_resetstat()
        asyncio.run(pb._async_run(amakers[name], url, args.async_n, args.tasks, key=KEY))
        st = commandstats(r)
        n = args.async_n // args.tasks * args.tasks + 1
        calls, usec = st.get("evalsha", (0, 0.0))
        sl = st.get("script|load", (0, 0.0))
        inner = ", ".join(
            f"{c} {v[0] / max(calls, 1):.2f}"
            for c, v in sorted(st.items())
            if c not in ("evalsha", "config", "info", "script|load", "script", "ping", "client|setinfo")
        )
        print(
            f"| {name} | {calls / n:.3f} | {n / max(calls, 1):.1f} | {usec / max(calls, 1):.1f} | "
            f"{usec / n:.2f} | per call: {inner} |"
        )
        del sl
    r.close()


# -- callgrind: client instructions per decision -----------------------------------------------


def child(mode: str, name: str, n: int, url: str) -> None:
    """One subject, set up, warmed (200 calls), then ``n`` more decisions: run under callgrind."""
    if mode == "sync":
        hit, close = SYNC[name](url)
        for _ in range(200):
            hit(KEY)
        for _ in range(n):
            hit(KEY)
        close()
        return
    pb = _pb()

    async def go() -> None:
        h = await ASYNC[name](HIGH, 3600, url)
        per = max(n // 50, 0)

        async def worker() -> None:
            for _ in range(per):
                await h.hit(KEY)

        for _ in range(4):  # warm: 200 decisions in 50 tasks
            await asyncio.gather(*(h.hit(KEY) for _ in range(50)))
        await asyncio.gather(*(worker() for _ in range(50)))
        res = h.close()
        if asyncio.iscoroutine(res):
            await res

    del pb
    asyncio.run(go())


def instructions(mode: str, name: str, n: int, url: str) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__]
        cmd += ["--child", mode, name, str(n), "--url", url]
        subprocess.run(
            cmd,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out) as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
        assert m is not None
        return int(m.group(1))


def callgrind(args: argparse.Namespace, url: str) -> None:
    print(f"\n## client instructions per decision (callgrind: a run of {args.cg_n} minus a run of 0)\n")
    print("| mode | subject | instructions/decision |")
    print("|---|---|---:|")
    for mode in ("sync", "async"):
        for name in SYNC:
            a = instructions(mode, name, args.cg_n, url)
            b = instructions(mode, name, 0, url)
            print(f"| {mode} | {name} | {(a - b) / args.cg_n:,.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="sync decisions per run")
    ap.add_argument("--async-n", type=int, default=20000, help="async decisions per run")
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--callgrind", action="store_true", help="client instructions per decision instead")
    ap.add_argument("--cg-n", type=int, default=2000)
    ap.add_argument("--url", default="", help="a Redis to use (default: a private redis-server)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "NAME", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, name, n = args.child
        child(mode, name, int(n), args.url)
        return
    server = None if args.url else PrivateRedis(slowlog=False)
    url = args.url or server.url  # type: ignore[union-attr]
    try:
        import ratewarden

        print(f"ratewarden from {os.path.dirname(ratewarden.__file__)}; redis-py {redis.__version__}")
        if args.callgrind:
            callgrind(args, url)
        else:
            bench(args, url)
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

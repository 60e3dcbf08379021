"""bench/run.py - ratewarden next to limits, pyrate-limiter and throttled-py, one command, one run.

Set up once (a venv of its own, so the peers' pins never touch the project's .venv):

    python3 -m venv bench/.venv && bench/.venv/bin/pip install -e '.[redis]' -r bench/requirements.txt

Run (from the repository root; the redis/async sections use a redis-server the run starts on a free port
and stops at the end, never a shared one, since peerbench FLUSHes its database):

    bench/.venv/bin/python bench/run.py            # full run, ~20-30 min on 2 shared cores
    bench/.venv/bin/python bench/run.py --quick    # smoke run, a few minutes

What it does, all inside one run (this machine drifts by 30-40 % between runs, so only ratios
measured in the same run mean anything):

1. runs the reference harness bench/peerbench.py with bench/ratewarden_plugin.py (sections mem,
   race, retry, rss, expiry; redis and async when ratewarden.storage.redis is importable and a
   Redis answers). Its full tables are kept at the end of the results file.
2. measures what peerbench lacks: two windows on one key against one window, SQLite decisions/s
   (one process, and four processes on one file, with an exactness check), and sliding-log's cost
   as its log grows.
3. prints a summary of markdown tables with ratios against the fastest peer of the same run and
   a "targets" column (met/missed), and writes everything to bench/results.md (gitignored).

The summary's targets: one key and 100k keys at most 1/3 of the fastest peer's ns/decision; two
windows at most 1.5x one window; at most 200 bytes per live gcra key (RSS growth over 1,000,000
keys in a fresh subprocess); SQLite at least 10,000 decisions/s in one process; every algorithm's
retry_after honest (0.8 x retry_after denied, retry_after + 30 ms admitted); no over-admission.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import peerbench as pb  # noqa: E402  (bench/ is not a package)

from ratewarden import Limiter  # noqa: E402

PLUGIN = os.path.join(HERE, "ratewarden_plugin.py")
PEERS = ("limits", "pyrate-limiter", "throttled-py")
RW = "ratewarden"
ALGOS = ("gcra", "fixed-window", "sliding-window", "sliding-log", "token-bucket")
WINDOW_ALGOS = {"fixed-window", "sliding-window", "sliding-log"}
ONE_THIRD = 1 / 3


def has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def redis_store_ready() -> bool:
    """True once ratewarden.storage.redis provides open_redis (a half-written package does not count)."""
    import importlib

    if not has_module("redis"):
        return False
    try:
        mod = importlib.import_module("ratewarden.storage.redis")
    except Exception:
        return False
    return callable(getattr(mod, "open_redis", None))


def git_state() -> str:
    """Commit of the measured source, and whether src/ had uncommitted changes (others work in this tree)."""
    root = os.path.dirname(HERE)
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
        ).stdout
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "src"], check=False, capture_output=True, text=True
        )
    except OSError:
        return "unknown (no git)"
    n = len(dirty.stdout.splitlines())
    return f"commit {head.strip()}" + (f" plus {n} uncommitted file(s) under src/ at the start" if n else "")


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def log(msg: str) -> None:
    print(f"[run] {msg}", file=sys.stderr, flush=True)


def fmt(x: float | None, nd: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}"


# --------------------------------------------------------------------------- step 1: peerbench


def run_peerbench(args: argparse.Namespace, sections: list[str], url: str | None, workdir: str) -> tuple[dict, str]:
    js, md = os.path.join(workdir, "peerbench.json"), os.path.join(workdir, "peerbench.md")
    cmd = [sys.executable, os.path.join(HERE, "peerbench.py"), "--plugin", PLUGIN, "--sections", ",".join(sections)]
    cmd += ["--json", js, "--out", md, "--redis-url", url or "none"]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", args.only]
    env = dict(os.environ, RATEWARDEN_BENCH_SKIP=",".join(args.skip))
    log(f"peerbench: {' '.join(cmd[1:])}  (RATEWARDEN_BENCH_SKIP={env['RATEWARDEN_BENCH_SKIP']})")
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
    if p.returncode or not os.path.exists(js):
        raise SystemExit(f"peerbench failed (rc={p.returncode})")
    with open(js) as f, open(md) as g:
        return json.load(f), g.read()


# --------------------------------------------------------------------------- step 2: own measurements


def interleaved(variants: dict[str, Any], keys: list[str], reps: int) -> dict[str, list[float]]:
    """ns/decision samples per variant; each variant is a factory of hit(key); reps interleaved."""
    out: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, make in variants.items():
            hit = make()
            gc.collect()
            out[name].append(pb.time_loop(hit, keys) / len(keys))
    return out


def two_windows(cfg: pb.Config) -> list[dict[str, Any]]:
    """gcra (and the other cheap algorithms): one window vs "L/60 s;L2/3600 s" on the same keys."""
    big = pb.HIGH_LIMIT
    one, two = f"{big}/60 s", f"{big}/60 s;{big * 10}/3600 s"
    workloads = {
        "one key": ["k"] * cfg.mem_n,
        f"{cfg.mem_keys // 1000}k keys": [f"user:{i % cfg.mem_keys}" for i in range(cfg.mem_n)],
    }
    rows = []
    for algo in ("gcra", "fixed-window", "sliding-window", "token-bucket"):

        def make(spec: str, algo: str = algo) -> Any:
            def factory() -> Any:
                lim = Limiter("memory://", max_keys=4_000_000)
                return lambda k: lim.hit(k, spec, algorithm=algo)

            return factory

        for wl, keys in workloads.items():
            s = interleaved({"one": make(one), "two": make(two)}, keys, cfg.reps)
            a, b = pb.med(s["one"]), pb.med(s["two"])
            rows.append({"algo": algo, "workload": wl, "one": a, "two": b, "ratio": b / a})
            log(f"two windows {algo} {wl}: {a:,.0f} -> {b:,.0f} ns ({b / a:.2f}x)")
    return rows


def sliding_log_growth(quick: bool, url: str | None) -> dict[str, Any]:
    """sliding-log's cost per hit at a given log length, in memory, SQLite and Redis: one key's log is
    filled to n entries (n hits under a limit never reached), then the next hits are timed, next to gcra
    on the same store in the same loop; plus the Redis exactness race of sliding-log."""
    spec = f"{pb.HIGH_LIMIT}/3600 s"
    sizes = (200, 2_000) if quick else (200, 2_000, 20_000)
    timed = {"memory": 5_000, "sqlite": 2_000, "redis": 1_000}
    out: dict[str, Any] = {"rows": [], "race": None}
    tmp = tempfile.mkdtemp(prefix="rw-growth-")
    stores = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/g.db"}
    if url:
        stores["redis"] = url
    try:
        for store, target in stores.items():
            # fill one log per (size, algorithm) first, then time them in interleaved rounds (median
            # of 3): the machine's load moves between minutes, not within a round
            lims: dict[tuple[int, str], Any] = {}
            for n in sizes:
                for algo in ("gcra", "sliding-log"):
                    lim = Limiter(target, key_prefix=f"g{time.time_ns()}:", timeout=5.0)
                    hit = functools.partial(lim.hit, rates=spec, algorithm=algo)
                    for _ in range(n):  # fill the log to n entries
                        hit("k")
                    lims[n, algo] = (lim, hit)
            m = timed[store]
            samples: dict[tuple[int, str], list[float]] = {k: [] for k in lims}
            for _ in range(3):
                for k, (_lim, hit) in lims.items():
                    gc.collect()
                    samples[k].append(pb.time_loop(hit, ["k"] * m) / m)
            for n in sizes:
                res: dict[str, Any] = {"store": store, "n": n}
                for algo in ("gcra", "sliding-log"):
                    lim, _ = lims[n, algo]
                    res[algo] = pb.med(samples[n, algo])
                    res[algo + "_errors"] = lim.store_errors
                    if algo == "sliding-log":
                        left = lim.peek("k", spec, algorithm=algo, cost=0).remaining
                        res["allowed"] = left == pb.HIGH_LIMIT - n - 3 * m
                out["rows"].append(res)
                log(f"sliding-log growth ({store}) n={n}: {res}")
            for lim, _ in lims.values():
                lim.reset("k")
                lim.close()
        if url:
            lim = Limiter(url, timeout=2.0, key_prefix=f"race{time.time_ns()}:")
            h = pb.Handle(
                hit=functools.partial(lim.hit, rates="100/60 s", algorithm="sliding-log"), ok=lambda d: d.allowed
            )
            got = []
            for _ in range(2):
                pb.avoid_window_edge(60)
                got.append(pb._race_threads(h, f"race:{time.time_ns()}", 8, 1_000)[0])
            out["race"] = {"admitted": got, "errors": lim.store_errors}
            lim.close()
            log(f"sliding-log Redis race: {out['race']}")
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"[:200]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class PrivateRedis:
    """A redis-server of the benchmark's own on a free port (peerbench FLUSHes the database it is
    given, and the Redis at 6379 is shared: it is never used here). No persistence."""

    def __init__(self, slowlog: bool = True) -> None:
        import socket

        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="rw-bench-redis-")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                # every call in the slow log (bench/redis_worst.py reads it); off where the
                # server's own CPU per call is the figure (bench/redis_floor.py)
                *(["--slowlog-log-slower-than", "0", "--slowlog-max-len", "10000"] if slowlog else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        for _ in range(100):
            try:
                pb.redis_client(self.url).ping()
                return
            except Exception:
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"the private redis-server on port {self.port} did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def rss_worker(n: int, spec: str, algo: str) -> dict[str, Any]:
    """In a fresh process: RSS growth over n distinct keys hit once, with a rate whose states stay live for
    the whole loop (at peerbench's 100/60 s a refill algorithm's state may expire after 0.6 s)."""
    lim = Limiter("memory://", max_keys=4_000_000)
    for i in range(100):
        lim.hit(f"warm:{i}", spec, algorithm=algo)
    gc.collect()
    before = pb.rss_bytes()
    hit = functools.partial(lim.hit, rates=spec, algorithm=algo)
    t0 = time.perf_counter()
    for i in range(n):
        hit(f"user:{i}")
    dt = time.perf_counter() - t0
    gc.collect()
    after = pb.rss_bytes()
    live = len(lim.store)
    return {
        "n": n,
        "spec": spec,
        "algo": algo,
        "delta": after - before,
        "live": live,
        "bytes_per_live_key": (after - before) / max(1, live - 100),
        "ns_per_new_key": dt / n * 1e9,
    }


def live_rss(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for algo in ("gcra", "fixed-window"):
        spec = json.dumps({"n": n, "spec": "100/86400 s", "algo": algo})
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--_rss-worker", spec],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        try:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            rows.append({"algo": algo, "error": (p.stderr.strip().splitlines() or [f"rc={p.returncode}"])[-1][:200]})
        log(f"live rss {algo}: {rows[-1]}")
    return rows


def _sqlite_child(url: str, key: str, n: int, spec: str, algo: str, barrier: Any, q: Any) -> None:
    lim = Limiter(url)
    lim.hit("__warm__", spec, algorithm=algo)
    barrier.wait()
    t0 = time.time()
    admitted = sum(1 for _ in range(n) if lim.hit(key, spec, algorithm=algo).allowed)
    q.put((admitted, t0, time.time(), lim.store_errors))
    lim.close()


def _sqlite_procs(url: str, key: str, procs: int, per: int, spec: str, algo: str) -> tuple[int, float, int]:
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_sqlite_child, args=(url, key, per, spec, algo, barrier, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    res = [q.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    return sum(r[0] for r in res), max(r[2] for r in res) - min(r[1] for r in res), sum(r[3] for r in res)


def sqlite_bench(quick: bool, skip: list[str]) -> dict[str, Any]:
    if not has_module("ratewarden.storage.sqlite"):
        return {"error": "ratewarden.storage.sqlite is not importable"}
    n = 2_000 if quick else 20_000
    reps = 3
    tmp = tempfile.mkdtemp(prefix="rw-bench-sqlite-")
    out: dict[str, Any] = {"n": n, "single": {}, "hits": {}, "errors": 0}
    try:
        big = f"{pb.HIGH_LIMIT}/60 s"
        for algo in ALGOS:
            samples = []
            # a skipped algorithm's one-key log grows by one entry per hit: keep its loop short
            hits = out["hits"][algo] = min(n, 1_000) if algo in skip else n
            for r in range(reps):
                url = f"sqlite:///{tmp}/single-{algo}-{r}.db"
                lim = Limiter(url)
                lim.hit("__warm__", big, algorithm=algo)
                t0 = time.perf_counter()
                for _ in range(hits):
                    lim.hit("k", big, algorithm=algo)
                samples.append(hits / (time.perf_counter() - t0))
                out["errors"] += lim.store_errors
                lim.close()
            out["single"][algo] = pb.med(samples)
            log(f"sqlite single process {algo}: {out['single'][algo]:,.0f}/s")
        # 4 processes on one file: throughput (limit never reached) ...
        url = f"sqlite:///{tmp}/procs.db"
        total, dt, errs = _sqlite_procs(url, "k", 4, n // 4, big, "gcra")
        out["procs4"] = {"per_s": (n // 4 * 4) / dt, "denied": n // 4 * 4 - total}
        out["errors"] += errs
        log(f"sqlite 4 processes: {out['procs4']}")
        # ... and exactness: limit 100/60 s, 4 x 250 attempts on one fresh key per algorithm
        out["exact"] = {}
        for algo in ALGOS:
            url = f"sqlite:///{tmp}/exact-{algo}.db"
            admitted, dt, errs = _sqlite_procs(url, f"race:{algo}", 4, 250, "100/60 s", algo)
            bound = 100 if algo in WINDOW_ALGOS else 100 + math.ceil(dt * 100 / 60)
            out["exact"][algo] = {"admitted": admitted, "bound": bound, "errors": errs}
            out["errors"] += errs
            log(f"sqlite exactness {algo}: {out['exact'][algo]}")
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"[:200]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- step 3: summary


def by_case(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["case"]: r for r in rows}


def fastest_peer(rows: list[dict[str, Any]], field: str) -> tuple[str, float] | None:
    best = None
    for r in rows:
        usable = r["case"].split("/")[0] in PEERS and r.get(field) is not None and "error" not in r
        if usable and (best is None or r[field] < best[1]):
            best = (r["case"], r[field])
    return best


def summary_mem(res: dict[str, Any], cfg: pb.Config) -> list[str]:
    rows = res.get("mem") or []
    cases = by_case(rows)
    keys_label = f"{cfg.mem_keys // 1000}k keys"
    out = []
    for field, label, target in (
        ("one_key", "one key", True),
        ("spread", keys_label, True),
        ("deny_path", "deny path (L=100)", False),
    ):
        fp = fastest_peer(rows, field)
        for algo in ALGOS:
            r = cases.get(f"{RW}/{algo}")
            if r is None or field not in r:
                out.append((label, f"{RW}/{algo}", (r or {}).get("error", "not measured (see below)"), "", "", ""))
                continue
            ratio = r[field] / fp[1] if fp else None
            tgt = met(ratio <= ONE_THIRD) if (target and ratio is not None) else "report"
            out.append(
                (
                    label,
                    f"{RW}/{algo}" + (" *" if algo == "gcra" else ""),
                    fmt(r[field]),
                    f"{fp[0]} {fmt(fp[1])}" if fp else "-",
                    fmt(ratio, 2),
                    tgt,
                )
            )
    return [
        f"### Decision cost, in memory, single thread (ns/decision, median of {cfg.reps}; {cfg.mem_n:,} hits)",
        "",
        "ratio = ratewarden / the fastest peer in the same column of the same run (lower is better). "
        "Target for one key and for many keys: ratio <= 0.33 (at most 1/3 of the fastest peer). "
        "The deny path has no target.",
        "",
        pb.table(["workload", "ratewarden", "ns/decision", "fastest peer (ns)", "ratio", "targets"], out),
        "",
    ]


def summary_two(rows: list[dict[str, Any]], cfg: pb.Config) -> list[str]:
    t = [
        (
            r["algo"] + (" *" if r["algo"] == "gcra" else ""),
            r["workload"],
            fmt(r["one"]),
            fmt(r["two"]),
            fmt(r["ratio"], 2),
            met(r["ratio"] <= 1.5),
        )
        for r in rows
    ]
    return [
        f"### Two windows on one key vs one window (ns/decision, median of {cfg.reps}, interleaved)",
        "",
        f'`limiter.hit(key, "{pb.HIGH_LIMIT}/60 s;{pb.HIGH_LIMIT * 10}/3600 s")` vs `"{pb.HIGH_LIMIT}/60 s"`; '
        "target: ratio <= 1.5.",
        "",
        pb.table(["algorithm", "workload", "one window", "two windows", "ratio", "targets"], t),
        "",
    ]


def summary_memory(res: dict[str, Any], cfg: pb.Config, live: list[dict[str, Any]]) -> list[str]:
    t = []
    for r in live:
        if "error" in r:
            t.append((r["algo"], r["error"], "", "", "", ""))
            continue
        bpk = r["bytes_per_live_key"]
        target = "report"
        if r["algo"] == "gcra":
            target = (
                met(bpk <= 200)
                if r["n"] >= 1_000_000
                else f"report ({'under' if bpk <= 200 else 'over'} 200 at {r['n']:,} keys; the target needs 1M)"
            )
        t.append(
            (
                r["algo"] + (" *" if r["algo"] == "gcra" else ""),
                f"{r['n']:,}",
                f"{r['live']:,}",
                f"{r['delta'] / 2**20:,.0f} MiB",
                fmt(bpk),
                fmt(r["ns_per_new_key"]),
                target,
            )
        )
    lines = [
        f"### Bytes per live key (run.py: RSS growth over {cfg.rss_keys:,} distinct keys, fresh subprocess)",
        "",
        'Rate "100/86400 s", so every state stays live during the loop (live = `len(limiter.store)` after it, '
        "100 warm-up keys included); bytes per live key = RSS growth / new live states. "
        "Target: gcra at most 200 bytes per live key over 1,000,000 keys.",
        "",
        pb.table(
            [
                "algorithm",
                "keys hit",
                "live states",
                "RSS growth",
                "bytes per live key",
                "ns per new-key hit",
                "targets",
            ],
            t,
        ),
        "",
    ]
    out = []
    rss = res.get("rss") or []
    fp = fastest_peer([r for r in rss if "default" not in r["case"] and "MAX_SIZE" not in r["case"]], "bytes_per_key")
    for r in rss:
        if not r["case"].startswith(RW + "/"):
            continue
        if "error" in r:
            out.append((r["case"], r["error"], "", "", "", ""))
            continue
        out.append(
            (
                r["case"],
                f"{r['delta'] / 2**20:,.0f} MiB",
                fmt(r["bytes_per_key"]),
                ", ".join(f"{k}={v:,}" for k, v in r["size"].items()),
                f"{fmt(r['bytes_per_key'] / fp[1], 2)} ({fp[0]} {fmt(fp[1])})" if fp else "-",
                "report",
            )
        )
    lines += [
        f"### peerbench rss section: RSS growth / {cfg.rss_keys:,} keys hit once (limit 100/60 s)",
        "",
        "The same loop for every peer. Caveat: at 100/60 s a gcra or token-bucket key is full again after "
        "0.6 s, so ratewarden may legitimately drop its state (see 'retained') and reuse the memory: these "
        "bytes/key can flatter the refill algorithms; the table above is the one for the target. "
        "ratio = bytes/key / the leanest peer's.",
        "",
        pb.table(["ratewarden", "RSS growth", "bytes/key", "retained", "ratio to leanest peer", "targets"], out),
        "",
    ]
    ex = [r for r in res.get("expiry") or [] if r["case"].startswith(RW + "/")]
    if ex:
        t = []
        for r in ex:
            if "error" in r:
                t.append((r["case"], r["error"], "", "", "", ""))
                continue
            before = sum(r["after_hits"]["size"].values())
            after = sum(r["after_cleanup"]["size"].values())
            mib = (r["after_cleanup"]["rss"] - r["rss_base"]) / 2**20
            t.append(
                (
                    r["case"],
                    f"{before:,}",
                    f"{sum(r['after_sleep']['size'].values()):,}",
                    f"{after:,}",
                    f"{mib:,.1f} MiB",
                    met(after == 0),
                )
            )
        lines += [
            f"### Expired keys reclaimed ({cfg.expiry_keys:,} keys, 1 s window, sleep 3 s, `limiter.store.sweep()`)",
            "",
            "Target: no expired state left after the sweep.",
            "",
            pb.table(
                [
                    "ratewarden",
                    "states after hits",
                    "after 3 s sleep",
                    "after sweep",
                    "RSS growth after sweep",
                    "targets",
                ],
                t,
            ),
            "",
        ]
    return lines


def summary_sqlite(sq: dict[str, Any]) -> list[str]:
    head = ["### SQLite store (`sqlite:///<tmp>/x.db`)", ""]
    if "single" not in sq or not sq["single"]:
        return [*head, f"Not measured: {sq.get('error')}", ""]
    t = [
        (f"one process, one key, {sq['hits'][a]:,} hits", a, fmt(v), met(v >= 10_000)) for a, v in sq["single"].items()
    ]
    if "procs4" in sq:
        p = sq["procs4"]
        t.append(
            (
                f"4 processes on one file, one key, {sq['n']:,} hits in all",
                "gcra",
                fmt(p["per_s"]),
                "report" + (f" ({p['denied']} denied: WRONG)" if p["denied"] else ""),
            )
        )
    lines = [
        *head,
        "Target: at least 10,000 decisions/s in one process.",
        "",
        pb.table(["what", "algorithm", "decisions/s", "targets"], t),
        "",
    ]
    if "exact" in sq:
        t = [
            (
                a,
                x["admitted"],
                x["bound"],
                met(x["admitted"] <= x["bound"] and (a not in WINDOW_ALGOS or x["admitted"] == x["bound"])),
            )
            for a, x in sq["exact"].items()
        ]
        lines += [
            "Exactness, 4 processes x 250 attempts on one fresh key, limit 100/60 s (window algorithms: "
            "exactly 100; refill: 100 + refill during the race):",
            "",
            pb.table(["algorithm", "admitted", "bound", "targets"], t),
            "",
        ]
    if sq.get("errors"):
        lines += [f"**{sq['errors']} store errors** were counted (decisions were fallbacks).", ""]
    if sq.get("error"):
        lines += [f"ERROR: {sq['error']}", ""]
    return lines


def summary_honesty(res: dict[str, Any]) -> list[str]:
    t = []
    for r in res.get("retry") or []:
        if not r["case"].startswith(RW):
            continue
        for backend in ("mem", "redis"):
            x = r.get(backend)
            if x is None:
                continue
            if "error" in x:
                t.append((r["case"], backend, x["error"], "", "", "**FAIL**"))
                continue
            n = x["trials"]
            good = bool(x["ra"]) and x["early_admitted"] == 0 and x["late_admitted"] == n and not x["anomaly"]
            t.append(
                (
                    r["case"],
                    backend,
                    f"{min(x['ra']):.3f}-{max(x['ra']):.3f} s" if x["ra"] else "-",
                    f"{x['early_admitted']}/{n}",
                    f"{x['late_admitted']}/{n}",
                    ("PASS" if good else "**FAIL**") + (" " + "; ".join(x["anomaly"]) if x["anomaly"] else ""),
                )
            )
    return [
        "### Retry-after honesty (peerbench retry section: limit 5 per 2 s)",
        "",
        "PASS = the probe at 0.8 x retry_after was denied in every trial and the one at retry_after + 30 ms "
        "admitted in every trial.",
        "",
        pb.table(
            [
                "case",
                "store",
                "retry_after",
                "early probe admitted (want 0)",
                "late probe admitted (want all)",
                "targets",
            ],
            t,
        ),
        "",
    ]


def summary_race(res: dict[str, Any]) -> list[str]:
    t = []
    for r in res.get("race") or []:
        if not r["case"].startswith(RW):
            continue
        cells, good = [], True
        for m in ("mem_threads", "redis_threads", "redis_procs", "redis_async"):
            x = r.get(m)
            if x is None:
                cells.append("-")
            elif "error" in x:
                cells.append("ERROR " + x["error"])
                good = False
            else:
                under = r["kind"] == "window" and x["min"] < pb.Config().race_limit
                good &= x["over_max"] <= 0 and not x["errors"] and not under
                cells.append(f"{x['min']}-{x['max']} (over {x['over_max']:+d})" + (" UNDER-ADMITS" if under else ""))
        for m in ("mem_threads_spurious", "redis_threads_spurious"):
            x = r.get(m)
            if x is None:
                cells.append("-")
            elif "error" in x:
                cells.append("ERROR " + x["error"])
                good = False
            else:
                good &= x["denied"] == 0
                cells.append(f"{x['denied']:,} / {x['of']:,}")
        t.append((r["case"], r["kind"], *cells, "PASS" if good else "**FAIL**"))
    return [
        "### Exactness under concurrency (peerbench race section)",
        "",
        "Admitted of 1,000 attempts, limit 100/60 s, min-max over trials; 'over' > 0 is over-admission. "
        "Spurious: denials with a limit that is never reached (want 0).",
        "",
        pb.table(
            [
                "case",
                "kind",
                "memory 8 threads",
                "Redis 8 threads",
                "Redis 4 processes",
                "Redis async",
                "spurious (memory)",
                "spurious (Redis)",
                "targets",
            ],
            t,
        ),
        "",
    ]


def summary_redis(res: dict[str, Any]) -> list[str]:
    lines = []
    rows = res.get("redis")
    if rows:
        fp = fastest_peer(rows, "us")
        floor = next((r["us"] for r in rows if r["case"] == "ref/redis-py EVALSHA(incr)" and "us" in r), None)
        t = [
            (
                r["case"],
                r.get("error") or fmt(r.get("us"), 1),
                fmt(r.get("round_trips"), 2),
                fmt(r.get("server_cmds"), 2),
                f"{fmt(r['us'] / fp[1], 2)} ({fp[0]} {fmt(fp[1], 1)})" if fp and "us" in r else "-",
                f"{fmt(r['us'] / floor, 2)} ({fmt(floor, 1)})" if floor and "us" in r else "-",
                "report",
            )
            for r in rows
            if r["case"].startswith(RW)
        ]
        lines += [
            "### Sync Redis (us/decision, one key)",
            "",
            "Fastest peer may be one that sends a bare INCRBY (throttled-py FixedWindow); a bare redis-py EVALSHA "
            "of a one-line script is the floor of any Lua-based limiter. 'server cmds' come from INFO commandstats, "
            "which counts the whole server (other users of a shared Redis included).",
            "",
            pb.table(
                [
                    "case",
                    "us/decision",
                    "round trips",
                    "server cmds",
                    "ratio to fastest peer",
                    "ratio to bare EVALSHA",
                    "targets",
                ],
                t,
            ),
            "",
        ]
    rows = res.get("async")
    if rows:
        peers = [r for r in rows if r["case"].split("/")[0] in PEERS and "per_s" in r]
        best = max(peers, key=lambda r: r["per_s"]) if peers else None
        t = [
            (
                r["case"],
                r.get("error") or fmt(r.get("per_s")),
                f"{fmt(r['per_s'] / best['per_s'], 2)} ({best['case']} {fmt(best['per_s'])})"
                if best and "per_s" in r
                else "-",
                "report",
            )
            for r in rows
            if r["case"].startswith(RW)
        ]
        lines += [
            "### Async Redis (decisions/s, 50 tasks on one key; ratio > 1 is better)",
            "",
            pb.table(["case", "decisions/s", "ratio to fastest peer", "targets"], t),
            "",
        ]
    return lines


def summary_growth(g: dict[str, Any]) -> list[str]:
    lines = [
        "### sliding-log: cost per hit at a given log length (limit never reached)",
        "",
        "One key's log is filled to n entries, then the next hits (memory 5,000, SQLite 2,000, Redis 1,000) are "
        "timed, three rounds interleaved over the sizes (median): ns/decision, gcra on the same store in the same "
        "loop. The log keeps a running total and finds "
        "the window's start and retry_after by binary search (memory: lists; SQLite: one row per entry; Redis: "
        "a sorted set), so the cost must stay flat as n grows: target within 3x between 200 and 20,000.",
        "",
    ]
    rows = g.get("rows", [])
    t = [
        (
            f"{r['store']}, {r['n']:,}",
            fmt(r["gcra"]),
            fmt(r["sliding-log"]),
            fmt(r["sliding-log"] / r["gcra"], 2),
            f"{r['gcra_errors']}/{r['sliding-log_errors']}",
            "yes" if r.get("allowed") else "NO",
        )
        for r in rows
    ]
    head = ["store, entries n", "gcra ns", "sliding-log ns", "sliding-log / gcra", "store errors", "count exact"]
    lines += [pb.table(head, t), ""]
    for store in ("memory", "sqlite", "redis"):
        xs = [r["sliding-log"] for r in rows if r["store"] == store]
        if len(xs) >= 2:
            ratio = max(xs) / min(xs)
            lines.append(f"- {store}: largest / smallest per-hit cost {ratio:.2f}x: **{met(ratio <= 3)}**")
    lines.append("")
    if g.get("race"):
        x = g["race"]
        good = all(a == 100 for a in x["admitted"]) and not x["errors"]
        lines += [
            f"sliding-log on Redis, 8 threads x 125 attempts, limit 100/60 s: admitted {x['admitted']} "
            f"(want 100 each), store errors {x['errors']}: **{'PASS' if good else 'FAIL'}**",
            "",
        ]
    if g.get("error"):
        lines += [f"ERROR: {g['error']}", ""]
    return lines


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument("--quick", action="store_true", help="peerbench --quick sizes and small own measurements")
    ap.add_argument(
        "--redis-url",
        default="private",
        help="Redis for the redis/async sections: 'private' (default) starts a redis-server of its own on a "
        "free port and stops it at the end; a URL is used as given and ITS DATABASE IS FLUSHED (never give "
        "a shared Redis); 'none' skips them",
    )
    ap.add_argument("--growth-only", action="store_true", help="run only the sliding-log growth table")
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"), help="results file (default bench/results.md)")
    ap.add_argument("--sections", default=None, help="override peerbench's sections (comma-separated)")
    ap.add_argument(
        "--skip",
        default="none",
        help="ratewarden algorithms kept out of peerbench's one-key mem/redis/async loops (comma-separated; "
        "default none: every algorithm runs there)",
    )
    ap.add_argument("--only", default=None, help="development: restrict peerbench to these peers (no ratios then)")
    ap.add_argument("--_rss-worker", dest="rss_worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_worker:
        print(json.dumps(rss_worker(**json.loads(args.rss_worker))))
        return
    cfg = pb.QUICK if args.quick else pb.Config()
    args.skip = [a for a in args.skip.split(",") if a and a != "none"]

    private: PrivateRedis | None = None
    if args.redis_url == "private":
        try:
            private = PrivateRedis()
            args.redis_url = private.url
        except Exception as e:
            log(f"no private redis-server ({e}): redis and async sections skipped")
            args.redis_url = "none"
    try:
        _main(args, cfg)
    finally:
        if private is not None:
            private.close()


def _main(args: argparse.Namespace, cfg: pb.Config) -> None:
    url: str | None = None if args.redis_url.lower() == "none" else args.redis_url
    if args.growth_only:
        print("\n".join(summary_growth(sliding_log_growth(args.quick, url))))
        return
    redis_note = ""
    if url and not redis_store_ready():
        redis_note = "ratewarden.storage.redis has no open_redis yet: redis and async sections skipped."
        url = None
    if url:
        try:
            pb.redis_client(url).ping()
        except Exception as e:
            redis_note = f"Redis at {url} does not answer ({type(e).__name__}): redis and async sections skipped."
            url = None
    sections = ["mem", "race", "retry", "rss", "expiry"] + (["redis", "async"] if url else [])
    if args.sections:
        sections = args.sections.split(",")

    started = datetime.datetime.now(datetime.UTC)
    rev = git_state()
    load0 = os.getloadavg()
    t0 = time.time()
    workdir = tempfile.mkdtemp(prefix="rw-bench-")
    try:
        res, peer_md = run_peerbench(args, sections, url, workdir)
        # keep the harness's output at once: the own measurements below may still fail or be stopped
        base = os.path.splitext(args.out)[0]
        for ext in ("md", "json"):
            shutil.copy(os.path.join(workdir, f"peerbench.{ext}"), f"{base}_peerbench.{ext}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log("own measurements: two windows ...")
    two = two_windows(cfg)
    log("own measurements: bytes per live key ...")
    live = live_rss(cfg.rss_keys)
    log("own measurements: sliding-log growth ...")
    growth = sliding_log_growth(args.quick, url)
    log("own measurements: SQLite ...")
    sq = sqlite_bench(args.quick, args.skip)
    load1 = os.getloadavg()
    elapsed = time.time() - t0

    cmd = "bench/.venv/bin/python bench/run.py" + (" --quick" if args.quick else "")
    if args.skip:
        cmd += f" --skip {','.join(args.skip)}"
    head = [
        "# ratewarden vs peers: summary",
        "",
        f"- run: `{cmd}` ({'QUICK run: small sizes, indicative only' if args.quick else 'full run'}), started "
        f"{started:%Y-%m-%d %H:%M} UTC, took {elapsed / 60:.0f} min",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, at end "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} (a shared machine: other work runs meanwhile)",
        f"- ratewarden source: {rev}",
        f"- peerbench sections: {', '.join(sections)}" + (f". {redis_note}" if redis_note else ""),
        "- peers: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items() if k in (*PEERS, "ratewarden", "redis")),
        "- only ratios within this run mean anything: the same case moves 30-40 % between runs on this machine.",
    ]
    if args.skip:
        head.append(
            f"- kept out of peerbench's one-key mem/redis/async loops: {', '.join(args.skip)} "
            "(see the sliding-log table; `--skip none` puts it back)"
        )
    body = summary_mem(res, cfg) + summary_two(two, cfg) + summary_memory(res, cfg, live) + summary_growth(growth)
    body += summary_sqlite(sq) + summary_honesty(res) + summary_race(res) + summary_redis(res)
    text = "\n".join([*head, "", *body])
    print(text)
    with open(args.out, "w") as f:
        f.write(
            text
            + "\n\n---\n\n# Full peerbench tables of the same run\n\n"
            + peer_md.replace("# peerbench results", "", 1)
        )
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
